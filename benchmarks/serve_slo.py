"""adn serve under a bursty open-loop trace: the adaptive server against every fixed depth, 1 and 2 replicas.

One command (the serving part takes about 8 minutes on 2 busy cores; training takes 3 to 50 minutes depending on
the machine's load; the trained model and its ONNX file are kept in --workdir and reused)::

    python benchmarks/serve_slo.py --output benchmarks/results/serve-slo.md

It trains resnet20 on the built-in digits (``adn train``, real accuracy per depth), exports the switchable file
(``adn export --all-subnets``), starts Ray (2 CPUs, loopback) and, per server: deploys it with ``adn.serving``,
offers the same Poisson trace -- phases alternating 0.5x and 3x the fixed super-net's measured capacity,
times the number of replicas -- with the digits' validation images as requests, and counts SLO attainment (answers
within the SLO, over all requests), effective accuracy (correct answers within the SLO, over all requests),
p50/p95/p99, throughput and the depth mix. Also the engine's own cost at low load: Ray Serve's p50 (HTTP, client
side) against onnxruntime called in-process on the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from harness import Report, Stopwatch, call_times


def prepare(args) -> Path:
    """Train (if not done) and export the switchable file; returns its path."""
    work = Path(args.workdir)
    weights, onnx = work / "train" / "model.safetensors", work / f"{args.model}-all.onnx"
    if not weights.is_file():
        train = ["adn", "train", "--model", args.model, "--output-dir", str(work / "train")]
        subprocess.run([*train, "--epochs", str(args.epochs)], check=True)
    if not onnx.is_file():
        subprocess.run(["adn", "export", "--weights", str(weights), "--all-subnets", "--output", str(onnx)], check=True)
    return onnx


def val_set(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The digits' validation images, normalised as the model was trained, and their labels."""
    from adn.data import build_eval_loader

    loader, _ = build_eval_loader(None, image_size=size)
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in loader), strict=True)
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def in_process(path: Path, images: np.ndarray, labels: np.ndarray, skips: list[str]) -> dict[str, dict]:
    """onnxruntime in this process, 1 thread: accuracy of every depth on the val set, batch-1 p50 latency."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = {}
    for skip in skips:
        flags = np.array([c == "T" for c in skip])
        pred = session.run(None, {"image": images, "skip": flags})[0].argmax(1)
        feeds = itertools.cycle([{"image": images[i][None], "skip": flags} for i in range(len(images))])
        _, times = call_times(partial(lambda it: session.run(None, next(it)), feeds), 200, warmup=0)
        out[skip] = {"acc": float((pred == labels).mean() * 100), "p50_ms": float(np.median(times)) * 1e3}
    return out


def arrivals(rate: float, seconds: float, phase: float, seed: int, burst: float = 3.0) -> np.ndarray:
    """Poisson arrival times (s): phases of ``phase`` seconds alternating 0.5x and ``burst`` x ``rate``."""
    rng, t, out = np.random.default_rng(seed), 0.0, []
    while t < seconds:
        t += rng.exponential(1 / (rate * (0.5 if int(t / phase) % 2 == 0 else burst)))
        out.append(t)
    return np.array(out[:-1])


async def offer(url: str, times: np.ndarray, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Send one request at each arrival time (open loop); per request: latency (ms), status, depth, correct."""
    import aiohttp

    records: list[dict] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, 0.05 + at - clock.seconds))
            k = i % len(images)
            with Stopwatch() as sent:
                try:
                    async with http.post(f"{url}/predict", data=images[k].tobytes(),
                                         timeout=aiohttp.ClientTimeout(10),
                                         headers={"content-type": "application/octet-stream"}) as r:  # fmt: skip
                        answer = await r.json()
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    answer, status = {}, 599
            records.append({"ms": sent.seconds * 1e3, "status": status, "skip": answer.get("skip"),
                            "correct": answer.get("class") == int(labels[k])})  # fmt: skip

        clock = Stopwatch()  # the trace starts 50 ms from now
        await asyncio.gather(*(one(i, at) for i, at in enumerate(times)))
    return records


async def closed_loop(url: str, images: np.ndarray, clients: int, seconds: float) -> float:
    """``clients`` clients each sending its next request when the last is answered: answers per second."""
    import aiohttp

    done, clock = 0, Stopwatch()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def client(c: int) -> None:
            nonlocal done
            while clock.seconds < seconds:
                async with http.post(f"{url}/predict", data=images[c].tobytes(),
                                     headers={"content-type": "application/octet-stream"}) as r:  # fmt: skip
                    await r.read()
                    done += r.status == 200

        await asyncio.gather(*(client(c) for c in range(clients)))
    return done / seconds


def row(records: list[dict], slo: float, seconds: float) -> dict:
    ok = [r for r in records if r["status"] == 200]
    within = [r for r in ok if r["ms"] <= slo]
    ms = np.array([r["ms"] for r in ok]) if ok else np.array([np.nan])
    mix = Counter(r["skip"] for r in ok)
    return {
        "requests": len(records),
        "slo_pct": 100 * len(within) / len(records),
        "eff_acc": 100 * sum(r["correct"] for r in within) / len(records),
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "rps": len(ok) / seconds,
        "mix": " ".join(f"{s} {100 * n / len(ok):.0f}%" for s, n in mix.most_common()) if ok else "-",
    }


