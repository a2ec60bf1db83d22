"""Request bodies to model inputs, with numpy and PIL only (no torch: this runs in the serving processes).

Three kinds of body, told apart by ``content-type``: ``application/json`` (an object with ``image``, nested lists
of shape 3xRxR or 1x3xRxR, and optionally ``budget_ms`` and ``skip``), ``application/octet-stream`` (3*R*R
float32 values, options in the query string) and ``image/*`` (a PNG/JPEG/... file, resized, cropped and
normalised as the ONNX file's metadata says, as ``adn predict`` does). Every problem is a :class:`BadRequest`
whose message is one line naming it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# torchvision's ImageNet statistics, the default of a checkpoint that records none (as adn.data has them;
# repeated here because importing adn.data imports torch)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadRequest(ValueError):
    """A request the server refuses: ``status`` is the HTTP status (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSpec:
    """What an input image must look like, from the ONNX file's ``adn`` metadata."""

    size: int
    resize: int
    square: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> InputSpec:
        size = int(meta.get("val_crop_size") or meta.get("input_size") or 224)
        return cls(
            size=size,
            resize=int(meta.get("val_resize_size") or round(size * 256 / 224)),
            square=bool(meta.get("square_resize")),
            mean=tuple(float(v) for v in meta.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in meta.get("std", IMAGENET_STD)),
            interpolation=str(meta.get("interpolation", "bilinear")),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)


def decode_image(data: bytes, spec: InputSpec) -> np.ndarray:
    """An image file's bytes -> float32 ``[3, R, R]``: resized (shorter side), centre-cropped, normalised."""
    from PIL import Image, UnidentifiedImageError

    resample = getattr(Image.Resampling, spec.interpolation.upper(), Image.Resampling.BILINEAR)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadRequest(f"the body is not an image PIL can read ({type(exc).__name__})") from None
    if spec.square:  # the built-in datasets: whole images resized to a square
        img = img.resize((spec.size, spec.size), resample)
    else:
        w, h = img.size
        scale = spec.resize / min(w, h)
        img = img.resize((max(spec.size, round(w * scale)), max(spec.size, round(h * scale))), resample)
        left, top = (img.width - spec.size) // 2, (img.height - spec.size) // 2
        img = img.crop((left, top, left + spec.size, top + spec.size))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean, std = (np.asarray(v, np.float32).reshape(3, 1, 1) for v in (spec.mean, spec.std))
    return (x - mean) / std


def _array(value: Any, spec: InputSpec) -> np.ndarray:
    try:
        x = np.asarray(value)
    except ValueError:  # numpy >= 1.24: ragged nested lists
        raise BadRequest('"image" is a ragged array; it must be 3xRxR numbers') from None
    if x.dtype == object or x.dtype.kind not in "iuf":
        raise BadRequest(f'"image" must hold numbers only (got {x.dtype.kind!r} values: strings, nulls, lists?)')
    if x.shape not in (spec.shape, (1, *spec.shape)):
        raise BadRequest(f'"image" has shape {list(x.shape)}; expected {list(spec.shape)}')
    return x.astype(np.float32)


def _budget(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest(f"budget_ms must be a positive number of milliseconds, got {value!r}")
    try:
        budget = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"budget_ms must be a positive number of milliseconds, got {value!r}") from None
    if not math.isfinite(budget) or budget <= 0:
        raise BadRequest(f"budget_ms must be a positive number of milliseconds, got {value!r}")
    return budget


def _skip(value: Any, stages: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) != stages or not set(value.upper()) <= {"T", "F"}:
        raise BadRequest(f"skip must be {stages} letters T (skip) or F (keep), e.g. {'F' * stages}; got {value!r}")
    return value.upper()


def decode(
    body: bytes, content_type: str, query: Mapping[str, str], spec: InputSpec, stages: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """A ``POST /predict`` request -> (float32 ``[1, 3, R, R]``, ``{"budget_ms": ..., "skip": ...}``).

    Options come from the query string and, for JSON, the body (which wins). A budget that is not given is
    ``None`` in the result only if given as ``none``; absent, the key is missing (the server's default applies).
    """
    kind = content_type.split(";")[0].strip().lower()
    options: dict[str, Any] = dict(query)
    if kind == "application/json":
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON ({exc})") from None
        if not isinstance(payload, dict) or "image" not in payload:
            raise BadRequest('a JSON body must be an object with an "image" field (nested lists, 3xRxR)')
        options.update({k: v for k, v in payload.items() if k != "image"})
        x = _array(payload["image"], spec)
    elif kind.startswith("image/"):
        if not body:
            raise BadRequest("the body is empty; send the image file's bytes")
        x = decode_image(body, spec)
    elif kind in ("application/octet-stream", ""):
        n = 3 * spec.size * spec.size
        if len(body) != 4 * n:
            raise BadRequest(f"a raw body is {n} float32 values (3x{spec.size}x{spec.size}), got {len(body)} bytes")
        x = np.frombuffer(body, dtype=np.float32)
    else:
        raise BadRequest(
            f"content-type {kind!r} is not served; use application/json, application/octet-stream or image/*", 415
        )
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(1, *spec.shape)
    if not np.isfinite(x).all():
        raise BadRequest("the image holds NaN or infinite values")
    out: dict[str, Any] = {"skip": _skip(options.get("skip"), stages)}
    if "budget_ms" in options:
        budget = options["budget_ms"]
        out["budget_ms"] = None if isinstance(budget, str) and budget.lower() == "none" else _budget(budget)
    return x, out


__all__ = ["BadRequest", "InputSpec", "decode", "decode_image"]
