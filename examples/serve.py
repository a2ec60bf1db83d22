"""Load-adaptive HTTP inference server: one adaptive-depth network, a sub-network picked per request.

An example, not part of the ``adn`` package API (``examples/load_test.py`` and ``tests/test_serve.py``
import it). The server holds ONE model and, for every request, picks the skip config that is expected to
answer within the request's latency budget given the work already queued, using the per-sub-network latency
table that ``adn bench`` writes (or a quick one measured at start-up with :func:`adn.bench_subnets`)::

    adn bench --model resnet56 --weights ckpt.pth --builtin-data --threads 1 --batch-size 1  # optional
    python examples/serve.py --model resnet56 --weights ckpt.pth --bench resnet56-bench.json --budget-ms 25
    curl -s localhost:8000/info
    curl -s -X POST 'localhost:8000/predict?budget_ms=10' -H 'content-type: application/octet-stream' \\
        --data-binary @image.f32        # 3*R*R float32 values, already normalised like the model's inputs

``POST /predict`` takes a JSON body ``{"image": [[[...]]], "budget_ms": 10, "skip": "TFT"}`` (``image``
nested lists of shape 3xRxR or 1x3xRxR; ``budget_ms`` and ``skip`` optional; ``skip`` forces a config) or a
raw ``application/octet-stream`` body of 3*R*R float32 values (options then in the query string). The answer
names the skip config that served it, the predicted class with its probability and the top-5, the logits'
range, and timings: ``queue_ms`` (admission to start of inference), ``infer_ms``, ``server_ms`` (admission to
answer) and ``predicted_ms`` (what the policy expected). ``GET /info`` shows the table and the policy's
candidates, ``GET /stats`` the depth mix served so far.

**The policy** (:class:`DepthPolicy`, pure, unit-tested): the candidates are the Pareto-optimal rows of the
table -- cheapest first, each strictly better than every cheaper one, "better" meaning higher accuracy (ties:
more GFLOPs, as :func:`adn.select_subnet` does) when the table has accuracy, else more GFLOPs. A request
with budget ``B`` that would have to wait ``W`` ms before a worker is free gets the best candidate ``c`` with
``W + latency(c) <= B``; if none fits, the base-net (the cheapest sub-network by design; the cheapest
candidate if the table has no base-net). ``W`` comes from :func:`expected_wait_ms`, a FIFO simulation of
the worker pool over the requests already admitted (each at the table latency of the config it was given,
minus the time it has already run). With one worker and every
queued request at the same config this is the rule ``(queued + 1) * latency(c) <= B``; the simulation also
counts the shallower configs given to the requests ahead, and several workers.

**Feedback** (``--no-adapt``: off). A table measured on an idle machine, or with another thread count, does
not hold under load: the server multiplies the table's latencies by a running (geometric) average of
measured to tabled inference time (``latency_scale``), which corrects the predicted service times. What the
queue model still misses (workers slowing each other down, the HTTP work on the event loop, bursts of load
from other processes) is corrected by ``headroom``: the ``--quantile`` (0.95) of the ratio of actual to
predicted server time over the last 100 requests. The policy is given the budget divided by the headroom,
so that about that share of requests finishes within the budget -- when predictions run late, the server
serves shallower; when they run early, deeper.

**Concurrency**: inference runs in a thread pool on the one shared model -- several requests at different
depths at once. That is safe because ``model(x, skip=c)`` is a pure function of the weights, ``x`` and
``c`` (see :mod:`adn.core.network`): each sub-network is a prebuilt module path sharing the model's parameters, and a
call writes no state, so no lock is needed and no request can see another's depth. Each worker thread uses
``--threads`` intra-op threads (default 1, with as many workers as CPU cores: on a shared or busy CPU,
intra-op threads that wait for each other's cores cost far more than they gain at batch 1).

**Why aiohttp**: one maintained package (3.x, asyncio-native) provides both the HTTP server and the async
HTTP client that the load test needs to hold many concurrent connections; no ASGI server, framework and
separate client to install. The event loop does only admission and the policy's arithmetic (all on one
thread, so the queue bookkeeping needs no lock) and hands the tensor work to the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from aiohttp import web

import adn
from adn import format_skip, parse_skip
from adn.deploy.bench import load_results, time_forward


# ----------------------------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class Candidate:
    """One sub-network from the bench table: ``skip`` config, batch-1 median latency, GFLOPs, accuracy."""

    skip: str
    latency_ms: float
    gflops: float
    accuracy: float | None = None


def _candidate(row: Mapping[str, Any], metric: str) -> Candidate:
    acc = row.get(metric)
    return Candidate(
        str(row["skip"]), float(row["latency_ms"]), float(row["gflops"]), None if acc is None else float(acc)
    )


class DepthPolicy:
    """Pick a skip config from a latency budget and the expected wait (pure: no clock, no state changes).

    ``results``: the JSON file written by ``adn bench`` (path), its content, or its rows. ``metric``: the
    accuracy column to rank by when every row has it (``acc1``); otherwise sub-networks rank by GFLOPs.
    """

    def __init__(self, results: Any, metric: str = "acc1") -> None:
        rows = load_results(results)
        for row in rows:
            for key in ("latency_ms", "gflops"):
                if row.get(key) is None:
                    raise ValueError(f"bench row {row.get('skip')} lacks {key!r}; re-run 'adn bench'")
        skips = [str(r["skip"]) for r in rows]
        if len(set(skips)) != len(skips):
            raise ValueError("bench results list a skip config twice")
        if len({len(s) for s in skips}) != 1 or not all(set(s) <= {"T", "F"} for s in skips):
            raise ValueError(f"bench results hold malformed skip configs: {', '.join(skips)}")
        self.has_accuracy = all(r.get(metric) is not None for r in rows)
        self.metric = metric if self.has_accuracy else "gflops"
        self.rows = {s: _candidate(r, metric) for s, r in zip(skips, rows, strict=True)}
        self.front = self._front(self.rows.values())
        base = "T" * len(skips[0])
        self.fallback = self.rows[base] if base in self.rows else self.front[0]

    @classmethod
    def from_bench(cls, path: str | os.PathLike, metric: str = "acc1") -> DepthPolicy:
        return cls(path, metric)

    def rank(self, c: Candidate) -> tuple[float, ...]:
        """How good a sub-network is (higher is better): accuracy then GFLOPs, or GFLOPs alone."""
        return (c.accuracy, c.gflops) if self.has_accuracy else (c.gflops,)  # type: ignore[return-value]

    def _front(self, candidates: Iterable[Candidate]) -> list[Candidate]:
        # Cheapest first; at equal latency the better one first. Keep each that beats all cheaper ones.
        ranked = sorted(candidates, key=lambda c: (c.latency_ms, tuple(-v for v in self.rank(c))))
        front: list[Candidate] = []
        for c in ranked:
            if not front or self.rank(c) > self.rank(front[-1]):
                front.append(c)
        return front

    @property
    def best(self) -> Candidate:
        return self.front[-1]

    def choose(self, budget_ms: float | None, wait_ms: float = 0.0, scale: float = 1.0) -> Candidate:
        """The best candidate with ``wait_ms + scale * latency <= budget_ms``; the base-net when none fits.

        ``budget_ms=None``: no budget, the best sub-network. ``scale`` multiplies the table's latencies.
        """
        if budget_ms is None:
            return self.best
        fits = [c for c in self.front if wait_ms + scale * c.latency_ms <= budget_ms]
        return fits[-1] if fits else self.fallback

    def get(self, skip: str) -> Candidate:
        try:
            return self.rows[skip]
        except KeyError:
            raise ValueError(f"skip config {skip!r} is not in the bench table ({', '.join(self.rows)})") from None


def expected_wait_ms(running_left_ms: Sequence[float], waiting_ms: Sequence[float], workers: int) -> float:
    """How long a request admitted now waits for a worker of a FIFO pool of ``workers`` threads.

    ``running_left_ms``: the remaining time of each request being computed (at most ``workers``);
    ``waiting_ms``: the expected time of each request queued ahead, in order. Each queued request takes the
    first worker to become free; the new one takes the next.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    free = sorted(max(0.0, t) for t in running_left_ms)[:workers]
    free += [0.0] * (workers - len(free))
    heapq.heapify(free)
    for t in waiting_ms:
        heapq.heappush(free, heapq.heappop(free) + t)
    return free[0]


