"""GPU benchmark (issue #14): what self-distillation costs in training, what skipping saves in inference.

1. Training throughput on synthetic data on the device: the ADN self-distillation step vs a plain step on the
   same model, eager (bf16; fp16 + GradScaler) and with torch.compile, beside the FLOPs ratio (super+base)/super.
2. Inference latency of super- vs base-net (median, p90, peak memory) beside the FLOPs ratio; the cost of
   switching sub-network between calls, eager, with torch.compile and with CUDA graphs.
3. Data pipeline: images/s per DataLoader worker of the training loader on a synthetic ImageFolder of JPEGs.

Items run by priority (eager first, compilation last) under a time budget, each guarded (``harness.Report.guard``);
the report file is rewritten after every row and printed to stdout at the end; progress goes to stderr. The jobs
live in ``gpu_jobs/``; how and why they measure: docs/gpu.md.

    python benchmarks/gpu.py                  # one CUDA GPU, < 6 min: benchmarks/results/gpu-<device>.md
    python benchmarks/gpu.py --smoke          # CPU, resnet20, 2 steps per measurement: every section runs
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, gpu_jobs: also when loaded by path

import torch  # noqa: E402

from gpu_jobs import DTYPES  # noqa: E402
from gpu_jobs.data import data_item  # noqa: E402
from gpu_jobs.inference import latency_item, switch_item  # noqa: E402
from gpu_jobs.training import ALPHA, KD_TOPK, TEMPERATURE, make_steps, train_item  # noqa: E402
from harness import Report, table  # noqa: E402

OPTIONS = [  # flag, type, default, --smoke default, help
    ("--train", str, ["resnet50:128", "vit_b_16:64", "resnet56:1024"], ["resnet20:8"], "model:batch to train"),
    ("--infer", str, ["resnet50", "mobilenet_v2", "swin_t", "vit_b_16"], ["resnet20"], "models for inference"),
    ("--batches", int, [1, 64], [1, 4], "inference batch sizes"),
    ("--steps", int, 20, 2, "timed training steps"),
    ("--warmup", int, 5, 1, "warm-up steps (training) and calls (inference)"),
    ("--iters", int, 50, 2, "timed inference calls"),
    ("--rounds", int, 3, 1, "switching-cost rounds"),
    ("--min-run-time", float, 0.2, 0.01, "seconds per switching-cost timing"),
    ("--images", int, 512, 16, "JPEGs in the synthetic ImageFolder"),
    ("--loader-batch", int, 32, 4, "data loader batch size"),
    ("--loader-batches", int, 8, 2, "timed data loader batches per worker"),
    ("--budget", float, 330.0, 120.0, "seconds for all items; later items are skipped"),
    ("--compile-backend", str, "inductor", "aot_eager", "torch.compile backend"),
]


def header(report, args, device) -> None:
    """The device, the settings, and each section's heading, method in brief and table head."""
    where, versions = "CPU (smoke mode)", "no CUDA"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        where = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"
        versions = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    report.title = f"ADN benchmark on {where.split(',')[0]}"
    report.environment = [
        f"- Device: {where}; {versions}; float32 matmul precision 'high', cudnn.benchmark on",
        f"- Time budget {args.budget:.0f} s: items run by priority (eager first, compilation last); an item that "
        "would start with too little budget left is skipped, one that overruns is stopped (`failed: TimeoutError`)",
        f"- torch.compile: `torch.compile(model, dynamic=False)`, backend {args.compile_backend}, recompile_limit 64",
    ]
    _train_section(report, args)
    _infer_section(report, args)
    _switch_section(report, args)
    _data_section(report, args)


