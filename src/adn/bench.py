"""``adn bench`` and ``adn select``: measure every sub-network on this machine, pick one for a budget.

For each skip config :func:`bench_subnets` reports the parameters actually executed, GFLOPs (MACs), latency
at batch 1 and at a throughput batch (median and 90th percentile, ``torch.utils.benchmark``), throughput, and
Acc@1/Acc@5 when a data loader is given. :func:`plot_pareto` draws the accuracy/cost trade-off and
:func:`select_subnet` returns the most accurate sub-network within a latency or FLOPs budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .flops import count_flops, count_params
from .skip import SkipLike, format_skip, parse_skip, subnets
from .summary import format_table

if TYPE_CHECKING:
    from torch.utils.benchmark import Measurement

Results = Sequence[Mapping[str, Any]] | Mapping[str, Any] | str | os.PathLike

#: Column spec of the printed table: (key, header, format).
COLUMNS = [
    ("skip", "skip", "s"),
    ("params_m", "params(M)", ".2f"),
    ("gflops", "GFLOPs", ".3f"),
    ("latency_ms", "lat b1 (ms)", ".2f"),
    ("latency_p90_ms", "p90", ".2f"),
    ("batch_latency_ms", "lat bN (ms)", ".1f"),
    ("batch_latency_p90_ms", "p90", ".1f"),
    ("throughput", "img/s", ".1f"),
    ("acc1", "Acc@1", ".2f"),
    ("acc5", "Acc@5", ".2f"),
    ("pareto", "Pareto", "s"),
]


# ------------------------------------------------------------------------------------------------ measuring
def time_forward(
    model: nn.Module,
    x: torch.Tensor,
    skip: SkipLike = None,
    *,
    min_run_time: float = 0.3,
    num_threads: int | None = None,
) -> Measurement:
    """Time ``model(x, skip=skip)`` with ``torch.utils.benchmark`` (synchronizes on CUDA).

    ``min_run_time`` is the seconds spent measuring; ``num_threads`` defaults to torch's current setting
    (``Timer`` itself would default to 1 thread). ``blocked_autorange`` first runs untimed calls to size its
    blocks, which doubles as the warm-up.
    """
    from torch.utils import benchmark  # imported on use: importing it warns about a missing CUDA toolkit

    timer = benchmark.Timer(
        stmt="model(x, skip=skip)",
        globals={"model": model, "x": x, "skip": skip},
        num_threads=num_threads or torch.get_num_threads(),
    )
    with torch.inference_mode():
        return timer.blocked_autorange(min_run_time=min_run_time)


def _median_p90_ms(times: Sequence[float]) -> tuple[float, float]:
    # Each entry is the mean of one block of runs (one run per block for models slower than ~1 ms).
    return float(np.median(times)) * 1e3, float(np.percentile(times, 90)) * 1e3


def bench_subnets(
    model: nn.Module,
    *,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    min_run_time: float = 0.3,
    rounds: int = 1,
    num_threads: int | None = None,
    loader: Iterable | None = None,
    configs: Sequence[SkipLike] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every sub-network (or ``configs``) of ``model``; one dict per sub-network.

    Keys: ``skip``, ``params_m``, ``gflops`` (GMACs per image), ``latency_ms``/``latency_p90_ms`` (batch 1),
    ``batch_latency_ms``/``batch_latency_p90_ms`` (batch ``batch_size``), ``throughput`` (images/s at
    ``batch_size``), and ``acc1``/``acc5`` (``None`` without ``loader``). Runs in eval mode without autograd.
    With ``rounds > 1`` the sweep over sub-networks is repeated and the timings of all rounds pooled, so a
    change in machine load during the run affects every sub-network alike.
    """
    from tqdm import tqdm

    device = torch.device(device)
    resolution = resolution or getattr(model, "image_size", None) or 224
    configs = [parse_skip(c, model.num_stages) for c in (configs or subnets(model))]
    model = model.to(device).eval()
    x1 = torch.randn(1, 3, resolution, resolution, device=device)
    xb = torch.randn(batch_size, 3, resolution, resolution, device=device)
    rows = [
        {
            "skip": format_skip(s),
            "params_m": count_params(model, s) / 1e6,
            "gflops": count_flops(model, s, resolution) / 1e9,
        }
        for s in configs
    ]
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in configs]
    steps = tqdm(total=rounds * len(configs), desc="timing sub-networks", unit="net", disable=not progress)
    for _ in range(rounds):
        for skip, (t1, tb) in zip(configs, times, strict=False):
            t1 += time_forward(model, x1, skip, min_run_time=min_run_time, num_threads=num_threads).times
            tb += time_forward(model, xb, skip, min_run_time=min_run_time, num_threads=num_threads).times
            steps.update()
    steps.close()
    for row, (t1, tb) in zip(rows, times, strict=True):
        row["latency_ms"], row["latency_p90_ms"] = _median_p90_ms(t1)
        row["batch_latency_ms"], row["batch_latency_p90_ms"] = _median_p90_ms(tb)
        row["throughput"] = batch_size * 1e3 / row["batch_latency_ms"]
        row["acc1"] = row["acc5"] = None
    if loader is not None:
        from .engine import evaluate

        bar = tqdm(configs, desc="evaluating sub-networks", unit="net", disable=not progress)
        for skip, row in zip(bar, rows, strict=True):
            metrics = evaluate(model, loader, device, skip=skip, print_freq=10**9, log_suffix=row["skip"])
            row["acc1"], row["acc5"] = float(metrics["acc1"]), float(metrics["acc5"])
    return rows


