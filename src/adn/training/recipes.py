"""The recipes a run starts from when a flag is not given: the built-in preset (no ``--data-path``), the torchvision
classification reference's defaults (``--data-path``) and fine-tuning (``--pretrained``). ``adn train`` and
:func:`adn.train_config` fill unset values the same way (:func:`fill_presets`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: torchvision reference defaults, used with ``--data-path`` for every flag the user did not set
REFERENCE_DEFAULTS = dict(
    batch_size=32,
    epochs=90,
    workers=min(16, os.cpu_count() or 1),
    lr=0.1,
    weight_decay=1e-4,
    lr_scheduler="steplr",
    lr_step_size=30,
    lr_gamma=0.1,
    lr_warmup_epochs=0,
    lr_warmup_method="constant",
    print_freq=10,
    calib_images=1024,
)
#: built-in dataset preset (no ``--data-path``): trains ResNet-20-ADN in under two minutes on 2 CPU cores. The
#: linear warm-up keeps the deeper models (resnet56, mobilenet_v2_cifar) from diverging at lr 0.2: without it
#: their plainly trained nets end at 29 % and 67 % on the digits (benchmarks/results/adn-vs-plain-*.md)
BUILTIN_PRESET = dict(
    batch_size=64,
    epochs=15,
    workers=0,
    lr=0.2,
    weight_decay=5e-4,
    lr_scheduler="cosineannealinglr",
    lr_step_size=5,
    lr_gamma=0.1,
    lr_warmup_epochs=2,
    lr_warmup_method="linear",
    print_freq=10,
    # every sub-network's worst Acc@1 is the same from 128 to 1,024 images, at a quarter of the time
    # (benchmarks/results/calibration-size.md)
    calib_images=256,
)
#: with --pretrained (fine-tuning a trained plain model into an ADN), unset flags: a short schedule at a tenth of
#: the learning rate the preset would use
FINETUNE_PRESET = dict(epochs=5, lr_scale=0.1, lr_scheduler="cosineannealinglr", lr_warmup_epochs=0)


def preset_for(data_path: str | None, pretrained: str | None = None) -> dict[str, Any]:
    """The values unset flags take for this data (and fine-tuning)."""
    preset = dict(BUILTIN_PRESET if data_path is None else REFERENCE_DEFAULTS)
    if pretrained is not None:
        preset.update(
            epochs=FINETUNE_PRESET["epochs"],
            lr=preset["lr"] * FINETUNE_PRESET["lr_scale"],
            lr_scheduler=FINETUNE_PRESET["lr_scheduler"],
            lr_warmup_epochs=FINETUNE_PRESET["lr_warmup_epochs"],
        )
    return preset


def fill_presets(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (flag name -> value) with every preset key that is missing or None filled in; the preset's
    warm-up shrinks with short runs (at most ``epochs // 5``: none below 5 epochs)."""
    out = dict(values)
    for key, value in preset_for(out.get("data_path"), out.get("pretrained")).items():
        if out.get(key) is None:
            out[key] = min(value, out["epochs"] // 5) if key == "lr_warmup_epochs" else value
    return out


def default_output_dir(model: str, latest: bool = False) -> str:
    """``output/<model>``, or the first of ``output/<model>-2``, ``-3`` ... without a checkpoint, so that running
    the same command again starts a new run beside the old one (an explicit ``--output-dir`` holding a checkpoint
    is refused instead). ``latest``: the newest run that has a checkpoint (what ``--resume auto`` continues)."""
    base = Path("output") / model.replace(":", "-")
    path, previous, n = base, base, 1
    while (path / "checkpoint.pth").exists():
        previous, n = path, n + 1
        path = Path(f"{base}-{n}")
    return str(previous if latest else path)


__all__ = [
    "BUILTIN_PRESET",
    "FINETUNE_PRESET",
    "REFERENCE_DEFAULTS",
    "default_output_dir",
    "fill_presets",
    "preset_for",
]
