"""INT8 in onnxruntime on the CPU: single-depth files, float32 vs INT8, and the one INT8 switchable file.

Latency (resnet50, random weights and norm statistics, batch 1 and 32, super- and base-net): the float32
single-depth file, its INT8 version (``adn export --quantize int8``: uint8 activations, int8 per-channel weights)
and the INT8 switchable file (``adn export --all-subnets --quantize int8``), as ratios, interleaved rounds (min of
N calls per round, min over rounds), plus the op types onnxruntime runs after optimising each file (dumped with
``SessionOptions.optimized_model_filepath``). Accuracy (``--accuracy``): a resnet20 trained briefly on the built-in
digits and calibrated, Acc@1 on their val split of every sub-network from the float32 switchable file and from the
INT8 one. Calibration of the INT8 files uses random images for resnet50 (latency only) and the built-in training
images for resnet20.

    python benchmarks/int8.py --accuracy --output benchmarks/results/int8-cpu.md
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import adn
from adn.deploy.export import export_onnx, export_subnet, onnx_size
from adn.deploy.export_switchable import export_switchable
from adn.deploy.quantize import quantize_int8
from adn.deploy.quantize_switchable import quantize_switchable_int8
from common import ort_session, train_resnet20, trained_like
from harness import Report, interleaved_min_ms


def _ops(path: Path, threads: int) -> str:
    """Op types onnxruntime runs after optimising ``path`` (every graph, If branches included), most common first."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False)
    counts: collections.Counter = collections.Counter()
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            counts[node.op_type] += 1
            stack += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    keep = ("Conv", "QLinearConv", "QLinearAdd", "Add", "DequantizeLinear", "QuantizeLinear", "Transpose", "If")
    return ", ".join(f"{op} {counts[op]}" for op in keep if counts[op])


def latency_rows(args, tmp: Path) -> list[str]:
    torch.manual_seed(0)
    model = trained_like(adn.create_model("resnet50")).eval()
    size = model.info.input_size
    random_images = [torch.randn(1, 3, size, size) for _ in range(args.calib_images)]
    n = model.num_stages
    configs = {"super-net": (False,) * n, "base-net": (True,) * n}
    files: dict[str, Path] = {}
    for label, config in configs.items():
        files[f"fp32 {label}"] = tmp / f"{label}.onnx"
        export_onnx(export_subnet(model, config), torch.randn(1, 3, size, size), files[f"fp32 {label}"])
        files[f"int8 {label}"] = tmp / f"{label}-int8.onnx"
        quantize_int8(files[f"fp32 {label}"], files[f"int8 {label}"], random_images, limit=args.calib_images)
    export_switchable(model, tmp / "all.onnx", resolution=size, pt2=False)
    files["int8 switchable"] = tmp / "all-int8.onnx"
    quantize_switchable_int8(tmp / "all.onnx", files["int8 switchable"], random_images, limit=args.calib_images)
    sessions = {k: ort_session(p, args.threads) for k, p in files.items()}
    rows = [
        "| file | ONNX ops onnxruntime runs (after optimisation) | MB |",
        "|---|---|---|",
        *(f"| {k} | {_ops(p, args.threads)} | {onnx_size(p) / 1e6:.1f} |" for k, p in files.items()),
        "",
        "| sub-network | batch | fp32 ms | INT8 / fp32 | INT8 / fp32 super-net | INT8 switchable / INT8 single |",
        "|---|---|---|---|---|---|",
    ]
    for batch in (1, 32):
        x = np.random.rand(batch, 3, size, size).astype("float32")
        calls = {}
        for label, config in configs.items():
            for kind in ("fp32", "int8"):
                calls[kind, label] = partial(sessions[f"{kind} {label}"].run, None, {"images": x})
            calls["switchable", label] = partial(
                sessions["int8 switchable"].run, None, {"image": x, "skip": np.array(config)}
            )
        # interleaved rounds: load drift hits every column alike
        best = interleaved_min_ms(calls, args.rounds, args.reps if batch == 1 else 2)
        for label in configs:
            fp32, int8 = best["fp32", label], best["int8", label]
            rows.append(
                f"| {label} | {batch} | {fp32:.1f} | {int8 / fp32:.3f} | {int8 / best['fp32', 'super-net']:.3f} | "
                f"{best['switchable', label] / int8:.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def accuracy_rows(args, tmp: Path) -> list[str]:
    from torch.utils.data import DataLoader

    from adn.data.loaders import build_calibration_set, build_eval_loader

    torch.set_num_threads(1)  # tiny convolutions: more threads on a shared CPU cost more than they gain
    model = train_resnet20(args.epochs)
    calib = DataLoader(build_calibration_set(image_size=32), batch_size=32, shuffle=True)
    adn.calibrate(model, calib, batches=8)
    export_switchable(model, tmp / "r20.onnx", resolution=32, pt2=False, stats="constant")
    quantize_switchable_int8(tmp / "r20.onnx", tmp / "r20-int8.onnx", calib, limit=256)
    val, _ = build_eval_loader(image_size=32, batch_size=128)
    sessions = [ort_session(tmp / name, args.threads) for name in ("r20.onnx", "r20-int8.onnx")]
    rows = [
        "| sub-network | Acc@1 float32 switchable | Acc@1 INT8 switchable | difference |",
        "|---|---|---|---|",
    ]
    for config in adn.skip_configs(model):
        accs = []
        for session in sessions:
            hits = 0
            for v, t in val:
                logits = session.run(None, {"image": v.numpy(), "skip": np.array(config)})[0]
                hits += int((logits.argmax(1) == t.numpy()).sum())
            accs.append(100 * hits / len(val.dataset))
        rows.append(f"| {adn.format_skip(config)} | {accs[0]:.2f} | {accs[1]:.2f} | {accs[1] - accs[0]:+.2f} |")
        print(rows[-1], flush=True)
    sizes = [onnx_size(tmp / n) / 1e6 for n in ("r20.onnx", "r20-int8.onnx")]
    return [*rows, "", f"Files: float32 switchable {sizes[0]:.2f} MB, INT8 switchable {sizes[1]:.2f} MB."]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="calls per round at batch 1 (batch 32: 2)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib-images", type=int, default=8, help="random calibration images for resnet50")
    p.add_argument("--accuracy", action="store_true", help="also: resnet20 trained on the digits, every sub-network")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    title = "INT8 in onnxruntime on the CPU (resnet50 latency; resnet20 accuracy)"
    report = Report(args.output, title, script=__file__, argv=argv)
    report.environment.append(
        f"- onnxruntime ORT_ENABLE_ALL, {args.threads} threads; min of {args.reps} calls (batch 32: 2) over "
        f"{args.rounds} interleaved rounds"
    )
    with tempfile.TemporaryDirectory() as tmp:
        report.guard("latency", lambda: report.add("latency", *latency_rows(args, Path(tmp))))
        if args.accuracy:
            heading = ["## One INT8 switchable file: resnet20 on the digits, calibrated", ""]
            report.guard("accuracy", lambda: report.add("accuracy", *heading, *accuracy_rows(args, Path(tmp))))
    report.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