def _train_section(report, args) -> None:
    """Section 1: training throughput."""
    report.add(
        "train",
        "## 1. Training throughput",
        "",
        "Synthetic data on the device; SGD (momentum 0.9, weight decay 1e-4, foreach); CNNs in channels_last; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps (compiled: at least 3), `synchronize` + "
        "`perf_counter` around the timed steps. **plain**: super-net forward, cross-entropy, backward, step. "
        f"**ADN**: super-net forward, {ALPHA} * CE, backward; base-net forward, {1 - ALPHA} * T^2 * KL to the "
        f"detached super-net logits (T {TEMPERATURE}, top-{KD_TOPK} classes), backward; one step: "
        "`adn.training.engine.train_step`, the one the trainer runs (no host sync; fp16: GradScaler.step still "
        "syncs once to check for inf). 1000 classes at 224 px, 100 at 32 px (smoke: 10). **ADN/plain**: step-time "
        "ratio; **FLOPs ratio**: (super + base) / super forward MACs (`adn.count_flops`). **torch.compile** rows "
        f"({args.compile_dtype}): the model is compiled (a forward and an AOTAutograd backward graph per "
        "sub-network); losses, GradScaler and optimizer run eagerly. Warm-up time includes cuDNN autotuning and "
        "compilation; peak memory (`torch.cuda.max_memory_allocated`) covers warm-up and timed steps.",
        *table(
            "model",
            "batch",
            "px",
            "precision",
            "mode",
            "plain img/s",
            "ADN img/s",
            "ADN/plain",
            "FLOPs ratio",
            "peak MiB plain",
            "peak MiB ADN",
            "warm-up s plain / ADN",
            "graphs",
            "note",
        ),
    )


def _infer_section(report, args) -> None:
    """Section 2: latency of super- vs base-net."""
    report.add(
        "infer",
        "## 2. Inference latency: base-net vs super-net",
        "",
        f"Eval mode, `torch.inference_mode`, {args.infer_dtype} autocast, CNNs in channels_last; latency of single "
        f"calls ({args.iters} after {args.warmup} warm-up calls, `synchronize` after each), median and p90 in ms; "
        "**latency ratio** base/super (medians) beside the **FLOPs ratio** base/super; peak memory "
        "(`torch.cuda.max_memory_allocated`, weights included) during that sub-network's calls.",
        *table(
            "model",
            "batch",
            "GFLOPs super",
            "GFLOPs base",
            "FLOPs ratio",
            "super ms",
            "super p90",
            "base ms",
            "base p90",
            "latency ratio",
            "peak MiB super",
            "peak MiB base",
            "note",
        ),
    )


def _switch_section(report, args) -> None:
    """Section 2, batch 1: eager, torch.compile, CUDA graphs; switching cost."""
    report.add(
        "switch",
        "### Batch 1: eager, torch.compile, CUDA graphs; switching cost",
        "",
        '**torch.compile**: one graph per sub-network; **CUDA graphs**: `mode="reduce-overhead"` (Inductor and '
        "CUDA graph trees; a *cudagraph skip* means a graph ran without them). Warm-up: 3 calls of each "
        f"sub-network. Switching cost (`adn.deploy.bench.switching_cost`, `torch.utils.benchmark`, {args.rounds} "
        f"interleaved rounds of {args.min_run_time} s): per-call time of the same calls alternating (S B S B) "
        "and grouped (S S B B); the difference is what switching costs.",
        *table(
            "model",
            "mode",
            "warm-up s",
            "super ms",
            "super p90",
            "base ms",
            "base p90",
            "latency ratio",
            "FLOPs ratio",
            "alternating ms/call",
            "grouped ms/call",
            "switching ms/call",
            "relative",
            "note",
        ),
    )


