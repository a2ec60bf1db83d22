"""``adn bench``: measure every sub-network on this machine (``adn select`` then picks one for a budget)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..runtime.threads import apply_threads
from .options import Parser, add_dataset_arg, add_device_arg, add_threads_arg, check_device
from .select import main as select_main  # its old home


def get_args_parser() -> Parser:
    p = Parser("adn bench", "measure latency, GFLOPs and (with data) accuracy of every sub-network; Pareto plot")
    p.add_argument(
        "--model",
        default=None,
        help="model name (default: the one a --weights training checkpoint was trained as; needed for random weights)",
    )
    p.add_argument("--weights", help="checkpoint or weights file (default: random weights, no accuracy)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-path", help="ImageFolder root (with a val/ split) to measure Acc@1/Acc@5 on")
    add_dataset_arg(data, default=None, help="measure accuracy on this built-in dataset")
    data.add_argument("--builtin-data", action="store_true", help="the same as --dataset digits")
    add_device_arg(p, default="cpu")
    p.add_argument("--batch-size", type=int, help="throughput/evaluation batch (default: 8 on the CPU, 64 on CUDA)")
    p.add_argument("--resolution", type=int, help="input size (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classes (default: the dataset's, else the weights', else 1000)")
    p.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per measurement")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the sweep over all sub-networks and pool the timings (steadier on a busy machine)",
    )
    add_threads_arg(p)
    p.add_argument("--workers", type=int, default=0, help="data-loading workers")
    p.add_argument("--skip-cfgs", nargs="+", help="only these sub-networks, e.g. FFFF TTTT (default: all)")
    p.add_argument(
        "--output-dir",
        default=None,
        help="write <model>-bench.csv, .json (for adn select) and a .png plot here (default: print only)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..core.checkpoint import peek_checkpoint_arg
    from ..core.skipconfig import parse_skip
    from ..deploy.bench import COLUMNS, bench_subnets, device_name, mark_pareto, timing_warnings
    from ..evaluation.evaluate import default_input_size
    from ..evaluation.summary import format_table
    from ..models.loading import build_model

    args = get_args_parser().parse_args(list(argv or []))
    model_name = args.model or (peek_checkpoint_arg(args.weights, "model") if args.weights else None)
    if not isinstance(model_name, str):
        raise UsageError("which model? give --model NAME (the weights file does not record it)")
    device = check_device(args.device)
    apply_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resolution = args.resolution or default_input_size(model_name)
    batch_size = args.batch_size if args.batch_size is not None else (64 if device.type == "cuda" else 8)
    _check_positive(batch_size=batch_size, resolution=resolution, min_run_time=args.min_run_time, rounds=args.rounds)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {out_dir} is a file; give a directory")
    dataset = "digits" if args.builtin_data else args.dataset
    loader, num_classes = _loader(args, dataset, resolution, batch_size)
    model, _ = build_model(model_name, args.weights, num_classes)
    configs = [parse_skip(c, model.num_stages) for c in args.skip_cfgs] if args.skip_cfgs else None
    rows = bench_subnets(
        model,
        resolution=resolution,
        device=device,
        batch_size=batch_size,
        min_run_time=args.min_run_time,
        rounds=args.rounds,
        loader=loader,
        configs=configs,
        progress=not args.no_progress,
    )
    mark_pareto(rows)
    columns = COLUMNS if loader is not None else [c for c in COLUMNS if c[0] not in ("acc1", "acc5", "pareto")]
    columns = [(k, h.replace("bN", f"b{batch_size}"), f) for k, h, f in columns]
    where = device_name(device)
    print(
        f"{model_name} at {resolution}x{resolution} on {where}; GFLOPs = MACs per image; latency median and p90 at "
        f"batch 1 and batch {batch_size}"
    )
    print(format_table(rows, columns))
    for problem in timing_warnings(rows):
        print(f"adn: warning: unstable timings: {problem}", file=sys.stderr)
    if out_dir is not None:
        _save(rows, args, model_name, dataset, device, resolution, batch_size, out_dir)
    return 0


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")


def _loader(args, dataset: str | None, resolution: int, batch_size: int):
    """The evaluation loader of --data-path/--dataset (None without data) and the class count."""
    if not (args.data_path or dataset):
        return None, args.num_classes
    from ..data import build_eval_loader

    kwargs = {"dataset": dataset} if dataset not in (None, "digits") else {}
    loader, data_classes = build_eval_loader(
        args.data_path, image_size=resolution, batch_size=batch_size, workers=args.workers, **kwargs
    )
    if args.num_classes is not None and args.num_classes != data_classes:
        raise UsageError(f"--num-classes {args.num_classes} but the dataset has {data_classes} classes; drop the flag")
    return loader, data_classes


def _save(rows, args, model_name: str, dataset, device, resolution: int, batch_size: int, out_dir: Path) -> None:
    """<model>-bench.csv and .json (what adn select reads) and the Pareto plot, in ``out_dir``."""
    import torch

    from ..deploy.bench import device_name, save_results
    from ..evaluation.plots import plot_pareto

    where = device_name(device)
    meta = {
        "model": model_name,
        "weights": args.weights,
        "data": args.data_path or dataset,
        "device": str(device),
        "device_name": where,
        "threads": torch.get_num_threads(),
        "resolution": resolution,
        "batch_size": batch_size,
        "min_run_time": args.min_run_time,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    prefix = f"{model_name.replace(':', '-')}-bench"
    paths = save_results(rows, meta, out_dir, prefix)
    paths["png"] = plot_pareto(
        rows, out_dir / f"{prefix}.png", title=f"{model_name}, {resolution}px, {where}", batch_size=batch_size
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()))


__all__ = ["get_args_parser", "main", "select_main"]
