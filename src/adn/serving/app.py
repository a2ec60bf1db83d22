"""The Ray Serve application: an ingress that decodes and picks the depth, model replicas that run it.

``build_app(path, ...)`` returns a :class:`ray.serve.Application` to give to ``serve.run`` -- alone (``adn serve``)
or inside a user's own Ray Serve application. The policy runs in the ingress (one replica) because it is the one
place that sees every request in flight to every model replica, which is the wait a new request will meet;
see docs/serving.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve import metrics
from starlette.requests import Request
from starlette.responses import JSONResponse

from .decode import BadRequest, InputSpec, decode
from .policy import DepthPolicy, Feedback, expected_wait_ms
from .replica import DepthModel

LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


def _top(logits: np.ndarray, k: int = 5) -> dict[str, Any]:
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:k]
    return {"class": int(order[0]), "prob": round(float(probs[order[0]]), 5),
            "top5": [[int(i), round(float(probs[i]), 5)] for i in order]}  # fmt: skip


class Ingress:
    """``POST /predict``, ``GET /info``, ``GET /stats``; the depth policy with a view of every request in flight."""

    def __init__(self, model: Any, meta: dict[str, Any], settings: dict[str, Any]) -> None:
        self.model, self.meta, self.settings = model, meta, settings
        self.spec, self.stages = InputSpec.from_meta(meta), int(meta["num_stages"])
        self.classes = list(meta.get("classes") or [])
        self.policy: DepthPolicy | None = None
        self.budget_ms: float | None = settings["slo_ms"]
        self.feedback = Feedback(settings["quantile"])
        self.inflight: dict[int, tuple[float, float]] = {}  # id -> (sent at, expected ms), in admission order
        self.replicas: deque[str] = deque(maxlen=64)  # who answered lately: the workers the wait is shared by
        self.served: Counter[str] = Counter()
        self.answered = self.within = self.errors = self.failed = 0
        self._lock, self._next = asyncio.Lock(), 0
        self.m_requests = metrics.Counter("adn_requests", "answers by depth and outcome", tag_keys=("skip", "outcome"))
        self.m_latency = metrics.Histogram("adn_server_ms", "admission to answer, ms", LATENCY_BUCKETS_MS, ("skip",))

    async def _ready(self) -> DepthPolicy:
        async with self._lock:  # the first request asks a replica for its latency table
            if self.policy is None:
                table = await self.model.describe.remote()
                self.policy = DepthPolicy(self.meta.get("subnets") or [], table["latency_ms"])
                if self.budget_ms is None:
                    self.budget_ms = round(4 * self.policy.best.latency_ms, 2)
        return self.policy

    def _wait_ms(self, now: float) -> float:
        workers = max(self.settings["min_replicas"], len(set(self.replicas)))
        jobs = list(self.inflight.values())
        running = [expected - (now - sent) * 1e3 for sent, expected in jobs[:workers]]
        return expected_wait_ms(running, [expected for _, expected in jobs[workers:]], workers)

    async def __call__(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if path.endswith("/predict") and method == "POST":
                return await self.predict(request)
            if path.endswith("/info") and method == "GET":
                return JSONResponse(await self.info())
            if path.endswith("/stats") and method == "GET":
                return JSONResponse(self.stats())
            raise BadRequest(f"no {method} {path}; use POST /predict, GET /info or GET /stats", 404)
        except BadRequest as exc:
            self.errors += 1
            self.m_requests.inc(tags={"skip": "", "outcome": "bad_request"})
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def predict(self, request: Request) -> JSONResponse:
        policy = await self._ready()  # once, before the clock starts: the table is a start-up cost
        admitted = time.perf_counter()
        limit = self.settings["max_body_bytes"]
        if int(request.headers.get("content-length") or 0) > limit:
            raise BadRequest(f"the body is over {limit} bytes (adn serve --max-body-mb)", 413)
        body = await request.body()
        if len(body) > limit:
            raise BadRequest(f"the body is over {limit} bytes (adn serve --max-body-mb)", 413)
        image, options = decode(body, request.headers.get("content-type", ""), request.query_params, self.spec,
                                self.stages)  # fmt: skip
        budget = options.get("budget_ms", self.budget_ms)
        wait = self._wait_ms(time.perf_counter()) + self.feedback.overhead_ms
        if options["skip"] is not None:
            choice, why = policy.get(options["skip"]), "requested"
        elif self.settings["fixed"] is not None:
            choice, why = policy.get(self.settings["fixed"]), "fixed"
        else:
            choice, why = policy.choose(self.feedback.budget(budget), wait, self.feedback.scale), "adaptive"
        predicted = wait + self.feedback.scale * choice.latency_ms
        key, self._next = self._next, self._next + 1
        self.inflight[key] = (time.perf_counter(), self.feedback.scale * choice.latency_ms)
        try:
            out = await asyncio.wait_for(self.model.infer.remote(image, choice.skip), self.settings["timeout_s"])
        except Exception as exc:  # noqa: BLE001 -- a replica that died or timed out: 5xx, the server stays up
            self.failed += 1
            self.m_requests.inc(tags={"skip": choice.skip, "outcome": "failed"})
            status = 504 if isinstance(exc, asyncio.TimeoutError) else 503
            return JSONResponse({"error": f"the model replica failed ({type(exc).__name__}); retry"}, status)
        finally:
            del self.inflight[key]
        server_ms = (time.perf_counter() - admitted) * 1e3
        self.feedback.record(out["infer_ms"] / out["batch"], choice.latency_ms, predicted, server_ms)
        self.replicas.append(out["replica"])
        within = budget is None or server_ms <= budget
        self.answered, self.within = self.answered + 1, self.within + within
        self.served[choice.skip] += 1
        self.m_requests.inc(tags={"skip": choice.skip, "outcome": "within" if within else "late"})
        self.m_latency.observe(server_ms, tags={"skip": choice.skip})
        answer = {"skip": choice.skip, "policy": why, **_top(out["logits"]), "budget_ms": budget}
        if self.classes:
            answer["label"] = str(self.classes[answer["class"]]) if answer["class"] < len(self.classes) else None
        answer["timings"] = {"predicted_ms": round(predicted, 3), "infer_ms": round(out["infer_ms"], 3),
                             "batch": out["batch"], "server_ms": round(server_ms, 3)}  # fmt: skip
        return JSONResponse(answer)

    async def info(self) -> dict[str, Any]:
        policy = await self._ready()
        return {
            "model": self.meta.get("model"),
            "input": {
                "shape": [1, *self.spec.shape],
                "mean": self.spec.mean,
                "std": self.spec.std,
                "content_types": ["application/json", "application/octet-stream", "image/*"],
            },  # fmt: skip
            "classes": self.classes,
            "budget_ms": self.budget_ms,
            "fixed": self.settings["fixed"],
            "ranked_by": list(policy.ranked_by),
            "candidates": [c.skip for c in policy.front],
            "fallback": policy.fallback.skip,
            "table": [
                {**row, "latency_ms": round(policy.get(str(row["skip"])).latency_ms, 3)}
                for row in self.meta.get("subnets") or [{"skip": s} for s in policy.rows]
            ],  # fmt: skip
        }

    def stats(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "within_budget": round(self.within / self.answered, 4) if self.answered else None,
            "served": dict(self.served),
            "bad_requests": self.errors,
            "failed": self.failed,
            "inflight": len(self.inflight),
            "latency_scale": round(self.feedback.scale, 4),
            "headroom": round(self.feedback.headroom, 4),
            "overhead_ms": round(self.feedback.overhead_ms, 3),
        }


def read_switchable(path: str | Path) -> dict[str, Any]:
    """The ``adn`` metadata of a switchable ONNX file; one-line ``ValueError`` for anything else."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- onnxruntime's many-line report becomes one line
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not an ONNX file onnxruntime can load ({first})") from None
    names = [i.name for i in session.get_inputs()]
    meta = json.loads(session.get_modelmeta().custom_metadata_map.get("adn", "{}"))
    if names != ["image", "skip"] or "num_stages" not in meta:
        raise ValueError(
            f"{path} serves one depth (inputs: {', '.join(names)}); adn serve needs the switchable file: "
            "adn export --all-subnets --output MODEL.onnx"
        )
    return meta