def _data_section(report, args) -> None:
    """Section 3: the data pipeline."""
    report.add(
        "data",
        "## 3. Data pipeline",
        "",
        "CPU side of the default ImageFolder training loader: `adn.data.build_datasets` train preset at 224 px "
        "(RandomResizedCrop, flip, normalise), wrapped as `adn train` does (SeededDataset, ResumableSampler), "
        f"batch {args.loader_batch}, pin_memory on CUDA; synthetic 500x375 JPEGs in a temp dir, repeated (the page "
        f"cache holds them: decoding and augmentation are measured, not the disk); {args.loader_batches} batches "
        "per worker timed after 2 per worker.",
        *table("workers", "img/s", "img/s per worker"),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, 2 steps per measurement (< 1 min)")
    p.add_argument("--output", help="report path (default: benchmarks/results/gpu-<device>.md)")
    p.add_argument("--infer-dtype", choices=DTYPES, default="fp16", help="inference autocast dtype (fp16)")
    p.add_argument("--compile-dtype", choices=DTYPES, default="bf16", help="autocast of compiled training (bf16)")
    for flag, kind, full, smoke, text in OPTIONS:
        many = "+" if isinstance(full, list) else None
        p.add_argument(flag, type=kind, nargs=many, help=f"{text} (default {full}; --smoke: {smoke})")
    args = p.parse_args(argv)
    for flag, _, full, smoke, _ in OPTIONS:
        if getattr(args, flag[2:].replace("-", "_")) is None:
            setattr(args, flag[2:].replace("-", "_"), smoke if args.smoke else full)
    if not args.smoke and not torch.cuda.is_available():
        p.error("no CUDA device; run with --smoke to check the script on the CPU")
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:  # it checks code paths, not speed: one thread is fastest on a busy machine
        torch.set_num_threads(1)
    slug = "cpu-smoke" if args.smoke else re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    path = Path(args.output or Path(__file__).resolve().parent / "results" / f"gpu-{slug}.md")
    report = Report(path, script=__file__, argv=argv, budget=args.budget, progress=sys.stderr)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    config = torch._dynamo.config  # one graph per sub-network and mode: more than the default limit of 8
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    setattr(config, limit, max(getattr(config, limit), 64))
    header(report, args, device)
    run_all(report, args, device)
    report.add(
        "footer",
        f"Finished in {report.clock.seconds:.0f} s (budget {args.budget:.0f} s); {report.skipped} items skipped for "
        f"time, {report.failed} failed.",
    )
    report.finish()
    report.log(f"wrote {report.path}")
    return 0


def run_all(report: Report, args, device: torch.device) -> None:
    """Every item, by priority, each guarded: a failure, an overrun or a late start is a row that says so."""
    train, rates = [(n, int(b)) for n, b in (s.split(":") for s in args.train)], {}

    def run_train(name, batch, precision, mode, need):
        job = partial(train_item, report, rates, name, batch, precision, mode, args, device)
        lead = (name, batch, "", precision, mode)
        report.guard(f"train {name} {precision} {mode}", job, slot="train", lead=lead, need=need, cap=150)

    def run_switch(name, mode, need):
        if mode == "CUDA graphs" and (device.type != "cuda" or args.compile_backend != "inductor"):
            return report.fail_row("switch", "skipped: needs CUDA", name, mode)
        job = partial(switch_item, report, name, mode, args, device)
        report.guard(f"switch {name} {mode}", job, slot="switch", lead=(name, mode), need=need, cap=120)

    # priority 1: eager training and inference, the data pipeline
    for name, batch in train:
        for precision in DTYPES:
            run_train(name, batch, precision, "eager", need=10)
    for name in args.infer:
        job = partial(latency_item, report, name, args, device)
        report.guard(f"latency {name}", job, slot="infer", lead=(name,), need=10, cap=90)
        run_switch(name, "eager", need=5)
    job = partial(data_item, report, rates, args, device)
    report.guard("data pipeline", job, slot="data", need=10, cap=90)
    # priority 2: compilation, the first model of each kind before the others
    plan = [("train", *train[0]), ("switch", args.infer[0]), *(("train", *t) for t in train[1:])]
    for kind, name, *batch in plan + [("switch", n) for n in args.infer[1:]]:
        if kind == "train":
            run_train(name, batch[0], args.compile_dtype, "torch.compile", need=45)
        else:
            run_switch(name, "torch.compile", need=30)
            run_switch(name, "CUDA graphs", need=30)


__all__ = ["ALPHA", "KD_TOPK", "OPTIONS", "TEMPERATURE", "main", "make_steps"]


if __name__ == "__main__":
    sys.exit(main())
