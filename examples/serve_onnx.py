"""Serve every depth from ONE ONNX file with onnxruntime alone: no torch, no adn in this process.

An example, not part of the ``adn`` package API (``tests/test_serve_onnx.py`` imports it). The file is what
``adn export --all-subnets`` writes: inputs ``image`` (float32 ``[batch, 3, R, R]``) and ``skip`` (bool, one
flag per stage), metadata ``adn`` (class names, input size, the sub-network table)::

    adn export --weights output/resnet20/model.safetensors --all-subnets --output resnet20-all.onnx
    python examples/serve_onnx.py resnet20-all.onnx --budget-ms 5          # HTTP on :8000
    python examples/serve_onnx.py resnet20-all.onnx --load-test 400         # throughput, p95: batching on/off
    curl -s -X POST 'localhost:8000/predict?budget_ms=3' --data-binary @image.f32   # 3*R*R float32 values

**Depth per request**, as ``examples/serve.py`` does it: the latency of every sub-network is measured at start-up
(batch 1, this machine, through the one session); a request with budget ``B`` that would wait ``W`` ms gets the
most accurate sub-network (by the file's table: ``acc1``, else parameters) with ``W + latency <= B``, else the
base-net. ``W`` is the work already queued ahead of it, at the table's latencies.

**Dynamic batching per sub-network**: requests wait in one queue per skip config; the worker takes the oldest
request, then waits at most ``--max-wait-ms`` for more of the *same* depth (up to ``--max-batch``) and runs them as
one batch -- a batch cannot mix depths, since ``skip`` is one flag per stage for the whole batch. Under load,
requests with the same budget get the same depth and are batched; an idle server answers at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort


@dataclass
class _Request:
    image: np.ndarray
    skip: str
    admitted: float
    done: asyncio.Future = field(repr=False)


class OnnxDepthServer:
    """One onnxruntime session over the switchable file; ``await server.infer(image, budget_ms)``."""

    def __init__(self, path: str, *, max_batch: int = 16, max_wait_ms: float = 2.0, threads: int = 2) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get("adn", "{}"))
        if [i.name for i in self.session.get_inputs()] != ["image", "skip"]:
            raise ValueError(f"{path} is not a switchable file (inputs image, skip); export it with --all-subnets")
        self.size, self.stages = int(self.meta["input_size"]), int(self.meta["num_stages"])
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1e3
        self.table = self._measure()  # skip -> batch-1 latency (ms), most accurate first
        self.queues: dict[str, deque[_Request]] = {s: deque() for s in self.table}
        self.pending = 0.0  # ms of work queued, at the table's latencies
        self.batches: list[int] = []
        self.pool = ThreadPoolExecutor(1)  # one session call at a time: it uses every intra-op thread
        self.wakeup: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self, images: np.ndarray, skip: str) -> np.ndarray:
        flags = np.array([c == "T" for c in skip])
        return self.session.run(None, {"image": images, "skip": flags})[0]

    def _measure(self) -> dict[str, float]:
        rows = {r["skip"]: r for r in self.meta.get("subnets", [])}
        x = np.zeros((1, 3, self.size, self.size), np.float32)
        latency = {}
        for skip in rows or [
            format(i, f"0{self.stages}b").replace("0", "F").replace("1", "T") for i in range(2**self.stages)
        ]:
            self._run(x, skip)
            latency[skip] = min(self._timed(x, skip) for _ in range(5))

        def quality(s: str) -> float:
            row = rows.get(s, {})
            return float(row.get("acc1") or row.get("params_m") or -s.count("T"))

        return dict(sorted(latency.items(), key=lambda kv: -quality(kv[0])))

    def _timed(self, x: np.ndarray, skip: str) -> float:
        start = time.perf_counter()
        self._run(x, skip)
        return (time.perf_counter() - start) * 1e3

    def choose(self, budget_ms: float | None) -> str:
        """The most accurate sub-network expected to answer within ``budget_ms`` after the queued work."""
        if budget_ms is None:
            return next(iter(self.table))
        for skip, ms in self.table.items():
            if self.pending + ms <= budget_ms:
                return skip
        return min(self.table, key=self.table.get)

    async def infer(self, image: np.ndarray, budget_ms: float | None = None, skip: str | None = None) -> dict:
        skip = skip or self.choose(budget_ms)
        if skip not in self.queues:
            raise ValueError(f"skip config {skip!r} is not one of {', '.join(self.queues)}")
        loop = asyncio.get_running_loop()
        request = _Request(image.reshape(1, 3, self.size, self.size), skip, time.perf_counter(), loop.create_future())
        self.queues[skip].append(request)
        self.pending += self.table[skip]
        if self.wakeup is None or self.loop is not loop:  # one worker task per event loop
            self.wakeup, self.loop = asyncio.Event(), loop
            self.worker = loop.create_task(self._worker())
        self.wakeup.set()
        logits = await request.done
        return {
            "skip": skip,
            "class": int(logits.argmax()),
            "server_ms": (time.perf_counter() - request.admitted) * 1e3,
        }

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while any(self.queues.values()):
                skip = min((q[0].admitted, s) for s, q in self.queues.items() if q)[1]  # the oldest request's depth
                queue = self.queues[skip]
                deadline = queue[0].admitted + self.max_wait
                while len(queue) < self.max_batch and time.perf_counter() < deadline:
                    await asyncio.sleep(min(0.0005, max(0.0, deadline - time.perf_counter())))
                batch = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
                images = np.concatenate([r.image for r in batch])
                logits = await loop.run_in_executor(self.pool, self._run, images, skip)
                self.pending = max(0.0, self.pending - self.table[skip] * len(batch))
                self.batches.append(len(batch))
                for r, row in zip(batch, logits, strict=True):
                    r.done.set_result(row)


async def load_test(server: OnnxDepthServer, requests: int, concurrency: int, budget_ms: float | None) -> dict:
    """``requests`` requests from ``concurrency`` clients at once: throughput, p50/p95 latency, depth mix."""
    rng = np.random.default_rng(0)
    image = rng.random((3, server.size, server.size), dtype=np.float32)
    times: list[float] = []
    depths: dict[str, int] = {}

    async def client(n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            answer = await server.infer(image, budget_ms)
            times.append((time.perf_counter() - start) * 1e3)
            depths[answer["skip"]] = depths.get(answer["skip"], 0) + 1

    server.batches.clear()
    start = time.perf_counter()
    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    times.sort()
    return {
        "throughput_rps": len(times) / wall,
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "mean_batch": statistics.mean(server.batches),
        "depths": depths,
    }


def _app(server: OnnxDepthServer):
    from aiohttp import web

    async def predict(request: web.Request) -> web.Response:
        body = np.frombuffer(await request.read(), dtype=np.float32)
        if body.size != 3 * server.size**2:
            return web.json_response({"error": f"expected {3 * server.size**2} float32 values"}, status=400)
        budget = request.query.get("budget_ms")
        answer = await server.infer(body.copy(), float(budget) if budget else None, request.query.get("skip"))
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/info", lambda _: web.json_response({"latency_ms": server.table, "meta": server.meta}))
    return app


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="ONNX file written by adn export --all-subnets")
    p.add_argument("--budget-ms", type=float, help="default latency budget of a request")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--load-test", type=int, metavar="N", help="run N requests in-process, batching off and on")
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args(argv)
    if args.load_test:
        for max_batch in (1, args.max_batch):
            server = OnnxDepthServer(
                args.model, max_batch=max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads
            )
            stats = asyncio.run(load_test(server, args.load_test, args.concurrency, args.budget_ms))
            print(
                json.dumps(
                    {
                        "max_batch": max_batch,
                        **{k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()},
                    }
                )
            )
        return 0
    from aiohttp import web

    server = OnnxDepthServer(args.model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads)
    print(f"sub-networks by accuracy, batch-1 ms: {json.dumps({k: round(v, 2) for k, v in server.table.items()})}")
    web.run_app(_app(server), port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
