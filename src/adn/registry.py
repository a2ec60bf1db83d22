"""Model registry: every architecture registers a builder plus its metadata (published FLOPs/accuracy).

``create_model`` is the one factory; tests iterate over ``list_models()`` so a model is tested by being
registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the project knows about a registered model."""

    name: str
    builder: Callable[..., nn.Module]
    #: default (square) input resolution
    input_size: int
    #: published ImageNet-1k results: skip config -> (GMACs at ``input_size``, Acc@1 or None)
    published: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    #: relative tolerance of our FLOPs count against ``published`` (the paper's counter differs slightly)
    flops_tolerance: float = 0.01
    #: keyword arguments that make a tiny instance for fast tests
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    input_size: int,
    published: dict[str, tuple[float, float | None]] | None = None,
    test_kwargs: dict[str, Any] | None = None,
    flops_tolerance: float = 0.01,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under its function name."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[fn.__name__] = ModelInfo(
            name=fn.__name__,
            builder=fn,
            input_size=input_size,
            published=dict(published or {}),
            flops_tolerance=flops_tolerance,
            test_kwargs=dict(test_kwargs or {}),
            description=doc[0] if doc else "",
        )
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model; ``ValueError`` naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build a registered adaptive-depth model, e.g. ``create_model("resnet50", num_classes=10)``.

    Extra keyword arguments go to the architecture's builder (``image_size``, ``stochastic_depth_prob`` ...).
    """
    return model_info(name).builder(num_classes=num_classes, **kwargs)
