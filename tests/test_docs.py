"""The README and every page of docs/ as a new user meets them: each ```bash and ```python block runs as pasted,
in reading order, after the quick start, in a fresh folder (```text blocks are shown only: ImageNet paths,
GPUs, servers that run until stopped). The quick start's two commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, child_env

#: reading order: the README, then the pages in the order the README lists them
PAGES = list(dict.fromkeys(["README.md", *re.findall(r"\]\((docs/[\w-]+\.md)\)", (ROOT / "README.md").read_text())]))
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)


#: The quick start's training runs as pasted plus one appended override (argparse keeps the last value, as in
#: tests/test_seed_commands.py): 3 of its 15 epochs. The pages after it only need its files; the full run is the
#: one a user makes, and the README's table comes from it.
SHORTENED = {"adn train": "adn train --epochs 3"}


def _blocks(page: str) -> list[tuple[str, str]]:
    return FENCE.findall((ROOT / page).read_text())


def _commands(block: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and `pip install` (done already) dropped."""
    lines = re.sub(r"\\\n\s*", " ", block).splitlines()
    commands = []
    for line in lines:
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        line = re.sub(r"^pip install \S+( \S+)*? && ", "", line)
        if line and not line.startswith(("#", "pip install")) and "pytest" not in line:
            commands.append(line)
    return commands


def test_pages_exist_and_readme_fits_on_a_screen():
    assert len(PAGES) >= 8 and all((ROOT / p).is_file() for p in PAGES)
    assert len((ROOT / "README.md").read_text().encode()) <= 10_000
    for page in PAGES:
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", (ROOT / page).read_text()):
            assert ((ROOT / page).parent / target).exists(), f"{page}: broken link {target}"


@pytest.mark.slow
def test_every_command_runs_as_pasted(tmp_path):
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # commands name files of the clone (docs/images/digit-3.png)
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    env = child_env({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "MPLBACKEND": "Agg"})
    ran = 0
    for page in PAGES:
        for kind, block in _blocks(page):
            if kind == "python":
                proc = subprocess.run(
                    [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                )
                assert proc.returncode == 0, f"{page}: python block failed:\n{block}\n{proc.stderr[-2000:]}"
                ran += 1
                continue
            for command in _commands(block):
                command = SHORTENED.get(command, command)
                proc = subprocess.run(
                    ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                )
                assert proc.returncode == 0, f"{page}: `{command}` failed:\n{proc.stderr[-2000:]}"
                assert "Traceback" not in proc.stderr, f"{page}: `{command}`:\n{proc.stderr[-2000:]}"
                ran += 1
    assert ran >= 15
