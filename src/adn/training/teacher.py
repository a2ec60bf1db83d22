"""An external teacher for distillation (``--teacher ARCH --teacher-weights FILE``), as the reference's
``train_adn_distill.py`` uses one: built from a local weights file -- never downloaded -- frozen, in eval mode, on the
student's device; it runs under the student's autocast setting (:class:`adn.training.losses.TeacherDistillation`) and is
not saved in checkpoints, which record its name and the file's SHA-256 instead (:func:`teacher_fingerprint`).

``ARCH`` names a model as ``--model`` does: ``tv:resnext101_32x8d`` (any torchvision classifier), ``timm:NAME``, or a
registered adn model (its super-net teaches).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import convert_published_state_dict, extract_state_dict, load_checkpoint, load_state_dict_compat
from ..models.registry import create_model, model_info
from .losses import DEFAULT_TOPK, SelfDistillation, TeacherDistillation

#: the reference's teacher: ResNeXt-101 32x8d (semi-supervised weights), torchvision's architecture
REFERENCE_TEACHER = "tv:resnext101_32x8d"


def build_teacher_model(arch: str, num_classes: int) -> nn.Module:
    """The teacher's architecture, randomly initialised, with ``num_classes`` outputs."""
    prefix, _, name = arch.partition(":")
    if prefix in ("tv", "torchvision") and name:
        import torchvision

        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError:
            raise ValueError(
                f"--teacher {arch}: torchvision has no model {name!r}; see torchvision.models.list_models()"
            ) from None
    if prefix == "timm" and name:
        import timm

        if not timm.is_model(name):
            raise ValueError(f"--teacher {arch}: timm has no model {name!r}; see timm.list_models()")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    try:
        model_info(arch)
    except ValueError as exc:  # one line naming the known models
        raise ValueError(f"--teacher {exc}") from None
    return create_model(arch, num_classes=num_classes)


def _check_fit(arch: str, path: Path, model: nn.Module, state_dict: Mapping[str, torch.Tensor], classes: int) -> None:
    """One line for the common misfit (a classifier for another class count), before the generic key check."""
    for key, expected in model.state_dict().items():
        found = state_dict.get(key)
        if found is None or found.shape == expected.shape or found.ndim == 0:
            continue
        if expected.shape[0] == classes and found.shape[1:] == expected.shape[1:]:
            raise ValueError(
                f"--teacher-weights {path}: the teacher ({arch}) classifies {found.shape[0]} classes ({key}), the "
                f"data has {classes}; give a teacher trained (or fine-tuned) on the data's classes"
            )


def load_teacher(
    arch: str,
    weights: str | os.PathLike,
    num_classes: int,
    device: torch.device | str = "cpu",
    compile: bool = False,
) -> nn.Module:
    """The frozen teacher ``arch`` with the weights of the local file ``weights`` (a state dict, our checkpoint,
    or a ``{"model": ...}`` one; DDP/compile prefixes stripped), in eval mode on ``device``; ``compile``:
    ``torch.compile`` it (the reference's ``--compile``). A teacher for another number of classes than
    ``num_classes`` is one clear error."""
    path = Path(weights)
    model = build_teacher_model(arch, num_classes)
    state_dict = extract_state_dict(load_checkpoint(path), path)
    state_dict = convert_published_state_dict(state_dict, keep=set(model.state_dict()))  # DDP/compile prefixes
    _check_fit(arch, path, model, state_dict, num_classes)
    if hasattr(model, "layout"):  # an adaptive-depth teacher: reference names, twins
        load_state_dict_compat(model, state_dict)
    else:
        result = model.load_state_dict(state_dict, strict=False)
        problems = [
            f"{what} {len(keys)} keys (e.g. {', '.join(list(keys)[:3])})"
            for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
            if keys
        ]
        if problems:
            raise ValueError(f"--teacher-weights {path} do not fit --teacher {arch}: " + "; ".join(problems))
    model.requires_grad_(False)
    model = model.to(device).eval()
    return torch.compile(model) if compile else model


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def teacher_fingerprint(arch: str, weights: str | os.PathLike) -> dict[str, str]:
    """What a checkpoint records of the teacher instead of its weights: its name, file and the file's SHA-256."""
    return {"teacher": arch, "teacher_weights": str(weights), "teacher_sha256": file_sha256(weights)}


def make_distillation(
    num_classes: int,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    topk: int | None = None,
    features: bool = False,
    teacher: str | None = None,
    teacher_weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    compile_teacher: bool = False,
    expected_sha256: str | None = None,
) -> SelfDistillation:
    """The distillation of a run: top-k defaults to the reference's 500, at most ``num_classes``; with a
    ``teacher`` (and its local ``teacher_weights``) a :class:`TeacherDistillation`, else a :class:`SelfDistillation`,
    at ``temperature`` (both terms; a config's default with a teacher is the reference's T = 2). ``features``:
    feature self-distillation. ``expected_sha256``: the teacher file a resumed run was trained with (another file
    is an error)."""
    topk = topk or min(DEFAULT_TOPK, num_classes)
    if teacher is None:
        return SelfDistillation(alpha, temperature, topk, features=features)
    if teacher_weights is None:
        raise ValueError(f"--teacher {teacher} needs --teacher-weights FILE (adn downloads nothing)")
    if expected_sha256 is not None and file_sha256(teacher_weights) != expected_sha256:
        raise ValueError(
            f"--teacher-weights {teacher_weights} is not the teacher file this run was trained with (SHA-256 "
            f"{expected_sha256[:12]}...); give that file, or start a new run from the weights (--weights)"
        )
    model = load_teacher(teacher, teacher_weights, num_classes, device, compile=compile_teacher)
    return TeacherDistillation(alpha, temperature, topk, features=features, teacher=model)


__all__ = [
    "REFERENCE_TEACHER",
    "build_teacher_model",
    "file_sha256",
    "load_teacher",
    "make_distillation",
    "teacher_fingerprint",
]
