"""``adn export``: one sub-network as a standalone TorchScript or ONNX file (the format follows --output's suffix)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .options import Parser


def get_args_parser() -> Parser:
    p = Parser("adn export", "export one sub-network as a standalone TorchScript or ONNX file")
    p.add_argument(
        "--model", default=None, help="model name (default: the one a --weights training checkpoint was trained as)"
    )
    p.add_argument("--weights", help="checkpoint or weights file (default: random weights)")
    p.add_argument("--skip-cfg", nargs="+", required=True, help="the sub-network, e.g. TTFF or True True False False")
    p.add_argument("--output", required=True, help="file to write: *.onnx for ONNX, anything else TorchScript")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None, help="default: from --output's suffix")
    p.add_argument("--resolution", type=int, help="input size of the example input (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classes (default: from --weights, else 1000)")
    p.add_argument("--model-ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..checkpoint import peek_checkpoint_arg
    from ..export import export_onnx, export_subnet, export_torchscript, onnx_max_abs_diff
    from ..loading import build_model
    from ..skipconfig import format_skip, parse_skip

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
    model, meta = build_model(name, args.weights, args.num_classes, ema=args.model_ema)
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
    else:
        export_onnx(exported, example, output, args.opset, meta)
        print(f"onnxruntime vs PyTorch: max abs diff {onnx_max_abs_diff(output, exported, example):.2e}")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {fmt})")
    return 0


__all__ = ["get_args_parser", "main"]
