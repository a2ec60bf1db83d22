"""adn — Adaptive Depth Networks: one network, trained once, run at many depths.

>>> import adn
>>> model = adn.create_model("resnet50")
>>> logits = model(images, skip="TTFF")   # skip the 2nd halves of stages 1 and 2
>>> model.skip = "TTTT"                    # default for plain model(x): the base-net
>>> net = adn.convert(torchvision.models.convnext_tiny())  # any residual classifier, in place
"""

from . import models  # noqa: F401  (registers the architectures)
from .bench import bench_subnets, select_subnet
from .calibrate import calibrate, clear_calibration, is_calibrated
from .checkpoint import load_weights, save_weights
from .config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    train_config,
)
from .conversion import convert, create_converted, load_pretrained
from .engine import distillation_step, train_one_epoch
from .evaluation import evaluate
from .export import export_subnet
from .export_switchable import export_switchable
from .flops import count_flops, count_params
from .losses import SelfDistillation, TeacherDistillation, distillation_loss
from .registry import ModelInfo, create_model, list_models, model_info, register_model
from .skip import (
    AdaptiveDepthNet,
    SkipAwareNorm,
    Stage,
    convert_sync_batchnorm,
    format_skip,
    parse_skip,
    subnets,
)
from .switchable import SwitchableNet, switchable

__version__ = "0.1.0"


def fit(config: TrainConfig) -> int:
    """Run a :class:`TrainConfig` -- what ``adn train`` runs (see :func:`adn.train.fit`)."""
    from .train import fit as _fit

    return _fit(config)


__all__ = [
    "AdaptiveDepthNet",
    "CheckpointConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "fit",
    "train_config",
    "SelfDistillation",
    "ModelInfo",
    "SkipAwareNorm",
    "SwitchableNet",
    "Stage",
    "TeacherDistillation",
    "bench_subnets",
    "calibrate",
    "clear_calibration",
    "convert_sync_batchnorm",
    "count_flops",
    "convert",
    "count_params",
    "create_converted",
    "create_model",
    "distillation_loss",
    "distillation_step",
    "evaluate",
    "export_subnet",
    "export_switchable",
    "format_skip",
    "is_calibrated",
    "list_models",
    "load_pretrained",
    "load_weights",
    "model_info",
    "parse_skip",
    "register_model",
    "save_weights",
    "select_subnet",
    "subnets",
    "switchable",
    "train_one_epoch",
]
