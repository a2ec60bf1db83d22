"""examples/serve_onnx.py: every depth from one ONNX file in a process without torch; dynamic batching."""

import json
import subprocess
import sys

import pytest

import adn
from adn.deploy.export_switchable import export_switchable
from helpers import ROOT

CODE = """
import sys
sys.modules["torch"] = None  # importing torch in this process fails
sys.modules["adn"] = None
import asyncio, importlib.util, json
import numpy as np
spec = importlib.util.spec_from_file_location("serve_onnx", {example!r})
serve = sys.modules["serve_onnx"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serve)
out = {{}}
for max_batch in (1, 8):
    server = serve.OnnxDepthServer({path!r}, max_batch=max_batch, max_wait_ms=5.0, threads=1)
    out[max_batch] = asyncio.run(serve.load_test(server, 64, 16, budget_ms=None))
image = np.random.default_rng(1).random((3, 32, 32), dtype=np.float32)
answer = asyncio.run(server.infer(image, skip="TFT"))
direct = server.session.run(None, {{"image": image[None], "skip": np.array([True, False, True])}})[0]
out["same"] = answer["class"] == int(direct.argmax())
out["base"] = server.choose(0.0)
out["best"] = server.choose(None)
out["torch"] = any(m.startswith("torch") for m, v in sys.modules.items() if v is not None)
print(json.dumps(out))
"""


def test_serve_without_torch_switches_and_batches(tmp_path):
    pytest.importorskip("onnxruntime")
    model = adn.create_model("resnet20", num_classes=10).eval()
    path = export_switchable(model, tmp_path / "r20.onnx", resolution=32, pt2=False)["onnx"]
    code = CODE.format(example=str(ROOT / "examples" / "serve_onnx.py"), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False and out["same"] is True
    assert out["1"]["mean_batch"] == 1 and out["8"]["mean_batch"] > 1  # queued same-depth requests batched
    assert out["best"] == "FFF" and out["base"] == "TTT"  # no accuracy in the table: parameters rank them
    assert sum(out["8"]["depths"].values()) == 64
