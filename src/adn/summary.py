"""``adn models``: the registered models, or one model's sub-network table (GFLOPs, params, published)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from .flops import count_flops, count_params
from .registry import create_model, list_models, model_info
from .skip import format_skip, subnets


def subnet_table(name: str, resolution: int | None = None, num_classes: int = 1000) -> list[dict]:
    """One row per sub-network: skip config, GMACs, executed params (M) and the published figures."""
    info = model_info(name)
    resolution = resolution or info.input_size
    with torch.device("meta"):  # shapes suffice for counting: ViT-B/16 in well under a second, no weights
        model = create_model(name, num_classes=num_classes)
    rows = []
    for skip in subnets(model):
        key = format_skip(skip)
        pub_flops, pub_acc = info.published.get(key, (None, None))
        rows.append(
            {
                "skip": key,
                "gflops": count_flops(model, skip, resolution) / 1e9,
                "params_m": count_params(model, skip) / 1e6,
                "published_gflops": pub_flops,
                "published_acc1": pub_acc,
            }
        )
    return rows


def format_table(rows: list[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table. ``columns``: (key, header, format spec); ``None`` prints as '-'."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], f) for k, _, f in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adn models", description=__doc__)
    parser.add_argument("--model", help="show this model's sub-network table")
    parser.add_argument("--resolution", type=int, help="input size for FLOPs (default: the model's)")
    args = parser.parse_args(argv)
    if args.model is None:
        for name in list_models():
            info = model_info(name)
            print(f"{name:<16} {info.input_size:>4}px  {info.description}")
        return 0
    info = model_info(args.model)
    rows = subnet_table(args.model, args.resolution)
    print(f"{args.model} at {args.resolution or info.input_size}x{args.resolution or info.input_size}, GFLOPs = MACs")
    print(
        format_table(
            rows,
            [
                ("skip", "skip", "s"),
                ("gflops", "GFLOPs", ".3f"),
                ("params_m", "params(M)", ".2f"),
                ("published_gflops", "published GFLOPs", ".2f"),
                ("published_acc1", "published Acc@1", ".1f"),
            ],
        )
    )
    return 0
