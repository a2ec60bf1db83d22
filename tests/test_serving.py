"""adn.serving on Ray Serve, end to end over HTTP: one Ray instance for the module (2 CPUs, every address loopback)
serving a switchable resnet20 file; each input kind, the bad-request list, a replica without torch, a replica
that dies."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is not installed (pip install -e ".[serve]")')
ort = pytest.importorskip("onnxruntime")

import ray  # noqa: E402
from ray import serve  # noqa: E402

import adn  # noqa: E402
from adn.cli.serve import RAY_TIMEOUTS  # noqa: E402
from adn.deploy.export_switchable import export_switchable  # noqa: E402
from adn.serving import build_app  # noqa: E402
from adn.serving.decode import InputSpec, decode_image  # noqa: E402

META = {"classes": [f"digit {i}" for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, ONNX path): the app on a free loopback port, batches held up to 300 ms so a request can be
    caught in flight."""
    path = tmp_path_factory.mktemp("serving") / "r20.onnx"
    model = adn.create_model("resnet20", num_classes=10).eval()
    export_switchable(model, path, resolution=32, meta=META, pt2=False)
    for key, value in RAY_TIMEOUTS.items():
        os.environ.setdefault(key, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(build_app(path, max_batch=4, max_wait_ms=300, slo_ms=1000), name="adn", route_prefix="/")
        yield f"http://127.0.0.1:{port}", path
    finally:
        serve.shutdown()
        ray.shutdown()


def _post(url: str, body: bytes, kind: str, query: str = "", timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/predict{query}", body, {"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def _direct(path, image: np.ndarray, skip: str) -> int:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    flags = np.array([c == "T" for c in skip])
    return int(session.run(None, {"image": image.reshape(1, 3, 32, 32), "skip": flags})[0].argmax())


def test_json_raw_and_png_answers_match_onnxruntime(served):
    url, path = served
    image = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    status, a = _post(url, json.dumps({"image": image.tolist(), "skip": "TFT"}).encode(), "application/json")
    assert status == 200 and a["skip"] == "TFT" and a["policy"] == "requested"
    assert a["class"] == _direct(path, image, "TFT") and a["label"] == f"digit {a['class']}" and len(a["top5"]) == 5
    status, b = _post(url, image.tobytes(), "application/octet-stream", "?budget_ms=500")
    assert status == 200 and b["policy"] == "adaptive" and b["budget_ms"] == 500
    assert b["skip"] == "FFF" and b["class"] == _direct(path, image, "FFF")  # an idle server: the super-net
    assert set(b["timings"]) == {"predicted_ms", "infer_ms", "batch", "server_ms"}
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(png, "PNG")
    status, c = _post(url, png.getvalue(), "image/png", "?skip=TTT")
    expected = decode_image(png.getvalue(), InputSpec.from_meta({"input_size": 32, **META}))
    assert status == 200 and c["skip"] == "TTT" and c["class"] == _direct(path, expected, "TTT")


def test_requests_of_one_depth_are_batched(served):
    url, _ = served
    image = np.zeros((3, 32, 32), np.float32).tobytes()
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(_post(url, image, "application/octet-stream", "?skip=FTF")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [s for s, _ in answers] == [200] * 3 and max(a["timings"]["batch"] for _, a in answers) > 1


def test_info_and_stats(served):
    url, _ = served
    info = _get(url, "/info")
    assert info["input"]["shape"] == [1, 3, 32, 32] and info["input"]["mean"] == [0.5] * 3
    assert info["fallback"] == "TTT" and info["candidates"][-1] == "FFF" and info["budget_ms"] == 1000
    assert len(info["table"]) == 8 and all(row["latency_ms"] > 0 for row in info["table"])
    stats = _get(url, "/stats")
    assert stats["answered"] >= 1 and 0 <= stats["within_budget"] <= 1 and sum(stats["served"].values()) >= 1


def test_the_replica_imports_neither_torch_nor_adn(served):
    described = serve.get_deployment_handle("DepthModel", app_name="adn").describe.remote().result()
    assert described["loaded"] == [] and described["latency_ms"]["FFF"] > 0


GOOD = np.zeros((3, 32, 32)).tolist()
BAD = [
    (b"{oops", "application/json", "", 400),
    (b"[1, 2, 3]", "application/json", "", 400),
    (json.dumps({"image": [[1.0, 2.0], [3.0]]}).encode(), "application/json", "", 400),
    (json.dumps({"image": [[1.0, 2.0]]}).encode(), "application/json", "", 400),
    (json.dumps({"image": [[["x"] * 32] * 32] * 3}).encode(), "application/json", "", 400),
    (np.full(3 * 32 * 32, np.nan, np.float32).tobytes(), "application/octet-stream", "", 400),
    (b"\x89PNG but not really", "image/png", "", 400),
    (b"", "image/jpeg", "", 400),
    (b"0" * (4 * 2**20 + 1), "application/octet-stream", "", 413),
    (json.dumps({"image": GOOD, "skip": "FF"}).encode(), "application/json", "", 400),
    (json.dumps({"image": GOOD}).encode(), "application/json", "?budget_ms=-3", 400),
    (json.dumps({"image": GOOD, "budget_ms": "fast"}).encode(), "application/json", "", 400),
    (b"hello", "text/plain", "", 415),
]


def test_bad_requests_get_a_4xx_and_the_server_stays_up(served):
    url, _ = served
    for body, kind, query, status in BAD:
        got, answer = _post(url, body, kind, query)
        assert (got, list(answer)) == (status, ["error"]), (body[:40], answer)
        assert "\n" not in answer["error"]
    assert _post(url, np.zeros(3 * 32 * 32, np.float32).tobytes(), "application/octet-stream")[0] == 200
    assert _get(url, "/stats")["bad_requests"] >= len(BAD)


def test_a_replica_that_dies_fails_its_requests_with_5xx_and_is_restarted(served):
    url, _ = served
    handle = serve.get_deployment_handle("DepthModel", app_name="adn")
    pid = handle.describe.remote().result()["pid"]  # the one replica
    result: list = []
    body = np.zeros(3 * 32 * 32, np.float32).tobytes()
    client = threading.Thread(target=lambda: result.append(_post(url, body, "application/octet-stream")))
    client.start()
    deadline = time.monotonic() + 30
    while handle.describe.remote().result()["pending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the request waits in the replica's batch queue (300 ms)
    os.kill(pid, signal.SIGKILL)
    client.join(90)
    assert result and result[0][0] in (500, 502, 503) and "error" in result[0][1]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray starts a new replica
        if _post(url, body, "application/octet-stream")[0] == 200:
            break
        time.sleep(1)
    else:
        pytest.fail("no replica answered within 120 s of the kill")
    assert handle.describe.remote().result()["latency_ms"]