# ----------------------------------------------------------------------------------------------- the server
@dataclass(eq=False)
class _Job:
    skip: str
    latency_ms: float  # the table's
    started: float | None = None  # perf_counter(), set by the worker thread
    finished: float | None = None


@dataclass
class ServerStats:
    served: Counter = field(default_factory=Counter)
    errors: int = 0


class AdaptiveServer:
    """One adaptive-depth model behind ``POST /predict``, a sub-network per request.

    ``fixed``: serve every request with this skip config (the baseline the load test compares against);
    otherwise :class:`DepthPolicy` picks. ``budget_ms``: the default budget (a request may send its own).
    ``adapt``: scale the table's latencies by the running ratio of measured to tabled inference time, and
    divide the budget by the ``quantile`` of the ratio of actual to predicted server time (``headroom``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        policy: DepthPolicy,
        *,
        input_size: int,
        budget_ms: float | None,
        workers: int = 1,
        threads: int = 1,
        fixed: str | None = None,
        adapt: bool = True,
        quantile: float = 0.95,
        name: str = "",
    ) -> None:
        self.model = model.eval()
        self.policy = policy
        self.input_shape = (3, input_size, input_size)
        self.budget_ms = budget_ms
        self.workers, self.threads = workers, threads
        stages = len(policy.best.skip)
        self.fixed = policy.get(format_skip(parse_skip(fixed, stages))).skip if fixed is not None else None
        self.adapt = adapt
        self.name = name
        self.quantile = quantile
        self.scale = 1.0  # measured / tabled inference time (running average)
        self.headroom = 1.0  # quantile of actual / predicted server time over the last requests
        self._misses: deque[float] = deque(maxlen=100)
        self._finished, self._log_scale = 0, 0.0
        self.stats = ServerStats()
        self._skips = {s: parse_skip(s, stages) for s in policy.rows}
        for skip in self._skips.values():  # every path built now, before threads call the model
            self.model.subnet(skip)
        self._inflight: dict[_Job, None] = {}  # admission order
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle (the pool is created on the serving loop's start, shut down on its cleanup)
    def start_pool(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.workers,
                thread_name_prefix="adn-infer",
                initializer=torch.set_num_threads,
                initargs=(self.threads,),
            )

    def shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.add_routes(
            [
                web.post("/predict", self.predict),
                web.get("/info", self.info),
                web.get("/stats", self.get_stats),
                web.get("/health", self.health),
            ]
        )

        async def pool(app: web.Application):
            self.start_pool()
            yield
            self.shutdown_pool()

        app.cleanup_ctx.append(pool)
        return app

    # ---- the decision (event-loop thread only)
    def queue_snapshot(self, now: float | None = None) -> tuple[list[float], list[float]]:
        """``(running_left_ms, waiting_ms)`` of the requests admitted so far, at the current scale."""
        now = time.perf_counter() if now is None else now
        running, waiting = [], []
        for job in self._inflight:
            expected = self.scale * job.latency_ms
            if job.started is None:
                waiting.append(expected)
            else:
                running.append(max(0.0, expected - (now - job.started) * 1e3))
        return running, waiting

    def decide(self, budget_ms: float | None, skip: str | None = None) -> tuple[Candidate, str, float]:
        """``(sub-network, why, predicted server time in ms)`` for a request admitted now."""
        wait = expected_wait_ms(*self.queue_snapshot(), self.workers)
        if skip is not None:
            choice, why = self.policy.get(skip), "requested"
        elif self.fixed is not None:
            choice, why = self.policy.get(self.fixed), "fixed"
        else:
            budget = None if budget_ms is None else budget_ms / self.headroom
            choice, why = self.policy.choose(budget, wait, self.scale), "adaptive"
        return choice, why, wait + self.scale * choice.latency_ms

    def record(self, job: _Job, predicted_ms: float, server_ms: float) -> None:
        """Update ``scale`` and ``headroom`` from a finished request (event-loop thread)."""
        if not self.adapt:
            return
        assert job.started is not None and job.finished is not None
        ratio = min(8.0, max(0.125, (job.finished - job.started) * 1e3 / job.latency_ms))
        self._finished += 1  # geometric: a plain mean of log ratios over the first 20 requests, then running
        self._log_scale += max(0.05, 1 / self._finished) * (math.log(ratio) - self._log_scale)
        self.scale = math.exp(self._log_scale)
        if self._finished > 10:  # the first predictions used a scale that had not settled
            self._misses.append(server_ms / max(predicted_ms, 1e-3))
        if len(self._misses) >= 20:
            self.headroom = min(8.0, max(0.5, float(np.quantile(self._misses, self.quantile))))

    # ---- inference (worker threads)
    def _run(self, job: _Job, x: torch.Tensor) -> torch.Tensor:
        job.started = time.perf_counter()
        try:
            with torch.inference_mode():
                return self.model(x, skip=self._skips[job.skip])
        finally:
            job.finished = time.perf_counter()

    # ---- handlers
    async def _parse(self, request: web.Request) -> tuple[torch.Tensor, dict[str, Any]]:
        opts: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError as exc:
                raise ValueError(f"body is not JSON ({exc})") from None
            if not isinstance(body, dict) or "image" not in body:
                raise ValueError('JSON body needs an "image" field (nested lists, 3xRxR)')
            opts.update({k: v for k, v in body.items() if k != "image"})
            try:
                x = torch.tensor(body["image"], dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f'"image" is not a rectangular array of numbers ({exc})') from None
            if tuple(x.shape) not in (self.input_shape, (1, *self.input_shape)):
                raise ValueError(f"image shape {tuple(x.shape)}; expected {self.input_shape}")
        else:
            raw = await request.read()
            n = math.prod(self.input_shape)
            if len(raw) != 4 * n:
                raise ValueError(
                    f"an octet-stream body is {n} float32 values (3x{self.input_shape[1]}x{self.input_shape[1]})"
                )
            x = torch.frombuffer(bytearray(raw), dtype=torch.float32)
        x = x.reshape(1, *self.input_shape)
        if not torch.isfinite(x).all():
            raise ValueError("image holds NaN or infinite values")
        budget = opts.get("budget_ms", self.budget_ms)
        try:
            opts["budget_ms"] = None if budget in (None, "", "none") else float(budget)
        except (TypeError, ValueError):
            raise ValueError(f"budget_ms must be a number, got {budget!r}") from None
        if opts["budget_ms"] is not None and not opts["budget_ms"] > 0:
            raise ValueError("budget_ms must be positive")
        skip = opts.get("skip")
        if skip is not None:
            try:
                opts["skip"] = format_skip(parse_skip(skip, len(self.policy.best.skip)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad skip config {skip!r} ({exc})") from None
        return x, opts

    async def predict(self, request: web.Request) -> web.Response:
        admitted = time.perf_counter()
        try:
            x, opts = await self._parse(request)
            choice, why, predicted = self.decide(opts["budget_ms"], opts.get("skip"))
        except ValueError as exc:
            self.stats.errors += 1
            return web.json_response({"error": str(exc)}, status=400)
        if self._pool is None:
            raise RuntimeError("the inference pool is not running (serve through AdaptiveServer.app())")
        queued = len(self._inflight)
        job = _Job(choice.skip, choice.latency_ms)
        self._inflight[job] = None
        try:
            logits = await asyncio.get_running_loop().run_in_executor(self._pool, self._run, job, x)
        finally:
            del self._inflight[job]
        done = time.perf_counter()
        assert job.started is not None and job.finished is not None
        infer_ms, server_ms = (job.finished - job.started) * 1e3, (done - admitted) * 1e3
        self.record(job, predicted, server_ms)
        self.stats.served[job.skip] += 1
        return web.json_response(
            {
                "skip": job.skip,
                "policy": why,
                **summarize(logits[0]),
                "queued": queued,
                "budget_ms": opts["budget_ms"],
                "timings": {
                    "predicted_ms": round(predicted, 3),
                    "queue_ms": round((job.started - admitted) * 1e3, 3),
                    "infer_ms": round(infer_ms, 3),
                    "server_ms": round(server_ms, 3),
                },
            }
        )

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model": self.name,
                "input_shape": list(self.input_shape),
                "workers": self.workers,
                "threads_per_worker": self.threads,
                "budget_ms": self.budget_ms,
                "fixed": self.fixed,
                "ranked_by": self.policy.metric,
                "candidates": [c.__dict__ for c in self.policy.front],
                "fallback": self.policy.fallback.skip,
                "table": [c.__dict__ for c in self.policy.rows.values()],
            }
        )

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "served": dict(self.stats.served),
                "errors": self.stats.errors,
                "inflight": len(self._inflight),
                "latency_scale": round(self.scale, 4),
                "headroom": round(self.headroom, 4),
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def summarize(logits: torch.Tensor, k: int = 5) -> dict[str, Any]:
    """Predicted class, its probability, the top-``k`` (class, probability) and the logits' range."""
    probs = torch.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, min(k, probs.numel()))
    return {
        "class": int(top.indices[0]),
        "prob": round(float(top.values[0]), 5),
        "top5": [[int(i), round(float(p), 5)] for p, i in zip(top.values, top.indices, strict=True)],
        "logits": {"max": round(float(logits.max()), 4), "min": round(float(logits.min()), 4)},
    }


