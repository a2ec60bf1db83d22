"""The quick start on a shared machine and its first-hour papercuts: the thread count chosen for the free cores
(a pure function, no timing), progress bars only where a person watches, ``adn eval --builtin-data``, and one line
naming the fix when torchvision does not match torch."""

import sys

import pytest
import torch

import adn
from adn.cli import main as cli_main
from adn.evaluation.metrics import Progress, track
from adn.runtime.threads import choose_threads, other_load, parse_threads
from helpers import ADN, ROOT, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("cores", "load", "processes", "cap", "threads"),
    [
        (2, 0.0, 1, None, 2),  # idle: every core
        (2, 0.2, 1, None, 2),  # a blip is not a busy core
        (2, 1.0, 1, None, 1),  # one `yes > /dev/null`: the free core only
        (2, 0.6, 1, None, 1),  # a job running more than half the time stalls the barrier as often
        (2, 3.0, 1, None, 1),  # overloaded: still one thread, never zero
        (2, -1.0, 1, None, 2),  # nonsense load reads as idle
        (16, 5.0, 1, None, 11),
        (16, 0.0, 4, None, 4),  # torchrun --nproc_per_node 4: a quarter each
        (16, 0.0, 1, 8, 8),  # never more than torch's own default (physical cores)
        (3, 0.0, 4, None, 1),
    ],
)
def test_thread_choice_from_cores_and_load(cores, load, processes, cap, threads):
    assert choose_threads(cores, load, processes, cap) == threads


def test_thread_choice_rejects_no_cores():
    with pytest.raises(ValueError, match="cores"):
        choose_threads(0, 0.0)


def test_load_probe_reads_running_tasks_minus_itself(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.04 1.95 1.37 3/412 12345\n")  # 3 runnable, one of them the reader
    assert other_load(seconds=0, samples=3, path=str(loadavg)) == 2.0
    assert other_load(seconds=0, path=str(tmp_path / "missing")) == 0.0  # not Linux: assume idle


def test_threads_flag_values():
    assert parse_threads("auto") is None and parse_threads(None) is None
    assert parse_threads("3") == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(adn.errors.UsageError, match="--threads takes a number >= 1 or 'auto'"):
            parse_threads(bad)


@pytest.mark.parametrize("command", ["train", "eval", "calibrate", "bench", "detect train", "detect eval"])
def test_threads_flag_in_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main([*command.split(), "--help"])
    assert exit_.value.code == 0 and "--threads N|auto" in capsys.readouterr().out


def test_bad_threads_flag_is_one_line(tmp_path, capsys):
    assert cli_main(["train", "--threads", "0", "--output-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "adn: error: --threads takes a number >= 1 or 'auto', got '0'\n"


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_only_on_a_terminal_and_not_quiet(monkeypatch, enabled):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    progress = Progress("Epoch 0", 3, enabled)
    assert (progress.bar is not None) == enabled
    progress.close()
    items = [1, 2, 3]
    assert (track(items, "x", "net", enabled) is items) != enabled
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: plain lines, no bar
    assert Progress("Epoch 0", 3).bar is None and track(items, "x", "net") is items


def test_quiet_progress_prints_nothing(capsys):
    Progress("Epoch 0", 3, enabled=False).report(1, "loss 1.0")
    Progress("Epoch 0", 3).report(1, "loss 1.0")
    assert capsys.readouterr().out == "Epoch 0 [1/3]  loss 1.0\n"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet20.safetensors"
    torch.manual_seed(0)
    adn.save_weights(adn.create_model("resnet20", num_classes=10), path, meta={"model": "resnet20"})
    return str(path)


def test_eval_accepts_builtin_data_like_bench(weights):
    """As a user: ``adn eval --builtin-data`` is ``--dataset digits``; with another dataset it says which to drop."""
    common = [*ADN, "eval", "--weights", weights, "--val-subset", "32", "--threads", "1"]
    builtin = run([*common, "--builtin-data", "--format", "json"])
    digits = run([*common, "--dataset", "digits", "--format", "json"])
    assert builtin.returncode == 0, builtin.stderr
    assert builtin.stdout == digits.stdout and '"acc1"' in builtin.stdout
    clash = run([*common, "--builtin-data", "--dataset", "fashion-mnist"])
    assert clash.returncode == 2
    assert clash.stderr == "adn: error: --builtin-data means --dataset digits; drop it or --dataset fashion-mnist\n"


@pytest.mark.parametrize(
    "failure",
    [
        'RuntimeError("operator torchvision::nms does not exist")',  # torchvision built for another torch
        "ImportError(\"cannot import name '_C' from partially initialized module\")",
    ],
)
def test_torchvision_mismatch_is_one_line_naming_the_fix(tmp_path, failure):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(f"raise {failure}\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}"}
    library = run([sys.executable, "-c", "import adn"], env=env)
    assert library.returncode == 1
    last = library.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: torchvision") and "does not work with torch" in last
    assert f"pip install torch=={torch.__version__.split('+')[0]}" in last
    assert "During handling" not in library.stderr  # the original traceback is not chained on
    command = run([sys.executable, "-c", "import sys; sys.argv[0] = 'adn'; import adn"], env=env)
    assert command.returncode == 1
    assert command.stderr.startswith("adn: error: torchvision") and command.stderr.count("\n") == 1
