"""Load test of ``examples/serve.py``: the load-adaptive server vs the same server fixed to the super-net.

Measures one latency table of the model (batch 1, as a server worker runs it), starts two servers from it as
child processes on 127.0.0.1 (free ports): (a) adaptive, (b) fixed to the super-net. Then offers increasing
load -- ``N`` closed-loop clients, each sending its next request as soon as the last is answered, for
``--duration`` seconds per level and server, in ``--rounds`` turns alternating between the two servers so
that a change in the machine's load hits both alike -- and reports, per level and server: the served depth
mix (share of requests per skip config), client-side p50/p95 and server-side p95 latency, the share within
the budget, throughput and, with trained ``--weights``, the accuracy of the answers (requests are the
built-in digits' validation images). Every level stops by itself; the servers are always shut down. Prints a
Markdown report and writes it to ``--output``::

    python examples/load_test.py --output benchmarks/results/serve-load-test.md   # resnet56 at 64x64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import torch

import adn
from adn.data import build_datasets
from adn.deploy.bench import load_results

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serve  # noqa: E402  (examples/serve.py)


@dataclass
class Level:
    clients: int
    mode: str
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    skips: Counter = field(default_factory=Counter)
    correct: int = 0
    failed: int = 0
    elapsed_s: float = 0.0

    @property
    def served(self) -> int:
        return len(self.latencies_ms)


# --------------------------------------------------------------------------------------------- the servers
class ServerProcess:
    """``serve.py argv --port 0`` as a child process; :meth:`url` waits for the address it prints."""

    def __init__(self, argv: Sequence[str]) -> None:
        env = dict(os.environ)
        src = str(Path(adn.__file__).parents[1])  # the adn this process runs
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "serve.py"), *argv, "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:  # read everything, so that the child never blocks on a full pipe
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def url(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"server did not start in {timeout:.0f} s:\n{''.join(self.log)}") from None
            if line is None:
                raise RuntimeError(f"server exited ({self.proc.wait()}):\n{''.join(self.log)}")
            self.log.append(line)
            if line.startswith("listening on "):
                return line.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextlib.contextmanager
def servers(argvs: dict[str, Sequence[str]], timeout: float = 180) -> Iterator[dict[str, str]]:
    """Start every server at once; yield their URLs by name; always stop them all."""
    procs: dict[str, ServerProcess] = {}
    try:
        for name, argv in argvs.items():
            procs[name] = ServerProcess(argv)
        yield {name: p.url(timeout) for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.stop()


# --------------------------------------------------------------------------------------------- the clients
async def offer(
    session: aiohttp.ClientSession,
    url: str,
    level: Level,
    images: Sequence[tuple[bytes, int]],
    duration: float,
) -> None:
    """``level.clients`` closed-loop clients for ``duration`` seconds (requests started by then finish)."""
    headers = {"Content-Type": "application/octet-stream"}
    start = time.perf_counter()
    end = start + duration

    async def client(i: int) -> None:
        k = i * 7919
        while time.perf_counter() < end:
            body, label = images[k % len(images)]
            k += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url + "/predict", data=body, headers=headers) as response:
                    answer = await response.json()
                    ok = response.status == 200
            except (aiohttp.ClientError, asyncio.TimeoutError):
                ok = False
            if not ok:
                level.failed += 1
                continue
            level.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            level.server_ms.append(answer["timings"]["server_ms"])
            level.skips[answer["skip"]] += 1
            level.correct += answer["class"] == label

    await asyncio.gather(*(client(i) for i in range(level.clients)))
    level.elapsed_s += time.perf_counter() - start


async def run_levels(
    urls: dict[str, str],
    clients: Sequence[int],
    duration: float,
    images: Sequence[tuple[bytes, int]],
    rounds: int = 2,
) -> list[Level]:
    """Each level: ``rounds`` turns of ``duration / rounds`` seconds per server, the servers alternating."""
    timeout = aiohttp.ClientTimeout(total=60)
    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        for mode, url in urls.items():  # warm-up: connections, allocator, the paths' first calls
            await offer(session, url, Level(2, mode), images, min(1.0, duration))
        for n in clients:
            levels = {mode: Level(n, mode) for mode in urls}
            for _ in range(rounds):
                for mode, url in urls.items():
                    await offer(session, url, levels[mode], images, duration / rounds)
                    await asyncio.sleep(0.2)
            for level in levels.values():
                print(summary_line(level), flush=True)
            results += levels.values()
    return results


# --------------------------------------------------------------------------------------------- reporting
def depth_mix(skips: Counter, order: Sequence[str]) -> str:
    total = sum(skips.values()) or 1
    ranked = sorted(skips, key=lambda s: order.index(s) if s in order else len(order))
    shares = {s: 100 * skips[s] / total for s in ranked}
    return " · ".join(f"{s} {p:.0f}%" if p >= 0.5 else f"{s} <1%" for s, p in shares.items())


def stats(level: Level, budget_ms: float) -> dict[str, float]:
    lat = np.asarray(level.latencies_ms) if level.latencies_ms else np.asarray([np.nan])
    return {
        "throughput": level.served / level.elapsed_s if level.elapsed_s else 0.0,
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "within": 100.0 * float(np.mean(lat <= budget_ms)),
        "server_p95": float(np.percentile(level.server_ms, 95)) if level.server_ms else float("nan"),
    }


def summary_line(level: Level) -> str:
    lat = level.latencies_ms or [float("nan")]
    return (
        f"{level.clients:>3} clients  {level.mode:<9}  {level.served:>5} requests  "
        f"p50 {np.percentile(lat, 50):6.1f} ms  p95 {np.percentile(lat, 95):6.1f} ms  "
        f"{dict(level.skips.most_common())}"
    )


def report(
    levels: Sequence[Level],
    policy: serve.DepthPolicy,
    *,
    args: argparse.Namespace,
    resolution: int,
    budget_ms: float,
    fixed: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    wall_s: float,
) -> str:
    order = [c.skip for c in reversed(policy.front)] + sorted(policy.rows)
    accuracy = args.weights is not None
    cpu = platform.processor() or platform.machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    measured = (
        f"batch 1, {args.threads} thread(s), measured at start-up with `adn.bench_subnets`: the lowest median "
        f"of {args.table_rounds} sweeps"
    )
    source = f"from `{args.bench}`" if args.bench else measured
    weights = f"trained weights `{Path(args.weights).name}`" if args.weights else "random weights"
    out = [
        f"# Load-adaptive serving: adaptive depth vs fixed super-net ({now})",
        "",
        f"Machine: {cpu} CPU, {os.cpu_count()} cores, shared with other jobs (load average "
        f"{' '.join(f'{x:.2f}' for x in load[0])} at start, {' '.join(f'{x:.2f}' for x in load[1])} at end); "
        f"torch {torch.__version__}, Python {platform.python_version()}, aiohttp {aiohttp.__version__}.",
        f"Model: {args.model}-ADN ({weights}), {resolution}x{resolution} inputs (the built-in digits' validation "
        f"images), one request = one image. Each server: {args.workers} inference worker thread(s) x "
        f"{args.threads} torch thread(s), the clients in another process on the same CPU.",
        f"Budget: {budget_ms:g} ms per request (admission to answer). Offered load: N closed-loop clients, "
        f"{args.duration:g} s per level and server, in {args.rounds} turns alternating between the servers. "
        "Latencies are measured by "
        "the clients (HTTP and the client process included); 'server p95': admission to answer, as the server "
        "sees it (what the budget bounds); 'within budget': share of requests the clients saw answered within it.",
        f"Command: `python examples/load_test.py {' '.join(sys.argv[1:])}` ({wall_s:.0f} s in all).",
        "",
        f"Latency table ({source}); "
        f"the adaptive server ranks by {'Acc@1' if policy.has_accuracy else 'GFLOPs'} and uses the "
        "Pareto-optimal rows (*):",
        "",
        "| skip | GFLOPs | latency (ms) | " + ("Acc@1 | " if policy.has_accuracy else "") + "candidate |",
        "|---|---|---|" + ("---|" if policy.has_accuracy else "") + "---|",
    ]
    front = {c.skip for c in policy.front}
    for c in sorted(policy.rows.values(), key=lambda c: -c.latency_ms):
        acc = f"{c.accuracy:.2f} | " if policy.has_accuracy else ""
        out.append(f"| {c.skip} | {c.gflops:.4f} | {c.latency_ms:.2f} | {acc}{'*' if c.skip in front else ''} |")
    out += [
        "",
        "| clients | server | requests | req/s | p50 (ms) | p95 (ms) | server p95 (ms) | within budget "
        "| served depth mix |" + (" Acc@1 |" if accuracy else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if accuracy else ""),
    ]
    for level in levels:
        s = stats(level, budget_ms)
        mode = "adaptive" if level.mode == "adaptive" else f"fixed {fixed}"
        acc = f" {100 * level.correct / max(1, level.served):.1f} |" if accuracy else ""
        fails = f" ({level.failed} failed)" if level.failed else ""
        out.append(
            f"| {level.clients} | {mode} | {level.served}{fails} | {s['throughput']:.0f} | {s['p50']:.1f} | "
            f"{s['p95']:.1f} | {s['server_p95']:.1f} | {s['within']:.0f}% | {depth_mix(level.skips, order)} |{acc}"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet56", help="registered model name (default: resnet56)")
    p.add_argument("--weights", help="trained checkpoint (default: random weights; then no accuracy)")
    p.add_argument("--num-classes", type=int, default=10, help="classes (default: 10, the built-in digits)")
    p.add_argument(
        "--resolution", type=int, default=64, help="input size (default: 64, where compute outweighs the HTTP work)"
    )
    p.add_argument("--bench", help="JSON written by 'adn bench' (default: measure a table at start-up)")
    p.add_argument("--budget-ms", type=float, help="latency budget (default: 4x the super-net's table latency)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10], help="load levels")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per level and server (default: 6)")
    p.add_argument("--rounds", type=int, default=2, help="turns per level and server, alternating (default: 2)")
    p.add_argument("--workers", type=int, default=cores, help=f"inference threads per server (default: {cores})")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default: 1)")
    p.add_argument("--min-run-time", type=float, default=0.1, help="seconds of timing per table entry and sweep")
    p.add_argument("--table-rounds", type=int, default=5, help="sweeps of the table; the lowest median counts (5)")
    p.add_argument("--output", help="write the Markdown report here")
    args = p.parse_args(argv)
    if (
        args.duration <= 0
        or min(args.clients) < 1
        or min(args.workers, args.threads, args.rounds, args.table_rounds) < 1
    ):
        p.error("--duration, --clients, --rounds, --table-rounds, --workers and --threads must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_start = os.getloadavg()
    resolution = args.resolution

    if args.bench:
        rows = load_results(args.bench)
    else:
        model = serve.build_model(args.model, args.weights, args.num_classes)
        print(f"measuring {args.model} sub-networks ({args.threads} thread(s)) ...", flush=True)
        rows = serve.measure_table(
            model,
            resolution,
            args.threads,
            min_run_time=args.min_run_time,
            rounds=args.table_rounds,
            eval_data="builtin" if args.weights else None,
        )
        del model
    policy = serve.DepthPolicy(rows)
    budget = args.budget_ms if args.budget_ms is not None else round(4 * policy.best.latency_ms, 1)
    fixed = "F" * len(policy.best.skip)
    _, val, _ = build_datasets(None, image_size=resolution)
    images = [(x.numpy().astype(np.float32).tobytes(), int(y)) for x, y in (val[i] for i in range(len(val)))]

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / f"{args.model}-bench.json"
        meta = {"model": args.model, "resolution": resolution, "threads": args.threads, "batch_size": 1}
        table.write_text(json.dumps({**meta, "results": rows}))
        common = ["--model", args.model, "--num-classes", str(args.num_classes), "--resolution", str(resolution)]
        common += ["--bench", str(table), "--budget-ms", str(budget)]
        common += ["--workers", str(args.workers), "--threads", str(args.threads)]
        common += ["--weights", args.weights] if args.weights else []
        print(f"budget {budget:g} ms; candidates {', '.join(c.skip for c in policy.front)}; starting servers ...")
        with servers({"adaptive": common, "fixed": [*common, "--fixed", fixed]}) as urls:
            levels = asyncio.run(run_levels(urls, args.clients, args.duration, images, args.rounds))
    text = report(
        levels,
        policy,
        args=args,
        resolution=resolution,
        budget_ms=budget,
        fixed=fixed,
        load=(load_start, os.getloadavg()),
        wall_s=time.perf_counter() - started,
    )
    print()
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
