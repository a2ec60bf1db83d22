"""Module-tree surgery without copying weights: the two primitives that sub-network paths are made of."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn


def shallow_copy(module: nn.Module) -> nn.Module:
    """A new object sharing ``module``'s attribute values (its parameter, buffer and hook dicts included).

    Not ``copy.copy``: that goes through ``__getstate__``/``__setstate__``, which rebuild an adaptive model's paths.
    """
    copied = object.__new__(type(module))
    copied.__dict__.update(module.__dict__)
    return copied


class _Removed:
    """Marker: leave this module out of the path."""


REMOVED = _Removed()


def substitute(root: nn.Module, replace: Mapping[str, nn.Module | _Removed]) -> tuple[nn.Module, list]:
    """A shallow copy of ``root`` in which the submodules named in ``replace`` are swapped for the given modules
    (:data:`REMOVED`: left out of an ``nn.Sequential``, ``Identity`` in other containers).

    Only ``root`` and the containers on the way to a replaced module are copied, each with its own
    ``_modules`` dict; their parameters, buffers and hooks are the same dicts as the originals', and every
    other submodule is the original object. Returns the copy and the (copy, original) pairs.
    """
    tree: dict = {}
    for name, new in replace.items():
        node = tree
        parts = name.split(".") if name else []
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"cannot replace inside replaced module {name!r}")
        node[parts[-1]] = new
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def clone(module: nn.Module, node: dict) -> nn.Module:
        copied = shallow_copy(module)
        modules = {}
        for key, child in module._modules.items():
            sub = node.get(key)
            if sub is None:
                modules[key] = child
            elif isinstance(sub, dict):
                modules[key] = clone(child, sub)
            elif sub is REMOVED:
                if type(module) is not nn.Sequential:  # a custom container may index its children
                    modules[key] = nn.Identity()
            else:
                modules[key] = sub
        missing = set(node) - set(module._modules)
        if missing:
            raise KeyError(f"no submodule {sorted(missing)[0]!r} in {type(module).__name__}")
        copied.__dict__["_modules"] = modules
        pairs.append((copied, module))
        return copied

    return clone(root, tree), pairs


__all__ = ["REMOVED", "shallow_copy", "substitute"]
