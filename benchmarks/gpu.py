"""GPU benchmark (issue #14): what self-distillation costs in training, what skipping saves in inference.

1. Training throughput on synthetic data on the device: the ADN self-distillation step vs a plain step on the
   same model, eager (bf16; fp16 + GradScaler) and with torch.compile, beside the FLOPs ratio (super+base)/super.
2. Inference latency of super- vs base-net (median, p90, peak memory) beside the FLOPs ratio; the cost of
   switching sub-network between calls, eager, with torch.compile and with CUDA graphs.
3. Data pipeline: images/s per DataLoader worker of the training loader on a synthetic ImageFolder of JPEGs.

Items run by priority (eager first, compilation last) under a time budget. Each is guarded: a failure or an
overrun becomes a ``failed`` cell and the run goes on; items that would start too late are reported skipped.
The report file is rewritten after every row (a killed run leaves partial results) and printed to stdout at
the end; progress goes to stderr. See docs/gpu.md.

    python benchmarks/gpu.py                  # one CUDA GPU, < 6 min: benchmarks/results/gpu-<device>.md
    python benchmarks/gpu.py --smoke          # CPU, resnet20, 2 steps per measurement: every section runs
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import adn
from adn import data as adn_data
from adn.deploy.bench import switching_cost
from adn.training.engine import StepOptions, train_step
from adn.training.losses import SelfDistillation

KD_TOPK, ALPHA, TEMPERATURE = 500, 0.5, 1.0  # adn train's defaults
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODES = {"eager": None, "torch.compile": "default", "CUDA graphs": "reduce-overhead"}
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


class Report:
    """Markdown in named slots (rendered in the order first used), rewritten to ``path`` after every change."""

    def __init__(self, path: Path, budget: float) -> None:
        self.path, self.budget, self.start = path, budget, time.perf_counter()
        self.slots: dict[str, list[str]] = {}
        self.skipped = self.failed = 0
        self.train_rates: dict[str, list[tuple[float, float, str]]] = {}  # model -> (ADN, plain img/s, how)
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    def render(self) -> str:
        return "\n".join(line for lines in self.slots.values() for line in [*lines, ""])

    def add(self, slot: str, *lines: str) -> None:
        self.slots.setdefault(slot, []).extend(lines)
        self.path.with_suffix(".tmp").write_text(self.render())
        os.replace(self.path.with_suffix(".tmp"), self.path)

    def row(self, slot: str, *cells) -> None:
        line = "| " + " | ".join(str(c) for c in cells) + " |"
        self.log(line)
        self.add(slot, line)

    def fail_row(self, slot: str, message: str, *lead) -> None:
        """A row of ``lead`` cells, dashes, and ``message`` in the last (note) column."""
        columns = next(line for line in self.slots[slot] if line.startswith("| ")).count("|") - 1
        self.row(slot, *lead, *["–"] * (columns - len(lead) - 1), message)

    def guarded(self, what: str, fn: Callable[[], object], need: float, cap: float, slot: str, *lead) -> None:
        """Run ``fn`` unless fewer than ``need`` s of budget are left, stopping it after ``min(cap, budget
        left)`` s; when skipped or failed, add a row of ``lead`` cells that says so to ``slot``."""
        left = self.budget - (time.perf_counter() - self.start)
        if left < need:
            self.skipped += 1
            return self.fail_row(slot, f"skipped: time budget ({left:.0f} s left, needs ~{need:.0f} s)", *lead)
        self.log(f"{what} ...")
        limit = max(1, math.ceil(min(cap, left)))
        alarm = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()

        def on_alarm(signum, frame):
            raise TimeoutError(f"stopped after {limit} s")

        if alarm:
            previous = signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(limit)
        try:
            try:
                fn()
            finally:
                if alarm:
                    signal.alarm(0)  # before the handler below: a late alarm cannot escape it
        except Exception as exc:  # every failure becomes a cell; the run goes on
            traceback.print_exc(file=sys.stderr)
            self.failed += 1
            text = " ".join(str(exc).split())[:200].replace("|", "/") or "no message"
            self.fail_row(slot, f"failed: {type(exc).__name__}: {text}", *lead)
        finally:
            if alarm:
                signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], n: int, warmup: int, device: torch.device, per_call: bool = False):
    """``(warm-up s, times)``: the time of each of ``n`` calls (``per_call``: synchronised after each), else one
    entry, the mean over ``n`` calls synchronised only at both ends."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    stamps = [time.perf_counter()]
    for _ in range(n):
        fn()
        if per_call:
            sync(device)
            stamps.append(time.perf_counter())
    sync(device)
    times = np.diff(stamps if per_call else [stamps[0], time.perf_counter()]) / (1 if per_call else n)
    return stamps[0] - start, times.tolist()


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "n/a"


