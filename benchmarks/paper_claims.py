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
from pathlib import Path

from torch.utils.data import DataLoader

import adn
from common import NOISE, PAPER_GAIN, measure, recipe, run_config, table, train_three
from harness import Report, Stopwatch

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
            f"{p_sup[key]:.2f}: {verdict(sup[key] - p_sup[key])} (paper, ResNet-50 on ImageNet: "
            f"+{PAPER_GAIN['super']})."
        )
        lines.append(
            f"- **Base-net vs a network of its depth trained alone** ({what}): ADN {base[key]:.2f} vs "
            f"{shallow[key]:.2f}: {verdict(base[key] - shallow[key])} (paper: +{PAPER_GAIN['base']})."
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "mobilenet_v2_cifar"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=int, default=None, help="fewer training images (smoke runs)")
    parser.add_argument("--output", default=str(OUT))
    opts = parser.parse_args(argv)
    config = run_config(opts.models[0], epochs=opts.epochs, seed=opts.seed)
    report = Report(opts.output, "The paper's claims on Fashion-MNIST", script=__file__, argv=argv)
    report.add(
        "recipe",
        f"Recipe: the built-in preset of `adn train` ({recipe(config)}, random crop + flip); all test images; "
        f"differences within ±{NOISE} pt are noise. Calibration: per-sub-network BatchNorm statistics on "
        f"{config.run.calib_images:,} training images (evaluation transform).",
    )

    def one_model(name: str) -> None:
        args = run_config(
            name, dataset="fashion-mnist", epochs=opts.epochs, seed=opts.seed, train_subset=opts.train_subset
        )
        size = adn.model_info(name).input_size
        with Stopwatch() as clock:
            trained = train_three(name, args, size)
            _, val_set, _ = adn.data.build_datasets(None, image_size=size, dataset="fashion-mnist")
            calib_s = measure(trained, DataLoader(val_set, batch_size=256), args, size)
        t = trained
        report.add(
            name,
            f"## {name}",
            "",
            f"Training: ADN {t['adn'].seconds / 60:.1f} min ({t['adn'].step_ms:.0f} ms/step), plain "
            f"{t['plain'].seconds / 60:.1f} min ({t['plain'].step_ms:.0f} ms/step), shallow "
            f"{t['shallow'].seconds / 60:.1f} min; calibrating all {len(t['adn'].rows)} ADN sub-networks "
            f"{calib_s:.1f} s; {clock.seconds / 60:.0f} min in all ({len(val_set):,} test images).",
            "",
            *table(trained),
            "",
            *claims(trained),
        )
        print("\n".join(report.slots[name]), flush=True)

    for name in opts.models:
        report.guard(name, lambda name=name: one_model(name))
    report.finish(echo=False)
    print(f"wrote {opts.output}")


if __name__ == "__main__":
    main()