def deploy(path: Path, **options) -> None:
    from ray import serve

    from adn.serving import build_app

    serve.run(build_app(path, **options), name="adn", route_prefix="/")


def floor_ms(url: str, images: np.ndarray, path: Path, super_net: str, rounds: int = 3) -> tuple[float, float]:
    """Ray Serve's own floor against this app, interleaved: p50 of one deployment that answers a constant,
    and of the app fixed to the super-net without a batching wait (two hops: ingress, model replica)."""
    from ray import serve
    from starlette.responses import JSONResponse

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Constant:
        async def __call__(self, request):
            await request.body()
            return JSONResponse({"class": 0})

    floor, app = [], []
    for _ in range(rounds):
        serve.run(Constant.bind(), name="adn", route_prefix="/")
        sequential(url, images, 20)
        floor.append(float(np.median(sequential(url, images, 150))))
        deploy(path, fixed=super_net, max_wait_ms=0)
        sequential(url, images, 20)
        app.append(float(np.median(sequential(url, images, 150))))
    return float(np.median(floor)), float(np.median(app))


def sequential(url: str, images: np.ndarray, n: int) -> list[float]:
    """``n`` requests one after another (client-side ms): the engine's latency without queueing."""
    import urllib.request

    requests = (
        urllib.request.Request(
            url + "/predict", images[i % len(images)].tobytes(), {"content-type": "application/octet-stream"}
        )
        for i in range(n)
    )

    def send() -> None:
        with urllib.request.urlopen(next(requests), timeout=30) as r:
            r.read()

    return [t * 1e3 for t in call_times(send, n, warmup=0)[1]]


def serve_all(report: Report, args, path: Path, url: str, images, labels, skips: list[str]) -> dict:
    """Ray Serve's own cost, the fixed super-net's capacity, then every server (adaptive, each fixed depth) on
    the trace with 1 and 2 replicas, each guarded: a failing server is one line of the report."""
    super_net = "F" * len(skips[0])
    floor, engine = floor_ms(url, images, path, super_net)  # no batching wait: Ray Serve's own cost
    deploy(path, fixed=super_net, max_batch=args.max_batch)
    slo = args.slo_ms or round(4 * engine, 1)
    capacity = {1: asyncio.run(closed_loop(url, images, 4 * args.max_batch, 4))}  # the super-net's
    deploy(path, slo_ms=slo, max_batch=args.max_batch)
    sequential(url, images, 20)
    low = row(asyncio.run(offer(url, arrivals(0.25 * capacity[1], 5, 99, 3), images, labels)), slo, 5)
    results = []
    for replicas in (1, 2):
        if replicas > 1:
            deploy(path, replicas=replicas, fixed=super_net, max_batch=args.max_batch)
            sequential(url, images, 20)
            capacity[replicas] = asyncio.run(closed_loop(url, images, 4 * args.max_batch, 4))
        for fixed in (None, *skips):

            def server(replicas: int = replicas, fixed: str | None = fixed) -> None:
                deploy(path, replicas=replicas, fixed=fixed, slo_ms=slo, max_batch=args.max_batch)
                sequential(url, images, 20)
                times = arrivals(replicas * capacity[1], args.seconds, args.phase, replicas, args.burst)
                r = row(asyncio.run(offer(url, times, images, labels)), slo, args.seconds)
                results.append({"replicas": replicas, "server": fixed or "adaptive", **r})
                print(json.dumps(results[-1]), flush=True)

            report.guard(f"{replicas} replica(s), {fixed or 'adaptive'} server", server)
    return dict(engine=(floor, engine), slo=slo, capacity=capacity, low=low, results=results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=15, help="training epochs (the built-in recipe's)")
    p.add_argument("--workdir", default="output/serve-slo", help="the trained model and ONNX file are kept here")
    p.add_argument("--seconds", type=float, default=6.0, help="length of the trace per server")
    p.add_argument("--phase", type=float, default=1.0, help="seconds per 0.5x / burst phase")
    p.add_argument("--burst", type=float, default=3.0, help="load of the burst phases, x the super-net's capacity")
    p.add_argument("--slo-ms", type=float, help="default: 4x the fixed super-net's p50 at low load")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--output", help="markdown report (default: print it)")
    args = p.parse_args(argv)
    import ray
    from ray import serve

    from adn.cli.serve import RAY_TIMEOUTS

    title = "adn serve: adaptive depth against fixed depths on a bursty trace"
    report = Report(args.output, title, script=__file__, argv=argv, progress=None)
    path = prepare(args)
    from adn.serving.app import read_switchable

    meta = read_switchable(path)
    skips = [r["skip"] for r in meta["subnets"]]
    images, labels = val_set(int(meta["input_size"]))
    local = in_process(path, images, labels, skips)
    for key, value in RAY_TIMEOUTS.items():
        os.environ.setdefault(key, value)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "ERROR"})
    super_net = "F" * len(skips[0])
    try:
        measured = serve_all(report, args, path, url, images, labels, skips)
    finally:
        serve.shutdown()
        ray.shutdown()
    report.environment.append(
        f"- Ray {ray.__version__} (2 CPUs), onnxruntime 1 thread per replica; {report.clock.seconds:.0f} s in all, "
        "training included"
    )
    m = measured
    report.add("results", *body(args, meta, local, len(labels), **m))
    added = m["engine"][1] - local[super_net]["p50_ms"]
    report.guard("goals", lambda: report.add("goals", *goals(m["results"], m["low"], added, m["capacity"], super_net)))
    report.finish()
    return 0