def counter(group: str, key: str) -> int:
    from torch._dynamo.utils import counters

    return int(counters[group][key])


def build(name: str, device: torch.device, num_classes: int = 1000, train: bool = False):
    """``(model, resolution, memory format, super config, base config, GMACs super, GMACs base)``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if name.startswith(("resnet", "mobilenet")) else torch.contiguous_format
    model = adn.create_model(name, num_classes=num_classes).to(device, memory_format=fmt).train(train)
    res = adn.model_info(name).input_size
    sup, base = (False,) * model.num_stages, (True,) * model.num_stages
    return model, res, fmt, sup, base, *(adn.count_flops(model, s, res) / 1e9 for s in (sup, base))


def compile_model(model, mode: str | None, args):
    """``torch.compile`` of the whole model (one graph per sub-network); ``mode`` only with Inductor."""
    torch._dynamo.reset()
    how = {"mode": mode} if args.compile_backend == "inductor" else {"backend": args.compile_backend}
    return torch.compile(model, dynamic=False, **how)


# ----------------------------------------------------------------------------------------------- training
def make_steps(model, sup, base, opt, scaler, x, y, dtype, topk: int):
    """The plain step and the ADN self-distillation step (``adn.training.engine.train_step``: the trainer's own)."""
    autocast = partial(torch.autocast, x.device.type, dtype=dtype)

    def backward(loss):
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def update():
        if scaler is not None:
            scaler.step(opt)  # checks for inf gradients on the host: one sync per step (as in training)
            scaler.update()
        else:
            opt.step()

    def plain():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x, skip=sup), y)
        backward(loss)
        update()

    distill, criterion = SelfDistillation(ALPHA, TEMPERATURE, topk), torch.nn.CrossEntropyLoss()

    options = StepOptions(amp=True, amp_dtype=dtype)

    def adn_step():  # the trainer's own step (super-net backward, then base-net backward; no host sync)
        train_step(model, distill, x, y, criterion, opt, options, scaler)

    return {"plain": plain, "ADN": adn_step}