# ----------------------------------------------------------------------------------------------- running
async def start_site(server: AdaptiveServer, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``server`` on ``host:port`` (0: a free port); returns the runner and the base URL."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0]
    return runner, f"http://{bound[0]}:{bound[1]}"


@contextlib.contextmanager
def serve_in_thread(
    server: AdaptiveServer, host: str = "127.0.0.1", port: int = 0, timeout: float = 30
) -> Iterator[str]:
    """Run the server on an event loop in a background thread; yields the base URL; always shuts down."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            ready["runner"], ready["url"] = loop.run_until_complete(start_site(server, host, port))
        except BaseException as exc:  # noqa: BLE001 -- reported to the caller's thread
            ready["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(ready["runner"].cleanup())

    thread = threading.Thread(target=main, name="adn-serve", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise TimeoutError("server did not start")
    try:
        if "error" in ready:
            raise ready["error"]
        yield ready["url"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not loop.is_running():
            loop.close()


async def serve_forever(server: AdaptiveServer, host: str, port: int) -> None:
    runner, url = await start_site(server, host, port)
    print(f"listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------------------------- building
def build_model(name: str, weights: str | None, num_classes: int) -> torch.nn.Module:
    model = adn.create_model(name, num_classes=num_classes)
    if weights:
        adn.load_weights(model, weights, model_name=name)
    return model.eval()


def measure_table(
    model: torch.nn.Module,
    resolution: int,
    threads: int,
    *,
    min_run_time: float = 0.1,
    rounds: int = 3,
    eval_data: str | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """A quick ``adn bench`` table: batch 1 and ``threads`` intra-op threads, as a server worker runs.

    One :func:`adn.bench_subnets` sweep over all sub-networks, then ``rounds - 1`` more of the timing alone
    (:func:`adn.deploy.bench.time_forward`); each latency is the lowest of the sweeps' medians, so that a burst of
    load from other processes on a shared machine, which hits some sweeps, is less likely to reorder the
    sub-networks (the server's feedback scales the table to the load it meets).
    With ``eval_data`` (``builtin`` or an ImageFolder root) also Acc@1/Acc@5.
    """
    loader = None
    if eval_data:
        from adn.data import build_eval_loader

        loader, _ = build_eval_loader(None if eval_data == "builtin" else eval_data, image_size=resolution)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = adn.bench_subnets(
            model,
            resolution=resolution,
            batch_size=1,
            min_run_time=min_run_time,
            num_threads=threads,
            loader=loader,
            progress=progress,
        )
        x = torch.randn(1, 3, resolution, resolution)
        for _ in range(rounds - 1):  # more sweeps of the batch-1 timing only (GFLOPs and accuracy do not change)
            for row in rows:
                times = time_forward(model, x, row["skip"], min_run_time=min_run_time, num_threads=threads).times
                row["latency_ms"] = min(row["latency_ms"], float(np.median(times)) * 1e3)
                row["latency_p90_ms"] = min(row["latency_p90_ms"], float(np.percentile(times, 90)) * 1e3)
    finally:
        torch.set_num_threads(previous)
    for row in rows:  # batch 1 is the server's batch
        row["batch_latency_ms"], row["batch_latency_p90_ms"] = row["latency_ms"], row["latency_p90_ms"]
        row["throughput"] = 1e3 / row["latency_ms"]
    return rows


def check_table(model: torch.nn.Module, policy: DepthPolicy, meta: Mapping[str, Any], name: str) -> None:
    stages = len(next(iter(policy.rows)))
    if stages != model.num_stages:
        raise ValueError(f"the bench table has {stages}-stage skip configs; {name} has {model.num_stages} stages")
    if meta.get("model") not in (None, name):
        raise ValueError(f"the bench table was measured for {meta['model']}, not {name}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet56", help="registered model name (default: resnet56)")
    p.add_argument("--weights", help="checkpoint or state dict (default: random weights)")
    p.add_argument("--num-classes", type=int, default=10, help="classes of the model/weights (default: 10, digits)")
    p.add_argument("--resolution", type=int, help="input size (default: the model's)")
    p.add_argument("--bench", help="JSON written by 'adn bench' (default: measure a quick table at start-up)")
    p.add_argument("--eval-data", help="with the start-up table: 'builtin' or an ImageFolder root, for accuracy")
    p.add_argument("--save-bench", help="write the start-up table here (JSON, as 'adn bench' does)")
    p.add_argument("--budget-ms", type=float, help="default latency budget (default: 3x the super-net's latency)")
    p.add_argument("--fixed", help="serve every request with this skip config (e.g. FFF: the super-net)")
    p.add_argument("--no-adapt", action="store_true", help="no feedback: the table's latencies as they are")
    p.add_argument("--quantile", type=float, default=0.95, help="share of requests to finish within the budget (0.95)")
    p.add_argument("--workers", type=int, default=cores, help=f"inference threads (default: {cores}, the cores)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per worker (default: 1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: a free port (printed)")
    args = p.parse_args(argv)
    for flag in ("workers", "threads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be >= 1")
    if not 0 < args.quantile <= 1:
        p.error("--quantile must be in (0, 1]")
    return args


def build_server(args: argparse.Namespace) -> AdaptiveServer:
    resolution = args.resolution or adn.model_info(args.model).input_size
    model = build_model(args.model, args.weights, args.num_classes)
    if args.bench:
        meta = json.loads(Path(args.bench).read_text()) if Path(args.bench).is_file() else {}
        policy = DepthPolicy(args.bench)
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("threads") not in (None, args.threads):
            print(
                f"note: {args.bench} was measured with {meta['threads']} threads, a worker runs {args.threads}; "
                "the running latency scale corrects for it",
                file=sys.stderr,
            )
    else:
        print(f"measuring {args.model} sub-networks at {resolution}px, {args.threads} thread(s) ...", file=sys.stderr)
        rows = measure_table(model, resolution, args.threads, eval_data=args.eval_data)
        meta = {"model": args.model, "weights": args.weights, "resolution": resolution, "threads": args.threads}
        if args.save_bench:
            Path(args.save_bench).write_text(json.dumps({**meta, "batch_size": 1, "results": rows}, indent=1) + "\n")
        policy = DepthPolicy(rows)
    check_table(model, policy, meta, args.model)
    budget = args.budget_ms if args.budget_ms is not None else round(3 * policy.best.latency_ms, 1)
    return AdaptiveServer(
        model,
        policy,
        input_size=resolution,
        budget_ms=budget,
        workers=args.workers,
        threads=args.threads,
        fixed=args.fixed,
        adapt=not args.no_adapt,
        quantile=args.quantile,
        name=args.model,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    server = build_server(args)
    mode = (
        f"fixed {server.fixed}" if server.fixed else f"adaptive over {', '.join(c.skip for c in server.policy.front)}"
    )
    print(
        f"{args.model}: {mode}; budget {server.budget_ms} ms; {args.workers} worker(s) x {args.threads} thread(s)",
        file=sys.stderr,
    )
    asyncio.run(serve_forever(server, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
