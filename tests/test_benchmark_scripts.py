"""Every script in benchmarks/ imports (its helpers from ``common``/``harness`` and the package still exist), has a
command line with a description, and goes through ``benchmarks/harness.py`` for its report and its clock, so a
refactor cannot silently break a benchmark nobody runs in CI, and no script times things its own way."""

import ast
import importlib.util
import sys

import pytest

from helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
HELPERS = {"common", "harness"}  # modules the scripts import, not scripts
#: scripts that measure nothing and write no results file, so need no report, guard or clock
NO_HARNESS = {"subnets_figure": "draws the README's figure from a trained run's own table"}
#: reading the clock: only harness.py does (Stopwatch, call_times, min_ms); forwards timed with
#: torch.utils.benchmark go through the package (adn.deploy.bench)
CLOCKS = {"perf_counter", "perf_counter_ns", "time", "time_ns", "monotonic", "monotonic_ns", "process_time"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_imports_and_documents_itself(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert (module.__doc__ or "").strip(), f"{script.name} has no docstring"
    if script.stem not in HELPERS:
        assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
        monkeypatch.setattr(sys, "argv", [script.name, "--help"])
        with pytest.raises(SystemExit) as exit_:
            module.main()
        assert exit_.value.code == 0


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.stem not in HELPERS], ids=lambda p: p.stem)
def test_every_script_uses_the_harness(script):
    if script.stem in NO_HARNESS:
        pytest.skip(NO_HARNESS[script.stem])
    assert "harness" in _imports(ast.parse(script.read_text())), f"{script.name} does not import harness"


@pytest.mark.parametrize(
    "source", [p for p in sorted(BENCHMARKS.rglob("*.py")) if p.name != "harness.py"], ids=lambda p: p.stem
)
def test_no_script_reads_the_clock_itself(source):
    """No ``time.perf_counter()`` (or ``time.time``, ``timeit``, ``torch.utils.benchmark`` ...) outside harness.py:
    every measurement goes through its one clock."""
    tree = ast.parse(source.read_text())
    found = [
        f"line {node.lineno}: time.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in CLOCKS and getattr(node.value, "id", None) == "time"
    ]
    found += [
        f"line {node.lineno}: from {node.module} import ..."
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module in ("timeit", "torch.utils.benchmark") or (node.module == "time" and
             {a.name for a in node.names} & CLOCKS) or (node.module == "torch.utils" and
             "benchmark" in {a.name for a in node.names}))
    ]  # fmt: skip
    found += [f"import {name}" for name in _imports(tree) & {"timeit", "torch.utils.benchmark"}]
    assert not found, f"{source.relative_to(ROOT)} reads the clock itself ({', '.join(found)}); use harness.py"


def test_the_rule_catches_a_timing_loop(tmp_path, monkeypatch):
    """The check above is not vacuous: a hand-made timing loop fails it."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nstart = time.perf_counter()\nprint(time.perf_counter() - start)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match="time.perf_counter"):
        test_no_script_reads_the_clock_itself(bad)
