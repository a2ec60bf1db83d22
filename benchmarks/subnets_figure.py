"""The README's picture: Acc@1 against GFLOPs of every sub-network of a trained run, as trained and calibrated.

python benchmarks/subnets_figure.py output/resnet20/model.safetensors docs/images/subnets.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from adn.core.checkpoint import load_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a trained run's model.safetensors or checkpoint (its meta has the table)")
    parser.add_argument("target", help="the image to write (.png, .svg, ...)")
    opts = parser.parse_args()
    source, target = opts.source, opts.target
    meta = load_checkpoint(source)["meta"]
    rows = meta["subnets"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    g = [r["gflops"] * 1e3 for r in rows]
    ax.scatter(g, [r["acc1_trained"] for r in rows], c="0.6", label="as trained (only the extremes are trained)")
    ax.scatter(g, [r["acc1"] for r in rows], c="tab:red", label="BatchNorm-calibrated per sub-network")
    by_cost: dict[float, list] = {}
    for r, x in zip(rows, g, strict=True):
        by_cost.setdefault(x, []).append(r)
    for x, group in by_cost.items():  # one label per cost, best first: sub-networks of equal cost overlap
        group.sort(key=lambda r: -r["acc1"])
        label = "\n".join(f"{r['skip']} {r['acc1']:.1f}" for r in group)
        ax.annotate(label, (x, group[-1]["acc1"]), textcoords="offset points", xytext=(5, -4), fontsize=7, va="top")
    ax.set_xlabel("MFLOPs (multiply-accumulates) per image")
    ax.set_ylabel("validation Acc@1 (%)")
    ax.set_title(f"{meta['model']}: every sub-network of one trained network", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
