"""One file, every depth: what the switchable ONNX file costs against the single-depth files it replaces.

For each model (default resnet50, mobilenet_v2, resnet20; random weights and norm statistics, the registered
class count), at
batch 1 and 32 and for a few sub-networks (super-net, base-net and mixed ones; every one for resnet20):
onnxruntime CPU latency (ORT_ENABLE_ALL) of the switchable file (``adn export --all-subnets``) and of the
single-depth file of the same sub-network (``adn export --skip-cfg``), eager PyTorch, and ``torch.compile``
(inductor, default options) of the model called with a tensor skip (one compiled graph for every config; not
for the calibrated rows), side by side as ratios to the single-depth file. ResNet-50 also with
calibrated statistics, every way the switchable file can hold them (``--calibrated-stats``: ``hybrid``, the
default; ``affine``: one norm folded, a per-config correction at run time; ``gathered``: gathered per config at
run time; ``constant``: folded into a branch per upstream config), baked into the single-depth one. Then the
switching cost (alternating vs grouped configs, switchable file, batch 1), the file sizes
(switchable vs the super-net's single-depth file vs all 2^S single-depth files, estimated from the bytes per
parameter of the super-net's file and the parameters each sub-network uses) and the resident memory of an
onnxruntime session of the switchable file vs the super-net's file. Timing: min of N calls, in
interleaved rounds, so drift in a shared machine's load hits every column alike.

    python benchmarks/switchable.py --no-inductor --output benchmarks/results/switchable-cpu-quiet.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

import adn
from adn.deploy.export import export_onnx, export_subnet, onnx_size
from adn.deploy.export_switchable import export_switchable
from common import ort_session as _session
from common import train_resnet20
from common import trained_like as _trained_like
from harness import Report, Stopwatch, interleaved_min_ms
from harness import min_ms as _min_ms


def _configs(model) -> list[tuple[bool, ...]]:
    all_configs = adn.skip_configs(model)
    if len(all_configs) <= 8:
        return all_configs
    n = model.num_stages
    return [all_configs[0], tuple(i < n // 2 for i in range(n)), all_configs[-1]]  # super, first half skipped, base


def _session_mb(path: Path, threads: int) -> tuple[float, float]:
    """Resident memory an onnxruntime session of ``path`` adds in a fresh process, in MB: the peak while it is made,
    and what it holds after one batch-1 call (every weight read) and ``malloc_trim`` (the memory freed while it was
    optimised returned)."""
    code = """
import ctypes, sys, numpy as np, onnxruntime as ort
rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
before = rss(); o = ort.SessionOptions(); o.intra_op_num_threads = int(sys.argv[2])
s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider']); peak = rss() - before
feed = {i.name: np.zeros([1 if isinstance(d, str) else d for d in i.shape], 'float32' if 'float' in i.type else bool)
        for i in s.get_inputs()}
