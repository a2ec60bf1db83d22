"""Is skipping free? Base-net vs super-net latency against the FLOPs ratio, switching cost, torch.compile.

For every architecture given (default: the paper's, those with its published figures) this
measures super-net (all F) and base-net (all T) latency at each batch size and prints the latency ratio
base/super beside the FLOPs ratio: if skipping is free the two agree. The two configs are timed in
alternating rounds and the median over rounds is kept, so drift in machine load hits both alike.

It then measures the cost of switching sub-network between calls (alternating super/base vs grouped
calls; ~0 expected) and checks ``torch.compile``: one graph per sub-network, none recompiled when a config
repeats.

    python benchmarks/latency.py                                # CPU, batch 1 and 32, ~5-10 min on 2 cores
    python benchmarks/latency.py --device cuda --batch-sizes 1 64
    python benchmarks/latency.py --models resnet50 --output benchmarks/results/latency-cpu.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial

import torch

import adn
from adn.deploy.bench import switching_cost, time_forward
from harness import Report, Stopwatch, table

#: the paper's architectures: those the registry holds its published figures for
DEFAULT_MODELS = [
    m for m in adn.list_models() if adn.model_info(m).published_by == "paper" and adn.model_info(m).published
]


def latency_ratios(model, device, batch_sizes, rounds, min_run_time, resolution):
    """Rows: batch, super/base latency (ms, median over rounds), latency ratio."""
    configs = {"super": (False,) * model.num_stages, "base": (True,) * model.num_stages}
    rows = []
    for batch in batch_sizes:
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        times: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(rounds):
            for key, skip in configs.items():
                times[key].append(time_forward(model, x, skip, min_run_time=min_run_time).median * 1e3)
        sup, base = statistics.median(times["super"]), statistics.median(times["base"])
        rows.append({"batch": batch, "super_ms": sup, "base_ms": base, "latency_ratio": base / sup})
    return rows


def compile_check(name: str, device: torch.device, backend: str) -> dict:
    """Compile ``name`` once and call every sub-network twice: count graphs, compare with eager."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    info = adn.model_info(name)
    model = adn.create_model(name).to(device).eval()
    configs = adn.skip_configs(model)
    # Dynamo keeps at most ``recompile_limit`` (default 8) graphs per function before falling back to eager;
    # an adaptive-depth model needs one per sub-network.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(configs))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter)
    x = torch.randn(1, 3, info.input_size, info.input_size, device=device)
    graphs, max_diff = [], 0.0
    with torch.inference_mode(), Stopwatch(device) as clock:
        for _ in range(2):
            for skip in configs:
                out = compiled(x, skip=skip)
                max_diff = max(max_diff, (out - model(x, skip=skip)).abs().max().item())
            graphs.append(counter.frame_count)
    return {
        "model": name,
        "backend": backend,
        "subnets": len(configs),
        "graphs_first_pass": graphs[0],
        "recompiles_second_pass": graphs[1] - graphs[0],
        "max_abs_diff": max_diff,
        "seconds": clock.seconds,
    }


def model_rows(report: Report, name: str, args, device: torch.device) -> dict:
    """``name``'s latency rows (every batch size); returns its switching cost at batch 1."""
    info = adn.model_info(name)
    model = adn.create_model(name).to(device).eval()
    g_super, g_base = (adn.count_flops(model, s, info.input_size) / 1e9 for s in (False, True))
    for r in latency_ratios(model, device, args.batch_sizes, args.rounds, args.min_run_time, info.input_size):
        cells = (f"{r['super_ms']:.1f}", f"{r['base_ms']:.1f}", f"{r['latency_ratio']:.3f}")
        report.row("latency", name, f"{g_super:.2f}", f"{g_base:.2f}", f"{g_base / g_super:.3f}", r["batch"], *cells)
    x = torch.randn(1, 3, info.input_size, info.input_size, device=device)
    return switching_cost(model, x, rounds=args.rounds, min_run_time=args.min_run_time)


def switching_table(report: Report, switching: list[tuple[str, dict]]) -> None:
    report.add(
        "switching",
        "Switching cost (batch 1): the same super-net and base-net calls timed alternating (S B S B, a switch",
        "before every call) and grouped (S S B B), in interleaved rounds; the difference is the cost of switching.",
        *table("model", "alternating (ms/call)", "grouped (ms/call)", "switching cost (ms/call)", "relative"),
    )
    for name, s in switching:
        report.row(
            "switching",
            name,
            f"{s['alternating_ms']:.2f}",
            f"{s['grouped_ms']:.2f}",
            f"{s['switching_ms']:+.2f}",
            f"{s['switching_ms'] / s['grouped_ms']:+.1%}",
        )


def compile_note(report: Report, args, device: torch.device) -> None:
    c = compile_check(args.compile_model, device, args.compile_backend)
    report.add(
        "compile",
        f"torch.compile ({c['model']}, backend {c['backend']!r} behind a graph counter, "
        f"recompile_limit raised to {c['subnets']}): {c['graphs_first_pass']} graphs for {c['subnets']} "
        f"sub-networks on the first pass, {c['recompiles_second_pass']} recompilations on the second; "
        f"max |compiled - eager| = {c['max_abs_diff']:.1e}; {c['seconds']:.0f} s in all.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="architectures (unregistered: skipped)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3, help="alternating super/base rounds per batch size")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing (default 0.5)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    parser.add_argument("--compile-model", default="resnet50", help="model for the torch.compile check ('' to skip)")
    parser.add_argument(
        "--compile-backend",
        default="eager",
        help="backend behind the graph counter: eager (fast), aot_eager or inductor",
    )
    parser.add_argument("--output", help="also write the report (markdown) here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = Report(args.output, "Latency vs FLOPs: base-net / super-net", script=__file__, argv=argv)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        report.environment.append(f"- Device: {torch.cuda.get_device_name(device)}")
    models = [m for m in args.models if m in adn.list_models()]
    report.add(
        "latency",
        f"Batch sizes {args.batch_sizes}; {args.rounds} alternating rounds of {args.min_run_time} s per timing "
        "(torch.utils.benchmark, median).",
        *table(
            "model",
            "GFLOPs super",
            "GFLOPs base",
            "FLOPs ratio",
            "batch",
            "latency super (ms)",
            "latency base (ms)",
            "latency ratio",
        ),
    )
    switching = [report.guard(name, partial(model_rows, report, name, args, device), slot="latency", lead=(name,))
                 for name in models]  # fmt: skip
    switching_table(report, [(name, s) for name, s in zip(models, switching, strict=True) if s is not None])
    if args.compile_model and args.compile_model in adn.list_models():
        report.guard(f"torch.compile {args.compile_model}", partial(compile_note, report, args, device))
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
