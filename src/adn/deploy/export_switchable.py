"""``adn export --all-subnets``: one ONNX file and one ``torch.export`` program that serve every depth.

Both take ``image`` (float ``[batch, 3, H, W]``, dynamic batch) and ``skip`` (bool ``[num_stages]``, True = skip
that stage) and return ``logits``; they are :class:`adn.deploy.switchable.SwitchableNet` exported once. The ONNX file is
written by the dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``), which turns each ``torch.cond``
into an ONNX ``If`` whose branches read the weights from the outer graph, so every weight is stored once; the
weights go to ``<file>.onnx.data`` beside it. The ``.pt2`` program (``torch.export.save``) loads with
``torch.export.load`` in a process that has no ``adn``. Files are written to a temporary name and renamed at the
end: nothing is left behind on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.skipconfig import format_skip, skip_configs
from .switchable import SwitchableNet, switchable

__all__ = ["export_program", "export_switchable", "switchable_onnx"]

_HINT = "export single depths instead (adn export --skip-cfg ..., adn.export_subnet)"


def _failing_module(error: BaseException, model: nn.Module) -> str:
    """The innermost module of ``model`` whose forward appears in ``error``'s traceback or, for an error that
    dynamo raised while tracing a ``torch.cond`` branch, in the user-code stack its message quotes ('' if none)."""
    names = {id(m): n for n, m in model.named_modules()}
    found, tb = "", error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and names.get(id(owner)):
            found = f"{names[id(owner)]} ({type(owner).__name__})"
        tb = tb.tb_next
    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    forwards = {}
    for name, module in model.named_modules():
        code = getattr(type(module).forward, "__code__", None)
        if name and code is not None and code not in forwards:
            forwards[code] = f"{name} ({type(module).__name__})"
    for file, line in re.findall(r'File "([^"]+)", line (\d+)', "\n".join(chain)):
        for code, where in forwards.items():
            last = max((n for _, _, n in code.co_lines() if n is not None), default=code.co_firstlineno)
            if code.co_filename == file and code.co_firstlineno <= int(line) <= last:
                found = where
    return found


def export_program(model: nn.Module | SwitchableNet, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the switchable form of ``model`` with inputs ``(image, skip)`` and a dynamic batch.

    ``example``: one input image batch (its size sets H and W). A model whose forward cannot be traced with the
    skip config as a tensor (data-dependent Python control flow in a converted model) gets one ``ValueError``
    naming the module."""
    net = model if isinstance(model, SwitchableNet) else switchable(model)
    if example.shape[0] < 2:  # torch.export specialises a size-1 dimension: trace at batch 2
        example = example.expand(2, *example.shape[1:]).contiguous()
    skip = torch.zeros(net.num_stages, dtype=torch.bool)
    batch = torch.export.Dim("batch", min=1, max=65536)
    args, shapes = (example, skip), {"image": {0: batch}, "skip": None}
    try:
        with torch.no_grad(), _no_fx_wrapping():
            return torch.export.export(net, args, dynamic_shapes=shapes, strict=False)
    except Exception as error:  # noqa: BLE001 - any tracing failure becomes the one line below
        where = _failing_module(error, net.model) or type(net.model).__name__
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"cannot make {where} switchable (its forward is not traceable: {first[:200]}); {_HINT}"
        ) from error


@contextlib.contextmanager
def _no_fx_wrapping():
    """Functions registered with ``torch.fx.wrap`` (torchvision's Swin attention) are swapped for patched copies
    while torch.export traces, and dynamo, tracing a ``torch.cond`` branch inside that, cannot guard on those copies
    (torch 2.14). Leave them unpatched for the export: torch.export does not need them as leaves."""
    from torch.fx import _symbolic_trace

    registry = _symbolic_trace._wrapped_fns_to_patch
    saved = dict(registry)
    registry.clear()
    try:
        yield
    finally:
        registry.clear()
        registry.update(saved)


