"""adn.serving without Ray: the depth policy (pure) and request decoding (numpy/PIL, no torch)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

from adn.serving.decode import BadRequest, InputSpec, decode, decode_image
from adn.serving.policy import DepthPolicy, Feedback, expected_wait_ms, rank_key
from helpers import ROOT

# A 3-stage table as the ONNX file's metadata holds it, with latencies made up so that every choice is predictable.
LATENCY = {"FFF": 10.0, "FFT": 8.5, "FTF": 8.0, "FTT": 6.0, "TFF": 8.2, "TFT": 5.0, "TTF": 5.5, "TTT": 3.0}
GFLOPS = {s: 0.03 + 0.01 * s.count("F") for s in LATENCY}


def rows(acc: dict[str, float] | None = None) -> list[dict]:
    return [{"skip": s, "gflops": GFLOPS[s], "params_m": 0.1, **({"acc1": acc[s]} if acc else {})} for s in LATENCY]


# --------------------------------------------------------------------------------------------- the policy
def test_front_without_accuracy_ranks_by_gflops():
    policy = DepthPolicy(rows(), LATENCY)
    # TTF (5.5 ms) and FTT (6.0 ms) have TFT's GFLOPs at more latency; TFF and FFT are slower than FTF.
    assert [c.skip for c in policy.front] == ["TTT", "TFT", "FTF", "FFF"]
    assert policy.ranked_by == ("gflops",) and policy.fallback.skip == "TTT" and policy.best.skip == "FFF"


@pytest.mark.parametrize(
    "budget, wait, expected",
    [
        (None, 0.0, "FFF"),  # no budget: the best
        (10.0, 0.0, "FFF"),  # exactly at the budget fits
        (9.99, 0.0, "FTF"),
        (7.99, 0.0, "TFT"),
        (4.9, 0.0, "TTT"),
        (1.0, 0.0, "TTT"),  # nothing fits: the base-net
        (20.0, 12.0, "FTF"),  # the wait eats the budget: 12 + 8 fits
        (20.0, 12.5, "TFT"),
        (20.0, 30.0, "TTT"),
    ],
)
def test_choose_budget_and_wait(budget, wait, expected):
    assert DepthPolicy(rows(), LATENCY).choose(budget, wait).skip == expected


def test_choose_scales_latencies():
    policy = DepthPolicy(rows(), LATENCY)
    assert policy.choose(12.0, scale=1.0).skip == "FFF"
    assert policy.choose(12.0, scale=2.0).skip == "TFT"  # 2 x 5 fits, 2 x 8 does not


def test_front_with_accuracy_drops_dominated_configs():
    acc = {"FFF": 90.0, "FFT": 90.0, "FTF": 88.0, "FTT": 87.0, "TFF": 91.0, "TFT": 86.0, "TTF": 89.0, "TTT": 80.0}
    policy = DepthPolicy(rows(acc), LATENCY)
    assert policy.ranked_by == ("acc1", "gflops")
    # FTT, FTF, FFT and FFF are each slower and less accurate than another config: never served.
    assert [c.skip for c in policy.front] == ["TTT", "TFT", "TTF", "TFF"]
    assert policy.best.skip == "TFF" and policy.choose(8.0).skip == "TTF"


def test_rank_key_and_fallback_without_base_net():
    assert rank_key([{"skip": "F", "params_m": 1.0}]) == ("params_m",)
    assert rank_key([{"skip": "F"}]) == ()
    no_base = {s: v for s, v in LATENCY.items() if s != "TTT"}
    policy = DepthPolicy([r for r in rows() if r["skip"] != "TTT"], no_base)
    assert policy.fallback.skip == "TFT" and policy.choose(1.0).skip == "TFT"
    bare = DepthPolicy([], {"FF": 2.0, "TF": 1.5, "FT": 1.0, "TT": 0.5})  # no table: stages kept rank them
    assert [c.skip for c in bare.front] == ["TT", "FT", "FF"]


@pytest.mark.parametrize(
    "table, latency, match",
    [
        ([{"skip": "FX"}], {"FX": 1.0}, "malformed"),
        ([{"skip": "FF"}, {"skip": "FF"}], {"FF": 1.0}, "twice"),
        ([{"skip": "FF"}, {"skip": "TT"}], {"FF": 1.0}, "no latency measured for TT"),
    ],
)
def test_policy_rejects_bad_tables(table, latency, match):
    with pytest.raises(ValueError, match=match):
        DepthPolicy(table, latency)
    with pytest.raises(ValueError, match="not one of"):
        DepthPolicy(rows(), LATENCY).get("FFFF")


def test_expected_wait_is_a_fifo_pool():
    assert expected_wait_ms([], [], 1) == 0.0
    assert expected_wait_ms([10.0], [10.0, 10.0], 1) == 30.0  # n ahead at L: n*L
    assert expected_wait_ms([4.0], [], 2) == 0.0  # a free worker
    assert expected_wait_ms([4.0, 6.0], [5.0, 1.0], 2) == 7.0  # 5 -> free at 4 (until 9), 1 -> at 6 (until 7)
    with pytest.raises(ValueError, match="workers"):
        expected_wait_ms([], [], 0)


def test_feedback_scales_latencies_and_divides_the_budget():
    feedback = Feedback(quantile=0.95)
    for _ in range(40):  # inference takes twice the table's time; the server time is 2.5x the prediction
        feedback.record(infer_ms=20.0, table_ms=10.0, predicted_ms=10.0, server_ms=25.0)
    assert feedback.scale == pytest.approx(2.0) and feedback.headroom == pytest.approx(2.5)
    assert feedback.overhead_ms == pytest.approx(5.0)  # server 25 - inference 20: the engine's own cost
    policy = DepthPolicy(rows(), LATENCY)
    # budget 20 / 2.5 = 8 ms at twice the table: only TTT (6) fits
    assert policy.choose(feedback.budget(20.0), 0.0, feedback.scale).skip == "TTT"
    assert feedback.budget(None) is None
    with pytest.raises(ValueError, match="quantile"):
        Feedback(quantile=0)


# ---------------------------------------------------------------------------------------------- decoding
SPEC = InputSpec(size=8, resize=9, square=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _png(size=(12, 10), color=(255, 0, 0), fmt="PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def test_decode_json_raw_and_image():
    image = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    x, opts = decode(json.dumps({"image": image.tolist(), "budget_ms": 5, "skip": "tft"}).encode(),
                     "application/json; charset=utf-8", {}, SPEC, 3)  # fmt: skip
    assert x.shape == (1, 3, 8, 8) and np.allclose(x[0], image) and opts == {"budget_ms": 5.0, "skip": "TFT"}
    x, opts = decode(image.tobytes(), "application/octet-stream", {"budget_ms": "2.5"}, SPEC, 3)
    assert np.array_equal(x[0], image) and opts == {"budget_ms": 2.5, "skip": None}
    x, opts = decode(_png(), "image/png", {}, SPEC, 3)
    # red: (1 - 0.5) / 0.25 = 2 in the first channel, (0 - 0.5) / 0.25 = -2 in the others
    assert x.shape == (1, 3, 8, 8) and np.allclose(x[0, 0], 2.0) and np.allclose(x[0, 1:], -2.0)
    assert "budget_ms" not in opts  # absent: the server's default applies
    assert decode_image(_png((30, 8), fmt="JPEG"), SPEC).shape == (3, 8, 8)  # shorter side resized, then cropped


def test_input_spec_from_metadata():
    spec = InputSpec.from_meta({"input_size": 32, "mean": [0.1, 0.2, 0.3], "square_resize": True})
    assert spec.shape == (3, 32, 32) and spec.square and spec.mean == (0.1, 0.2, 0.3) and spec.resize == 37
    assert InputSpec.from_meta({}).std == (0.229, 0.224, 0.225)


GOOD = np.zeros((3, 8, 8)).tolist()
BAD = [
    (b"{not json", "application/json", {}, 400, "not JSON"),
    (b"[1, 2]", "application/json", {}, 400, '"image" field'),
    (json.dumps({"budget_ms": 3}).encode(), "application/json", {}, 400, '"image" field'),
    (json.dumps({"image": [[1.0, 2.0], [3.0]]}).encode(), "application/json", {}, 400, "ragged"),
    (json.dumps({"image": [[1.0, 2.0]]}).encode(), "application/json", {}, 400, "shape"),
    (json.dumps({"image": [["a"] * 8] * 8}).encode(), "application/json", {}, 400, "numbers only"),
    (b'{"image": [NaN]}', "application/json", {}, 400, "shape"),
    (json.dumps({"image": GOOD, "budget_ms": -1}).encode(), "application/json", {}, 400, "positive number"),
    (json.dumps({"image": GOOD, "budget_ms": "soon"}).encode(), "application/json", {}, 400, "positive number"),
    (json.dumps({"image": GOOD, "budget_ms": True}).encode(), "application/json", {}, 400, "positive number"),
    (json.dumps({"image": GOOD, "skip": "FXF"}).encode(), "application/json", {}, 400, "skip must be 3 letters"),
    (json.dumps({"image": GOOD, "skip": 7}).encode(), "application/json", {}, 400, "skip must be 3 letters"),
    (np.zeros(10, np.float32).tobytes(), "application/octet-stream", {}, 400, "192 float32 values"),
    (np.full(192, np.inf, np.float32).tobytes(), "application/octet-stream", {}, 400, "NaN or infinite"),
    (np.zeros(192, np.float32).tobytes(), "", {"budget_ms": "nan"}, 400, "positive number"),
    (b"not an image at all", "image/png", {}, 400, "not an image"),
    (b"", "image/jpeg", {}, 400, "empty"),
    (b"x", "text/plain", {}, 415, "not served"),
]


@pytest.mark.parametrize("body, kind, query, status, match", BAD, ids=[b[4] + f"-{i}" for i, b in enumerate(BAD)])
def test_decode_refuses_bad_requests_in_one_line(body, kind, query, status, match):
    with pytest.raises(BadRequest, match=match) as err:
        decode(body, kind, query, SPEC, 3)
    assert err.value.status == status and "\n" not in str(err.value)


def test_policy_and_decoding_import_neither_torch_nor_adn():
    """The replica imports these modules; they must work where importing torch (or adn) fails."""
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None; sys.modules['adn'] = None\n"
        f"sys.path.insert(0, {str(ROOT / 'src' / 'adn')!r})\n"
        "import serving.policy, serving.decode\n"  # the package's files, without adn/__init__
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