def build_app(
    path: str | Path,
    *,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    slo_ms: float | None = None,
    fixed: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 2.0,
    threads: int = 1,
    max_body_mb: float = 4.0,
    quantile: float = 0.95,
    timeout_s: float = 60.0,
) -> serve.Application:
    """The application serving the switchable ONNX file ``path`` (every replica reads it from that path).

    ``replicas`` model replicas, or ``autoscale=(min, max)``; ``slo_ms``: the default budget of a request (default:
    4x the super-net's latency); ``fixed``: serve every request with this skip config; ``max_batch`` and
    ``max_wait_ms``: per-depth batching; ``threads``: onnxruntime threads (and Ray CPUs) per replica.
    """
    path = Path(path).resolve()
    meta = read_switchable(path)
    stages = int(meta["num_stages"])
    if fixed is not None and (len(fixed) != stages or not set(fixed.upper()) <= {"T", "F"}):
        raise ValueError(f"--fixed must be {stages} letters T (skip) or F (keep), e.g. {'F' * stages}; got {fixed!r}")
    for name, value in (("replicas", replicas), ("max_batch", max_batch), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if autoscale is not None and not 1 <= autoscale[0] <= autoscale[1]:
        raise ValueError(f"autoscale needs 1 <= MIN <= MAX, got {autoscale[0]},{autoscale[1]}")
    if (slo_ms is not None and slo_ms <= 0) or max_wait_ms < 0 or max_body_mb <= 0:
        raise ValueError("slo_ms and max_body_mb must be positive, max_wait_ms not negative")
    _ship_by_value()
    scale = {"num_replicas": replicas} if autoscale is None else {
        "autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                               "target_ongoing_requests": max_batch}}  # fmt: skip
    model = serve.deployment(DepthModel).options(
        name="DepthModel", max_ongoing_requests=4 * max_batch, ray_actor_options={"num_cpus": threads}, **scale
    )
    settings = {
        "slo_ms": slo_ms,
        "fixed": None if fixed is None else fixed.upper(),
        "quantile": quantile,
        "max_body_bytes": int(max_body_mb * 2**20),
        "min_replicas": replicas if autoscale is None else autoscale[0],
        "timeout_s": timeout_s,
    }
    ingress = serve.deployment(Ingress).options(
        name="Ingress", num_replicas=1, max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0}
    )
    return ingress.bind(model.bind(str(path), threads, max_batch, max_wait_ms), meta, settings)


def _ship_by_value() -> None:
    """Make Ray pickle adn.serving's code by value: a replica then unpickles it without importing the ``adn``
    package, whose ``__init__`` imports torch (a test checks the replica's ``sys.modules``)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__package__])


__all__ = ["Ingress", "build_app", "read_switchable"]
