"""Does training one random mixed sub-network per step (sandwich-style) add anything on top of calibration?

Two ADNs of the same model, same initial weights, data order, schedule and seed (the built-in preset of
``adn train``): the standard self-distillation (super-net CE + base-net KD), and the same plus, each step, the KD
loss of one uniformly drawn mixed sub-network (neither extreme) towards the super-net. Every sub-network as
trained and calibrated, and the step-time cost. Writes ``benchmarks/results/sandwich-<model>.md``.

    python benchmarks/sandwich.py --model resnet20 --epochs 15
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import adn
from adn.evaluation.evaluate import evaluate_subnets
from adn.training.engine import StepOptions, train_one_epoch
from adn.training.fit import build_distillation
from adn.training.optim import build_optimizer, build_scheduler
from common import QUIET, calib_loader, loaders, run_config
from harness import Report, Stopwatch, table


def sandwich_epoch(model, distill, optimizer, loader, configs, rng) -> int:
    """One epoch of super CE + base KD + one random mixed sub-network's KD per step."""
    ce, steps = nn.CrossEntropyLoss(), 0
    model.train()
    for image, target in loader:
        optimizer.zero_grad(set_to_none=True)
        teacher = model(image, skip=(False,) * model.num_stages)
        distill.super_loss(teacher, target, ce).backward()
        teacher = teacher.detach()
        for skip in ((True,) * model.num_stages, rng.choice(configs)):
            distill.base_loss(teacher, model(image, skip=skip)).backward()
        optimizer.step()
        steps += 1
    return steps


def train(name: str, args, size: int, sandwich: bool):
    loader, _, sampler, classes = loaders(args, size)
    torch.manual_seed(args.run.seed)
    model = adn.create_model(name, num_classes=len(classes))
    distill = build_distillation(args.distill, len(classes))
    optimizer = build_optimizer(model, args.optim)
    scheduler, rng = build_scheduler(optimizer, args.optim), random.Random(args.run.seed)
    mixed = [s for s in adn.skip_configs(model) if any(s) and not all(s)]
    clock, steps = Stopwatch(), 0
    for epoch in range(args.optim.epochs):
        sampler.set_epoch(epoch)
        torch.manual_seed(args.run.seed + epoch)
        if sandwich:
            steps += sandwich_epoch(model, distill, optimizer, loader, mixed, rng)
        else:
            options = StepOptions(print_freq=QUIET)
            steps += train_one_epoch(
                model, distill, nn.CrossEntropyLoss(), optimizer, loader, "cpu", epoch, options
            ).steps
        scheduler.step()
    return model, 1e3 * clock.seconds / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/sandwich-<model>.md")
    opts = parser.parse_args(argv)
    out = Path(opts.output or Path(__file__).parent / "results" / f"sandwich-{opts.model}.md")
    title = f"Sandwich (one random mixed sub-network per step) vs the standard ADN step: {opts.model}, digits"
    report = Report(out, title, script=__file__, argv=argv)
    args = run_config(opts.model, epochs=opts.epochs, seed=opts.seed)
    size = adn.model_info(opts.model).input_size
    _, val_set, _ = adn.data.build_datasets(None, image_size=size)
    val = DataLoader(val_set, batch_size=256)
    calib = calib_loader(args, size)
    results = {}

    def run(sandwich: bool) -> None:
        model, step_ms = train(opts.model, args, size, sandwich)
        rows = evaluate_subnets(model, val, "cpu", column="trained")
        adn.calibrate(model, calib, batches=len(calib))
        for row, new in zip(rows, evaluate_subnets(model, val, "cpu"), strict=True):
            row["calibrated"] = new["acc1"]
        results[sandwich] = (rows, step_ms)

    for sandwich in (False, True):
        report.guard("+ sandwich" if sandwich else "ADN", lambda sandwich=sandwich: run(sandwich))
    if len(results) == 2:
        (plain, t0), (sand, t1) = results[False], results[True]
        columns = (
            "sub-network",
            "ADN as trained",
            "ADN calibrated",
            "+ sandwich, as trained",
            "+ sandwich, calibrated",
        )
        report.add("results", f"Step time {t0:.0f} ms vs {t1:.0f} ms ({t1 / t0:.2f}x).", *table(*columns))
        for a, b in zip(plain, sand, strict=True):
            cells = (f"{a['trained']:.2f}", f"{a['calibrated']:.2f}", f"{b['trained']:.2f}", f"{b['calibrated']:.2f}")
            report.row("results", a["skip"], *cells)
        for label, rows in (("ADN", plain), ("+ sandwich", sand)):
            cal = [r["calibrated"] for r in rows]
            summary = f"{label}: calibrated min {min(cal):.2f}, max {max(cal):.2f}, mean {sum(cal) / len(cal):.2f}"
            report.add("summary", summary, "")
    report.finish()


if __name__ == "__main__":
    main()