def switching_cost(
    model: nn.Module,
    x: torch.Tensor,
    configs: Sequence[SkipLike] | None = None,
    *,
    rounds: int = 3,
    min_run_time: float = 0.5,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Cost of changing sub-network between calls, in ms per call.

    Times the same calls in two orders: alternating (``A B A B``: a switch before every call) and grouped
    (``A A B B``: one switch every other call), in interleaved ``rounds`` so that load drift hits both alike.
    ``switching_ms`` is the per-call difference of the medians. ``configs`` default to super-net and base-net.
    """
    from torch.utils import benchmark

    configs = [parse_skip(c, model.num_stages) for c in (configs or [False, True])]
    orders = {"alternating": configs * 2, "grouped": [c for c in configs for _ in range(2)]}
    timers = {
        name: benchmark.Timer(
            stmt="for c in order: model(x, skip=c)",
            globals={"model": model, "x": x, "order": order},
            num_threads=num_threads or torch.get_num_threads(),
        )
        for name, order in orders.items()
    }
    per_call: dict[str, list[float]] = {name: [] for name in orders}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, timer in timers.items():
                per_call[name].append(timer.blocked_autorange(min_run_time=min_run_time).median / len(orders[name]))
    alt, grouped = (float(np.median(per_call[k])) * 1e3 for k in ("alternating", "grouped"))
    return {"alternating_ms": alt, "grouped_ms": grouped, "switching_ms": alt - grouped}


# -------------------------------------------------------------------------------------- Pareto and budgets
def _has(row: Mapping[str, Any], key: str) -> bool:
    return row.get(key) is not None


def pareto_front(rows: Sequence[Mapping[str, Any]], cost: str = "latency_ms", metric: str = "acc1") -> list[dict]:
    """Rows not dominated by another (no other is at most as costly and more accurate), cheapest first.

    Rows without ``metric`` are ignored, so without accuracy the front is empty.
    """
    ranked = sorted((r for r in rows if _has(r, metric) and _has(r, cost)), key=lambda r: (r[cost], -r[metric]))
    front, best = [], -float("inf")
    for row in ranked:
        if row[metric] > best:
            front.append(dict(row))
            best = row[metric]
    return front


def load_results(results: Results) -> list[dict[str, Any]]:
    """Rows from a bench JSON file (path), its parsed content, or a list of rows."""
    if isinstance(results, (str, os.PathLike)):
        path = Path(results)
        if path.is_dir():
            raise ValueError(f"{path} is a directory; pass the JSON file written by 'adn bench'")
        if not path.is_file():
            raise FileNotFoundError(f"bench results {path} not found; run 'adn bench' first")
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a JSON file written by 'adn bench' ({exc})") from None
    if isinstance(results, Mapping):
        results = results.get("results", [])
    rows = [dict(r) for r in results]
    if not rows or not all("skip" in r for r in rows):
        raise ValueError("bench results hold no sub-network rows; pass the JSON file written by 'adn bench'")
    return rows


def select_subnet(
    results: Results,
    max_latency_ms: float | None = None,
    max_gflops: float | None = None,
    metric: str = "acc1",
) -> dict[str, Any]:
    """The most accurate sub-network whose batch-1 median latency and GFLOPs fit the budget(s).

    ``results``: rows of :func:`bench_subnets`, or the JSON file/content written by ``adn bench``. Ties in
    ``metric``, and results without accuracy, go to the sub-network with the most GFLOPs within the budget:
    deeper sub-networks of an adaptive-depth network are the more accurate ones, and a tie measured on a
    finite evaluation set is no evidence that the shallower one is as good.
    """
    if max_latency_ms is None and max_gflops is None:
        raise ValueError("no budget given; set max_latency_ms and/or max_gflops (--max-latency-ms/--max-gflops)")
    rows = load_results(results)
    budgets = [
        (key, limit, what, unit)
        for key, limit, what, unit in (
            ("latency_ms", max_latency_ms, "batch-1 latency", "ms"),
            ("gflops", max_gflops, "GFLOPs", "GFLOPs"),
        )
        if limit is not None
    ]
    for key, *_ in budgets:
        if not all(_has(r, key) for r in rows):
            raise ValueError(f"bench results lack {key!r}; re-run 'adn bench' to measure it")
    fits = [r for r in rows if all(r[key] <= limit for key, limit, *_ in budgets)]
    if not fits:
        key, _, _, unit = budgets[0]
        cheapest = min(rows, key=lambda r: r[key])
        asked = " and ".join(f"{what} <= {limit:g} {unit}" for _, limit, what, unit in budgets)
        also = f" ({cheapest['gflops']:.3g} GFLOPs)" if key != "gflops" else ""
        raise ValueError(
            f"no sub-network fits {asked}; the cheapest is {cheapest['skip']} at {cheapest[key]:.3g} {unit}{also}; "
            "raise the budget"
        )
    use_metric = all(_has(r, metric) for r in fits)
    return dict(max(fits, key=lambda r: ((r[metric] if use_metric else 0.0), r["gflops"])))


# ----------------------------------------------------------------------------------------------- plotting
def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    metric: str = "acc1",
    batch_size: int | None = None,
) -> Path:
    """Save the trade-off plot as a PNG.

    With accuracy: ``metric`` vs batch-1 latency and vs GFLOPs, Pareto-optimal sub-networks highlighted and
    labelled. Without: latency (batch 1 and batch N) vs GFLOPs, with the line latency ∝ GFLOPs through the
    super-net for reference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_acc = all(_has(r, metric) for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=90)
    if has_acc:
        panels = [("latency_ms", "latency, batch 1 (ms)"), ("gflops", "GFLOPs (MACs)")]
        for ax, (cost, label) in zip(axes, panels, strict=False):
            ax.scatter([r[cost] for r in rows], [r[metric] for r in rows], s=18, c="0.6", label="sub-network")
            front = pareto_front(rows, cost, metric)
            ax.plot(
                [r[cost] for r in front],
                [r[metric] for r in front],
                "o-",
                c="tab:red",
                ms=6,
                drawstyle="steps-post",
                label="Pareto-optimal",
            )
            on_front = {r["skip"] for r in front}
            for r in rows:
                ax.annotate(
                    r["skip"],
                    (r[cost], r[metric]),
                    textcoords="offset points",
                    xytext=(4, -10),
                    fontsize=7 if r["skip"] in on_front else 6,
                    c="k" if r["skip"] in on_front else "0.5",
                )
            ax.set_xlabel(label)
            ax.set_ylabel(f"{'Acc@1' if metric == 'acc1' else metric} (%)")
    else:
        super_net = max(rows, key=lambda r: r["gflops"])
        panels = zip(axes, ("latency_ms", "batch_latency_ms"), ("batch 1", f"batch {batch_size or 'N'}"), strict=True)
        for ax, key, label in panels:
            ax.scatter([r["gflops"] for r in rows], [r[key] for r in rows], s=18, c="tab:blue")
            for r in rows:
                ax.annotate(r["skip"], (r["gflops"], r[key]), textcoords="offset points", xytext=(3, 3), fontsize=6)
            g = np.linspace(0, super_net["gflops"] * 1.05, 2)
            ax.plot(g, g * super_net[key] / super_net["gflops"], "--", c="0.5", label="latency ∝ GFLOPs")
            ax.set_xlabel("GFLOPs (MACs)")
            ax.set_ylabel(f"latency, {label} (ms)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if has_acc else "upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- saving
def mark_pareto(rows: list[dict[str, Any]], metric: str = "acc1") -> None:
    """Set ``row["pareto"]`` to ``"*"`` on the accuracy-vs-latency front (``""`` elsewhere)."""
    front = {r["skip"] for r in pareto_front(rows, "latency_ms", metric)}
    for r in rows:
        r["pareto"] = "*" if r["skip"] in front else ""


def save_results(rows: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{prefix}.{ext}" for ext in ("csv", "json")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths["json"].write_text(json.dumps({**meta, "results": rows}, indent=1) + "\n")
    return paths


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU ({threads} thread{'s' * (threads > 1)})"


# ------------------------------------------------------------------------------------------------- CLIs
def main(argv: Sequence[str] | None = None) -> int:
    from .export import build_model
    from .registry import model_info

    parser = argparse.ArgumentParser(prog="adn bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name (adn models)")
    parser.add_argument("--weights", help="checkpoint or state dict to load (default: random init, no accuracy)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data-path", help="ImageFolder root (with a val/ split) to measure Acc@1/Acc@5 on")
    data.add_argument("--builtin-data", action="store_true", help="measure accuracy on the built-in dataset")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--batch-size", type=int, help="throughput/evaluation batch (default: 8 on CPU, 64 on CUDA)")
    parser.add_argument("--resolution", type=int, help="input size (default: the model's)")
    parser.add_argument(
        "--num-classes", type=int, help="classes (default: the dataset's, else from --weights, else 1000)"
    )
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timing per measurement (0.3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the timing sweep over all sub-networks and pool (steadier on a busy machine)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading workers (default: 0)")
    parser.add_argument("--skip-cfgs", nargs="+", help="only these sub-networks, e.g. FFFF TTTT (default: all)")
    parser.add_argument("--output-dir", default=".", help="where <model>-bench.{csv,json,png} go (default: .)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    info = model_info(args.model)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda given but no CUDA device is available; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    resolution = info.input_size if args.resolution is None else args.resolution
    batch_size = (64 if device.type == "cuda" else 8) if args.batch_size is None else args.batch_size
    for flag, value in (
        ("--batch-size", batch_size),
        ("--resolution", resolution),
        ("--min-run-time", args.min_run_time),
        ("--rounds", args.rounds),
    ):
        if value <= 0:
            raise ValueError(f"{flag} must be positive, got {value}")
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {out_dir} is a file; give a directory")

    loader, num_classes = None, args.num_classes
    if args.data_path or args.builtin_data:
        from .data import build_eval_loader

        loader, data_classes = build_eval_loader(
            args.data_path, image_size=resolution, batch_size=batch_size, workers=args.workers
        )
        if num_classes is not None and num_classes != data_classes:
            raise ValueError(f"--num-classes {num_classes} but the dataset has {data_classes} classes; drop the flag")
        num_classes = data_classes
    model = build_model(args.model, args.weights, num_classes)
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
    meta = {
        "model": args.model,
        "weights": args.weights,
        "data": args.data_path or ("builtin" if args.builtin_data else None),
        "device": str(device),
        "device_name": _device_name(device),
        "threads": torch.get_num_threads(),
        "resolution": resolution,
        "batch_size": batch_size,
        "min_run_time": args.min_run_time,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    prefix = f"{args.model}-bench"
    paths = save_results(rows, meta, out_dir, prefix)
    paths["png"] = plot_pareto(
        rows,
        out_dir / f"{prefix}.png",
        title=f"{args.model}, {resolution}px, {meta['device_name']}",
        batch_size=batch_size,
    )
    columns = COLUMNS if loader is not None else [c for c in COLUMNS if c[0] not in ("acc1", "acc5", "pareto")]
    columns = [(k, h.replace("bN", f"b{batch_size}"), f) for k, h, f in columns]
    print(
        f"{args.model} at {resolution}x{resolution} on {meta['device_name']}; GFLOPs = MACs per image; "
        f"latency median and p90 at batch 1 and batch {batch_size}"
    )
    print(format_table(rows, columns))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def select_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="adn select", description="pick the most accurate sub-network within a latency/FLOPs budget"
    )
    parser.add_argument("--results", required=True, help="JSON file written by 'adn bench'")
    parser.add_argument("--max-latency-ms", type=float, help="batch-1 median latency budget (ms)")
    parser.add_argument("--max-gflops", type=float, help="GFLOPs (MACs) budget")
    parser.add_argument("--metric", default="acc1", choices=("acc1", "acc5"), help="accuracy to maximise (acc1)")
    args = parser.parse_args(argv)
    if args.max_latency_ms is None and args.max_gflops is None:
        parser.error("give --max-latency-ms and/or --max-gflops")
    row = select_subnet(
        args.results, max_latency_ms=args.max_latency_ms, max_gflops=args.max_gflops, metric=args.metric
    )
    acc = f"{args.metric} {row[args.metric]:.2f}, " if _has(row, args.metric) else "no accuracy measured, "
    print(
        f"{row['skip']}  ({acc}{row['latency_ms']:.2f} ms at batch 1, {row['gflops']:.3f} GFLOPs, "
        f"{row['params_m']:.2f}M params)"
    )
    return 0


__all__ = [
    "bench_subnets",
    "load_results",
    "pareto_front",
    "plot_pareto",
    "select_subnet",
    "switching_cost",
    "time_forward",
]
