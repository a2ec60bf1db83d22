"""Inference: latency of super- vs base-net beside the FLOPs ratio, and at batch 1 eager, torch.compile and CUDA
graphs with the cost of switching sub-network between calls (docs/gpu.md, section 2)."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from adn.deploy.bench import switching_cost
from gpu_jobs import DTYPES, MODES, build, compile_model, counter, peak_mib, reset_peak
from harness import Stopwatch, call_times


def _ms(fn, args, device, warmup: int) -> np.ndarray:
    """Milliseconds of each of ``args.iters`` calls, synchronised after each."""
    return np.array(call_times(fn, args.iters, warmup=warmup, device=device)[1]) * 1e3


def latency_item(report, name, args, device) -> None:
    model, res, fmt, sup, base, g_sup, g_base = build(name, device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[args.infer_dtype]):
        for batch in args.batches:
            x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
            cells = []
            for skip in (sup, base):
                reset_peak(device)
                ms = _ms(partial(model, x, skip=skip), args, device, args.warmup)
                cells.append((np.median(ms), np.percentile(ms, 90), peak_mib(device)))
            (s50, s90, s_mem), (b50, b90, b_mem) = cells
            report.row(
                "infer",
                name,
                batch,
                f"{g_sup:.2f}",
                f"{g_base:.2f}",
                f"{g_base / g_sup:.3f}",
                f"{s50:.2f}",
                f"{s90:.2f}",
                f"{b50:.2f}",
                f"{b90:.2f}",
                f"{b50 / s50:.3f}",
                s_mem,
                b_mem,
                "",
            )


def switch_item(report, name, mode, args, device) -> None:
    model, res, fmt, sup, base, g_sup, g_base = build(name, device)
    callee = model if mode == "eager" else compile_model(model, MODES[mode], args)
    graphs, skips = counter("stats", "unique_graphs"), counter("inductor", "cudagraph_skips")
    x = torch.randn(1, 3, res, res, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[args.infer_dtype]):
        with Stopwatch(device) as warm:
            for _ in range(3):  # compiles both graphs; CUDA graphs: warm-up run, recording, first replay
                for skip in (sup, base):
                    callee(x, skip=skip)
        ms = [_ms(partial(callee, x, skip=s), args, device, 1) for s in (sup, base)]
        sw = switching_cost(callee, x, rounds=args.rounds, min_run_time=args.min_run_time)
    (s50, s90), (b50, b90) = (np.percentile(t, (50, 90)) for t in ms)
    note = "" if mode == "eager" else f"{counter('stats', 'unique_graphs') - graphs} graphs"
    if mode == "CUDA graphs":
        note += f", {counter('inductor', 'cudagraph_skips') - skips} cudagraph skips"
    report.row(
        "switch",
        name,
        mode,
        f"{warm.seconds:.1f}",
        f"{s50:.2f}",
        f"{s90:.2f}",
        f"{b50:.2f}",
        f"{b90:.2f}",
        f"{b50 / s50:.3f}",
        f"{g_base / g_sup:.3f}",
        f"{sw['alternating_ms']:.3f}",
        f"{sw['grouped_ms']:.3f}",
        f"{sw['switching_ms']:+.3f}",
        f"{sw['switching_ms'] / sw['grouped_ms']:+.1%}",
        note,
    )
