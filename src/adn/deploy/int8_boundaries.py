"""The stage boundaries of the INT8 switchable file: the graph surgery after onnxruntime's quantizer.

onnxruntime runs each ``If`` branch as a graph of its own, with its own layout transforms and its own
quantize/dequantize pairs at the edges, and it cannot optimise across a branch boundary. So each boundary is made
cheap by hand: the ``If`` output and the branch outputs that become it share one range and pass uint8
(:func:`uint8_if_outputs`), feature maps cross channels-last where onnxruntime's INT8 kernels want them
(:func:`_channels_last_boundaries`), and nothing is left that onnxruntime would warn about (:func:`_drop_unused`).
"""

from __future__ import annotations

__all__ = ["all_graphs", "if_nodes", "subgraphs", "uint8_if_outputs", "unify_if_outputs"]


def all_graphs(graph):
    """``graph`` and every graph nested in its nodes."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_graphs(sub)


def subgraphs(node):
    import onnx

    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def if_nodes(graph):
    """Every ``If`` node of ``graph`` and of the graphs nested in it, with the graph it is in."""
    for g in all_graphs(graph):
        for node in g.node:
            if node.op_type == "If":
                yield g, node


def unify_if_outputs(model, ranges: dict[str, tuple[float, float]]) -> None:
    """Give each ``If`` output and the branch outputs that become it one range (their union), so that each branch
    quantizes its output with the scale its consumers read it with: the ``If`` can then pass uint8 on
    (:func:`uint8_if_outputs`). No precision is lost: the consumers requantized to that range anyway."""
    for _, node in if_nodes(model.graph):
        branches = [a.g for a in node.attribute]
        for k, out in enumerate(node.output):
            names = [out, *(b.output[k].name for b in branches)]
            known = [ranges[n] for n in names if n in ranges]
            if known:
                union = (min(lo for lo, _ in known), max(hi for _, hi in known))
                ranges.update(dict.fromkeys(names, union))


def uint8_if_outputs(model, ranks: dict[str, int]) -> int:
    """Where every consumer of an ``If`` output quantizes it again and each branch computes it as a
    ``DequantizeLinear`` with the same scale (or as a nested ``If`` output of that kind), pass the uint8 tensor out
    instead; returns how many outputs changed. Why: onnxruntime runs each branch as a graph of its own, so every
    stage boundary cost a float DequantizeLinear and a QuantizeLinear of a whole activation. Feature maps (rank 4 in
    ``ranks``) then cross every boundary channels-last, see :func:`_channels_last_boundaries`."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i).tobytes() for g in all_graphs(model.graph) for i in g.initializer}
    params = lambda node: tuple(values.get(i) for i in node.input[1:3])  # noqa: E731 - (scale, zero point)
    changed, channels_last = 0, set()
    for _, node in list(if_nodes(model.graph)):
        for k, out in enumerate(node.output):
            consumers = [n for g in all_graphs(model.graph) for n in g.node if out in n.input]
            wanted = {params(n) for n in consumers}
            if not consumers or any(n.op_type != "QuantizeLinear" for n in consumers) or len(wanted) != 1:
                continue
            if _uint8_branches(node, k, next(iter(wanted)), params, apply=False):
                nhwc = ranks.get(out) == 4
                _uint8_branches(node, k, next(iter(wanted)), params, apply=True, nhwc=nhwc)
                for consumer in consumers:  # now a no-op: onnxruntime removes it
                    consumer.op_type, consumer.input[:] = "Identity", [out]
                    if nhwc:
                        channels_last.update((out, consumer.output[0]))
                for graph in all_graphs(model.graph):  # the float type recorded for it
                    for info in [v for v in graph.value_info if v.name == out]:
                        graph.value_info.remove(info)
                changed += 1
    _channels_last_boundaries(model, ranks, channels_last)
    _drop_unused(model)
    return changed


