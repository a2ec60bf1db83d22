"""adn export --quantize int8: onnxruntime static INT8 of one sub-network, and of the switchable file (every depth
in one file), within 1 pt of float32 on the built-in data for a briefly trained resnet20 (its base- and super-net)."""

import copy
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

import adn
from adn.cli import main as cli_main
from adn.data.loaders import build_eval_loader
from adn.deploy.export import onnx_size
from helpers import train_resnet20

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return train_resnet20()


def _accuracy(path, loader, skip=None) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in loader:
        feed = {"images": x.numpy()} if skip is None else {"image": x.numpy(), "skip": np.array(skip)}
        logits = session.run(None, feed)[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return 100 * correct / total


def test_int8_within_one_point(tmp_path, trained):
    model = trained
    weights = tmp_path / "r20.pth"
    torch.save({"model": model.state_dict()}, weights)
    val, _ = build_eval_loader(image_size=32, batch_size=128)
    for skip in ("FFF", "TTT"):
        common = ["export", "--model", "resnet20", "--weights", str(weights), "--skip-cfg", skip]
        assert cli_main([*common, "--output", str(tmp_path / f"{skip}.onnx")]) == 0
        assert cli_main([*common, "--quantize", "int8", "--output", str(tmp_path / f"{skip}-int8.onnx")]) == 0
        fp32, int8 = (_accuracy(tmp_path / f"{skip}{s}.onnx", val) for s in ("", "-int8"))
        assert fp32 > 50, f"{skip}: training too short ({fp32:.1f} %)"
        assert abs(fp32 - int8) <= 1.0, f"{skip}: float32 {fp32:.1f} % vs INT8 {int8:.1f} %"
        assert (tmp_path / f"{skip}-int8.onnx").stat().st_size < 0.5 * (tmp_path / f"{skip}.onnx").stat().st_size


def test_switchable_int8_within_one_point(tmp_path, trained):
    """One INT8 file for every depth of the calibrated model: its base- and super-net within 1 pt of the float32
    switchable file, every convolution an INT8 kernel inside the If branches, the weights a third of float32's."""
    from torch.utils.data import DataLoader

    from adn.data.loaders import build_calibration_set
    from adn.deploy.export_switchable import export_switchable
    from adn.deploy.quantize_switchable import quantize_switchable_int8

    calib = DataLoader(build_calibration_set(image_size=32), batch_size=32, shuffle=True)
    model = adn.calibrate(copy.deepcopy(trained), calib, batches=4)
    fp32, int8 = tmp_path / "all.onnx", tmp_path / "all-int8.onnx"
    export_switchable(model, fp32, resolution=32, pt2=False, stats="constant")
    quantize_switchable_int8(fp32, int8, calib, limit=128)
    val, _ = build_eval_loader(image_size=32, batch_size=128)
    for skip in ((False,) * 3, (True,) * 3):
        want, got = _accuracy(fp32, val, skip), _accuracy(int8, val, skip)
        assert want > 50 and abs(want - got) <= 1.0, f"{skip}: float32 {want:.1f} % vs INT8 {got:.1f} %"
    ops = Counter(n.op_type for g in _graphs(onnx.load(str(int8)).graph) for n in g.node)
    assert ops["Conv"] == 0 and ops["QLinearConv"] > 19 and ops["If"] == 1 + 3 + 7  # stage i: 2^(i+1) - 1 conds
    assert int8.stat().st_size < 0.5 * onnx_size(fp32)
    # stage boundaries pass uint8: no If output is dequantized only to be quantized again ...
    graphs = list(_graphs(onnx.load(str(int8)).graph))
    if_outputs = {o for g in graphs for n in g.node if n.op_type == "If" for o in n.output}
    requantized = [n.input[0] for g in graphs for n in g.node if n.op_type == "QuantizeLinear"]
    assert ops["QuantizeLinear"] == 2 and not if_outputs & set(requantized), requantized  # the image, the head
    # ... channels-last: a branch that hands a uint8 map on runs no transpose once onnxruntime has optimised it
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    branches = list(_graphs(onnx.load(options.optimized_model_filepath).graph))[1:]
    handing_on = [g for g in branches if all(o.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for o in g.output)]
    assert handing_on and not [g.name for g in handing_on if any(n.op_type == "Transpose" for n in g.node)]
    # ... and onnxruntime finds nothing to warn about (unused or duplicated initializers)
    code = "import onnxruntime as o, sys; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    done = subprocess.run([sys.executable, "-c", code, str(int8)], capture_output=True, text=True, check=True)
    assert "[W:onnxruntime" not in done.stderr, done.stderr


def _graphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)


def test_quantize_needs_onnx(tmp_path, capsys):
    args = ["export", "--model", "resnet20", "--quantize", "int8"]
    assert cli_main([*args, "--skip-cfg", "TTT", "--output", str(tmp_path / "x.pt")]) == 2
    assert "--quantize int8 writes an ONNX file" in capsys.readouterr().err
    gathered = ["--all-subnets", "--calibrated-stats", "gathered"]
    assert cli_main([*args, *gathered, "--output", str(tmp_path / "x.onnx")]) == 2
    assert "--calibrated-stats constant" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_all_subnets_int8(tmp_path, capsys):
    out = tmp_path / "r20-int8.onnx"
    args = ["export", "--model", "resnet20", "--num-classes", "10", "--all-subnets", "--quantize", "int8"]
    assert cli_main([*args, "--calib-images", "16", "--output", str(out)]) == 0
    assert "8 sub-networks in one INT8 file" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # self-contained, no temporary left
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": np.zeros((2, 3, 32, 32), np.float32), "skip": np.array([True] * 3)})
    assert logits.shape == (2, 10)
