"""Model registry: every architecture registers a builder plus its metadata (input size, classifier, published
FLOPs/accuracy), and every model built by :func:`create_model` carries that entry as ``model.info``.

``create_model`` is the one factory -- for the registered models and for torchvision/timm models converted on
the fly (``"tv:convnext_tiny"``, ``"timm:resnet50"``, see :mod:`adn.convert`); tests iterate over
``list_models()`` so a model is tested by being registered.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

#: prefixes of model names that :func:`create_model` converts from another library
CONVERTED_PREFIXES = ("tv:", "torchvision:", "timm:")


@dataclass(frozen=True)
class ModelInfo:
    """What the project knows about a model."""

    name: str
    builder: Callable[..., nn.Module] | None
    #: default (square) input resolution
    input_size: int
    #: name of the classifier layer (the last ``nn.Linear``), e.g. ``fc`` or ``heads.head``
    classifier: str = "fc"
    #: published ImageNet-1k results: skip config -> (GMACs at ``input_size``, Acc@1 or None)
    published: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    #: who counted ``published``: ``"paper"`` (the ADN paper / reference README), or ``"adn"`` for a model with no
    #: published table (our own count, kept as the reference the tests hold the model to)
    published_by: str = "paper"
    #: relative tolerance of our FLOPs count against ``published`` (the paper's counter differs slightly)
    flops_tolerance: float = 0.01
    #: keyword arguments that make a tiny instance for fast tests
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelInfo] = {}
#: ``create_model("hf-hub:org/name")``: registered by :mod:`adn.hub` (``import adn`` does) -- the models layer
#: imports no layer above it
_HUB_LOADER: dict[str, Callable[..., nn.Module]] = {}


def register_hub_loader(create: Callable[..., nn.Module]) -> None:
    """Set what ``create_model("hf-hub:...")`` runs: :func:`adn.hub.create_from_hub`."""
    _HUB_LOADER["create"] = create


def register_model(
    *,
    input_size: int,
    classifier: str = "fc",
    published: dict[str, tuple[float, float | None]] | None = None,
    test_kwargs: dict[str, Any] | None = None,
    flops_tolerance: float = 0.01,
    published_by: str = "paper",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under its function name; a name registered twice is an error."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is already registered (by {_REGISTRY[fn.__name__].builder})")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[fn.__name__] = ModelInfo(
            name=fn.__name__,
            builder=fn,
            input_size=input_size,
            classifier=classifier,
            published=dict(published or {}),
            flops_tolerance=flops_tolerance,
            published_by=published_by,
            test_kwargs=dict(test_kwargs or {}),
            description=doc[0] if doc else "",
        )
        return fn

    return wrap


def flops_table(text: str) -> dict[str, tuple[float, None]]:
    """``"FFFF 4.11 FFFT 3.98 ..."`` -> ``{"FFFF": (4.11, None), ...}``: a sub-network GMACs table without
    accuracies, for the ``published`` entry of a model with no published results (ours, measured)."""
    words = text.split()
    return {skip: (float(gmacs), None) for skip, gmacs in zip(words[::2], words[1::2], strict=True)}


def list_models(pattern: str = "") -> list[str]:
    """Names accepted by :func:`create_model` (besides converted ``tv:``/``timm:`` models), sorted; ``pattern``: a
    shell-style wildcard as in timm (``"resnet*"``)."""
    return sorted(n for n in _REGISTRY if not pattern or fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """Whether :func:`create_model` builds ``name``: registered, or a converted model's ``tv:``/``timm:`` name."""
    return name in _REGISTRY or (is_converted_name(name) and bool(name.split(":", 1)[1]))


def is_converted_name(name: str) -> bool:
    return name.startswith(CONVERTED_PREFIXES)


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model; ``ValueError`` naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} (or a torchvision/timm model as "
            "tv:NAME / timm:NAME)"
        ) from None


def resolve_model_name(name: str) -> str:
    """``name`` if :func:`create_model` accepts it, else one ``ValueError`` line naming the known models."""
    if is_converted_name(name) and name.split(":", 1)[1]:
        return name
    model_info(name)
    return name


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    num_classes: int = 1000,
    weights: str | None = None,
    pretrained_cfg_overlay: dict | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build an adaptive-depth model, e.g. ``create_model("resnet50", num_classes=10)`` (timm's order: the name,
    then ``pretrained``; everything else by keyword).

    ``name``: a registered model (:func:`list_models`) or a torchvision/timm classifier to convert
    (``"tv:convnext_tiny"``, ``"timm:resnet50"``). ``weights`` (or, as in timm,
    ``pretrained_cfg_overlay=dict(file=PATH)``): a local weights file to load -- ours, a reference ADN checkpoint,
    or torchvision/timm weights of the plain model. Nothing is downloaded, so ``pretrained=True`` is an error
    that says so. Extra keyword arguments go to the architecture's builder (``image_size``,
    ``stochastic_depth_prob`` ...). The model carries its metadata as ``model.info``.
    ``"hf-hub:org/name"``: a model shared with ``save_pretrained``/``push_to_hub``, its weights loaded
    (:func:`adn.from_pretrained`).
    """
    if not isinstance(pretrained, bool):
        raise ValueError(
            f"create_model({name!r}, {pretrained!r}): the second argument is pretrained (timm's order); give the "
            f"class count by keyword: num_classes={pretrained!r}"
        )
    if name.startswith("hf-hub:"):
        return _HUB_LOADER["create"](name, num_classes, weights=weights, pretrained=pretrained, **kwargs)
    if pretrained:
        raise ValueError(
            "adn downloads no weights: pass weights=PATH (a local file: a published ADN checkpoint, "
            "your own, or torchvision/timm weights of the plain model), or on the command line "
            "--weights PATH"
        )
    weights = weights or (pretrained_cfg_overlay or {}).get("file")
    if is_converted_name(name):
        from ..conversion import create_converted

        model = create_converted(name, num_classes=num_classes, **kwargs)
        info = getattr(model, "info", None) or ModelInfo(name=name, builder=None, input_size=224)
    else:
        info = model_info(name)
        model = info.builder(num_classes=num_classes, **kwargs)
    image_size = getattr(model, "image_size", None)
    model.info = dataclasses.replace(info, input_size=image_size or info.input_size)
    model.build_kwargs = dict(kwargs)  # what save_pretrained records to rebuild the model
    if hasattr(model, "build_subnets"):
        model.build_subnets()  # the sub-network paths carry the new attribute too
    if weights is not None:
        from .weights import load_weights

        load_weights(model, weights, model_name=name)
    return model


__all__ = [
    "ModelInfo",
    "create_model",
    "flops_table",
    "is_converted_name",
    "is_model",
    "list_models",
    "model_info",
    "register_hub_loader",
    "register_model",
    "resolve_model_name",
]
