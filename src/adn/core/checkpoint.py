"""Checkpoint files and weights: our own checkpoints, torchvision state dicts and the published ADN checkpoints.

The published ADN files call a norm's twin ``<norm>_skip`` (``layer1.0.bn1_skip.weight``,
``encoder.layers.encoder_layer_0.ln_1_skip.weight``); here it lives inside the norm as ``<norm>.skip_norm``
(``layer1.0.bn1.skip_norm.weight``). ResNet-50 and ViT-B/16 otherwise keep torchvision's names; MobileNetV2 and
Swin-T differ more, and their model classes map the rest (``from_reference``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .twins import init_skip_norms_from_main, twin_keys

_PUBLISHED_TWIN = re.compile(r"(^|\.)([A-Za-z0-9_]+?)_skip\.")


def convert_published_state_dict(
    state_dict: Mapping[str, torch.Tensor], keep: set[str] | frozenset[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Rename published ``<norm>_skip.<tensor>`` keys to ``<norm>.skip_norm.<tensor>``; strip DDP's
    ``module.`` prefix and torch.compile's ``_orig_mod.`` prefix. Other keys, and keys in ``keep`` (a model's own
    names: timm has norms called ``*_skip``), pass unchanged."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key if key in keep else _PUBLISHED_TWIN.sub(r"\1\2.skip_norm.", key)] = value
    return out


def load_state_dict_compat(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load our, torchvision's or a reference ADN state dict into ``model``.

    Reference names are mapped first (``<norm>_skip`` twins, and the architecture's own layout differences via
    ``model.from_reference``). A state dict without twins (e.g. torchvision's ImageNet weights) initialises each
    twin from its main norm; calibrated statistics (``calibration.*``) load when present and are dropped when
    not (they belong to the weights they were estimated for). Any other missing or unexpected key is an error
    that names the keys.
    """
    state_dict = convert_published_state_dict(state_dict, keep=set(model.state_dict()))
    if hasattr(model, "from_reference"):
        state_dict = model.from_reference(state_dict)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("calibration.")}
    missing = [k for k in expected if k not in state_dict and ".skip_norm." not in k]
    unexpected = [k for k in state_dict if k not in expected and not k.startswith("calibration.")]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and hasattr(v, "shape") and v.shape != expected[k].shape
    ]
    problems = [
        f"{what} {len(keys)} keys (e.g. {', '.join(keys[:3])})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch in", mismatched))
        if keys
    ]
    if problems:
        raise ValueError("weights do not fit this model (another architecture or class count?): " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=False)
    init_twins(model, state_dict)


def init_twins(model: nn.Module, loaded: Mapping[str, object]) -> None:
    """After loading ``loaded`` into ``model``: the twin tensors it lacked start as copies of their main norms
    (torchvision's weights have none); those it had are kept. Some but not all of them missing: a warning."""
    twins = twin_keys(model)
    copied = init_skip_norms_from_main(model, set(loaded)) if any(k not in loaded for k in twins) else []
    if copied and len(copied) < len(twins):
        print(
            f"adn: warning: the weights lack {len(copied)} of {len(twins)} twin-norm tensors (e.g. {copied[0]}); "
            "those start as copies of their main norms, the rest are kept",
            file=sys.stderr,
        )


