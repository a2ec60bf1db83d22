"""ADN self-distillation vs plain training of the same architecture, on the built-in digits (the quick start's
data), every sub-network as trained and with per-sub-network BatchNorm calibration.

Trains, with the built-in preset of ``adn train`` (same initial weights, data order, schedule and seed): (a) the
ADN by self-distillation, (b) the same network plainly (cross-entropy on the super-net; its sub-networks are naive
skipping), (c) a plain network of the base-net's depth. Prints a markdown table of every sub-network of (a) and
(b), as trained and calibrated, and (c); writes it to ``benchmarks/results/adn-vs-plain-<model>.md``.

    python benchmarks/adn_vs_plain.py [--model resnet20] [--epochs 15] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch.utils.data import DataLoader

import adn
from common import measure, recipe, run_config, table, train_three
from harness import Report


def compare(report: Report, opts: argparse.Namespace) -> None:
    """Train the three networks, measure every sub-network, add the table to the report."""
    args = run_config(opts.model, epochs=opts.epochs, seed=opts.seed)
    size = adn.model_info(opts.model).input_size
    trained = train_three(opts.model, args, size)
    train_set, val_set, _ = adn.data.build_datasets(None, image_size=size)
    calib_s = measure(trained, DataLoader(val_set, batch_size=256), args, size)
    a, p = trained["adn"], trained["plain"]
    report.add(
        "results",
        f"{len(train_set):,} train / {len(val_set):,} val images (one image is {100 / len(val_set):.2f} pt), the "
        f"built-in preset of `adn train` ({recipe(args)}). Step time: "
        f"ADN {a.step_ms:.0f} ms, plain {p.step_ms:.0f} ms (ratio {a.step_ms / p.step_ms:.2f}); calibrating all "
        f"{len(a.rows)} ADN sub-networks: {calib_s:.1f} s.",
        "",
        *table(trained),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/adn-vs-plain-<model>.md")
    opts = parser.parse_args(argv)
    out = Path(opts.output or Path(__file__).parent / "results" / f"adn-vs-plain-{opts.model}.md")
    report = Report(out, f"{opts.model}: ADN vs plain training on the built-in digits", script=__file__, argv=argv)
    report.guard(f"{opts.model}: train and measure", lambda: compare(report, opts))
    report.finish()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
