"""``adn export``: one sub-network as a plain module, a TorchScript file or an ONNX file.

:func:`export_subnet` deep-copies the path of one skip config (see :mod:`adn.skip`): the skipped blocks are
not in it, every norm is the one that sub-network uses (its twin in skipped stages, the main norm elsewhere;
the idle set is dropped), and calibrated BatchNorm statistics, if the model has them for that config, become
the exported norms' running statistics. The architecture's own ``forward`` is kept, so the stem and head
stay exactly as trained, and the remaining parameters keep their names (``layer3.1.conv1.weight`` ...).
Nothing in the copy depends on a skip flag, so ``torch.jit.trace`` and ``torch.onnx.export`` record one static
graph.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .skip import TWIN, FrozenStatsNorm, SkipLike, format_skip, parse_skip


def export_subnet(model: nn.Module, skip: SkipLike) -> nn.Module:
    """A standalone copy of sub-network ``skip`` of ``model``, in eval mode: ``exported(x)`` equals
    ``model.eval()(x, skip=skip)`` (calibrated statistics included), with fewer parameters.

    The model itself is not changed (its train/eval mode included).
    """
    skip = parse_skip(skip, model.num_stages)
    was_training = model.training
    model.eval()  # the eval path: the one with calibrated statistics, if any
    try:
        net = copy.deepcopy(model.subnet(skip))
    finally:
        model.train(was_training)
    for module in list(net.modules()):
        module._modules.pop(TWIN, None)  # the idle norm set
        for name, child in list(module._modules.items()):
            if isinstance(child, FrozenStatsNorm):  # bake the calibrated statistics into a plain norm
                module._modules[name] = child.norm
    net._modules.pop("calibration", None)
    return net.eval()


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_torchscript(module: nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """Trace ``module`` on ``example`` and save it as a TorchScript file."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still the format
        # torch's own attention code checks shapes in Python; the exported module has no data-dependent branches
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example)
    traced.save(str(path))


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17) -> None:
    """Save ``module`` as an ONNX file with a dynamic batch dimension.

    Uses the TorchScript-based exporter (``dynamo=False``): the exported module is static, so a trace is all
    that is needed; it writes one self-contained file and is ~20x faster here than the ``torch.export`` path
    (``dynamo=True``, which also works but by default moves the weights to a separate external-data file).
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's fused inference kernel (aten::_native_multi_head_attention) has no ONNX
    # translation; without it attention is traced as ordinary ops.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, torch.jit.TracerWarning))
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def onnx_max_abs_diff(path: str | Path, module: nn.Module, example: torch.Tensor) -> float:
    """Run the ONNX file with onnxruntime on ``example``; max |difference| to ``module(example)``."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - optional dependency
        raise ValueError("onnxruntime is not installed; pip install 'adn[export]'") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: example.cpu().numpy()})
    with torch.no_grad():
        want = module(example).cpu()
    return (torch.from_numpy(got) - want).abs().max().item()


def build_model(name: str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """``create_model(name)`` with ``weights`` loaded; the class count is ``num_classes``, else read from the
    weights' classifier (the model's last ``nn.Linear``), else 1000."""
    from .checkpoint import convert_published_state_dict, extract_state_dict, load_checkpoint, load_model_state
    from .registry import create_model

    if weights is None:
        return create_model(name, num_classes=num_classes or 1000)
    checkpoint = load_checkpoint(weights)
    state_dict = convert_published_state_dict(extract_state_dict(checkpoint, weights))
    if num_classes is None:
        probe = create_model(name, num_classes=1000)
        head = [n for n, m in probe.named_modules() if isinstance(m, nn.Linear)][-1]
        weight = state_dict.get(f"{head}.weight")
        num_classes = weight.shape[0] if weight is not None else 1000
    model = create_model(name, num_classes=num_classes)
    load_model_state(model, checkpoint, weights, name)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    from .registry import model_info

    parser = argparse.ArgumentParser(prog="adn export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name (adn models)")
    parser.add_argument("--weights", help="checkpoint or state dict to load (default: random init)")
    parser.add_argument("--skip-cfg", nargs="+", required=True, help="skip config, e.g. TTFF or True True False False")
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("--output", required=True, help="file to write (.pt for TorchScript, .onnx for ONNX)")
    parser.add_argument("--resolution", type=int, help="input size of the example input (default: the model's)")
    parser.add_argument("--num-classes", type=int, help="classes (default: from --weights, else 1000)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    args = parser.parse_args(argv)

    info = model_info(args.model)
    resolution = args.resolution or info.input_size
    model = build_model(args.model, args.weights, args.num_classes)
    skip = parse_skip(" ".join(args.skip_cfg), model.num_stages)  # "TTFF" or "True True False False"
    output = Path(args.output)
    if not output.parent.is_dir():
        raise NotADirectoryError(f"output directory {output.parent} does not exist; create it first")

    exported = export_subnet(model, skip)
    example = torch.randn(1, 3, resolution, resolution)
    print(
        f"{args.model} sub-network {format_skip(skip)}: {_num_params(model) / 1e6:.2f}M parameters in the "
        f"adaptive model, {_num_params(exported) / 1e6:.2f}M exported"
    )
    if args.format == "torchscript":
        export_torchscript(exported, example, output)
    else:
        export_onnx(exported, example, output, args.opset)
        print(f"onnxruntime vs PyTorch: max abs diff {onnx_max_abs_diff(output, exported, example):.2e}")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {args.format})")
    return 0


__all__ = ["export_onnx", "export_subnet", "export_torchscript", "onnx_max_abs_diff"]
