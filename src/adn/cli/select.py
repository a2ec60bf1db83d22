"""``adn select``: pick the most accurate sub-network within a latency/FLOPs budget, from ``adn bench``'s results."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from .options import Parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..deploy.bench import _has, select_subnet

    parser = Parser("adn select", "pick the most accurate sub-network within a latency/FLOPs budget")
    parser.add_argument("--results", required=True, help="JSON file written by adn bench --output-dir")
    parser.add_argument("--max-latency-ms", type=float, help="batch-1 median latency budget (ms)")
    parser.add_argument("--max-gflops", type=float, help="GFLOPs (MACs) budget")
    parser.add_argument("--metric", default="acc1", choices=("acc1", "acc5"), help="accuracy to maximise")
    args = parser.parse_args(list(argv or []))
    if args.max_latency_ms is None and args.max_gflops is None:
        raise UsageError("give --max-latency-ms and/or --max-gflops")
    row = select_subnet(
        args.results, max_latency_ms=args.max_latency_ms, max_gflops=args.max_gflops, metric=args.metric
    )
    acc = f"{args.metric} {row[args.metric]:.2f}, " if _has(row, args.metric) else "no accuracy measured, "
    print(
        f"{row['skip']}  ({acc}{row['latency_ms']:.2f} ms at batch 1, {row['gflops']:.3f} GFLOPs, "
        f"{row['params_m']:.2f}M params)"
    )
    return 0


__all__ = ["main"]
