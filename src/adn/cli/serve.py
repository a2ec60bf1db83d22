"""``adn serve MODEL.onnx``: serve the switchable ONNX file on Ray Serve, the depth picked per request.

By default it starts a local Ray instance (and stops it on Ctrl-C or SIGTERM); ``--address`` joins a running
cluster instead (``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the others).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .parser import Parser

# Ray Serve's defaults (5 s for the proxy's readiness check) are too short for a busy 2-core machine
RAY_TIMEOUTS = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


def get_args_parser() -> Parser:
    p = Parser("adn serve", "serve a switchable ONNX file on Ray Serve, the depth picked per request")
    p.add_argument("model", metavar="MODEL.onnx", help="the file adn export --all-subnets writes")
    p.add_argument("--host", default="127.0.0.1", help="address the HTTP server binds (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port; 0 picks a free one")
    p.add_argument("--address", help="join this running Ray cluster (HEAD:6379, or auto) instead of starting one")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    g = p.add_argument_group("replicas and batching")
    g.add_argument("--replicas", type=int, default=1, help="model replicas")
    g.add_argument("--autoscale", metavar="MIN,MAX", help="autoscale between MIN and MAX replicas instead")
    g.add_argument("--threads", type=int, default=1, help="onnxruntime threads (and Ray CPUs) per replica")
    g.add_argument("--max-batch", type=int, default=8, help="largest batch of one depth")
    g.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a request waits for a batch")
    g = p.add_argument_group("policy")
    g.add_argument("--slo-ms", type=float, help="default latency budget of a request (default: 4x the super-net's)")
    g.add_argument("--fixed", metavar="CFG", help="serve every request with this skip config (e.g. FFF)")
    g.add_argument("--max-body-mb", type=float, default=4.0, help="largest request body")
    return p


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--autoscale takes MIN,MAX (e.g. 1,4), got {text!r}") from None
    return low, high


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(list(argv or []))
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        raise UsageError('Ray Serve is not installed; pip install "adn[serve]" (or pip install "ray[serve]")')
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError('onnxruntime is not installed; pip install "adn[serve]"')
    if not Path(args.model).is_file():
        raise UsageError(f"{args.model} does not exist")
    autoscale = _autoscale(args.autoscale)
    most = autoscale[1] if autoscale else args.replicas
    cpus = args.num_cpus or os.cpu_count() or 1
    if args.address is None and most * args.threads > cpus:
        raise UsageError(
            f"{most} replica(s) x {args.threads} thread(s) need {most * args.threads} CPUs; this Ray instance has "
            f"{cpus} (lower --replicas/--threads, or raise --num-cpus to oversubscribe)"
        )
    from ..serving.app import build_app

    app = build_app(
        args.model,
        replicas=args.replicas,
        autoscale=autoscale,
        slo_ms=args.slo_ms,
        fixed=args.fixed,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        max_body_mb=args.max_body_mb,
    )
    return _serve(app, args, cpus)


def _serve(app, args, cpus: int) -> int:
    import ray
    from ray import serve

    for key, value in RAY_TIMEOUTS.items():
        os.environ.setdefault(key, value)
    port = args.port or _free_port(args.host)
    stop = threading.Event()
    try:
        if args.address:
            ray.init(address=args.address, logging_level="WARNING")
        else:  # a local instance, every address loopback unless --host says otherwise
            loopback = args.host in ("127.0.0.1", "localhost")
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                logging_level="WARNING",
                **({"_node_ip_address": "127.0.0.1"} if loopback else {}),
            )
        serve.start(http_options={"host": args.host, "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(app, name="adn", route_prefix="/")
        for sig in (signal.SIGINT, signal.SIGTERM):  # after Ray's own set-up, which installs handlers too
            signal.signal(sig, lambda *_: stop.set())
        print(f"listening on http://{args.host}:{port}", flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping", flush=True)
    finally:
        if ray.is_initialized():
            if args.address:
                serve.delete("adn")  # leave the cluster's Ray Serve as it was
            else:
                serve.shutdown()
            ray.shutdown()  # stops the local instance this process started
    return 0


__all__ = ["get_args_parser", "main"]
