"""INT8 of the switchable ONNX file (``adn export --all-subnets --quantize int8``): one file, every depth.

onnxruntime's calibrator records the tensors of the main graph only, and the switchable file computes each
stage inside an ``If`` branch. So the ranges are collected per path: for every skip config the file is flattened
(each ``If`` replaced by the branch that config takes, tensor names kept) and calibrated on the images; a tensor
that several configs compute gets the union of their ranges (every path's values fit, none is clipped). Then
onnxruntime's QOperator quantizer, which does descend into ``If`` branches, writes ``QLinearConv`` /
``QLinearAdd`` with those ranges into the switchable graph itself (uint8 activations, int8 per-channel weights: the
x86 kernels' format, see :mod:`adn.deploy.quantize`).

The norms are folded into the convolutions first (onnxruntime's basic optimisation), which gives each branch its
own copy of a weight that branches with different norms share; after quantization those copies hold the same INT8
values (a folded norm only scales each output channel, which goes into the per-channel scale), so each is stored
once again, in the main graph. Stage boundaries pass uint8: each ``If`` output and the branch outputs that become
it share one range, so the tensor leaves its branch quantized instead of being dequantized there and quantized
again outside (a float pass over a whole activation, twice, at every stage). A calibrated model must hold its
statistics as constants (``--calibrated-stats constant``): statistics gathered or corrected at run time
(``gathered``, ``affine``, ``hybrid``) cannot be folded.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .int8_boundaries import all_graphs, subgraphs, uint8_if_outputs, unify_if_outputs
from .quantize import _arrays

__all__ = ["quantize_switchable_int8"]


def _share_weights(model) -> int:
    """Store each INT8 weight once, in the main graph, where several branches hold the same one; returns how many
    copies went. A calibrated model's branches differ in their norms only, and folding a norm scales each output
    channel of the weight, which per-channel quantization takes into the channel's scale: the INT8 values agree
    (their scales and biases, a few numbers per channel, stay in each branch)."""
    import onnx
    from onnx import numpy_helper

    copies: dict[tuple, list] = {}
    for graph in all_graphs(model.graph):
        for init in graph.initializer:
            if init.data_type == onnx.TensorProto.INT8 and len(init.dims) > 1:
                key = (tuple(init.dims), numpy_helper.to_array(init).tobytes())
                copies.setdefault(key, []).append((graph, init))
    renamed = {}
    for found in copies.values():
        if len(found) < 2:
            continue
        shared = onnx.TensorProto()
        shared.CopyFrom(found[0][1])
        shared.name = f"shared/{found[0][1].name}"
        model.graph.initializer.append(shared)
        for graph, init in found:
            renamed[init.name] = shared.name
            graph.initializer.remove(init)
    for graph in all_graphs(model.graph):
        for node in graph.node:
            node.input[:] = [renamed.get(s, s) for s in node.input]
    return len(renamed) - sum(len(f) > 1 for f in copies.values())


def _unique_names(graph, prefix: str = "", outer: dict[str, str] | None = None) -> None:
    """Prefix every value, initializer and node name made inside an ``If`` branch with the branch's name: the
    exporter names each branch's values independently, and ranges are matched by name across the whole file."""
    names = dict(outer or {})
    if prefix:
        for init in graph.initializer:
            names[init.name] = f"{prefix}/{init.name}"
            init.name = names[init.name]
        names.update({o: f"{prefix}/{o}" for n in graph.node for o in n.output if o})
        for out in graph.output:
            out.name = names.get(out.name, out.name)
    for node in graph.node:
        node.input[:] = [names.get(s, s) for s in node.input]
        node.output[:] = [names.get(s, s) for s in node.output]
        node.name = f"{prefix}/{node.name}" if prefix else node.name
        for sub in subgraphs(node):
            _unique_names(sub, f"{prefix}/{sub.name}" if prefix else sub.name, names)


def _stage_of(node, producers: dict, constants: dict) -> int:
    """The stage an ``If`` switches on: its condition is ``Gather(skip, <constant index>)``."""
    gather = producers.get(node.input[0])
    if gather is None or gather.op_type != "Gather" or gather.input[0] != "skip" or gather.input[1] not in constants:
        raise ValueError("not a switchable file from adn export --all-subnets: an If condition is not skip[stage]")
    return int(constants[gather.input[1]])


def _index(graph, producers: dict, constants: dict) -> None:
    from onnx import numpy_helper

    constants.update({i.name: numpy_helper.to_array(i) for i in graph.initializer if not i.dims})
    for node in graph.node:
        producers.update(dict.fromkeys(node.output, node))
        for sub in subgraphs(node):
            _index(sub, producers, constants)


