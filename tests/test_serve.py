"""examples/serve.py: the depth policy (pure) and the HTTP server end to end (a thread, a free localhost port)."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from helpers import ROOT, run

pytest.importorskip("aiohttp")

import adn  # noqa: E402


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


serve = _load("serve")

# A 3-stage table in the form 'adn bench' writes (latencies made up so that every choice is predictable).
LATENCY = {"FFF": 10.0, "FFT": 8.5, "FTF": 8.0, "FTT": 6.0, "TFF": 8.2, "TFT": 5.0, "TTF": 5.5, "TTT": 3.0}
GFLOPS = {s: 0.03 + 0.01 * s.count("F") for s in LATENCY}


def rows(acc: dict[str, float] | None = None) -> list[dict]:
    return [
        {
            "skip": s,
            "gflops": GFLOPS[s],
            "latency_ms": lat,
            "acc1": None if acc is None else acc[s],
            "acc5": None,
        }
        for s, lat in LATENCY.items()
    ]


# --------------------------------------------------------------------------------------------- the policy
def test_front_without_accuracy_ranks_by_gflops():
    policy = serve.DepthPolicy(rows())
    # TTF (5.5 ms) and FTT (6.0 ms) have TFT's GFLOPs at more latency; TFF and FFT are slower than FTF.
    assert [c.skip for c in policy.front] == ["TTT", "TFT", "FTF", "FFF"]
    assert policy.metric == "gflops" and policy.fallback.skip == "TTT" and policy.best.skip == "FFF"


@pytest.mark.parametrize(
    "budget, wait, expected",
    [
        (None, 0.0, "FFF"),  # no budget: the best
        (100.0, 0.0, "FFF"),
        (10.0, 0.0, "FFF"),  # exactly at the budget fits
        (9.99, 0.0, "FTF"),
        (7.99, 0.0, "TFT"),
        (5.0, 0.0, "TFT"),
        (4.9, 0.0, "TTT"),
        (1.0, 0.0, "TTT"),  # nothing fits: the base-net
        (20.0, 12.0, "FTF"),  # the wait eats the budget: 12 + 8 fits
        (20.0, 12.5, "TFT"),
        (20.0, 30.0, "TTT"),
    ],
)
def test_choose_budget_and_wait(budget, wait, expected):
    assert serve.DepthPolicy(rows()).choose(budget, wait).skip == expected


def test_choose_scales_latencies():
    policy = serve.DepthPolicy(rows())
    assert policy.choose(12.0, scale=1.0).skip == "FFF"
    assert policy.choose(12.0, scale=2.0).skip == "TFT"  # 2 x 5 fits, 2 x 8 does not
    assert policy.choose(9.0, scale=2.0).skip == "TTT"


def test_front_with_accuracy_drops_dominated_and_breaks_ties_by_gflops():
    acc = {"FFF": 90.0, "FFT": 90.0, "FTF": 88.0, "FTT": 87.0, "TFF": 91.0, "TFT": 86.0, "TTF": 89.0, "TTT": 80.0}
    policy = serve.DepthPolicy(rows(acc))
    assert policy.metric == "acc1"
    # FTT, FTF, FFT and FFF are each slower and less accurate than another config: never served.
    assert [c.skip for c in policy.front] == ["TTT", "TFT", "TTF", "TFF"]
    assert policy.best.skip == "TFF" and policy.choose(8.0).skip == "TTF"
    # Equal accuracy: the one with more GFLOPs ranks higher (as adn.select_subnet), so both stay on the front.
    tied = serve.DepthPolicy(
        [
            {"skip": "TT", "gflops": 1.0, "latency_ms": 1.0, "acc1": 50.0},
            {"skip": "TF", "gflops": 2.0, "latency_ms": 2.0, "acc1": 50.0},
            {"skip": "FT", "gflops": 2.0, "latency_ms": 2.0, "acc1": 50.0},  # same as TF: the first listed wins
            {"skip": "FF", "gflops": 3.0, "latency_ms": 3.0, "acc1": 49.0},
        ]
    )
    assert [c.skip for c in tied.front] == ["TT", "TF"]
    assert tied.choose(2.5).skip == "TF" and tied.choose(100).skip == "TF"


def test_fallback_without_base_net_is_the_cheapest():
    policy = serve.DepthPolicy([r for r in rows() if r["skip"] != "TTT"])
    assert policy.fallback.skip == "TFT" and policy.choose(1.0).skip == "TFT"


def test_policy_reads_the_bench_json(tmp_path):
    path = tmp_path / "resnet20-bench.json"
    path.write_text(json.dumps({"model": "resnet20", "threads": 1, "results": rows()}))
    policy = serve.DepthPolicy.from_bench(path)
    assert policy.choose(9.0).skip == "FTF" and policy.get("FTT").latency_ms == 6.0
    with pytest.raises(ValueError, match="not in the bench table"):
        policy.get("FFFF")
    with pytest.raises(FileNotFoundError):
        serve.DepthPolicy(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": [{"skip": "FF", "gflops": 1.0, "latency_ms": None}]}))
    with pytest.raises(ValueError, match="latency_ms"):
        serve.DepthPolicy(bad)


def test_expected_wait_is_a_fifo_pool():
    wait = serve.expected_wait_ms
    assert wait([], [], 1) == 0.0
    # One worker, n requests ahead at latency L (one running from the start): wait n*L, i.e. (n + 1) * L in all.
    assert wait([10.0], [10.0, 10.0], 1) == 30.0
    assert wait([4.0], [], 2) == 0.0  # a free worker
    assert wait([4.0, 6.0], [], 2) == 4.0
    assert wait([4.0, 6.0], [5.0, 1.0], 2) == 7.0  # 5 -> worker free at 4 (until 9), 1 -> at 6 (until 7); next: 7
    assert wait([4.0, 6.0], [5.0, 1.0, 1.0], 2) == 8.0
    # The brief's rule with one worker: the best c with (queued + 1) * latency(c) <= budget.
    policy = serve.DepthPolicy(rows())
    for queued in range(6):
        c = policy.choose(30.0, wait([10.0], [10.0] * (queued - 1), 1) if queued else 0.0)
        fitting = [f for f in policy.front if queued * 10.0 + f.latency_ms <= 30.0]
        assert c.skip == (fitting[-1].skip if fitting else "TTT")


def test_feedback_scales_latencies_and_divides_the_budget():
    model = adn.create_model("resnet20", num_classes=10)
    server = serve.AdaptiveServer(model, serve.DepthPolicy(rows()), input_size=32, budget_ms=20.0)
    assert server.decide(20.0)[0].skip == "FFF"
    for _ in range(40):  # inference takes twice the table's time; the server time is 2.5x the prediction
        server.record(serve._Job("FFF", 10.0, started=1.0, finished=1.02), predicted_ms=10.0, server_ms=25.0)
    assert server.scale == pytest.approx(2.0) and server.headroom == pytest.approx(2.5)
    choice, why, predicted = server.decide(20.0)  # budget 20 / 2.5 = 8 ms at twice the table: only TTT (6) fits
    assert (choice.skip, why, predicted) == ("TTT", "adaptive", pytest.approx(6.0))
    frozen = serve.AdaptiveServer(model, serve.DepthPolicy(rows()), input_size=32, budget_ms=20.0, adapt=False)
    frozen.record(serve._Job("FFF", 10.0, started=1.0, finished=1.02), predicted_ms=10.0, server_ms=25.0)
    assert frozen.scale == 1.0 and frozen.headroom == 1.0


# ------------------------------------------------------------------------------------------- end to end
def _post(url: str, body: dict, timeout: float = 20) -> dict:
    request = urllib.request.Request(url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=10) as response:
        return json.loads(response.read())


def test_server_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"model": "resnet20", "results": rows()}))
    server = serve.AdaptiveServer(
        model, serve.DepthPolicy(bench), input_size=32, budget_ms=16.0, workers=1, threads=1, adapt=False
    )
    image = torch.randn(3, 32, 32)
    with serve.serve_in_thread(server) as url:
        assert url.startswith("http://127.0.0.1:")
        info = _get(url, "/info")
        assert [c["skip"] for c in info["candidates"]] == ["TTT", "TFT", "FTF", "FFF"]

        # The budget picks the depth; the answers match the sub-network that served them.
        answers = {b: _post(url, {"image": image.tolist(), "budget_ms": b}) for b in (50, 7, 2)}
        assert {b: a["skip"] for b, a in answers.items()} == {50: "FFF", 7: "TFT", 2: "TTT"}
        with torch.inference_mode():
            for a in answers.values():
                logits = model(image[None], skip=a["skip"])[0]
                assert a["class"] == int(logits.argmax()) and len(a["top5"]) == 5
                assert a["logits"]["max"] == pytest.approx(float(logits.max()), abs=1e-3)
                assert a["policy"] == "adaptive" and a["queued"] == 0
                assert set(a["timings"]) == {"predicted_ms", "queue_ms", "infer_ms", "server_ms"}
        raw = urllib.request.Request(
            url + "/predict?budget_ms=100", image.numpy().tobytes(), {"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(raw, timeout=20) as response:
            assert json.loads(response.read())["class"] == answers[50]["class"]
        assert _post(url, {"image": image.tolist(), "skip": "FTT"})["skip"] == "FTT"  # a forced config

        # The queue picks the depth: hold the one worker, admit requests one by one (default budget 16 ms).
        gate, original = threading.Event(), server._run
        server._run = lambda job, x: (gate.wait(20), original(job, x))[1]
        try:
            with ThreadPoolExecutor(4) as clients:
                futures = []
                for i in range(4):
                    futures.append(clients.submit(_post, url, {"image": image.tolist()}))
                    deadline = time.monotonic() + 10
                    while _get(url, "/stats")["inflight"] < i + 1 and time.monotonic() < deadline:
                        time.sleep(0.01)
                gate.set()
                got = [f.result(timeout=30) for f in futures]
        finally:
            server._run = original
        # waits ahead 0, 10, 15, 18 ms: FFF (0 + 10), TFT (10 + 5), then nothing fits: the base-net
        assert [a["skip"] for a in got] == ["FFF", "TFT", "TTT", "TTT"]
        assert [a["queued"] for a in got] == [0, 1, 2, 3]
        assert [a["timings"]["predicted_ms"] for a in got] == pytest.approx([10.0, 15.0, 18.0, 21.0])

        # Bad requests are refused with a reason, and the server keeps serving.
        for body in ({"image": [[1.0, 2.0]]}, {"nope": 1}, {"image": image.tolist(), "budget_ms": "x"}):
            with pytest.raises(urllib.error.HTTPError) as err:
                _post(url, body)
            assert err.value.code == 400 and "error" in json.loads(err.value.read())
        stats = _get(url, "/stats")
        assert stats["errors"] == 3 and sum(stats["served"].values()) == 9

    # Fixed to the super-net: the depth no longer follows the budget.
    fixed = serve.AdaptiveServer(model, serve.DepthPolicy(rows()), input_size=32, budget_ms=1.0, fixed="F F F")
    with serve.serve_in_thread(fixed) as url:
        a = _post(url, {"image": image.tolist(), "budget_ms": 1})
        assert a["skip"] == "FFF" and a["policy"] == "fixed"


def test_concurrent_requests_at_different_depths_match_sequential_calls():
    """Two workers run different sub-networks of the one model at once; every answer is its own config's."""
    torch.manual_seed(1)
    model = adn.create_model("resnet20", num_classes=10).eval()
    images = torch.randn(16, 3, 32, 32)
    configs = list(LATENCY)
    with torch.inference_mode():
        expected = [model(images[i : i + 1], skip=configs[i % 8])[0] for i in range(16)]
    server = serve.AdaptiveServer(model, serve.DepthPolicy(rows()), input_size=32, budget_ms=None, workers=2)
    with serve.serve_in_thread(server) as url, ThreadPoolExecutor(8) as clients:
        bodies = [{"image": images[i].tolist(), "skip": configs[i % 8]} for i in range(16)]
        answers = list(clients.map(lambda body: _post(url, body), bodies))
    for i, (a, logits) in enumerate(zip(answers, expected, strict=True)):
        assert a["skip"] == configs[i % 8] and a["policy"] == "requested"
        assert a["class"] == int(logits.argmax())
        assert a["logits"]["max"] == pytest.approx(float(logits.max()), abs=1e-4)
        assert a["logits"]["min"] == pytest.approx(float(logits.min()), abs=1e-4)


@pytest.mark.slow
def test_load_test_smoke(tmp_path):
    """examples/load_test.py runs both servers as child processes, offers its load levels and reports."""
    bench, out = tmp_path / "bench.json", tmp_path / "load.md"
    bench.write_text(json.dumps({"model": "resnet20", "results": rows()}))
    argv = ["--model", "resnet20", "--bench", str(bench), "--resolution", "32", "--clients", "1", "3"]
    argv += ["--duration", "0.5", "--workers", "1"]
    result = run([sys.executable, str(ROOT / "examples" / "load_test.py"), *argv, "--output", str(out)], timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = out.read_text().splitlines()
    assert "| 3 | adaptive |" in "\n".join(lines) and any(line.startswith("| 3 | fixed FFF | ") for line in lines)
    assert "| TFT | 0.0400 | 5.00 | * |" in lines  # the table it was given, candidates marked