def train_item(report, name, batch, precision, mode, args, device) -> None:
    classes = 10 if args.smoke else (1000 if adn.model_info(name).input_size >= 224 else 100)
    model, res, fmt, sup, base, g_sup, g_base = build(name, device, classes, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    callee = model if mode == "eager" else compile_model(model, MODES[mode], args)
    graphs = counter("stats", "unique_graphs")
    out = {}
    for kind, fn in make_steps(callee, sup, base, opt, scaler, x, y, DTYPES[precision], min(KD_TOPK, classes)).items():
        reset_peak(device)
        warm, (t,) = timeit(fn, args.steps, args.warmup if mode == "eager" else max(args.warmup, 3), device)
        out[kind] = (batch / t, t, warm, peak_mib(device))
    graphs = f"{counter('stats', 'unique_graphs') - graphs}" if mode != "eager" else "–"
    (p_ips, p_t, p_warm, p_mem), (a_ips, a_t, a_warm, a_mem) = out["plain"], out["ADN"]
    report.row(
        "train",
        name,
        batch,
        res,
        precision,
        mode,
        f"{p_ips:.0f}",
        f"{a_ips:.0f}",
        f"{a_t / p_t:.3f}",
        f"{(g_sup + g_base) / g_sup:.3f}",
        p_mem,
        a_mem,
        f"{p_warm:.1f} / {a_warm:.1f}",
        graphs,
        "",
    )
    report.train_rates.setdefault(name, []).append((a_ips, p_ips, f"{precision}, {mode}"))


# ---------------------------------------------------------------------------------------------- inference
def latency_item(report, name, args, device) -> None:
    model, res, fmt, sup, base, g_sup, g_base = build(name, device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=DTYPES[args.infer_dtype]):
        for batch in args.batches:
            x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
            cells = []
            for skip in (sup, base):
                reset_peak(device)
                ms = np.array(timeit(partial(model, x, skip=skip), args.iters, args.warmup, device, True)[1]) * 1e3
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
        start = time.perf_counter()
        for _ in range(3):  # compiles both graphs; CUDA graphs: warm-up run, recording, first replay
            for skip in (sup, base):
                callee(x, skip=skip)
        sync(device)
        warm = time.perf_counter() - start
        ms = [np.array(timeit(partial(callee, x, skip=s), args.iters, 1, device, True)[1]) * 1e3 for s in (sup, base)]
        sw = switching_cost(callee, x, rounds=args.rounds, min_run_time=args.min_run_time)
    (s50, s90), (b50, b90) = (np.percentile(t, (50, 90)) for t in ms)
    note = "" if mode == "eager" else f"{counter('stats', 'unique_graphs') - graphs} graphs"
    if mode == "CUDA graphs":
        note += f", {counter('inductor', 'cudagraph_skips') - skips} cudagraph skips"
    report.row(
        "switch",
        name,
        mode,
        f"{warm:.1f}",
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


# ---------------------------------------------------------------------------------------------- data
def write_images(root: Path, n: int, classes: int = 8) -> float:
    """``n`` train JPEGs of 500x375 (smooth colour fields plus noise: ~100 KB, like ImageNet's) and one val image
    per class; returns the mean train file size in KB."""
    from PIL import Image

    rng, sizes = np.random.default_rng(0), []
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            path = root / split / f"class{i % classes}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            low = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375), 3)
            pixels = np.clip(np.asarray(low, dtype=np.float32) + rng.normal(0, 20, (375, 500, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
            sizes.append(path.stat().st_size / 1024)
    return float(np.mean(sizes[:n]))


def loader_rate(train_set, workers: int, args, pin: bool) -> float:
    """Images/s of the training loader, wrapped as in ``adn train``, after 2 batches per worker."""
    warm, timed, batch = 2 * workers, args.loader_batches * workers, args.loader_batch
    data = torch.utils.data.ConcatDataset([train_set] * math.ceil((warm + timed) * batch / len(train_set)))
    sampler = adn_data.ResumableSampler(adn_data.SeededRandomSampler(data))
    loader = torch.utils.data.DataLoader(
        adn_data.SeededDataset(data), batch_size=batch, sampler=sampler, num_workers=workers, pin_memory=pin
    )
    images, start = 0, 0.0
    for i, (x, _) in enumerate(loader):
        if i == warm - 1:
            start = time.perf_counter()
        elif i >= warm:
            images += x.shape[0]
            if i == warm + timed - 1:
                break
    return images / (time.perf_counter() - start)


def data_item(report, args, device) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    counts = sorted({2**k for k in range(int(math.log2(cores)) + 1)} | {cores})
    with tempfile.TemporaryDirectory(prefix="adn-gpu-bench-") as tmp:
        kb = write_images(Path(tmp), args.images)
        train_set, _, _ = adn_data.build_datasets(tmp, image_size=224)
        report.add("data_notes", f"{args.images} JPEGs, mean {kb:.0f} KB; CPU cores available: {cores}.")
        for workers in counts:
            per_worker = loader_rate(train_set, workers, args, pin=device.type == "cuda") / workers
            report.row("data", workers, f"{per_worker * workers:.0f}", f"{per_worker:.0f}")
    for name, rates in report.train_rates.items():
        if adn.model_info(name).input_size >= 224 or args.smoke:  # the small models do not use this pipeline
            adn_ips, plain_ips, how = max(rates)
            report.add(
                "data_notes",
                f"Feeding {name} ({how}): the ADN step ({adn_ips:.0f} img/s) needs ~{math.ceil(adn_ips / per_worker)} "
                f"workers, the plain step ({plain_ips:.0f} img/s) ~{math.ceil(plain_ips / per_worker)}, at the "
                f"{per_worker:.0f} img/s per worker measured with {counts[-1]} workers.",
            )


# --------------------------------------------------------------------------------------------- the report
def table(*columns: str) -> list[str]:
    return ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def header(report, args, device, argv) -> None:
    import torchvision

    where, versions = "CPU (smoke mode)", "no CUDA"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        where = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"
        versions = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    report.add(
        "header",
        f"# ADN benchmark on {where.split(',')[0]} ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Device: {where}; host: {os.cpu_count()} CPU cores",
        f"- torch {torch.__version__}, torchvision {torchvision.__version__}, {versions}; float32 matmul "
        "precision 'high', cudnn.benchmark on",
        f"- Command: `{' '.join(['python benchmarks/gpu.py', *argv])}`",
        f"- Time budget {args.budget:.0f} s: items run by priority (eager first, compilation last); an item that "
        "would start with too little budget left is skipped, one that overruns is stopped (`failed: TimeoutError`)",
        f"- torch.compile: `torch.compile(model, dynamic=False)`, backend {args.compile_backend}, recompile_limit 64",
    )
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
    report = Report(Path(args.output or Path(__file__).resolve().parent / "results" / f"gpu-{slug}.md"), args.budget)
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    config = torch._dynamo.config  # one graph per sub-network and mode: more than the default limit of 8
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    setattr(config, limit, max(getattr(config, limit), 64))
    header(report, args, device, argv)
    train = [(n, int(b)) for n, b in (s.split(":") for s in args.train)]

    def run_train(name, batch, precision, mode, need):
        job = partial(train_item, report, name, batch, precision, mode, args, device)
        report.guarded(f"train {name} {precision} {mode}", job, need, 150, "train", name, batch, "", precision, mode)

    def run_switch(name, mode, need):
        if mode == "CUDA graphs" and (device.type != "cuda" or args.compile_backend != "inductor"):
            return report.fail_row("switch", "skipped: needs CUDA", name, mode)
        job = partial(switch_item, report, name, mode, args, device)
        report.guarded(f"switch {name} {mode}", job, need, 120, "switch", name, mode)

    # priority 1: eager training and inference, the data pipeline
    for name, batch in train:
        for precision in DTYPES:
            run_train(name, batch, precision, "eager", need=10)
    for name in args.infer:
        report.guarded(f"latency {name}", partial(latency_item, report, name, args, device), 10, 90, "infer", name)
        run_switch(name, "eager", need=5)
    report.guarded("data pipeline", partial(data_item, report, args, device), 10, 90, "data")
    # priority 2: compilation, the first model of each kind before the others
    plan = [("train", *train[0]), ("switch", args.infer[0]), *(("train", *t) for t in train[1:])]
    for kind, name, *batch in plan + [("switch", n) for n in args.infer[1:]]:
        if kind == "train":
            run_train(name, batch[0], args.compile_dtype, "torch.compile", need=45)
        else:
            run_switch(name, "torch.compile", need=30)
            run_switch(name, "CUDA graphs", need=30)
    elapsed = time.perf_counter() - report.start
    report.add(
        "footer",
        f"Finished in {elapsed:.0f} s (budget {args.budget:.0f} s); {report.skipped} items skipped for time, "
        f"{report.failed} failed.",
    )
    print(report.render(), end="", flush=True)
    report.log(f"wrote {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
