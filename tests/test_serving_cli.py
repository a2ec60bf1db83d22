"""``adn serve`` as a user runs it: --help, one-line errors, and a server that starts its own Ray instance and
stops it, with every process it started, on SIGINT."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from adn.cli import main
from helpers import ADN, ROOT, child_env, run


def test_help_lists_the_flags():
    out = run([*ADN, "serve", "--help"], timeout=120)
    assert out.returncode == 0
    for flag in ("--port", "--address", "--replicas", "--autoscale", "--slo-ms", "--fixed", "--max-batch",
                 "--max-wait-ms", "--max-body-mb"):  # fmt: skip
        assert flag in out.stdout
    assert "serve" in run([*ADN, "--help"], timeout=120).stdout


def test_without_ray_one_line_error(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name))
    assert main(["serve", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        'adn: error: Ray Serve is not installed; pip install "adn[serve]" (or pip install "ray[serve]")'
    )


def test_a_file_that_is_not_switchable_or_not_onnx(capsys, tmp_path):
    pytest.importorskip("ray.serve")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["logits"])],
        "one-depth",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    single = tmp_path / "single.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), single)
    assert main(["serve", str(single)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adn: error: ") and "serves one depth (inputs: input)" in err and "--all-subnets" in err
    assert "\n" not in err
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    assert main(["serve", str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not an ONNX file onnxruntime can load" in err and "\n" not in err
    assert main(["serve", str(tmp_path / "missing.onnx")]) == 2
    assert main(["serve", str(single), "--autoscale", "4"]) == 2
    assert "--autoscale takes MIN,MAX" in capsys.readouterr().err


@pytest.fixture(scope="module")
def switchable_file(tmp_path_factory):
    pytest.importorskip("ray.serve")
    import adn
    from adn.deploy.export_switchable import export_switchable

    path = tmp_path_factory.mktemp("cli") / "r20.onnx"
    export_switchable(adn.create_model("resnet20", num_classes=10), path, resolution=32, pt2=False)
    return path


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fixed", "FF"], "--fixed must be 3 letters T (skip) or F (keep), e.g. FFF; got 'FF'"),
        (["--autoscale", "3,2"], "autoscale needs 1 <= MIN <= MAX, got 3,2"),
        (["--replicas", "3", "--num-cpus", "2"], "3 replica(s) x 1 thread(s) need 3 CPUs; this Ray instance has 2"),
        (["--max-batch", "0"], "max_batch must be >= 1, got 0"),
    ],
)
def test_bad_flags_one_line_before_ray_starts(switchable_file, capsys, flags, message):
    assert main(["serve", str(switchable_file), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adn: error: ") and message in err and "\n" not in err


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


@pytest.mark.slow
def test_serve_starts_ray_answers_and_stops_everything_on_sigint(switchable_file):
    """One command: a local Ray instance, `listening on URL`, an answer; Ctrl-C leaves no process behind."""
    path = switchable_file
    # Ray's processes name their session folder under it on their command lines (short: socket paths <= 107 bytes)
    ray_tmp = Path(tempfile.mkdtemp(prefix="adn-ray-", dir="/tmp"))
    proc = subprocess.Popen(
        [*ADN, "serve", str(path), "--port", "0", "--num-cpus", "2", "--slo-ms", "500"],
        cwd=ROOT,
        env=child_env({"RAY_TMPDIR": str(ray_tmp)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line + proc.stderr.read()[-3000:]
        url = line.split()[-1]
        body = np.zeros(3 * 32 * 32, np.float32).tobytes()
        request = urllib.request.Request(url + "/predict", body, {"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["skip"] == "FFF" and answer["budget_ms"] == 500
        assert _processes_mentioning(str(ray_tmp))  # Ray's own processes are running
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(ray_tmp)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(ray_tmp)) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)
