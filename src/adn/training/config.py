"""What a run is asked to do, as small frozen dataclasses: the only thing the library below :mod:`adn.cli` is
given. ``adn train`` parses its flags into a :class:`TrainConfig` once; a script builds the same object::

    config = adn.train_config("resnet20", epochs=3, seed=1)        # unset values: the presets of adn train
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=0.05))
    adn.fit(config)                                                # what `adn train --epochs 3 --seed 1` runs

Each field is named after its flag (``--lr`` -> ``OptimConfig.lr``), so a checkpoint's flat ``args`` dict (the
reference layout) maps to a config and back (:meth:`TrainConfig.from_flat`, :meth:`TrainConfig.flat`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from, how they are batched and transformed (augmentation included)."""

    data_path: str | None = None
    dataset: str = "digits"
    download: bool = False
    batch_size: int = 64
    workers: int = 0
    interpolation: str = "bilinear"
    train_crop_size: int | None = None
    val_resize_size: int | None = None
    val_crop_size: int | None = None
    train_subset: int | None = None
    val_subset: int | None = None
    bad_images: str = "stop"
    auto_augment: str | None = None
    ra_magnitude: int = 9
    augmix_severity: int = 3
    random_erase: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ra_sampler: bool = False
    ra_reps: int = 3

    def builtin_kwargs(self) -> dict[str, Any]:
        """The built-in dataset's choice, for the data builders (nothing for the default digits)."""
        return {"dataset": self.dataset, "download": self.download} if self.dataset != "digits" else {}


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, learning-rate schedule, epochs and weight EMA (the torchvision reference's flags)."""

    epochs: int = 15
    opt: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    norm_weight_decay: float | None = None
    bias_weight_decay: float | None = None
    transformer_embedding_decay: float | None = None
    label_smoothing: float = 0.0
    lr_scheduler: str = "cosineannealinglr"
    lr_warmup_epochs: int = 2
    lr_warmup_method: str = "linear"
    lr_warmup_decay: float = 0.01
    lr_step_size: int = 5
    lr_multi_steps: tuple[int, ...] | None = None
    lr_gamma: float = 0.1
    lr_min: float = 0.0
    clip_grad_norm: float | None = None
    model_ema: bool = False
    model_ema_steps: int = 32
    model_ema_decay: float = 0.99998


@dataclass(frozen=True)
class DistillConfig:
    """Self-distillation: the super-net's CE weight ``alpha``, the temperature, the top-k classes distilled;
    feature self-distillation (``fpn``); an external teacher (``teacher``, its local ``teacher_weights``, ``compile``
    it: the reference's ``train_adn_distill.py --compile``)."""

    subpath_alpha: float = 0.5
    subpath_temp: float = 1.0
    kd_topk: int | None = None
    fpn: bool = False
    teacher: str | None = None
    teacher_weights: str | None = None
    compile: bool = False


@dataclass(frozen=True)
class RunConfig:
    """How the steps run: device, seed, precision, determinism, progress output, the final calibration,
    ``torch.compile``, the dataset index cache, and the process group to join outside torchrun."""

    device: str = "cpu"
    seed: int = 0
    amp: bool = False
    amp_dtype: str | None = None
    sync_bn: bool = False
    channels_last: bool = False
    use_deterministic_algorithms: bool = False
    max_steps: int | None = None
    print_freq: int = 10
    quiet: bool = False
    calib_images: int = 1024
    torch_compile: bool = False
    cache_dataset: bool = False
    #: torch CPU threads, a count or "auto": one per core other processes leave free, probed again every epoch
    threads: str = "auto"
    #: the ``--world-size`` flag (srun tasks without torchrun), not the group's actual size: that is
    #: ``DistState.world_size``, which a checkpoint's ``args`` record as ``world_size`` (the reference layout)
    dist_world_size: int | None = None
    dist_url: str = "env://"


@dataclass(frozen=True)
class CheckpointConfig:
    """Where the weights come from (``resume``, ``weights``, ``pretrained``) and where the run's files go."""

    output_dir: str = "output/resnet20"
    keep_checkpoints: str = "2"
    start_epoch: int = 0
    resume: str | None = None
    weights: str | None = None
    pretrained: str | None = None
    unsafe_pickle: bool = False
    #: flags taken from the resumed checkpoint (reported once at resume)
    restored: tuple[str, ...] = ()


_SECTIONS = {
    "data": DataConfig,
    "optim": OptimConfig,
    "distill": DistillConfig,
    "run": RunConfig,
    "checkpoint": CheckpointConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``adn train`` runs with, by section."""

    model: str = "resnet20"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From flag name -> value (a checkpoint's ``args``, the resolved flags); other keys are ignored."""
        sections = {}
        for name, kind in _SECTIONS.items():
            taken = {f.name: values[f.name] for f in fields(kind) if f.name in values}
            if taken.get("lr_multi_steps") is not None:
                taken["lr_multi_steps"] = tuple(taken["lr_multi_steps"])
            if "restored" in taken:
                taken["restored"] = tuple(taken["restored"])
            sections[name] = kind(**taken)
        return cls(model=values.get("model", cls.model), **sections)

    def flat(self) -> dict[str, Any]:
        """Flag name -> value, the layout of a checkpoint's ``args`` (lists for flags that take several values)."""
        out: dict[str, Any] = {"model": self.model}
        for name in _SECTIONS:
            section = getattr(self, name)
            out.update({f.name: getattr(section, f.name) for f in fields(section)})
        for key in ("lr_multi_steps", "restored"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def replace(self, **flags: Any) -> TrainConfig:
        """A copy with some flags changed, by flag name (``config.replace(lr=0.05, epochs=3)``)."""
        unknown = set(flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown training setting(s) {', '.join(sorted(unknown))}; known: {', '.join(FLAGS)}")
        return TrainConfig.from_flat({**self.flat(), **flags})


#: every flag name a TrainConfig holds, and the section it lives in
FLAGS: dict[str, str] = {
    "model": "",
    **{f.name: section for section, kind in _SECTIONS.items() for f in fields(kind)},
}


@dataclass(frozen=True)
class EvalConfig:
    """What ``adn eval`` (``adn train --test-only``) evaluates: a file's model on the validation data."""

    model: str
    source: str  #: the checkpoint or weights file
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "cpu"
    model_ema: bool = False
    no_calibration: bool = False
    unsafe_pickle: bool = False
    #: one sub-network (e.g. ``"TTFF"``; None: the super-net), unless ``all_subnets``
    skip_cfg: str | None = None
    all_subnets: bool = False
    format: str = "table"
    output: str | None = None
    channels_last: bool = False
    print_freq: int = 10
    quiet: bool = False


def train_config(model: str = "resnet20", **flags: Any) -> TrainConfig:
    """The config ``adn train --model MODEL --flag value ...`` runs with: flags by name (``epochs=3``,
    ``data_path="/data/imagenet"``); unset ones take the presets (:mod:`adn.training.recipes`), the output directory
    ``output/<model>`` (or the next free ``-2``, ``-3`` ...)."""
    from ..models.registry import resolve_model_name
    from .recipes import BUILTIN_PRESET, default_output_dir, fill_presets

    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(sorted(unknown))}; known: {', '.join(FLAGS)}")
    model = resolve_model_name(model)
    values = fill_presets({**dict.fromkeys(BUILTIN_PRESET), **flags})
    values.setdefault("output_dir", default_output_dir(model))
    return TrainConfig.from_flat({**values, "model": model})


__all__ = [
    "CheckpointConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "FLAGS",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "train_config",
]
