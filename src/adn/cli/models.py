"""``adn models``: the registered models, or one model's sub-network table (GFLOPs, params, published figures)."""

from __future__ import annotations

from collections.abc import Sequence

from .options import Parser

COLUMNS = [
    ("skip", "skip", "s"),
    ("gflops", "GFLOPs", ".3f"),
    ("params_m", "params(M)", ".2f"),
    ("published_gflops", "published GFLOPs", ".2f"),
    ("published_acc1", "published Acc@1", ".1f"),
]


def main(argv: Sequence[str] | None = None) -> int:
    from ..evaluation.summary import format_table, subnet_table
    from ..models.registry import list_models, model_info

    parser = Parser("adn models", "list the models, or one model's sub-network table (GFLOPs = MACs, params)")
    parser.add_argument("--model", help="show this model's sub-network table")
    parser.add_argument("--resolution", type=int, help="input size for FLOPs (default: the model's)")
    args = parser.parse_args(list(argv or []))
    if args.model is None:
        for name in list_models():
            info = model_info(name)
            print(f"{name:<20} {info.input_size:>4}px  {info.description}")
        print("\nand any torchvision/timm classifier converted on the fly: tv:NAME, timm:NAME (see adn.convert)")
        return 0
    info = model_info(args.model)
    size = args.resolution or info.input_size
    rows = subnet_table(args.model, args.resolution)
    print(f"{args.model} at {size}x{size}, GFLOPs = MACs")
    columns = COLUMNS
    if info.published_by != "paper":  # no published table: the registry holds our own count, not the paper's
        columns = [*COLUMNS[:3], ("published_gflops", f"reference GFLOPs ({info.published_by})", ".2f")]
        print(f"no published results for {args.model}: reference GFLOPs are {info.published_by}'s own count")
    print(format_table(rows, columns))
    return 0


__all__ = ["main"]
