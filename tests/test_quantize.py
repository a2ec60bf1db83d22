"""adn export --quantize int8: onnxruntime static INT8 of one sub-network, within 1 pt of float32 on the
built-in data for a briefly trained resnet20 (its base- and super-net)."""

import importlib.util

import pytest
import torch

from adn.cli import main as cli_main
from adn.data.loaders import build_eval_loader
from helpers import ROOT

ort = pytest.importorskip("onnxruntime")


def _train_resnet20(epochs: int = 4) -> torch.nn.Module:
    """The benchmark's briefly trained resnet20 (benchmarks/switchable.py), loaded from its file."""
    spec = importlib.util.spec_from_file_location("adn_bench_switchable", ROOT / "benchmarks" / "switchable.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train_resnet20(epochs)


def _accuracy(path, loader) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in loader:
        logits = session.run(None, {"images": x.numpy()})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return 100 * correct / total


def test_int8_within_one_point(tmp_path):
    torch.set_num_threads(1)
    model = _train_resnet20()
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


def test_quantize_needs_one_onnx_subnet(tmp_path, capsys):
    args = ["export", "--model", "resnet20", "--quantize", "int8"]
    assert cli_main([*args, "--skip-cfg", "TTT", "--output", str(tmp_path / "x.pt")]) == 2
    assert cli_main([*args, "--all-subnets", "--output", str(tmp_path / "x.onnx")]) == 2
    assert "--quantize int8 writes one sub-network" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