def _uint8_branches(node, k: int, wanted: tuple, params, apply: bool, nhwc: bool = False) -> bool:
    """Whether (``apply``: make it so) output ``k`` of ``If`` ``node`` can come out of each branch as uint8 with
    quantization ``wanted``: the branch computes it with a ``DequantizeLinear`` of those parameters, or as the
    output of a nested ``If`` of which the same holds and that nothing else in the branch reads. ``nhwc``: the
    ``DequantizeLinear`` becomes a transpose to channels-last instead of going."""
    import onnx
    from onnx import helper

    for branch in (a.g for a in node.attribute):
        name = branch.output[k].name
        source = next((n for n in branch.node if name in n.output), None)
        if source is not None and source.op_type == "DequantizeLinear" and params(source) == wanted:
            if apply and nhwc:
                del source.input[1:]
                source.op_type = "Transpose"
                source.attribute.append(helper.make_attribute("perm", [0, 2, 3, 1]))
            elif apply:
                branch.output[k].name = source.input[0]
                branch.node.remove(source)
        elif (
            source is not None
            and source.op_type == "If"
            and not any(name in n.input for n in branch.node)
            and _uint8_branches(source, list(source.output).index(name), wanted, params, apply, nhwc)
        ):
            pass
        else:
            return False
        if apply:
            branch.output[k].type.tensor_type.elem_type = onnx.TensorProto.UINT8
            branch.output[k].type.tensor_type.ClearField("shape")  # NCHW or NHWC: left to onnxruntime
            for info in [v for v in branch.value_info if v.name == name]:
                branch.value_info.remove(info)
    return True


_UINT8_SOURCES = ("QuantizeLinear", "QLinearConv", "QLinearAdd", "MaxPool")


def _channels_last_boundaries(model, ranks: dict[str, int], channels_last: set[str]) -> None:
    """Carry the uint8 feature maps that cross an ``If`` boundary channels-last (NHWC): the ``If`` outputs in
    ``channels_last`` (transposed at the end of their branches), and the maps a branch reads from its parent graph
    (transposed after their producer there); every graph that reads one transposes it back to NCHW first. Why:
    onnxruntime runs its INT8 convolutions channels-last and transposes at each graph's edges, which it cannot
    see across; these explicit transposes meet onnxruntime's own inverse ones in the same graph and both cancel,
    so a sub-network runs its two transposes (in and out), as a single-depth file does, instead of two per stage."""
    from onnx import helper

    graphs = list(all_graphs(model.graph))
    for graph in graphs:
        for node in [n for n in graph.node if n.op_type == "If"]:
            branches = list(all_graphs(node.attribute[0].g)) + list(all_graphs(node.attribute[1].g))
            for i, producer in enumerate(list(graph.node)):
                for value in producer.output:
                    read = any(value in n.input for b in branches for n in b.node)
                    if not read or producer.op_type not in _UINT8_SOURCES or value in channels_last:
                        continue
                    if ranks.get(value.removesuffix("_quantized")) != 4 or producer.op_type == "If":
                        continue
                    moved = f"{value}__nhwc"
                    graph.node.insert(i + 1, helper.make_node("Transpose", [value], [moved], perm=[0, 2, 3, 1]))
                    for b in branches:
                        for n in b.node:
                            n.input[:] = [moved if v == value else v for v in n.input]
                    channels_last.add(moved)

    def alias(node) -> bool:  # a former QuantizeLinear: passes the channels-last map on as it is
        return node.op_type == "Identity" and node.input[0] in channels_last and node.output[0] in channels_last

    for graph in graphs:
        readers = [n for n in graph.node if not alias(n) and set(n.input) & channels_last]
        for value in sorted({v for n in readers for v in n.input if v in channels_last}):
            local = f"{graph.name}/{value}__nchw"
            first = next(i for i, n in enumerate(graph.node) if value in n.input and not alias(n))
            for n in readers:
                n.input[:] = [local if v == value else v for v in n.input]
            graph.node.insert(first, helper.make_node("Transpose", [value], [local], perm=[0, 3, 1, 2]))
    for graph in graphs:
        for info in [v for v in graph.value_info if v.name in channels_last]:
            graph.value_info.remove(info)


def _drop_unused(model) -> None:
    """Remove the initializers no node reads any more, and give each branch its own copy of a scalar (a scale or
    zero point) that only branches read: onnxruntime warned at every session that it removed such a scalar from
    the main graph (tiny; weights stay shared in the main graph)."""
    import onnx

    graphs = list(all_graphs(model.graph))
    for graph in graphs:
        own = {i for n in graph.node for i in n.input}
        for init in list(graph.initializer):
            if init.name in own:
                continue
            readers = [sub for sub in graphs if sub is not graph and any(init.name in n.input for n in sub.node)]
            if readers and init.dims:
                continue  # a weight the branches share
            for sub in readers:  # names are unique across the whole file: the copy is named after its branch
                copied = onnx.TensorProto()
                copied.CopyFrom(init)
                copied.name = f"{sub.name}/{init.name}"
                sub.initializer.append(copied)
                for node in sub.node:
                    node.input[:] = [copied.name if i == init.name else i for i in node.input]
            graph.initializer.remove(init)
