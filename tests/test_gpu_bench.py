"""benchmarks/gpu.py: the smoke run exercises every section on the CPU; the guard keeps one item's failure,
overrun or lateness from stopping the run."""

import importlib.util
import sys
import time

import pytest

from helpers import ROOT, run

SCRIPT = ROOT / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.mark.slow
def test_smoke_run_writes_the_full_report(tmp_path):
    out = tmp_path / "report" / "gpu.md"
    proc = run([sys.executable, str(SCRIPT), "--smoke", "--output", str(out)], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert proc.stdout == text  # the same report on stdout and in the file
    assert "train resnet20 bf16 eager ..." in proc.stderr  # progress goes to stderr
    for heading in ("## 1. Training throughput", "## 2. Inference latency", "### Batch 1", "## 3. Data pipeline"):
        assert heading in text
    assert "- Command: `python benchmarks/gpu.py --smoke --output" in text
    assert "| failed:" not in text and "skipped: time budget" not in text
    train, latency, switch, data = _tables(text)
    for table in (train, latency, switch, data):
        assert {line.count("|") for line in table} == {table[0].count("|")}  # every row has every column
    assert "| ADN/plain | FLOPs ratio |" in train[0]
    assert [row.split(" | ")[3:5] for row in train[2:]] == [
        ["bf16", "eager"],
        ["fp16", "eager"],
        ["bf16", "torch.compile"],
    ]
    assert "| FLOPs ratio |" in latency[0] and "| latency ratio |" in latency[0] and len(latency) == 4
    assert "| switching ms/call |" in switch[0]
    assert [row.split(" | ")[1] for row in switch[2:]] == ["eager", "torch.compile", "CUDA graphs"]
    assert switch[-1].endswith("| skipped: needs CUDA |")
    workers = [int(row.split("|")[1]) for row in data[2:]]
    assert workers[0] == 1 and workers == sorted(workers)  # 1, 2, 4 ... up to the core count
    assert "Feeding resnet20" in text and "Finished in" in text


def _report(gpu_bench, tmp_path, budget=60.0):
    report = gpu_bench.Report(tmp_path / "r.md", budget=budget, progress=None)
    report.add("t", *gpu_bench.table("name", "value", "note"))
    return report


def test_a_failing_item_becomes_a_row_and_the_run_goes_on(gpu_bench, tmp_path):
    report = _report(gpu_bench, tmp_path)

    def boom():
        raise ValueError("no | good\nat all")

    report.guard("boom", boom, slot="t", lead=("a",), cap=10)
    report.guard("fine", lambda: report.row("t", "b", 1, ""), slot="t", lead=("b",), cap=10)
    assert report.failed == 1
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[-2:] == ["| a | – | failed: ValueError: no / good at all |", "| b | 1 |  |"]


def test_items_past_the_budget_are_skipped_and_overruns_stopped(gpu_bench, tmp_path):
    report = _report(gpu_bench, tmp_path, budget=5.0)
    events = []

    def slow():
        events.append("started")
        time.sleep(30)
        events.append("finished")

    report.guard("slow", slow, slot="t", lead=("slow",), cap=1)
    assert events == ["started"]  # stopped by the alarm after 1 s, not run to its end
    report.guard("late", lambda: None, slot="t", lead=("late",), need=60, cap=10)
    text = (tmp_path / "r.md").read_text()
    assert "| slow | – | failed: TimeoutError: stopped after 1 s |" in text
    assert "| late | – | skipped: time budget (" in text and report.skipped == 1


def test_a_failure_outside_a_table_is_one_line(gpu_bench, tmp_path):
    report = _report(gpu_bench, tmp_path)
    assert report.guard("sum", lambda: 1 + 1) == 2
    assert report.guard("bad input", lambda: int("x")) is None
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[-1] == "- bad input: failed: ValueError: invalid literal for int() with base 10: 'x'"


def test_call_times(gpu_bench, monkeypatch):
    """On a clock that only the timed calls advance (a busy machine cannot change what is asserted)."""
    import harness

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now

    clock, calls = Clock(), []
    monkeypatch.setattr(harness, "time", clock)

    def work():
        calls.append(1)
        clock.now += 0.25

    warm, times = harness.call_times(work, 4, warmup=2)
    assert len(calls) == 6 and warm == 0.5 and times == [0.25] * 4
    _, mean = harness.call_times(work, 3, per_call=False)
    assert mean == [0.25]
    assert harness.min_ms(work, 3) == 250.0
    with harness.Stopwatch() as watch:
        work()
    clock.now += 1.0
    assert watch.seconds == 0.25  # stopped at the block's end
