"""``model.save_pretrained(dir)`` and ``model.push_to_hub(repo_id)``, which every adaptive-depth model has. They run
what the sharing layer (:mod:`adn.hub`) registers here when it is imported (``import adn`` does), so that the core
never imports a layer above it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_SHARING: dict[str, Callable] = {}


def register_sharing(save_pretrained: Callable, push_to_hub: Callable) -> None:
    """Set what ``model.save_pretrained`` and ``model.push_to_hub`` run: see :mod:`adn.hub`."""
    _SHARING.update(save_pretrained=save_pretrained, push_to_hub=push_to_hub)


class SharingMixin:
    """The Hugging Face conventions of a model: its shareable folder, its upload."""

    def save_pretrained(self, save_directory, **kwargs: Any):
        """config.json, model.safetensors and the model card README.md, in a folder: :func:`adn.save_pretrained`."""
        return _SHARING["save_pretrained"](self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any):
        """Upload the model to a Hugging Face Hub repository: :func:`adn.push_to_hub`."""
        return _SHARING["push_to_hub"](self, repo_id, **kwargs)


__all__ = ["SharingMixin", "register_sharing"]
