"""The README's quick start (``adn train``) on this machine idle and with one core kept busy by a ``yes > /dev/null``
this script starts and stops, interleaved, as ratios; then short runs (one epoch of a few steps) that show what
the thread count does under each load. Each run is a fresh ``adn train`` process, as a user types it (plus an
output directory in a temporary folder); ``uptime``'s load averages are recorded around every run, since other
work on a shared machine loads it too.

    python benchmarks/quickstart_load.py [--repeats 1] [--output benchmarks/results/quickstart-load.md]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from harness import Report, Stopwatch, load_average, table

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def load(busy: bool):
    """One core kept busy by ``yes > /dev/null`` while the block runs (nothing when not ``busy``)."""
    proc = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if busy else None
    try:
        if proc is not None:
            time.sleep(1.0)  # running before adn starts, as a job already on the machine would be
        yield
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()


def train(flags: list[str], busy: bool, workdir: Path) -> dict:
    """One ``adn train FLAGS`` run: wall seconds, training and calibration seconds, img/s, threads, final table."""
    out_dir = workdir / f"run-{len(list(workdir.iterdir()))}"
    command = [sys.executable, "-m", "adn", "train", *flags, "--output-dir", str(out_dir)]
    before = load_average()
    with load(busy), Stopwatch() as wall:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    text = proc.stdout
    h, m, s = re.search(r"training time (\d+):(\d+):(\d+)", text).groups()
    calib = re.search(r"training images in ([\d.]+) s", text)
    rates = [float(r) for r in re.findall(r" (\d+) img/s", text)]
    # the count chosen at the start, then each change --threads auto made between epochs
    threads = re.findall(r"\((\d+) CPU threads?[,)]", text) + re.findall(r": (\d+) CPU threads? instead of", text)
    table = text[text.index("sub-networks of") :].split("\n\nevaluate again")[0] if "sub-networks of" in text else ""
    return {
        "wall": wall.seconds,
        "train": int(h) * 3600 + int(m) * 60 + int(s),
        "calib": float(calib.group(1)) if calib else 0.0,
        "img_s": sum(rates) / len(rates) if rates else 0.0,
        "threads": " -> ".join(threads) or "?",
        "load": f"{before} -> {load_average()}",
        "table": table,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="idle/busy pairs of the full quick start")
    parser.add_argument("--epochs", type=int, default=None, help="shorten the quick start (default: its 15)")
    parser.add_argument("--short-steps", type=int, default=8, help="steps of the thread-count runs (0: skip them)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/quickstart-load.md"))
    opts = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` still stops the `yes` (finally blocks run)
    flags = ["--epochs", str(opts.epochs)] if opts.epochs else []
    report = Report(opts.output, "The quick start idle and with one core busy", script=__file__, argv=argv)
    report.add(
        "full",
        "Busy: one `yes > /dev/null` started 1 s before `adn train` and stopped after it. Load: `uptime`'s "
        "1/5/15-min load averages before -> after each run (other work on this shared machine included). Threads: "
        "what `adn train` chose (`--threads auto`).",
        "",
        f"## `adn train{' ' + ' '.join(flags) if flags else ''}`, interleaved",
        *table("run", "load", "threads", "wall s", "training s", "img/s", "calibration s", "load averages"),
    )
    runs: dict[str, list[dict]] = {"idle": [], "busy": []}

    def one(i: int, name: str, tmp: Path) -> None:
        r = train(flags, name == "busy", tmp)
        runs[name].append(r)
        cells = (r["threads"], f"{r['wall']:.0f}", r["train"], f"{r['img_s']:.0f}", f"{r['calib']:.1f}", r["load"])
        report.row("full", i + 1, name, *cells)

    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeats):
            for name in ("idle", "busy"):
                report.guard(f"{name} run {i + 1}", lambda i=i, name=name: one(i, name, Path(tmp)), slot="full",
                             lead=(i + 1, name))  # fmt: skip
        if all(runs.values()):
            mean = {k: sum(r["wall"] for r in v) / len(v) for k, v in runs.items()}
            report.add("summary", f"busy / idle wall time: **{mean['busy'] / mean['idle']:.2f}x**", "")
            for name in ("idle", "busy"):
                table_text = runs[name][0]["table"]
                report.add("summary", f"Final table of the first {name} run:", "", "```text", table_text, "```", "")
        if opts.short_steps:
            report.guard("thread-count runs", lambda: report.add("short", *short_runs(opts.short_steps, Path(tmp))))
    report.finish(echo=False)
    print(f"wrote {opts.output}")


def short_runs(steps: int, workdir: Path) -> list[str]:
    """One epoch of ``steps`` steps per thread count and load, interleaved: training img/s, as ratios to idle."""
    flags = ["--epochs", "1", "--lr-warmup-epochs", "0", "--max-steps", str(steps), "--calib-images", "0"]
    lines = [
        f"## Thread count under load: one epoch of {steps} steps (`adn train {' '.join(flags)} --threads N`)",
        "",
        "| threads | idle img/s | busy img/s | busy / idle time | load averages (busy run) |",
        "|---|---|---|---|---|",
    ]
    for threads in ("1", "2", "auto"):
        idle = train([*flags, "--threads", threads], False, workdir)
        busy = train([*flags, "--threads", threads], True, workdir)
        ratio = idle["img_s"] / max(busy["img_s"], 1e-9)
        lines.append(f"| {threads} | {idle['img_s']:.0f} | {busy['img_s']:.0f} | {ratio:.2f}x | {busy['load']} |")
        print(lines[-1], flush=True)
    return [*lines, ""]


if __name__ == "__main__":
    main()
