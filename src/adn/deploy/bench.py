"""``adn bench`` and ``adn select``: measure every sub-network on this machine, pick one for a budget.

For each skip config :func:`bench_subnets` reports the parameters actually executed, GFLOPs (MACs), latency
at batch 1 and at a throughput batch (median and 90th percentile, ``torch.utils.benchmark``), throughput, and
Acc@1/Acc@5 when a data loader is given. :func:`plot_pareto` draws the accuracy/cost trade-off and
:func:`select_subnet` returns the most accurate sub-network within a latency or FLOPs budget.
"""

from __future__ import annotations

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

from ..core.flops import count_flops_table, count_params, input_size
from ..core.network import SkipLike, format_skip, parse_skip, skip_configs

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
    resolution = resolution or input_size(model)[0]
    configs = [parse_skip(c, model.num_stages) for c in (configs or skip_configs(model))]
    model = model.to(device).eval()
    x1 = torch.randn(1, 3, resolution, resolution, device=device)
    xb = torch.randn(batch_size, 3, resolution, resolution, device=device)
    flops = count_flops_table(model, configs, resolution)
    rows = [
        {"skip": format_skip(s), "params_m": count_params(model, s) / 1e6, "gflops": f / 1e9}
        for s, f in zip(configs, flops, strict=True)
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
        row["samples"] = min(len(t1), len(tb))
        row["latency_ms"], row["latency_p90_ms"] = _median_p90_ms(t1)
        row["batch_latency_ms"], row["batch_latency_p90_ms"] = _median_p90_ms(tb)
        row["throughput"] = batch_size * 1e3 / row["batch_latency_ms"]
        row["acc1"] = row["acc5"] = None
    if loader is not None:
        from ..evaluation.evaluate import evaluate

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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU ({threads} thread{'s' * (threads > 1)})"


def timing_warnings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a bench table's timings should not be trusted, if they should not: too few samples, a wide spread
    (p90 well above the median), or sub-networks whose latency per GFLOP differs many times over."""
    problems = []
    few = [r["skip"] for r in rows if r.get("samples", 99) < 5]
    if few:
        problems.append(f"fewer than 5 timing samples for {', '.join(few[:4])} (raise --min-run-time or --rounds)")
    spread = [r["skip"] for r in rows if r["latency_p90_ms"] > 1.25 * r["latency_ms"]]
    if spread:
        problems.append(
            f"p90 above 1.25 x median for {', '.join(spread[:4])} (a busy machine? set --threads to the "
            "idle cores, raise --rounds)"
        )
    per_gflop = [r["latency_ms"] / r["gflops"] for r in rows if r.get("gflops")]
    if per_gflop and max(per_gflop) > 3 * min(per_gflop):
        problems.append(
            f"latency per GFLOP differs {max(per_gflop) / min(per_gflop):.0f}x between sub-networks "
            "(load changed during the run? raise --rounds)"
        )
    return problems


__all__ = [
    "COLUMNS",
    "bench_subnets",
    "device_name",
    "mark_pareto",
    "save_results",
    "timing_warnings",
    "load_results",
    "pareto_front",
    "select_subnet",
    "switching_cost",
    "time_forward",
]