def switchable_onnx(program: torch.export.ExportedProgram, path: str | Path, meta: Mapping[str, Any] | None = None):
    """Translate ``program`` (from :func:`export_program`) to ONNX at ``path`` (+ ``path.data``), ``meta`` as
    the model's ``metadata_props["adn"]`` (JSON)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, dynamo=True, input_names=["image", "skip"], output_names=["logits"], optimize=False, verbose=False
        )
    # The graph as traced is full of shape plumbing (Shape/Expand/CastLike per norm) that keeps onnxruntime from
    # fusing convolutions with their norms; onnxscript's optimizer removes it. Its constant folding is limited to
    # small tensors by default, so no weight is folded into a per-branch copy: every weight stays stored once.
    import onnxscript.optimizer

    onnxscript.optimizer.optimize_ir(onnx_program.model)
    _drop_unused_initializers(onnx_program.model)
    _localize_initializers(onnx_program.model)
    # the exporter annotates every node with its source (stack trace, module path): megabytes for two
    # branches per stage, nothing onnxruntime reads
    for graph in (onnx_program.model.graph, *onnx_program.model.graphs()):
        for node in graph:
            node.metadata_props.clear()
            node.doc_string = None
    if meta:
        onnx_program.model.metadata_props["adn"] = json.dumps(dict(meta))
    onnx_program.save(str(path), external_data=True)


def _drop_unused_initializers(model) -> int:
    """Remove the initializers no node reads (constants the optimizer folded into a branch's copy, e.g. in
    MobileNetV2); returns how many. onnxruntime would drop them itself, with a warning at every session."""
    dropped = 0
    for graph in (model.graph, *model.graphs()):
        outputs = {id(v) for v in graph.outputs}
        for name, value in list(graph.initializers.items()):
            if not value.uses() and id(value) not in outputs:
                graph.initializers.pop(name)
                dropped += 1
    return dropped


def _localize_initializers(model) -> int:
    """Move each weight that only one ``If`` branch reads from the outer graph into that branch; returns how many.

    Why: onnxruntime pre-packs a convolution's weight into its blocked NCHWc layout only when the weight is an
    initializer of the convolution's own graph, so a branch that reads its weights from the outer scope runs
    unfused, plain-layout convolutions (ResNet-50's super-net: 1.15-1.23x the single-depth file; 1.02-1.03x with
    the weights moved). Weights that both branches of a stage read stay outside, still stored once; onnxruntime
    folds each branch's norms into its own copy of them when the session is made."""
    main, moved = model.graph, 0
    for name, value in list(main.initializers.items()):
        graphs = {id(node.graph): node.graph for node, _ in value.uses()}
        if len(graphs) == 1 and (graph := next(iter(graphs.values()))) is not main:
            main.initializers.pop(name)
            graph.register_initializer(value)
            moved += 1
    return moved


def default_meta(model: nn.Module, resolution: int, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What inference needs, as the single-depth export carries it, plus the skip input's description and the
    sub-network table (the checkpoint's, else parameters per config)."""
    from ..core.flops import count_params

    out = dict(meta or {})
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    out.setdefault("num_classes", head.out_features)
    out.setdefault("input_size", resolution)
    out.update(num_stages=model.num_stages, inputs={"image": "float32 [batch, 3, H, W]", "skip": "bool [stages]"})
    if not out.get("subnets"):
        out["subnets"] = [
            {"skip": format_skip(c), "params_m": round(count_params(model, c) / 1e6, 4)} for c in skip_configs(model)
        ]
    return out


def export_switchable(
    model: nn.Module | SwitchableNet,
    path: str | Path,
    *,
    resolution: int | None = None,
    meta: Mapping[str, Any] | None = None,
    pt2: bool = True,
    onnx: bool = True,
    stats: str = "hybrid",
) -> dict[str, Path]:
    """Write the switchable form of ``model`` as ONE ONNX file (``path``, weights in ``path.data``) and, with
    ``pt2``, a ``torch.export`` program (``path`` with suffix ``.pt2``), both with inputs ``image`` and ``skip``
    and ``meta`` (class names, normalisation ...) stored with them. Returns ``{"onnx": ..., "pt2": ...}``.

    ``model`` is put in eval mode; its calibrated statistics, if any, are used per config, held as ``stats``
    says (:func:`adn.switchable`: ``"hybrid"`` by default, ``"affine"``, ``"gathered"`` or ``"constant"``;
    the metadata's ``calibrated_stats`` says which was used); a :class:`~adn.SwitchableNet` is exported
    as it was built. ``onnx=False``: the ``.pt2`` program only. torch 2.14 can neither save nor translate to ONNX
    the switchable form of Swin (its attention makes tensor constants inside a ``torch.cond`` branch): a
    ``ValueError`` says so."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"output directory {path.parent} does not exist; create it first")
    net = model if isinstance(model, SwitchableNet) else switchable(model, stats)
    resolution = resolution or getattr(getattr(net.model, "info", None), "input_size", None) or 224
    program = export_program(net, torch.randn(2, 3, resolution, resolution))
    meta = {**default_meta(net.model, resolution, meta), "calibrated_stats": net.stats_mode}
    written = {**({"onnx": path} if onnx else {}), **({"pt2": path.with_suffix(".pt2")} if pt2 else {})}
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".adn-export-") as tmp:
        if onnx:
            try:
                switchable_onnx(program, Path(tmp) / path.name, meta)
            except Exception as e:  # noqa: BLE001 - the exporter's multi-page report becomes one line
                raise ValueError(
                    f"the ONNX exporter cannot translate the switchable form of {type(net.model).__name__} "
                    f"({type(e).__name__}); write the .pt2 program alone (--format pt2) or {_HINT}"
                ) from e
        if pt2:
            try:
                torch.export.save(program, Path(tmp) / "program.pt2", extra_files={"adn.json": json.dumps(meta)})
            except Exception as e:  # noqa: BLE001
                raise ValueError(
                    f"torch.export cannot save the switchable form of {type(net.model).__name__} "
                    f"({type(e).__name__}: tensor constants inside a torch.cond branch); {_HINT}"
                ) from e
        # the ONNX graph names its data file: keep the name, move both
        for name in os.listdir(tmp):
            source = Path(tmp) / name
            target = written["pt2"] if name == "program.pt2" else path.parent / name
            os.replace(source, target)
    return written