s.run(None, feed); ctypes.CDLL('libc.so.6').malloc_trim(0); print(peak, rss() - before)
"""
    out = subprocess.run([sys.executable, "-c", code, str(path), str(threads)], capture_output=True, text=True)
    peak, held = out.stdout.strip().splitlines()[-1].split()
    return float(peak), float(held)


def bench_model(name: str, args, out_dir: Path, stats: str | None) -> tuple[list[str], list[str]]:
    """Rows for ``name``; ``stats``: None (not calibrated), else how the switchable file holds calibrated stats."""
    res = adn.model_info(name).input_size
    model = _trained_like(adn.create_model(name)).eval()
    if stats:
        torch.manual_seed(0)
        adn.calibrate(model, [torch.randn(4, 3, res, res)], batches=1)
    tag = f"{name}{f' (calibrated, {stats} stats)' if stats else ''}"
    clock = Stopwatch()
    sw_path = export_switchable(
        model, out_dir / f"{name}-{stats}-all.onnx", resolution=res, pt2=False, **({"stats": stats} if stats else {})
    )["onnx"]
    export_s = clock.seconds
    switch = _session(sw_path, args.threads)
    configs = _configs(model)
    rows, sizes = [], {}
    # what a PyTorch user compiles: the model itself, called with a tensor skip (one graph serves every config);
    # static shapes, so each batch size gets its own graph as a single-depth file does
    compiled = torch.compile(model, fullgraph=True, dynamic=False) if args.inductor and not stats else None
    for c in configs:
        label = adn.format_skip(c)
        flat_path = out_dir / f"{name}-{stats}-{label}.onnx"
        sub = export_subnet(model, c)
        export_onnx(sub, torch.randn(1, 3, res, res), flat_path, opset=18)
        sizes[label] = onnx_size(flat_path)
        flat = _session(flat_path, args.threads)
        for batch in args.batch_sizes:
            reps = args.reps if batch == 1 else max(2, args.reps // 8)
            x = torch.randn(batch, 3, res, res)
            feed, skip = x.numpy(), np.array(c)
            fns = {
                "switchable": lambda: switch.run(None, {"image": feed, "skip": skip}),  # noqa: B023
                "single": lambda: flat.run(None, {"images": feed}),  # noqa: B023
                "eager": lambda: model(x, skip=c),  # noqa: B023
            }
            if compiled is not None:
                fns["compile"] = lambda: compiled(x, torch.tensor(c))  # noqa: B023
            # ruff: B023 above is moot: every lambda is called before the loop moves on
            with torch.no_grad():
                if compiled is not None:
                    compiled(x, torch.tensor(c))  # compile outside the timed rounds (once per batch size)
                best = interleaved_min_ms(fns, args.rounds, reps)
            ratio = {k: f"{v / best['single']:.3f}" for k, v in best.items()}
            rows.append(
                f"| {tag} | {label} | {batch} | {best['single']:.1f} | {ratio['switchable']} | {ratio['eager']} | "
                f"{ratio.get('compile', 'n/a')} |"
            )
            print(rows[-1], flush=True)
    # switching cost: the switchable file, batch 1, alternating super/base vs all super then all base
    x = np.random.rand(1, 3, res, res).astype("float32")
    ends = [np.array(configs[0]), np.array(configs[-1])]
    n = args.reps

    def alternating():
        for i in range(2 * n):
            switch.run(None, {"image": x, "skip": ends[i % 2]})

    def grouped():
        for i in range(2 * n):
            switch.run(None, {"image": x, "skip": ends[i // n]})

    alt = min(_min_ms(alternating, 1) for _ in range(args.rounds))
    grp = min(_min_ms(grouped, 1) for _ in range(args.rounds))
    per_param = sizes[adn.format_skip(configs[0])] / adn.count_params(model, configs[0])
    all_files = sum(adn.count_params(model, c) for c in adn.skip_configs(model)) * per_param
    super_size = sizes[adn.format_skip(configs[0])]
    memory = [
        _session_mb(p, args.threads) for p in (sw_path, out_dir / f"{name}-{stats}-{adn.format_skip(configs[0])}.onnx")
    ]
    size_row = (
        f"| {tag} | {onnx_size(sw_path) / 1e6:.1f} | {super_size / 1e6:.1f} | "
        f"{onnx_size(sw_path) / super_size:.3f} | {2**model.num_stages} files: {all_files / 1e6:.0f} | "
        f"{memory[0][1]:.0f} / {memory[1][1]:.0f} (peak {memory[0][0]:.0f} / {memory[1][0]:.0f}) | {export_s:.0f} | "
        f"{alt / grp:.3f} |"
    )
    print(size_row, flush=True)
    return rows, [size_row]


def int8_rows(args, out_dir: Path) -> list[str]:
    """Acc@1 on the built-in val split and batch-1 latency of every resnet20 sub-network, float32 vs INT8."""
    from torch.utils.data import DataLoader

    from adn.data.loaders import build_calibration_set, build_eval_loader
    from adn.deploy.quantize import quantize_int8

    model = train_resnet20(args.int8_epochs)
    val, _ = build_eval_loader(image_size=32, batch_size=128)
    calib = DataLoader(build_calibration_set(image_size=32), batch_size=32, shuffle=True)
    rows = [
        "| sub-network | Acc@1 float32 | Acc@1 INT8 | ORT ms float32 (b1) | ORT ms INT8 (b1) | MB float32 | MB INT8 |",
        "|---|---|---|---|---|---|---|",
    ]
    x = np.random.rand(1, 3, 32, 32).astype("float32")
    for c in adn.skip_configs(model):
        label = adn.format_skip(c)
        paths = [out_dir / f"int8-{label}.onnx", out_dir / f"int8-{label}-q.onnx"]
        export_onnx(export_subnet(model, c), torch.randn(1, 3, 32, 32), paths[0], opset=18)
        quantize_int8(paths[0], paths[1], calib, limit=256)
        accs, lat = [], []
        for path in paths:
            session = _session(path, args.threads)
            hits = sum(int((session.run(None, {"images": v.numpy()})[0].argmax(1) == t.numpy()).sum()) for v, t in val)
            accs.append(100 * hits / len(val.dataset))
            lat.append(min(_min_ms(lambda: session.run(None, {"images": x}), args.reps) for _ in range(args.rounds)))  # noqa: B023
        rows.append(
            f"| {label} | {accs[0]:.1f} | {accs[1]:.1f} | {lat[0]:.2f} | {lat[1]:.2f} | "
            f"{onnx_size(paths[0]) / 1e6:.2f} | {onnx_size(paths[1]) / 1e6:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet50", "mobilenet_v2", "resnet20"])
    p.add_argument("--calibrated", nargs="*", default=["resnet50"], help="models also measured calibrated")
    p.add_argument("--stats", nargs="*", default=["hybrid", "affine", "gathered", "constant"], help="their modes")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=8, help="calls per timing at batch 1 (batch 32: reps/8)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-inductor", dest="inductor", action="store_false")
    p.add_argument("--output", type=Path)
    p.add_argument("--int8", action="store_true", help="also: resnet20 INT8 vs float32 (trains one briefly)")
    p.add_argument("--int8-epochs", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = Report(args.output, "The switchable ONNX file vs single-depth files (CPU)", script=__file__, argv=argv)
    report.environment.append(
        f"- onnxruntime ORT_ENABLE_ALL, {args.threads} threads; min of {args.reps} calls (batch 32: "
        f"{max(2, args.reps // 8)}) over {args.rounds} interleaved rounds; random weights and norms"
    )
    header = [
        "| model | skip | batch | single-depth ORT ms | switchable ORT / single | eager PyTorch / single | "
        "torch.compile(model), tensor skip / single |",
        "|---|---|---|---|---|---|---|",
    ]
    size_header = [
        "| model | switchable MB | single-depth super-net MB | ratio | all single-depth files MB (est.) | "
        "ORT session MB held: switchable / super-net file | export s | switching cost: alternating / grouped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows, size_rows, int8 = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.int8 and (table := report.guard("INT8", partial(int8_rows, args, Path(tmp)))):
            int8 = ["", "## INT8 (resnet20, trained briefly on the built-in data; val split)", "", *table]
        for name in args.models:
            for stats in (None, *args.stats) if name in args.calibrated else (None,):
                job = partial(bench_model, name, args, Path(tmp), stats)
                r, s = report.guard(f"{name} {stats or ''}".strip(), job) or ([], [])
                rows += r
                size_rows += s
    report.add("tables", *header, *rows, "", *size_header, *size_rows, *int8)
    report.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
