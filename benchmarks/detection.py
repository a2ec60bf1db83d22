"""Any-depth detection on the built-in digit scenes: ADN vs plain vs naive skipping vs the base-net's depth alone.

Four detectors of the same kind (Faster R-CNN by default) on the same small adaptive-depth ResNet, same
initial weights, data order, recipe and seed (:class:`adn.detection.config.DetectionTrainConfig`):

- **ADN**: self-distillation (super-net detection losses; base-net detection losses + FPN feature term +
  prediction term), every sub-network evaluated;
- **plain**: the super-net trained alone, evaluated as trained (FFFF);
- **naive skip**: that plain detector run at every sub-network, its norms' twins copied from the trained norms
  (no twin was trained) -- as trained, and with per-sub-network BN calibration;
- **alone**: the base-net's configuration (TTTT) trained alone.

Every detector is evaluated with per-sub-network BN calibration (as ``adn detect train`` leaves it), except the
"naive, as trained" rows. COCO mAP via pycocotools on the val scenes, backbone GMACs and CPU latency at the
image size. Writes ``benchmarks/results/detection-<kind>.md`` and ``.json``.

    OMP_NUM_THREADS=1 python benchmarks/detection.py --epochs 12
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from adn.core.calibrate import clear_calibration
from adn.core.network import init_skip_norms_from_main
from adn.detection.backbone import tiny_resnet
from adn.detection.config import DetectionDataConfig, DetectionTrainConfig, DetectorConfig
from adn.detection.data import collate
from adn.detection.evaluate import calibrate_detector, evaluate_subnets
from adn.detection.train import build_split, load_trained, train_detector
from common import PAPER_GAIN
from harness import Report, Stopwatch

RESULTS = Path(__file__).parent / "results"
#: the tiny backbone's super-net and base-net, as the package builds it
STAGES = len(inspect.signature(tiny_resnet).parameters["widths"].default)
SUPER, BASE = "F" * STAGES, "T" * STAGES
CLAIM = (
    "Paper (classification, ResNet-50-ADN on ImageNet): every sub-network of one ADN beats the same depth trained "
    f"alone (super-net +{PAPER_GAIN['super']}, base-net +{PAPER_GAIN['base']} Acc@1), with depth switched at no "
    "cost; the paper and its any-depth "
    "detection follow-up report COCO detection with ADN backbones (the follow-up: up to 1.82x faster at -2.0 AP "
    "from one set of weights)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="fasterrcnn", choices=["fasterrcnn", "maskrcnn", "retinanet"])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train-images", type=int, default=800)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", default="/tmp/adn-detection-bench")
    p.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    p.add_argument("--methods", default="adn,plain,alone", help="which runs to train (comma-separated)")
    return p.parse_args(argv)


def _configs(args: argparse.Namespace) -> dict[str, DetectionTrainConfig]:
    work = Path(args.work_dir)
    data = DetectionDataConfig(
        builtin_train=args.train_images, builtin_val=args.val_images, batch_size=args.batch_size, root=str(work)
    )
    detector = DetectorConfig(
        kind=args.kind, representation_size=128, box_batch_size_per_image=64, rpn_pre_nms_top_n=200,
        rpn_post_nms_top_n=50, anchor_scale=4.0,
    )  # fmt: skip
    common = dict(detector=detector, data=data, epochs=args.epochs, lr=args.lr, seed=args.seed, progress=False)
    return {
        "adn": DetectionTrainConfig(output_dir=str(work / "adn"), method="adn", **common),
        "plain": DetectionTrainConfig(output_dir=str(work / "plain"), method="plain", **common),
        "alone": DetectionTrainConfig(output_dir=str(work / "alone"), method="plain", train_skip=BASE, **common),
    }


def _evaluate(path: Path, subnets, size: int, latency: bool, naive: bool = False) -> list[dict]:
    det, config, _ = load_trained(path)
    val = build_split(config.data, "val", False, config.detector.num_classes, det.kind == "maskrcnn")
    loader = DataLoader(val, config.data.batch_size, collate_fn=collate)
    if naive:  # the plain detector's twins were never trained: use the trained norms, as naive skipping would
        clear_calibration(det.body)
        init_skip_norms_from_main(det.body)
        det.body.build_subnets()
        rows = evaluate_subnets(det, loader, val.coco, subnets, size, latency=False)
        train = build_split(config.data, "train", False, config.detector.num_classes, det.kind == "maskrcnn")
        calibrate_detector(det, DataLoader(train, config.data.batch_size, collate_fn=collate), "all", 10)
        calibrated = evaluate_subnets(det, loader, val.coco, subnets, size, latency=False)
        return [{**r, "calibrated_mAP": c["bbox_mAP"]} for r, c in zip(rows, calibrated, strict=True)]
    return evaluate_subnets(det, loader, val.coco, subnets, size, latency=latency)


def _table(results: dict, args: argparse.Namespace, detector: DetectorConfig) -> list[str]:
    adn = {r["skip"]: r for r in results.get("adn", {}).get("rows", [])}
    naive = {r["skip"]: r for r in results.get("naive", {}).get("rows", [])}
    plain = {r["skip"]: r for r in results.get("plain", {}).get("rows", [])}
    alone = {r["skip"]: r for r in results.get("alone", {}).get("rows", [])}
    keys = list(adn or naive)
    defaults = inspect.signature(tiny_resnet).parameters  # the tiny backbone's layout, as the package builds it
    widths, blocks = defaults["widths"].default, defaults["blocks"].default
    lines = [
        f"{args.train_images} train / {args.val_images} val scenes of {detector.image_size} px, batch "
        f"{args.batch_size}, lr {args.lr}, seed {args.seed}; backbone: {detector.backbone} ResNet-ADN "
        f"{[blocks] * len(widths)} x {tuple(widths)}, FPN {detector.out_channels} channels, anchors "
        f"{detector.anchor_scale:g}x stride; CPU, 1 thread.",
        "",
        "Training time: "
        + ", ".join(f"{m} {results[m]['train_time_s'] / 60:.1f} min" for m in ("adn", "plain", "alone") if m in results)
        + ".",
        "",
        "bbox mAP (AP@[.5:.95], %) on the val scenes; ADN, plain and alone with per-sub-network BN calibration. "
        f"Latency: whole detector, one {detector.image_size} px image, median (noisy on a shared machine; GMACs "
        "are exact).",
        "",
        "| skip | backbone GMACs | latency ms | ADN | plain | naive skip (as trained) | naive skip (calibrated) "
        "| alone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        a, n = adn.get(k, {}), naive.get(k, {})
        ref = a or n

        def cell(row, key="bbox_mAP"):
            return f"{row[key]:.1f}" if row and key in row else ""

        lines.append(
            f"| {k} | {ref.get('gmacs', 0):.4f} | {a.get('latency_ms', 0):.1f} | {cell(a)} | {cell(plain.get(k))} | "
            f"{cell(n)} | {cell(n, 'calibrated_mAP')} | {cell(alone.get(k))} |"
        )
    return [*lines, "", "**The paper's claim.** " + CLAIM]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = _configs(args)
    Path(args.results).mkdir(parents=True, exist_ok=True)
    out = Path(args.results) / (f"detection-{args.kind}" + (f"-seed{args.seed}" if args.seed else ""))
    title = f"Any-depth {args.kind} on the built-in digit scenes"
    report = Report(out.with_suffix(".md"), title, script=__file__, argv=argv)
    results: dict = {"args": vars(args)}
    size = configs["adn"].detector.image_size

    def run(method: str) -> None:
        report.log(f"== {method}")
        with Stopwatch() as clock:
            result = train_detector(dataclasses.replace(configs[method], resume=True))
        report.log(f"   trained in {clock.seconds:.0f} s")
        subnets = {"adn": None, "plain": [SUPER], "alone": [BASE]}[method]
        rows = _evaluate(result.checkpoint, subnets, size, latency=method == "adn")
        results[method] = {"train_time_s": result.train_time_s, "rows": rows}
        if method == "plain":
            results["naive"] = {"rows": _evaluate(result.checkpoint, None, size, False, naive=True)}
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        report.set("results", *_table(results, args, configs["adn"].detector))

    for method in args.methods.split(","):
        report.guard(method, lambda method=method: run(method))
    report.finish()
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # 2 shared cores: more threads only spin (100x slower under load)
    sys.exit(main())
