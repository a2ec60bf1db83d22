"""``adn export``: one sub-network as a plain module, a TorchScript file or an ONNX file.

:func:`export_subnet` deep-copies the path of one skip config (see :mod:`adn.core.network`): the skipped blocks are
not in it, every norm is the one that sub-network uses (its twin in skipped stages, the main norm elsewhere;
the idle set is dropped), and calibrated BatchNorm statistics, if the model has them for that config, become
the exported norms' running statistics. The architecture's own ``forward`` is kept, so the stem and head
stay exactly as trained, and the remaining parameters keep their names (``layer3.1.conv1.weight`` ...).
Nothing in the copy depends on a skip flag, so ``torch.jit.trace`` and ``torch.onnx.export`` record one static
graph.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.network import TWIN, SkipLike
from ..core.stats import FrozenStatsNorm


def export_subnet(model: nn.Module, skip: SkipLike) -> nn.Module:
    """A standalone copy of sub-network ``skip`` of ``model``, in eval mode: ``exported(x)`` equals
    ``model.eval()(x, skip=skip)`` (calibrated statistics included), with fewer parameters.

    The model itself is not changed (its train/eval mode included).
    """
    skip = model.resolve_skip(skip)  # None: model.skip, as in model(x)
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


def export_torchscript(module: nn.Module, example: torch.Tensor, path: str | Path, meta: dict | None = None) -> None:
    """Trace ``module`` on ``example`` and save it as a TorchScript file; ``meta`` (what inference needs: class
    names, input size, normalisation) is stored in it as ``adn.json`` (``torch.jit.load(path, _extra_files=...)``)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still the format
        # torch's own attention code checks shapes in Python; the exported module has no data-dependent branches
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example)
    traced.save(str(path), _extra_files={"adn.json": json.dumps(meta or {})})


def export_onnx(
    module: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17, meta: dict | None = None
) -> None:
    """Save ``module`` as an ONNX file with a dynamic batch dimension; ``meta`` goes into the model's
    ``metadata_props`` (key ``adn``, JSON). Needs the ``onnx`` package (``pip install 'adn[export]'``).

    Uses the TorchScript-based exporter (``dynamo=False``): the exported module is static, so a trace is all
    that is needed; it writes one self-contained file and is ~20x faster here than the ``torch.export`` path
    (``dynamo=True``, which also works but by default moves the weights to a separate external-data file).
    """
    try:
        import onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx package: pip install 'adn[export]'") from None
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
    if meta:
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "adn", json.dumps(meta)
        onnx.save(proto, str(path))


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


def onnx_size(path: str | Path) -> int:
    """Bytes of an ONNX file plus its external-data file (``<file>.data``), if any."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


__all__ = ["export_onnx", "export_subnet", "export_torchscript", "onnx_max_abs_diff", "onnx_size"]
