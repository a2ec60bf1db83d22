"""adn — Adaptive Depth Networks: one network, trained once, run at many depths.

>>> import adn
>>> model = adn.create_model("resnet50")
>>> logits = model(images, skip="TTFF")   # skip the 2nd halves of stages 1 and 2
>>> model.skip = "TTTT"                    # default for plain model(x): the base-net
>>> net = adn.convert(torchvision.models.convnext_tiny())  # any residual classifier, in place
"""

try:  # torchvision built for another torch fails here with an error that does not say so
    import torchvision  # noqa: F401
except (ImportError, RuntimeError) as _exc:
    import sys as _sys
    from pathlib import Path as _Path

    from .errors import torchvision_mismatch

    if _Path(_sys.argv[0]).name in ("adn", "train_adn.py"):  # the command line: one line, as for any error
        raise SystemExit(f"adn: error: {torchvision_mismatch(_exc)}") from None
    raise ImportError(torchvision_mismatch(_exc)) from None

from . import models  # noqa: F401  (registers the architectures)
from .conversion import convert, create_converted
from .core.calibrate import calibrate, clear_calibration, is_calibrated
from .core.checkpoint import save_weights
from .core.flops import count_flops, count_params
from .core.modules import convert_sync_batchnorm, unwrap
from .core.network import (
    AdaptiveDepthNet,
    SkipAwareNorm,
    Stage,
    format_skip,
    parse_skip,
)
from .core.skipconfig import skip_configs, subnets
from .deploy.bench import bench_subnets, select_subnet
from .deploy.export import export_subnet
from .deploy.export_switchable import export_switchable
from .deploy.switchable import SwitchableNet, switchable
from .evaluation.evaluate import evaluate
from .hub import from_pretrained, push_to_hub, save_pretrained
from .models.registry import ModelInfo, create_model, is_model, list_models, model_info, register_model
from .models.weights import load_weights
from .training.config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    train_config,
)
from .training.engine import distillation_step, train_one_epoch
from .training.losses import SelfDistillation, TeacherDistillation, distillation_loss

__version__ = "0.1.0"


def fit(config: TrainConfig):
    """Run a :class:`TrainConfig` -- what ``adn train`` runs; returns a :class:`adn.training.fit.FitResult` (the
    files and the final sub-network table). See :func:`adn.training.fit.fit`."""
    from .training.fit import fit as _fit

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
    "from_pretrained",
    "is_calibrated",
    "is_model",
    "list_models",
    "load_weights",
    "model_info",
    "parse_skip",
    "push_to_hub",
    "register_model",
    "save_pretrained",
    "save_weights",
    "select_subnet",
    "skip_configs",
    "subnets",
    "switchable",
    "train_one_epoch",
    "unwrap",
]
