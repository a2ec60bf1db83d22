"""What the benchmarks share about models and data (the report, the guard and the clock are in ``harness.py``).

The comparison benchmarks train an ADN, the same network plainly, and a plain network of the base-net's depth,
with the trainer's own data pipeline, optimiser and schedule (the flags of ``adn train``), then measure every
sub-network as trained and with per-sub-network BatchNorm calibration. The deployment benchmarks (``switchable``,
``int8``) share an onnxruntime session, norms randomised as training leaves them, and a briefly trained resnet20.

Plain training is cross-entropy on the super-net only; its sub-networks are *naive skipping* (the skipped net
keeps the main norms, its twins being copies of them). The shallow net is a fresh copy of the base-net
(``adn.export_subnet`` of an untrained model: the same layers, nothing skipped), trained plainly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import adn
from adn.core.network import init_skip_norms_from_main
from adn.data import build_data, calibration_loader
from adn.evaluation.evaluate import evaluate, evaluate_subnets
from adn.training.config import TrainConfig
from adn.training.engine import StepOptions, train_one_epoch
from adn.training.fit import QUIET, build_distillation
from adn.training.losses import SelfDistillation
from adn.training.optim import build_optimizer, build_scheduler
from harness import Stopwatch

#: Acc@1 points within which two runs on Fashion-MNIST's 10,000 test images tie: 1.96 * sqrt(p (1 - p) / 10,000)
#: at p = 0.9 is 0.59; differences below 0.3 are noise here
NOISE = 0.3
#: The paper's Acc@1 gains (points) of ResNet-50-ADN's super-net and base-net on ImageNet over the same depth
#: trained alone
PAPER_GAIN = {"super": 0.9, "base": 1.1}


def run_config(model: str, **flags) -> TrainConfig:
    """The config ``adn train --model MODEL --flag value ...`` would run with (one process, CPU), flags by name
    (``epochs=5``, ``subpath_alpha=0.7``)."""
    return adn.train_config(model, device="cpu", print_freq=QUIET, output_dir="/nonexistent", **flags)


def flags_of(text: str) -> dict:
    """``"--subpath-alpha 0.7 --epochs 10"`` -> ``{"subpath_alpha": 0.7, "epochs": 10}`` (a benchmark's variants,
    written as the flags of ``adn train``)."""
    import ast
    import shlex

    words, out = shlex.split(text), {}
    for flag, value in zip(words[::2], words[1::2], strict=True):
        try:
            out[flag.lstrip("-").replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[flag.lstrip("-").replace("-", "_")] = value
    return out


def recipe(config: TrainConfig) -> str:
    """The optimisation recipe a run used, in words, for the results files."""
    o = config.optim
    warm = f", {o.lr_warmup_method} warm-up {o.lr_warmup_epochs} ep." if o.lr_warmup_epochs else ""
    return (
        f"{o.opt.upper()} lr {o.lr:g}, {o.lr_scheduler}{warm}, wd {o.weight_decay:g}, batch "
        f"{config.data.batch_size}, {o.epochs} epochs, seed {config.run.seed}"
    )


@dataclass
class Trained:
    name: str
    model: nn.Module
    seconds: float
    step_ms: float
    rows: list[dict] = field(default_factory=list)


def train_epochs(config: TrainConfig, model, step, loader, sampler) -> tuple[float, float]:
    """The config's epochs of ``step(model, optimizer, loader, epoch) -> steps`` with its optimiser and schedule,
    the same data order for every model (the sampler's epoch and a per-epoch seed); returns the training seconds
    and milliseconds per step (data loading included)."""
    optimizer, clock, steps = build_optimizer(model, config.optim), Stopwatch(), 0
    scheduler = build_scheduler(optimizer, config.optim)
    for epoch in range(config.optim.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(config.run.seed + epoch)
        model.train()
        steps += step(model, optimizer, loader, epoch)
        scheduler.step()
    seconds = clock.seconds
    return seconds, 1e3 * seconds / max(1, steps)


def plain_epoch(model, optimizer, loader, epoch) -> int:
    """One epoch of plain training: cross-entropy on ``model(image)`` (an ADN's super-net, or any classifier)."""
    criterion, n = nn.CrossEntropyLoss(), 0
    for image, target in loader:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(image), target).backward()
        optimizer.step()
        n += 1
    return n


def adn_epoch(distill: SelfDistillation, device: torch.device | str = "cpu"):
    """A ``step`` for :func:`train_epochs`: one epoch of the trainer's self-distillation (``train_one_epoch``)."""

    def step(model, optimizer, data, epoch) -> int:
        options = StepOptions(print_freq=QUIET)
        return train_one_epoch(model, distill, nn.CrossEntropyLoss(), optimizer, data, device, epoch, options).steps

    return step


def loaders(config: TrainConfig, image_size: int):
    """The trainer's training data of ``config`` (one process, CPU): train loader, val loader, sampler, classes."""
    return build_data(config.data, image_size, torch.device("cpu"), config.run.seed, model=config.model)


def calib_loader(config: TrainConfig, image_size: int, images: int | None = None):
    """The trainer's calibration images (``images``, default the config's ``calib_images``)."""
    return calibration_loader(config.data, image_size, images or config.run.calib_images, config.run.seed)


def train_three(model_name: str, args: TrainConfig, image_size: int) -> dict[str, Trained]:
    """ADN (self-distillation), plain (the same network, CE on the super-net) and shallow (the base-net's layers,
    CE), same initial weights, data order, schedule and seed."""
    device = torch.device("cpu")
    loader, _, sampler, classes = loaders(args, image_size)
    distill = build_distillation(args.distill, len(classes))
    out = {}
    torch.manual_seed(args.run.seed)
    net = adn.create_model(model_name, num_classes=len(classes))
    shallow = adn.export_subnet(adn.create_model(model_name, num_classes=len(classes)), True).train()
    plain = adn.create_model(model_name, num_classes=len(classes))
    plain.load_state_dict(net.state_dict())  # the same initial weights as the ADN
    for name, model, step in (
        ("adn", net, adn_epoch(distill, device)),
        ("plain", plain, plain_epoch),
        ("shallow", shallow, plain_epoch),
    ):
        seconds, step_ms = train_epochs(args, model, step, loader, sampler)
        out[name] = Trained(name, model, seconds, step_ms)
    init_skip_norms_from_main(out["plain"].model)  # naive skipping keeps the main norms
    return out


def recalibrate_plain(model: nn.Module, loader) -> None:
    """A plain network's BatchNorm statistics re-estimated on ``loader`` (cumulative average, train mode, no
    gradient): what :func:`adn.calibrate` does for each sub-network, for a network that has only one."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for image, _ in loader:
            model(image)
    model.eval()


def plain_row(model: nn.Module, val_loader, calib_loader) -> dict:
    """A plain network's Acc@1 as trained (``acc1_trained``), then with its BatchNorm statistics re-estimated on
    ``calib_loader`` (``acc1_calibrated``; the model keeps them)."""
    row = {"acc1_trained": evaluate(model, val_loader, "cpu", print_freq=QUIET)["acc1"]}
    recalibrate_plain(model, calib_loader)
    row["acc1_calibrated"] = evaluate(model, val_loader, "cpu", print_freq=QUIET)["acc1"]
    return row


def measure(trained: dict[str, Trained], val_loader, args: TrainConfig, image_size: int) -> float:
    """Every sub-network of the ADN and of the plain net (naive skipping), and the shallow net, as trained and
    calibrated, into each ``Trained.rows``; returns the calibration time of all ADN sub-networks in seconds."""
    calib = calib_loader(args, image_size)
    seconds = 0.0
    for name in ("adn", "plain"):
        t = trained[name]
        t.rows, calib_s = subnet_rows(t.model, val_loader, calib)
        if name == "adn":
            seconds = calib_s
    shallow = trained["shallow"]
    shallow.rows = [{"skip": "T" * trained["adn"].model.num_stages, **plain_row(shallow.model, val_loader, calib)}]
    return seconds


def subnet_rows(model: nn.Module, val_loader, calib_loader, resolution: int | None = None) -> tuple[list[dict], float]:
    """Every sub-network of ``model`` as trained (``acc1_trained``), then calibrated on ``calib_loader``
    (``acc1_calibrated``; the model keeps the calibration), GFLOPs at ``resolution`` (default: the model's input
    size); returns the rows and the calibration seconds."""
    device = torch.device("cpu")
    rows = evaluate_subnets(model, val_loader, device, resolution, column="acc1_trained")
    with Stopwatch() as clock:
        adn.calibrate(model, calib_loader, batches=len(calib_loader))
    for row, new in zip(rows, evaluate_subnets(model, val_loader, device, resolution), strict=True):
        row["acc1_calibrated"] = new["acc1"]
    return rows, clock.seconds


def table(trained: dict[str, Trained]) -> list[str]:
    """Markdown rows: every sub-network, ADN vs plain (naive skipping), as trained / calibrated."""
    lines = [
        "| sub-network | GFLOPs | ADN as trained | ADN calibrated | plain, naive skip, as trained | "
        "plain, naive skip, calibrated |",
        "|---|---|---|---|---|---|",
    ]
    for a, p in zip(trained["adn"].rows, trained["plain"].rows, strict=True):
        tag = " (super)" if "T" not in a["skip"] else " (base)" if "F" not in a["skip"] else ""
        lines.append(
            f"| {a['skip']}{tag} | {a['gflops']:.4f} | {a['acc1_trained']:.2f} | {a['acc1_calibrated']:.2f} "
            f"| {p['acc1_trained']:.2f} | {p['acc1_calibrated']:.2f} |"
        )
    s = trained["shallow"].rows[0]
    lines.append(
        f"| shallow net (base-net's layers) trained alone | {trained['adn'].rows[-1]['gflops']:.4f} | – | – "
        f"| {s['acc1_trained']:.2f} | {s['acc1_calibrated']:.2f} |"
    )
    return lines


# ------------------------------------------------------------------------------------------- deployment
def ort_session(path: Path, threads: int):
    """An onnxruntime CPU session of ``path`` (ORT_ENABLE_ALL, ``threads`` intra-op threads, no spinning)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # idle onnxruntime threads spin by default: on a small shared CPU they would steal the cores PyTorch times on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def trained_like(model: nn.Module) -> nn.Module:
    """Random norm parameters and statistics, as training leaves them: a freshly made model's (1, 0, 0, 1) norms
    fold away in the exporters and every one of them reads the same deduplicated constants."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for t, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                t.data.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
    return model


def train_resnet20(epochs: int) -> nn.Module:
    """The tests' briefly trained resnet20 (``tests/helpers.py``): one recipe for the tests and the INT8 rows."""
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from helpers import train_resnet20 as train

    return train(epochs)


__all__ = [
    "NOISE",
    "PAPER_GAIN",
    "QUIET",
    "Trained",
    "adn_epoch",
    "measure",
    "ort_session",
    "plain_epoch",
    "plain_row",
    "recalibrate_plain",
    "calib_loader",
    "flags_of",
    "loaders",
    "recipe",
    "run_config",
    "subnet_rows",
    "table",
    "train_epochs",
    "train_resnet20",
    "trained_like",
    "train_three",
]
