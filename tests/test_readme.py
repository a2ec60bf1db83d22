"""The README's quick start and CI agree, and the README's API example runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start()
    assert len(commands) == 2
    assert commands[0].startswith("pip install") and "adn train" in commands[0]
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in [line.strip() for line in ci]


def test_python_api_example_prints_what_it_claims(capsys):
    """Every ``print(...)  # TEXT`` line of the README's Python block prints the start of its comment."""
    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API\s+```python\n(.*?)```", text, re.S).group(1)
    claims = [line.split("  # ", 1)[1] for line in code.splitlines() if line.startswith("print(")]
    code = code.replace("224, 224", "64, 64")  # same calls, smaller image (the FLOPs are at the model's own size)
    exec(compile(code, "README", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(claims) == len(printed) >= 3
    for claim, line in zip(claims, printed, strict=True):
        assert claim.startswith(line), f"README claims {claim!r}, prints {line!r}"