def _flatten(model, config: tuple[bool, ...]):
    """A copy of ``model`` with every ``If`` replaced by the branch that ``config`` takes (names unchanged)."""
    from onnx import helper

    flat = copy.deepcopy(model)
    producers, constants = {}, {}
    _index(flat.graph, producers, constants)

    def inline(nodes) -> list:
        out = []
        for node in nodes:
            if node.op_type != "If":
                out.append(node)
                continue
            branch = {a.name: a.g for a in node.attribute}[
                "then_branch" if config[_stage_of(node, producers, constants)] else "else_branch"
            ]
            flat.graph.initializer.extend(branch.initializer)
            out += inline(branch.node)
            pairs = zip(branch.output, node.output, strict=True)
            out += [helper.make_node("Identity", [b.name], [o]) for b, o in pairs]
        return out

    nodes = inline(flat.graph.node)
    del flat.graph.node[:]
    flat.graph.node.extend(nodes)
    return flat


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _path_ranges(model, configs, images: list[np.ndarray], tmp: Path) -> dict[str, tuple[float, float]]:
    """``{tensor: (low, high)}``: MinMax over the images run through every config's flattened file, unioned."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    ranges: dict[str, tuple[float, float]] = {}
    for config in configs:
        path = tmp / "flat.onnx"
        onnx.save(_flatten(model, config), str(path))
        calibrator = create_calibrator(
            str(path), None, augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        skip = np.array(config)
        calibrator.collect_data(_Feeds([{"image": image, "skip": skip} for image in images]))
        for name, data in calibrator.compute_data().data.items():
            low, high = (float(np.min(v)) if i == 0 else float(np.max(v)) for i, v in enumerate(data.range_value))
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
        del calibrator
    return ranges


def _check_switchable(model, path) -> None:
    import json

    if [i.name for i in model.graph.input] != ["image", "skip"]:
        raise ValueError(f"{path} is not a switchable file (inputs image, skip); quantize one depth with quantize_int8")
    meta = json.loads(next((p.value for p in model.metadata_props if p.key == "adn"), "{}"))
    if meta.get("calibrated_stats", "none") not in ("none", "constant"):
        raise ValueError(
            f"{path} applies its calibrated statistics at run time ({meta['calibrated_stats']}), which cannot be "
            "folded into INT8 convolutions; export it with --calibrated-stats constant"
        )


def quantize_switchable_int8(float_path: str | Path, int8_path: str | Path, images: Iterable, limit: int = 256) -> None:
    """Write the INT8 version of switchable ONNX file ``float_path`` (inputs ``image``, ``skip``) to ``int8_path``
    (one self-contained file), its activation ranges calibrated on up to ``limit`` images from ``images`` run
    through every sub-network (see the module's docstring)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationMethod, QuantizationMode, QuantType
        from onnxruntime.quantization.calibrate import TensorsData
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
        from onnxruntime.quantization.registry import QLinearOpsRegistry
    except ImportError:  # pragma: no cover - optional dependency
        raise ValueError("INT8 export needs onnxruntime: pip install 'adn[export]'") from None

    with tempfile.TemporaryDirectory(prefix="adn-int8-") as tmp:
        tmp = Path(tmp)
        source = onnx.load(str(float_path))  # weights from its .data file, saved in one file for the optimiser
        _check_switchable(source, float_path)
        onnx.save(source, str(tmp / "float.onnx"))
        options = ort.SessionOptions()  # fold the norms into the convolutions, in every branch
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp / "folded.onnx")
        ort.InferenceSession(str(tmp / "float.onnx"), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(tmp / "folded.onnx"))
        _unique_names(model.graph)
        num_stages = model.graph.input[1].type.tensor_type.shape.dim[0].dim_value
        arrays = list(_arrays(images, limit))
        ranges = _path_ranges(model, list(itertools.product((False, True), repeat=num_stages)), arrays, tmp)
        unify_if_outputs(model, ranges)
    ranges_data = TensorsData(
        CalibrationMethod.MinMax, {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()}
    )
    model = onnx.shape_inference.infer_shapes(model)
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for g in all_graphs(model.graph)
        for v in [*g.value_info, *g.output]
        if v.type.tensor_type.HasField("shape")
    }
    quantizer = ONNXQuantizer(
        model,
        True,  # per channel
        False,  # reduce_range
        QuantizationMode.QLinearOps,
        True,  # static
        QuantType.QInt8,
        QuantType.QUInt8,
        ranges_data,
        None,
        None,
        list(QLinearOpsRegistry),
        {"EnableSubgraph": True},
    )
    quantizer.quantize_model()
    uint8_if_outputs(quantizer.model.model, ranks)
    _share_weights(quantizer.model.model)
    onnx.save(quantizer.model.model, str(int8_path))