# ------------------------------------------------------------------------------------------- checkpoint files
SAFETENSORS_SUFFIX = ".safetensors"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _write_atomically(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s directory, flush it to disk, then atomically
    rename it over ``path``: a crash (even SIGKILL) leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.chmod(f.fileno(), _FILE_MODE)  # mkstemp makes 0600; a checkpoint is an ordinary file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # make the rename itself durable (POSIX: fsync the directory)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_checkpoint(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file (temporary file + fsync + atomic rename)."""
    _write_atomically(path, lambda f: torch.save(obj, f))


def save_weights(
    model: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, meta: dict | None = None
) -> None:
    """Save a model's state dict, atomically: ``*.safetensors`` as safetensors (no pickle, safe to share),
    anything else with ``torch.save``. ``meta`` (class names, input size, normalisation ...) goes along: as JSON in
    the safetensors header, or as ``{"model": state_dict, "meta": meta}``."""
    state_dict = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    if str(path).endswith(SAFETENSORS_SUFFIX):
        from safetensors.torch import save

        metadata = {"format": "pt", **({"adn": json.dumps(meta)} if meta else {})}
        # safetensors refuses tensors that share memory; a state dict's tensors are cloned to be safe
        data = save({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, metadata=metadata)
        _write_atomically(path, lambda f: f.write(data))
    else:
        save_checkpoint({"model": state_dict, "meta": meta} if meta else state_dict, path)


def _verify_zip(path: Path) -> None:
    """Check the CRC-32 of every record of a ``torch.save`` (zip) file: torch.load itself does not notice
    flipped bytes inside tensor data."""
    if not zipfile.is_zipfile(path):
        return  # legacy (non-zip) torch.save format or not a PyTorch file: torch.load will tell
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"checkpoint {path} is corrupt ({exc}); use an earlier checkpoint or re-download it") from None
    if bad is not None:
        raise ValueError(
            f"checkpoint {path} is corrupt (checksum mismatch in {bad}); use an earlier checkpoint or re-download it"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:160]}" if any(c.isalpha() for c in text) else type(exc).__name__


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
    verify: bool = True,
):
    """Load a checkpoint or weights file (``torch.save`` or ``*.safetensors``) with one clear error line if
    it is missing, truncated, corrupt or not a weights file.

    ``weights_only=True`` (the default) never runs code from the file: pickled Python objects other than
    tensors and plain containers are refused (the ``argparse.Namespace`` of reference-style checkpoints is
    allowed). ``weights_only=False`` loads legacy pickles; only for files you trust. ``verify`` checks the
    zip records' checksums first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            state_dict = load_file(path, device=str(map_location))
            with safe_open(path, "pt") as f:
                header = f.metadata() or {}
        except Exception as exc:  # SafetensorError, OSError ...
            raise ValueError(
                f"cannot read safetensors file {path} ({_one_line(exc)}); is it truncated or corrupt?"
            ) from exc
        # our inference metadata (class names, input size, normalisation ...) rides in the header
        return {"model": state_dict, "meta": json.loads(header["adn"])} if "adn" in header else state_dict
    if verify:
        _verify_zip(path)
    if not weights_only:
        print(
            f"adn: warning: loading {path} with full pickle (--unsafe-pickle): a malicious file can run "
            "arbitrary code; use it only for files you trust",
            file=sys.stderr,
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc)) if weights_only else None
        if found:
            raise ValueError(
                f"{path} contains pickled Python objects ({found.group(1)}) that safe loading refuses because they "
                "can run code; if you trust the file, pass --unsafe-pickle (Python: weights_only=False)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        detail = f"UnpicklingError: {reason.group(1)[:160]}" if reason else _one_line(exc)
        raise ValueError(
            f"cannot read checkpoint {path} ({detail}); is it a corrupt, truncated or non-PyTorch file?"
        ) from exc
    except Exception as exc:  # pickle/zip/EOF errors all mean "not a readable checkpoint"
        raise ValueError(
            f"cannot read checkpoint {path} ({_one_line(exc)}); is it a corrupt, truncated or non-PyTorch file?"
        ) from exc


def extract_state_dict(obj: object, path: str | os.PathLike = "checkpoint") -> Mapping[str, torch.Tensor]:
    """The model state dict inside a loaded file: a raw state dict, or the ``model`` entry of a checkpoint."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        return obj
    raise ValueError(f"{path} holds no model weights: expected a state dict or a checkpoint with a 'model' entry")


def checkpoint_arg(obj: object, name: str) -> object:
    """A flag a training checkpoint was made with (its ``args``: a dict or the reference's Namespace), or None."""
    args = obj.get("args") if isinstance(obj, Mapping) else None
    return args.get(name) if isinstance(args, Mapping) else getattr(args, name, None)


def peek_checkpoint(path: str | os.PathLike) -> object:
    """A checkpoint file read memory-mapped (tensor data is not loaded), never running code; None when it cannot
    be read that way (not a zip checkpoint, corrupt, unsafe ...: the real load reports why). A safetensors file
    gives ``{"meta": ...}`` (its header's metadata) without loading any tensor."""
    if str(path).endswith(SAFETENSORS_SUFFIX):
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                header = f.metadata() or {}
            return {"meta": json.loads(header["adn"])} if "adn" in header else {}
        except Exception:
            return None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def peek_checkpoint_args(path: str | os.PathLike) -> dict | None:
    """The ``args`` a training checkpoint was made with (ours: a dict; the reference's: a Namespace), as a dict;
    None when the file has none or cannot be peeked at."""
    args = peek_checkpoint(path)
    args = args.get("args") if isinstance(args, Mapping) else None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    return dict(args) if isinstance(args, Mapping) else None


def peek_checkpoint_arg(path: str | os.PathLike, name: str) -> object:
    """One flag of :func:`peek_checkpoint_args` (or, for ``model`` and ``dataset``, the inference metadata's),
    or None."""
    value = (peek_checkpoint_args(path) or {}).get(name)
    if value is None and name in ("model", "dataset"):
        obj = peek_checkpoint(path)
        meta = obj.get("meta") if isinstance(obj, Mapping) else None
        value = meta.get(name) if isinstance(meta, Mapping) else None
    return value


def load_model_state(model: nn.Module, obj: object, path: str | os.PathLike, model_name: str | None = None) -> None:
    """Load the weights held by ``obj`` (a loaded file: state dict or checkpoint) into ``model``
    (:func:`load_state_dict_compat`). A misfit is one error naming the file and the keys and, when the file is a
    training checkpoint of another architecture than ``model_name``, the ``--model`` to use."""
    state_dict = extract_state_dict(obj, path)
    try:
        load_state_dict_compat(model, state_dict)
    except ValueError as exc:
        name = checkpoint_arg(obj, "model")
        other = isinstance(name, str) and name != model_name
        raise ValueError(
            f"{path}: {exc}" + (f"; it is a {name} checkpoint: pass --model {name}" if other else "")
        ) from None
