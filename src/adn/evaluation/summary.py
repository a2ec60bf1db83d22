"""Plain-text tables, and one model's sub-network table (GFLOPs, params, published figures) for ``adn models``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.flops import count_flops, count_params
from ..core.network import format_skip, skip_configs
from ..models.registry import create_model, model_info


def subnet_table(name: str, resolution: int | None = None, num_classes: int = 1000) -> list[dict]:
    """One row per sub-network: skip config, GMACs, executed params (M) and the published figures."""
    info = model_info(name)
    resolution = resolution or info.input_size
    with torch.device("meta"):  # shapes suffice for counting: ViT-B/16 in well under a second, no weights
        model = create_model(name, num_classes=num_classes)
    rows = []
    for skip in skip_configs(model):
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


__all__ = ["format_table", "subnet_table"]
