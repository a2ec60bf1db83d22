"""The paper's claims, checked on Fashion-MNIST (60,000 training / 10,000 test images; real data no one here made).

For each model, side by side in one run with the same recipe (the built-in preset of ``adn train``), data order
and seed: the ADN (every sub-network, as trained and BatchNorm-calibrated), the same network trained plainly (and
its sub-networks by naive skipping), and a plain network of the base-net's depth trained alone. Writes
``benchmarks/results/paper-claims-fashion-mnist.md`` (a table per model, updated after each, and a verdict per
claim; with 10,000 test images a difference within 0.3 points is noise).

    python benchmarks/paper_claims.py --models resnet20 mobilenet_v2_cifar --epochs 10
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import adn
from common import measure, recipe, run_config, table, train_three

NOISE = 0.3  # points: 1.96 * sqrt(p (1 - p) / 10,000) at p = 0.9 is 0.59; differences below 0.3 are noise here
OUT = Path(__file__).parent / "results" / "paper-claims-fashion-mnist.md"


def verdict(diff: float) -> str:
    if diff > NOISE:
        return f"holds here (+{diff:.2f} pt)"
    if diff < -NOISE:
        return f"does not hold here ({diff:.2f} pt)"
    return f"a tie within noise ({diff:+.2f} pt)"


def claims(trained) -> list[str]:
    adn_rows, plain_rows, shallow = trained["adn"].rows, trained["plain"].rows, trained["shallow"].rows[0]
    sup, base, p_sup = adn_rows[0], adn_rows[-1], plain_rows[0]
    mixed = adn_rows[1:-1]
    lines = []
    for key, what in (("acc1_trained", "as trained"), ("acc1_calibrated", "calibrated")):
        lines.append(
            f"- **Super-net vs the same network trained alone** ({what}): ADN {sup[key]:.2f} vs plain "
            f"{p_sup[key]:.2f}: {verdict(sup[key] - p_sup[key])} (paper, ResNet-50 on ImageNet: +0.9)."
        )
        lines.append(
            f"- **Base-net vs a network of its depth trained alone** ({what}): ADN {base[key]:.2f} vs "
            f"{shallow[key]:.2f}: {verdict(base[key] - shallow[key])} (paper: +1.1)."
        )
        low, high = min(base[key], sup[key]), max(base[key], sup[key])
        inside = sum(low - NOISE <= r[key] <= high + NOISE for r in mixed)
        lines.append(
            f"- **Mixed sub-networks between the extremes** ({what}): {inside} of {len(mixed)} within "
            f"[{low:.2f}, {high:.2f}] ± {NOISE}; range {min(r[key] for r in mixed):.2f}–"
            f"{max(r[key] for r in mixed):.2f}."
        )
    worst_plain = min(r["acc1_trained"] for r in plain_rows[1:])
    lines.append(
        f"- **Naive skipping of the plain net** (as trained): its sub-networks fall to {worst_plain:.2f} at "
        f"worst, where the ADN's worst is {min(r['acc1_trained'] for r in adn_rows):.2f}."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=int, default=None, help="fewer training images (smoke runs)")
    parser.add_argument("--output", default=str(OUT))
    opts = parser.parse_args()
    used = recipe(run_config(opts.models[0], epochs=opts.epochs, seed=opts.seed))
    header = [
        f"# The paper's claims on Fashion-MNIST ({datetime.now(timezone.utc):%Y-%m-%d}, `python "
        f"benchmarks/paper_claims.py --models {' '.join(opts.models)} --epochs {opts.epochs}`)",
        "",
        f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}. Recipe: the "
        f"built-in preset of `adn train` ({used}, "
        f"random crop + flip); all 10,000 test images; differences within ±{NOISE} pt are noise. Calibration: "
        "per-sub-network BatchNorm statistics on 1,024 training images (evaluation transform).",
    ]
    sections: list[str] = []
    for name in opts.models:
        args = run_config(
            name, dataset="fashion-mnist", epochs=opts.epochs, seed=opts.seed, train_subset=opts.train_subset
        )
        size = adn.model_info(name).input_size
        start = time.perf_counter()
        trained = train_three(name, args, size)
        _, val_set, _ = adn.data.build_datasets(None, image_size=size, dataset="fashion-mnist")
        calib_s = measure(trained, DataLoader(val_set, batch_size=256), args, size)
        minutes = (time.perf_counter() - start) / 60
        t = trained
        sections += [
            "",
            f"## {name}",
            "",
            f"Training: ADN {t['adn'].seconds / 60:.1f} min ({t['adn'].step_ms:.0f} ms/step), plain "
            f"{t['plain'].seconds / 60:.1f} min ({t['plain'].step_ms:.0f} ms/step), shallow "
            f"{t['shallow'].seconds / 60:.1f} min; calibrating all {len(t['adn'].rows)} ADN sub-networks "
            f"{calib_s:.1f} s; {minutes:.0f} min in all.",
            "",
            *table(trained),
            "",
            *claims(trained),
        ]
        Path(opts.output).write_text("\n".join(header + sections) + "\n")
        print("\n".join(sections[-len(table(trained)) - len(claims(trained)) - 1 :]), flush=True)
    print(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
