"""Which of the method's knobs close the gap between the ADN's sub-networks and networks trained alone?

On Fashion-MNIST, the same model trained as an ADN once per *variant* (extra ``adn train`` flags: the distillation
weight ``--subpath-alpha``, temperature ``--subpath-temp``, ``--kd-topk``, ``--epochs`` ...), next to the plain
network and a plain network of the base-net's depth trained alone with the variant's epochs; same initial weights,
data order and seed. Calibration size is a knob of its own (``--calib-sizes``: the first variant's ADN
re-calibrated with each). Writes ``benchmarks/results/distill-knobs-<model>.md``: per variant, super-net and
base-net as trained and calibrated, the mixed sub-networks' calibrated range, and the two gaps.

    python benchmarks/distill_knobs.py --model resnet20 --train-subset 12000 --epochs 5 \\
        --variants "" "--subpath-alpha 0.7" "--subpath-alpha 0.3" "--subpath-temp 2" "--epochs 10"
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import adn
from adn.training.fit import build_distillation
from common import (
    NOISE,
    adn_epoch,
    calib_loader,
    flags_of,
    loaders,
    plain_epoch,
    plain_row,
    recipe,
    run_config,
    subnet_rows,
    train_epochs,
)
from harness import Report, Stopwatch, table


def alone(name: str, args, size: int, val, depth: str) -> dict:
    """A plain network trained alone with ``args`` (``depth``: "super" = the full network, "base" = the base-net's
    layers), as trained and BatchNorm-recalibrated on the calibration images."""
    loader, _, sampler, classes = loaders(args, size)
    torch.manual_seed(args.run.seed)
    model = adn.create_model(name, num_classes=len(classes))
    if depth == "base":
        model = adn.export_subnet(model, True).train()
    train_epochs(args, model, plain_epoch, loader, sampler)
    return plain_row(model, val, calib_loader(args, size))


def train_adn(name: str, args, size: int):
    """The ADN of ``args`` and its training minutes."""
    loader, _, sampler, classes = loaders(args, size)
    torch.manual_seed(args.run.seed)
    model = adn.create_model(name, num_classes=len(classes))
    seconds, _ = train_epochs(args, model, adn_epoch(build_distillation(args.distill, len(classes))), loader, sampler)
    return model, seconds / 60


def variant_cells(model, args, size: int, val, references: dict, minutes: float) -> list[str]:
    """A variant's row: super- and base-net as trained / calibrated, the mixed range, the nets trained alone, gaps."""
    rows, _ = subnet_rows(model, val, calib_loader(args, size))
    ref = references[args.optim.epochs]
    sup, bas, mixed = rows[0], rows[-1], [r["acc1_calibrated"] for r in rows[1:-1]]
    return [
        f"{sup['acc1_trained']:.2f} / {sup['acc1_calibrated']:.2f}",
        f"{bas['acc1_trained']:.2f} / {bas['acc1_calibrated']:.2f}",
        f"{min(mixed):.2f}–{max(mixed):.2f}",
        f"{ref['super']['acc1_calibrated']:.2f}",
        f"{ref['base']['acc1_calibrated']:.2f}",
        f"{sup['acc1_calibrated'] - ref['super']['acc1_calibrated']:+.2f}",
        f"{bas['acc1_calibrated'] - ref['base']['acc1_calibrated']:+.2f}",
        f"{minutes:.1f}",
    ]


def calibration_sizes(report: Report, variant: str, model, args, sizes: list[int], size: int, val) -> None:
    """The variant's ADN re-calibrated on each number of images: super, base, mixed range."""
    report.add(
        "calibration",
        f"Calibration size ({variant or 'reference recipe'}'s ADN re-calibrated):",
        *table("calibration images", "super", "base", "mixed (min–max)"),
    )
    for n in sizes:
        rows, _ = subnet_rows(model, val, calib_loader(args, size, n))
        cal = [r["acc1_calibrated"] for r in rows]
        report.row("calibration", n, f"{cal[0]:.2f}", f"{cal[-1]:.2f}", f"{min(cal[1:-1]):.2f}–{max(cal[1:-1]):.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=["", "--subpath-alpha 0.7", "--subpath-temp 2"])
    parser.add_argument("--calib-sizes", type=int, nargs="*", default=[256, 1024, 4096])
    parser.add_argument("--output", default=None)
    opts = parser.parse_args(argv)
    base = ["--dataset", "fashion-mnist", "--epochs", str(opts.epochs), "--seed", str(opts.seed)]
    if opts.train_subset:
        base += ["--train-subset", str(opts.train_subset)]
    size = adn.model_info(opts.model).input_size
    _, val_set, _ = adn.data.build_datasets(None, image_size=size, dataset="fashion-mnist")
    val = DataLoader(val_set, batch_size=256)
    out = Path(opts.output or Path(__file__).parent / "results" / f"distill-knobs-{opts.model}.md")
    title = f"Distillation knobs vs networks trained alone: {opts.model}, Fashion-MNIST"
    report, clock = Report(out, title, script=__file__, argv=argv), Stopwatch()
    references: dict[int, dict] = {}  # epochs -> plain and shallow rows
    reference = run_config(opts.model, **flags_of(shlex.join(base)))
    report.add(
        "variants",
        f"Base recipe: {recipe(reference)}. All {len(val_set):,} test images (±{NOISE} pt is noise); calibrated = "
        f"per-sub-network BatchNorm statistics on {reference.run.calib_images:,} training images, for the nets "
        "trained alone too. Gaps: calibrated, ADN minus the network of the same depth trained alone.",
        *table(
            "variant",
            "super as trained / calibrated",
            "base as trained / calibrated",
            "mixed calibrated",
            "plain alone (cal.)",
            "shallow alone (cal.)",
            "super − plain",
            "base − shallow",
            "ADN train min",
        ),
    )
    first: list = []  # the first variant's (name, ADN, config), re-calibrated below

    def one_variant(variant: str) -> None:
        args = run_config(opts.model, **flags_of(shlex.join(base)), **flags_of(variant))
        if args.optim.epochs not in references:
            references[args.optim.epochs] = {d: alone(opts.model, args, size, val, d) for d in ("super", "base")}
        model, minutes = train_adn(opts.model, args, size)
        first.append((variant, model, args))
        report.row(
            "variants", variant or "reference recipe", *variant_cells(model, args, size, val, references, minutes)
        )

    for variant in opts.variants:
        report.guard(variant or "reference recipe", lambda v=variant: one_variant(v), slot="variants", lead=(variant,))
    if opts.calib_sizes and first:
        calibration_sizes(report, *first[0], opts.calib_sizes, size, val)
    report.add("footer", f"{clock.seconds / 60:.0f} min in all.")
    report.finish()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
