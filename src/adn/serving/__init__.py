"""Adaptive serving on Ray Serve: one switchable ONNX file, the depth picked per request against a latency budget.

``build_app(path, ...)`` is the Ray Serve application (``adn serve`` runs it; ``serve.run(build_app(...))`` puts it
in your own Ray Serve setup). :mod:`adn.serving.policy` is the depth policy (pure), :mod:`adn.serving.decode` turns
request bodies into model inputs; neither needs torch, nor does the replica (:mod:`adn.serving.replica`).
Ray is an optional extra: ``pip install "adn[serve]"``.
"""

from __future__ import annotations

from typing import Any

from .decode import BadRequest, InputSpec, decode
from .policy import Candidate, DepthPolicy, Feedback, expected_wait_ms


def build_app(path: Any, **kwargs: Any) -> Any:
    """See :func:`adn.serving.app.build_app` (imported here on use, so that this package does not need Ray)."""
    from .app import build_app as build

    return build(path, **kwargs)


__all__ = ["BadRequest", "Candidate", "DepthPolicy", "Feedback", "InputSpec", "build_app", "decode", "expected_wait_ms"]
