"""Every script in benchmarks/ imports (its helpers from ``common`` and the package still exist) and has a
command line with a description, so a refactor cannot silently break a benchmark nobody runs in CI."""

import importlib.util
import sys

import pytest

from helpers import ROOT

SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_script_imports_and_documents_itself(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert (module.__doc__ or "").strip(), f"{script.name} has no docstring"
    if script.stem != "common":
        assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
        monkeypatch.setattr(sys, "argv", [script.name, "--help"])
        with pytest.raises(SystemExit) as exit_:
            module.main()
        assert exit_.value.code == 0
