"""``adn export``: one sub-network as a standalone TorchScript or ONNX file (the format follows --output's suffix)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .options import Parser


def get_args_parser() -> Parser:
    p = Parser(
        "adn export", "export one sub-network as a standalone TorchScript or ONNX file, or every depth as one ONNX file"
    )
    p.add_argument(
        "--model", default=None, help="model name (default: the one a --weights training checkpoint was trained as)"
    )
    p.add_argument("--weights", help="checkpoint or weights file (default: random weights)")
    p.add_argument("--skip-cfg", nargs="+", help="the sub-network, e.g. TTFF or True True False False")
    p.add_argument(
        "--all-subnets",
        action="store_true",
        help="one file for every depth: ONNX (inputs image, skip) with its weights in <output>.data, plus a "
        "torch.export program <output stem>.pt2 with the same interface",
    )
    p.add_argument(
        "--calibrated-stats",
        choices=("hybrid", "affine", "gathered", "constant"),
        default=None,
        help="--all-subnets of a calibrated model, how the per-config BatchNorm statistics are held (ResNet-50 "
        "figures vs a single-depth file, see docs/deploy.md): constant = a branch per config of the stages upstream, "
        "statistics folded in (latency ~1.05x, session ~9x the memory); affine = one norm folded in, a per-config "
        "scale and shift at run time (~1.2-1.25x, ~1.65x); hybrid = constant for the first stages, as many as double "
        "their weights at most, affine for the rest (~1.08-1.12x, ~1.7x); gathered = each norm gathers its "
        "statistics at run time (~1.3-1.7x, ~1.1x). Default: hybrid, constant with --quantize int8 (which needs it)",
    )
    p.add_argument("--output", required=True, help="file to write: *.onnx for ONNX, anything else TorchScript")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None, help="default: from --output's suffix")
    p.add_argument("--resolution", type=int, help="input size of the example input (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classes (default: from --weights, else 1000)")
    p.add_argument("--model-ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument(
        "--quantize",
        choices=("int8",),
        help="ONNX only: onnxruntime static INT8 quantization, calibrated on training images run through the "
        "exported sub-network (with --all-subnets: through every sub-network, one INT8 file for every depth; the "
        "built-in data's, or --calib-data's train/)",
    )
    p.add_argument("--calib-data", help="image-folder root with train/ for --quantize (default: the built-in data)")
    p.add_argument("--calib-images", type=int, default=256, help="calibration images for --quantize")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..core.checkpoint import peek_checkpoint_arg
    from ..core.skipconfig import format_skip, parse_skip
    from ..deploy.export import export_onnx, export_subnet, export_torchscript, onnx_max_abs_diff
    from ..models.loading import build_model

    args = get_args_parser().parse_args(list(argv or []))
    output = Path(args.output)
    onnx_suffix = output.suffix.lower() == ".onnx"
    fmt = args.format or ("onnx" if onnx_suffix else "torchscript")
    if fmt == "torchscript" and onnx_suffix:
        raise UsageError(f"--output {output} names an ONNX file but --format is torchscript; drop --format")
    name = args.model or (peek_checkpoint_arg(args.weights, "model") if args.weights else None)
    if not isinstance(name, str):
        raise UsageError("which model? give --model NAME (the weights file does not record it)")
    if not output.parent.is_dir():
        raise NotADirectoryError(f"output directory {output.parent} does not exist; create it first")
    if args.quantize and fmt != "onnx":
        raise UsageError("--quantize int8 writes an ONNX file: give --output *.onnx")
    if args.quantize and args.calibrated_stats not in (None, "constant"):
        raise UsageError("--quantize int8 folds the statistics into the weights: use --calibrated-stats constant")
    if args.all_subnets == bool(args.skip_cfg):
        raise UsageError("give either --skip-cfg (one sub-network) or --all-subnets (one file for every depth)")
    model, meta = build_model(name, args.weights, args.num_classes, ema=args.model_ema)
    if args.all_subnets:
        return _export_all(model, name, meta, output, args)
    skip = parse_skip(" ".join(args.skip_cfg), model.num_stages)  # "TTFF" or "True True False False"
    resolution = args.resolution or model.info.input_size
    exported = export_subnet(model, skip)
    example = torch.randn(1, 3, resolution, resolution)
    head = model.get_submodule(model.classifier_name())
    meta = {
        **meta,
        "model": name,
        "skip": format_skip(skip),
        "input_size": resolution,
        "num_classes": head.out_features,
    }
    meta.pop("subnets", None)
    params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (model, exported)]
    print(
        f"{name} sub-network {format_skip(skip)}: {params[0]:.2f}M parameters in the adaptive model, "
        f"{params[1]:.2f}M exported"
    )
    if fmt == "torchscript":
        export_torchscript(exported, example, output, meta)
    elif args.quantize:
        _export_int8(exported, example, output, args, meta, resolution)
    else:
        export_onnx(exported, example, output, args.opset, meta)
        print(f"onnxruntime vs PyTorch: max abs diff {onnx_max_abs_diff(output, exported, example):.2e}")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {fmt})")
    return 0


def _export_int8(exported, example, output: Path, args, meta: dict, resolution: int) -> None:
    """``--quantize int8``: the float ONNX file in a temporary folder, then its INT8 version at ``output``."""
    import tempfile

    from ..deploy.export import export_onnx
    from ..deploy.quantize import quantize_int8

    loader = _calibration_loader(args, meta, resolution)
    images = loader.dataset
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".adn-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_onnx(exported, example, float_path, args.opset, meta)
        quantize_int8(float_path, Path(tmp) / output.name, loader, limit=args.calib_images)
        Path(tmp, output.name).replace(output)
    print(
        "INT8 (onnxruntime static, QDQ: uint8 activations, int8 per-channel weights), "
        f"calibrated on {min(args.calib_images, len(images))} images"
    )


def _export_all(model, name: str, meta: dict, output: Path, args) -> int:
    """``--all-subnets``: the switchable form as ONE ONNX file and a .pt2 program; super/base checked in ORT."""
    import numpy as np
    import torch

    from ..deploy.export import onnx_size
    from ..deploy.export_switchable import export_switchable
    from ..deploy.switchable import switchable

    if output.suffix.lower() != ".onnx" or args.format == "torchscript":
        raise UsageError(f"--all-subnets writes ONNX (+ .pt2): give --output ending in .onnx, not {output.name}")
    resolution = args.resolution or model.info.input_size
    net = switchable(model, args.calibrated_stats or ("constant" if args.quantize else "hybrid"))
    if args.quantize and net.stats_mode not in ("none", "constant"):
        raise UsageError("--quantize int8 needs a model calibrated for every sub-network (or not calibrated)")
    if args.quantize:
        return _export_all_int8(net, name, meta, output, args, resolution)
    paths = export_switchable(net, output, resolution=resolution, meta={**meta, "model": name})
    import onnxruntime as ort

    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, resolution, resolution)
    worst = 0.0
    with torch.no_grad():
        for skip in ((False,) * model.num_stages, (True,) * model.num_stages):
            (got,) = session.run(None, {"image": x.numpy(), "skip": np.array(skip)})
            worst = max(worst, (torch.from_numpy(got) - model(x, skip=skip)).abs().max().item())
    print(f"{name}: {2**model.num_stages} sub-networks in one file; onnxruntime vs PyTorch: max abs diff {worst:.2e}")
    if net.stats_mode != "none":  # constant / hybrid fall back for a model calibrated for some configs only
        print(f"calibrated statistics: {net.stats_mode} (--calibrated-stats {args.calibrated_stats or 'hybrid'})")
    print(f"wrote {paths['onnx']} ({onnx_size(paths['onnx']) / 1e6:.1f} MB with {paths['onnx'].name}.data, ONNX)")
    print(f"wrote {paths['pt2']} ({paths['pt2'].stat().st_size / 1e6:.1f} MB, torch.export)")
    return 0


def _export_all_int8(net, name: str, meta: dict, output: Path, args, resolution: int) -> int:
    """``--all-subnets --quantize int8``: the float switchable file in a temporary folder, then ONE INT8 file."""
    import tempfile

    from ..deploy.export_switchable import export_switchable
    from ..deploy.quantize_switchable import quantize_switchable_int8

    loader = _calibration_loader(args, meta, resolution)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".adn-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        export_switchable(net, float_path, resolution=resolution, meta={**meta, "model": name}, pt2=False)
        quantize_switchable_int8(float_path, Path(tmp) / output.name, loader, limit=args.calib_images)
        Path(tmp, output.name).replace(output)
    print(
        f"{name}: {2**net.num_stages} sub-networks in one INT8 file (uint8 activations, int8 per-channel weights), "
        f"ranges calibrated on {min(args.calib_images, len(loader.dataset))} images through every sub-network"
    )
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, ONNX)")
    return 0


def _calibration_loader(args, meta: dict, resolution: int):
    import torch
    from torch.utils.data import DataLoader

    from ..data.loaders import build_calibration_set

    images = build_calibration_set(args.calib_data, image_size=resolution, dataset=meta.get("dataset", "digits"))
    return DataLoader(images, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))


__all__ = ["get_args_parser", "main"]
