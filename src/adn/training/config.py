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
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..data.config import DataConfig
from ..errors import at_least, at_most, one_of
from .recipes import default_output_dir, fill_presets, preset_for

OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop", "adamw")
SCHEDULERS = ("steplr", "multisteplr", "cosineannealinglr", "exponentiallr")
WARMUP_METHODS = ("constant", "linear")
AMP_DTYPES = ("bf16", "fp16")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser, learning-rate schedule, epochs and weight EMA (the torchvision reference's flags)."""

    epochs: int | None = None
    opt: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    norm_weight_decay: float | None = None
    bias_weight_decay: float | None = None
    transformer_embedding_decay: float | None = None
    label_smoothing: float = 0.0
    lr_scheduler: str | None = None
    lr_warmup_epochs: int | None = None
    lr_warmup_method: str | None = None
    lr_warmup_decay: float = 0.01
    lr_step_size: int | None = None
    lr_multi_steps: tuple[int, ...] | None = None
    lr_gamma: float | None = None
    lr_min: float = 0.0
    clip_grad_norm: float | None = None
    model_ema: bool = False
    model_ema_steps: int = 32
    model_ema_decay: float = 0.99998

    def __post_init__(self) -> None:
        one_of(self, "opt", OPTIMIZERS)
        one_of(self, "lr_scheduler", SCHEDULERS)
        one_of(self, "lr_warmup_method", WARMUP_METHODS)
        at_least(self, 0, "lr", "lr_gamma", "lr_warmup_decay", "clip_grad_norm", above=True)
        at_least(self, 0, "epochs", "momentum", "lr_warmup_epochs", "lr_min", "label_smoothing", "model_ema_decay")
        at_least(self, 0, "weight_decay", "norm_weight_decay", "bias_weight_decay", "transformer_embedding_decay")
        at_least(self, 1, "lr_step_size", "model_ema_steps")
        at_most(self, 1, "label_smoothing", "model_ema_decay")


@dataclass(frozen=True)
class DistillConfig:
    """Self-distillation: the super-net's CE weight ``alpha``, the temperature, the top-k classes distilled;
    feature self-distillation (``fpn``); an external teacher (``teacher``, its local ``teacher_weights``, ``compile``
    it: the reference's ``train_adn_distill.py --compile``)."""

    subpath_alpha: float = 0.5
    subpath_temp: float | None = None  #: None: 1, or 2 with a teacher (the reference's train_adn_distill.py)
    kd_topk: int | None = None
    fpn: bool = False
    teacher: str | None = None
    teacher_weights: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        at_least(self, 0, "subpath_alpha")
        at_most(self, 1, "subpath_alpha")
        at_least(self, 0, "subpath_temp", above=True)
        at_least(self, 1, "kd_topk")
        if self.teacher_weights is not None and self.teacher is None:
            raise ValueError("teacher_weights is set without a teacher: give teacher (e.g. 'tv:resnet152') too")


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
    print_freq: int | None = None
    quiet: bool = False
    calib_images: int | None = None
    torch_compile: bool = False
    cache_dataset: bool = False
    #: torch CPU threads, a count or "auto": one per core other processes leave free, probed again every epoch
    threads: str = "auto"
    #: the ``--world-size`` flag (srun tasks without torchrun), not the group's actual size: that is
    #: ``DistState.world_size``, which a checkpoint's ``args`` record as ``world_size`` (the reference layout)
    dist_world_size: int | None = None
    dist_url: str = "env://"

    def __post_init__(self) -> None:
        one_of(self, "amp_dtype", AMP_DTYPES)
        at_least(self, 1, "max_steps", "print_freq", "dist_world_size")
        at_least(self, 0, "calib_images")


@dataclass(frozen=True)
class CheckpointConfig:
    """Where the weights come from (``resume``, ``weights``, ``pretrained``) and where the run's files go."""

    output_dir: str | None = None  #: None: ``output/<model>`` (or the next free ``-2``, ``-3`` ...)
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

    def __post_init__(self) -> None:
        # One source of defaults: a value left None takes the recipe for this data (training.recipes), the same
        # way ``adn train`` and :func:`train_config` fill their unset flags.
        if self.distill.subpath_temp is None:  # the reference's: T = 2 with an external teacher, else 1
            temperature = 2.0 if self.distill.teacher else 1.0
            object.__setattr__(self, "distill", replace(self.distill, subpath_temp=temperature))
        flat = self.flat()
        if all(flat[k] is not None for k in _FILLED) and flat["output_dir"] is not None:
            return
        from ..models.registry import resolve_model_name  # an unknown model: one line naming the known ones

        filled = fill_presets(flat)
        if filled["output_dir"] is None:
            filled["output_dir"] = default_output_dir(resolve_model_name(self.model))
        for name, kind in _SECTIONS.items():
            object.__setattr__(self, name, _section(kind, filled))

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From flag name -> value (a checkpoint's ``args``, the resolved flags); other keys are ignored."""
        sections = {name: _section(kind, values) for name, kind in _SECTIONS.items()}
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


def _section(kind: type, values: Mapping[str, Any]) -> Any:
    """The ``kind`` section of flag name -> value (lists of multi-value flags as tuples); missing flags: defaults."""
    taken = {f.name: values[f.name] for f in fields(kind) if f.name in values}
    for key in ("lr_multi_steps", "restored"):
        if taken.get(key) is not None:
            taken[key] = tuple(taken[key])
    return kind(**taken)


#: the flags a recipe fills when they are None
_FILLED = ("batch_size", "workers", "epochs", "lr", "weight_decay", "lr_scheduler", "lr_step_size", "lr_gamma")
_FILLED += ("lr_warmup_epochs", "lr_warmup_method", "print_freq", "calib_images")

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

    def __post_init__(self) -> None:
        if self.data.batch_size is None or self.data.workers is None:  # the recipe's for this data, as in training
            recipe = preset_for(self.data.data_path)
            batch_size = self.data.batch_size if self.data.batch_size is not None else recipe["batch_size"]
            workers = self.data.workers if self.data.workers is not None else recipe["workers"]
            object.__setattr__(self, "data", replace(self.data, batch_size=batch_size, workers=workers))
        one_of(self, "format", ("table", "csv", "json"))


def train_config(model: str = "resnet20", **flags: Any) -> TrainConfig:
    """The config ``adn train --model MODEL --flag value ...`` runs with: flags by name (``epochs=3``,
    ``data_path="/data/imagenet"``); unset ones take the presets (:mod:`adn.training.recipes`), the output directory
    ``output/<model>`` (or the next free ``-2``, ``-3`` ...)."""
    from ..models.registry import resolve_model_name

    unknown = set(flags) - set(FLAGS)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(sorted(unknown))}; known: {', '.join(FLAGS)}")
    return TrainConfig.from_flat({**flags, "model": resolve_model_name(model)})


__all__ = [
    "OPTIMIZERS",  # DataConfig: defined with the data (adn.data.config), part of a TrainConfig here
    "SCHEDULERS",
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
