"""The class swap of :func:`adn.convert`: the cached subclass ``(AdaptiveDepthNet, OriginalClass)`` a converted
instance gets, the names it reserves, and pickling through the importable original class."""

from __future__ import annotations

from torch import nn

from ..core.network import AdaptiveDepthNet

_CLASSES: dict[type, type] = {}


def _reduce_ex(self: nn.Module, protocol: int):
    return _restore, (type(self).__adn_original__,), self.__getstate__()


def _restore(original: type) -> nn.Module:
    """Unpickling: an empty instance of the converted class of ``original`` (its state is set next)."""
    return object.__new__(adaptive_class(original))


# The timm model contract: a model may have its own (timm's); ours run it on the chosen sub-network's path.
_CONTRACT = {"forward_features", "forward_head", "get_classifier", "reset_classifier", "num_features"}
_CONTRACT |= {"set_grad_checkpointing", "classifier_name", "forward_intermediates"}
# AdaptiveDepthNet's names a model class must not define itself (forward, train, extra_repr, _load_from_state_dict,
# __getstate__ and __setstate__ are overridden cooperatively: they call the original's through super()).
_OVERRIDDEN = {"forward", "train", "extra_repr", "_load_from_state_dict", "__getstate__", "__setstate__"}
_RESERVED = (
    (
        {k for c in AdaptiveDepthNet.__mro__[:-2] for k in vars(c) if not k.startswith("__")}
        | {"layout", "calibration"}
        | {"_skip", "_fixed", "_paths", "_calibrated_paths", "_path_pairs", "_paths_valid"}
    )
    - _OVERRIDDEN
    - _CONTRACT
)


def adaptive_class(original: type) -> type:
    """The cached class ``(AdaptiveDepthNet, original)`` that converted ``original`` instances get."""
    cls = _CLASSES.get(original)
    if cls is None:
        namespace = {
            "__module__": "adn.conversion",  # where pickles made before the split look
            "__qualname__": f"Adaptive{original.__qualname__}",
            "__doc__": f"{original.__name__} converted to an adaptive-depth model by adn.convert.",
            "__adn_original__": original,
            "__reduce_ex__": _reduce_ex,
        }
        cls = type(f"Adaptive{original.__name__}", (AdaptiveDepthNet, original), namespace)
        _CLASSES[original] = cls
    return cls


def _clashes(model: nn.Module) -> list[str]:
    in_class = {k for c in type(model).__mro__ if c is not nn.Module and c is not object for k in vars(c)}
    in_instance = set(model.__dict__) | set(model._modules) | set(model._parameters) | set(model._buffers)
    return sorted(_RESERVED & in_class | _RESERVED & in_instance)


__all__ = ["adaptive_class"]