def body(args, meta, local, val_images: int, *, engine, slo, capacity, low, results) -> list[str]:
    """The tables: accuracy and in-process latency per depth, the engine's cost, every server on the trace."""
    table = {r["skip"]: r for r in meta["subnets"]}
    out = [
        f"Model: {meta.get('model')} trained on the built-in digits ({len(local)} sub-networks, one ONNX file); "
        f"accuracy on the {val_images} validation images, measured in onnxruntime; batch-1 p50 in-process, 1 thread.",
        "",
        "| skip | acc@1 (training's table) | acc@1 (onnxruntime) | in-process p50 (ms) |",
        "|---|---|---|---|",
    ]
    for skip, m in local.items():
        tabled = table[skip].get("acc1")
        out.append(f"| {skip} | {'-' if tabled is None else f'{tabled:.2f}'} | {m['acc']:.2f} | {m['p50_ms']:.3f} |")
    super_net = max(local, key=lambda s: s.count("F"))
    inproc, (floor, engine) = local[super_net]["p50_ms"], engine
    out += [
        "",
        f"Engine cost at low load (one request at a time, fixed super-net, --max-wait-ms 0: a lone request "
        f"otherwise waits up to that long for a batch): Ray Serve p50 {engine:.2f} ms (HTTP, "
        f"client side) vs onnxruntime in-process {inproc:.2f} ms: **{engine - inproc:.2f} ms added**; Ray Serve's "
        f"floor, one deployment answering a constant: {floor:.2f} ms (median of 3 interleaved rounds each).",
        f"SLO: {slo} ms (4x that p50). Capacity of the fixed super-net ({4 * args.max_batch} closed-loop clients): "
        f"{capacity[1]:.0f} req/s with 1 replica. Trace: Poisson, {args.phase:g} s phases alternating 0.5x and "
        f"{args.burst:g}x that capacity (x replicas), {args.seconds:g} s per server, the same trace for every "
        "server of a replica count; a request unanswered after 10 s counts as failed.",
        f"Low load (0.25x capacity, adaptive): {low['mix']}; {low['slo_pct']:.1f}% within the SLO.",
        "",
        "| replicas | server | requests | within SLO | effective acc | p50 (ms) | p95 (ms) | p99 (ms) | req/s | "
        "depth mix |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        out.append(
            f"| {r['replicas']} | {r['server']} | {r['requests']} | {r['slo_pct']:.1f}% | {r['eff_acc']:.1f}% | "
            f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['rps']:.0f} | {r['mix']} |"
        )
    return out


def goals(results: list[dict], low: dict, added_ms: float, capacity: dict, super_net: str) -> list[str]:
    """The issue's goals, each with its measured number."""

    def at(replicas: int, server: str) -> dict:
        return next(r for r in results if r["replicas"] == replicas and r["server"] == server)

    fixed = [r for r in results if r["replicas"] == 1 and r["server"] != "adaptive"]
    adaptive, best_fixed = at(1, "adaptive"), max(fixed, key=lambda r: r["eff_acc"])
    share = float(low["mix"].split(f"{super_net} ")[1].split("%")[0]) if f"{super_net} " in low["mix"] else 0.0
    met = {True: "met", False: "**not met**"}
    return [
        "Goals (1 replica unless said):",
        f"- fixed super-net within the SLO for {at(1, super_net)['slo_pct']:.1f}% of requests (the goal's setting "
        f"needs < 50%); adaptive {adaptive['slo_pct']:.1f}% (goal >= 95%: {met[adaptive['slo_pct'] >= 95]}); "
        f"effective accuracy adaptive {adaptive['eff_acc']:.1f}% vs the best fixed depth's "
        f"{best_fixed['eff_acc']:.1f}% ({best_fixed['server']}): {met[adaptive['eff_acc'] >= best_fixed['eff_acc']]}.",
        f"- low load: {share:.1f}% of answers from the super-net (goal >= 95%: {met[share >= 95]}).",
        f"- two replicas: capacity {capacity[2]:.0f} vs {capacity[1]:.0f} req/s ({capacity[2] / capacity[1]:.2f}x); "
        f"at twice the trace, adaptive within the SLO {at(2, 'adaptive')['slo_pct']:.1f}% vs "
        f"{adaptive['slo_pct']:.1f}% "
        "with one replica at the single trace (goal: about 2x the load at the same attainment).",
        f"- engine latency added at low load: {added_ms:.2f} ms at p50 (aim <= 2 ms: {met[added_ms <= 2]}).",
    ]


if __name__ == "__main__":
    sys.exit(main())
