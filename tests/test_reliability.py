"""Reliability: every bad input gets one clear line and damages nothing; interrupted runs resume bit-exactly;
untrusted checkpoint files never run code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import adn
from adn.cli import main as cli_main
from adn.cli.train import default_output_dir
from adn.core.checkpoint import load_checkpoint, save_checkpoint, save_weights
from adn.models.weights import load_weights
from helpers import ADN, ROOT, child_env, run

TINY = [
    "--train-subset",
    "32",
    "--val-subset",
    "16",
    "-b",
    "16",
    "--epochs",
    "1",
    "--print-freq",
    "100",
    "--calib-images",
    "16",
]


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights and checkpoint files of every kind the matrix needs."""
    d = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    save_weights(model, d / "good.safetensors")
    save_checkpoint(model.state_dict(), d / "state_dict.pth")
    data = (d / "state_dict.pth").read_bytes()
    (d / "truncated.pth").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside tensor data: only the zip checksums notice
    (d / "flipped.pth").write_bytes(bytes(flipped))
    (d / "notes.pth").write_text("these are my notes, not a checkpoint\n")
    save_weights(adn.create_model("resnet56", num_classes=10), d / "resnet56.pth")
    save_weights(adn.create_model("resnet20", num_classes=5), d / "five_classes.pth")
    torch.save({"model": model.state_dict(), "best_acc1": np.float64(12.5)}, d / "legacy.pth")
    for name, arch, opt in (("resnet56_run.pth", "resnet56", "sgd"), ("adamw_run.pth", "resnet20", "adamw")):
        weights = adn.create_model(arch, num_classes=10).state_dict()
        save_checkpoint(
            {"model": weights, "optimizer": {}, "lr_scheduler": {}, "epoch": 0, "args": {"model": arch, "opt": opt}},
            d / name,
        )
    # images: train/ and val/ with two classes, one corrupt file
    for split in ("train", "val"):
        for c in ("a", "b"):
            (d / "imgs" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / "imgs" / split / c / f"{i}.png")
    (d / "imgs" / "train" / "a" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (d / "empty").mkdir()
    (d / "only_train" / "train" / "a").mkdir(parents=True)
    return d


@pytest.fixture()
def out_dir(tmp_path):
    """An output dir holding files from an earlier run that no failing command may touch."""
    d = tmp_path / "out"
    d.mkdir()
    (d / "model_0.pth").write_bytes(b"earlier run's checkpoint")
    (d / "metrics.jsonl").write_text('{"epoch": 0}\n')
    return d


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# ------------------------------------------------------------------------------------------ bad-input matrix
# (argv with {F}=fixture files dir, {O}=output dir; expected part of the one-line message; exit status)
MATRIX = [
    ("train --model nosuchnet", "unknown model 'nosuchnet'", 2),
    ("eval --weights {F}/good.safetensors --skip-cfg TT", "skip config TT has 2 values but this model has 3 stages", 2),
    ("eval --weights {F}/good.safetensors --skip-cfg T F X", "bad token", 2),
    ("train --data-path {F}/missing", "does not exist", 2),
    ("train --data-path {F}/empty", "has no train/ folder", 2),
    ("train --data-path {F}/only_train", "has no val/ folder", 2),
    ("train --data-path {F}/imgs", "cannot read image {F}/imgs/train/a/9.png", 2),
    ("eval --resume {F}/missing.pth", "checkpoint file not found", 2),
    ("train --resume {F}/truncated.pth", "cannot read checkpoint {F}/truncated.pth", 2),
    ("eval --weights {F}/flipped.pth", "checkpoint {F}/flipped.pth is corrupt (checksum mismatch", 2),
    ("train --resume {F}/notes.pth", "cannot read checkpoint {F}/notes.pth", 2),
    ("train --resume {F}/state_dict.pth", "is not a training checkpoint", 2),
    ("train --weights {F}/resnet56.pth", "do not fit this model (another architecture or class count?): unexpected", 2),
    ("eval --weights {F}/five_classes.pth", "shape mismatch in 2 keys (e.g. fc.weight (5, 64) vs (10, 64)", 2),
    ("train --weights {F}/legacy.pth", "pass --unsafe-pickle", 2),
    (
        "train --model resnet20 --resume {F}/resnet56_run.pth",
        "--model resnet20 differs from the resumed run's resnet56; a resumed run keeps its arguments",
        2,
    ),
    ("eval --model resnet20 --resume {F}/resnet56_run.pth", "it is a resnet56 checkpoint: pass --model resnet56", 2),
    ("train --resume {F}/adamw_run.pth --opt sgd", "--opt sgd differs from the resumed run's adamw", 2),
    ("train --resume {F}/adamw_run.pth", "the optimizer state does not fit", 2),
    ("train --resume {F}/state_dict.pth --start-epoch 1", "drop --start-epoch", 2),
    ("train --all-subnets", "--all-subnets applies to evaluation only", 2),
    ("eval --weights {F}/good.safetensors --mixup-alpha 0.2", "unrecognized arguments: --mixup-alpha 0.2", 2),
    ("eval --resume auto", "--resume auto continues training", 2),
    ("train --kd-topk 50", "--kd-topk 50 is more than the 10 classes", 2),
    ("train --device cuda", "CUDA is not available", 2),
    ("train --device tpu9", "is not a device", 2),
    ("train --lr 1e30 --lr-scheduler steplr", "training diverged", 1),
]


@pytest.mark.parametrize("argv, message, status", MATRIX, ids=[m[0].split(" --")[1][:40] for m in MATRIX])
def test_bad_input_gives_one_line_and_damages_nothing(argv, message, status, files, out_dir, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = argv.format(F=files, O=out_dir).split()
    if args[0] == "train":
        args += [*TINY, "--output-dir", str(out_dir)]
    before = _snapshot(out_dir)
    assert cli_main(args) == status
    err = capsys.readouterr().err
    assert err.startswith("adn: error: ") and len(err.strip().splitlines()) == 1, err
    assert message.format(F=files) in err, err
    assert "Traceback" not in err
    assert _snapshot(out_dir) == before


def test_fresh_run_refuses_to_overwrite_an_earlier_runs_checkpoint(out_dir, capsys):
    (out_dir / "checkpoint.pth").write_bytes(b"days of training")
    before = _snapshot(out_dir)
    assert cli_main(["train", *TINY, "--output-dir", str(out_dir)]) == 2
    assert "already holds checkpoint.pth of an earlier run; continue it with --resume auto" in capsys.readouterr().err
    assert _snapshot(out_dir) == before


def test_eval_takes_the_architecture_from_a_training_checkpoint(files, capsys):
    assert (
        cli_main(["eval", "--resume", str(files / "resnet56_run.pth"), "--val-subset", "8", "--skip-cfg", "TTT"]) == 0
    )
    assert "resnet56-ADN from" in capsys.readouterr().out
    assert cli_main(["eval", "--weights", str(files / "good.safetensors"), "--val-subset", "8"]) == 0  # no args:
    assert "resnet20-ADN from" in capsys.readouterr().out  # the default model


def test_default_output_dir_starts_a_new_run_beside_earlier_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_output_dir("resnet20") == "output/resnet20"
    assert default_output_dir("resnet20", latest=True) == "output/resnet20"  # --resume auto: a fresh start
    for name in ("resnet20", "resnet20-2"):
        (tmp_path / "output" / name).mkdir(parents=True)
        (tmp_path / "output" / name / "checkpoint.pth").write_bytes(b"earlier run")
    assert default_output_dir("resnet20") == "output/resnet20-3"
    assert default_output_dir("resnet20", latest=True) == "output/resnet20-2"
    assert default_output_dir("resnet56") == "output/resnet56"


def test_corrupt_image_in_a_worker_process_and_skip_mode(files, tmp_path):
    """Real stderr: with DataLoader workers the error still names the file on one line; skip mode trains on."""
    base = [*ADN, "train", "--data-path", str(files / "imgs"), "-b", "4", "--epochs", "1", "--output-dir"]
    r = run([*base, str(tmp_path / "a"), "-j", "2"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"adn: error: cannot read image {files}/imgs/train/a/9.png (not an image file PIL can decode); "
        "fix or remove it, or pass --bad-images skip to skip unreadable images"
    ]
    r = run([*base, str(tmp_path / "b"), "--bad-images", "skip"])
    assert r.returncode == 0, r.stderr
    assert f"adn: warning: skipping unreadable image {files}/imgs/train/a/9.png" in r.stderr
    assert "1 skipped so far" in r.stderr and "sub-networks of" in r.stdout


# ------------------------------------------------------------------------------------------ untrusted files
def test_malicious_pickle_does_not_run_and_legacy_pickles_need_the_flag(files, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")  # would create the marker file when unpickled

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    for command in (["eval", "--weights"], ["train", *TINY, "--output-dir", str(tmp_path / "o"), "--resume"]):
        assert cli_main([*command, str(tmp_path / "evil.pth")]) == 2
        err = capsys.readouterr().err
        assert "contains pickled Python objects (io.open)" in err and "--unsafe-pickle" in err, err
    assert not marker.exists()
    with pytest.raises(ValueError, match="safe loading refuses"):
        load_weights(adn.create_model("resnet20"), tmp_path / "evil.pth")
    assert not marker.exists()
    # a trusted legacy file (numpy scalar inside) loads with the explicit flag, with a warning
    assert cli_main(["eval", "--weights", str(files / "legacy.pth"), "--val-subset", "16", "--unsafe-pickle"]) == 0
    captured = capsys.readouterr()
    assert "adn: warning: loading" in captured.err and "Acc@1" in captured.out


def test_safetensors_round_trip_and_eval(tmp_path, capsys):
    model = adn.create_model("resnet20", num_classes=10)
    save_weights(model, tmp_path / "w.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # nothing temporary left
    assert (tmp_path / "w.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, no pickle
    fresh = load_weights(adn.create_model("resnet20", num_classes=10), tmp_path / "w.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert (
        cli_main(["eval", "--weights", str(tmp_path / "w.safetensors"), "--val-subset", "16", "--skip-cfg", "TTT"]) == 0
    )
    assert "sub-network TTT" in capsys.readouterr().out
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:100])
    with pytest.raises(ValueError, match="cannot read safetensors file .*cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")


# ------------------------------------------------------------------------------------- interrupted training
RUN = [
    *ADN,
    "train",
    "--calib-images",
    "16",
    "--train-subset",
    "96",
    "--val-subset",
    "16",
    "-b",
    "16",
    "--epochs",
    "3",
    "--print-freq",
    "1",
    "--lr-scheduler",
    "steplr",
    "--lr-step-size",
    "1",
    "--mixup-alpha",
    "0.2",
    "--auto-augment",
    "ta_wide",
    "--model-ema",
    "--model-ema-steps",
    "2",
    "--seed",
    "7",
    "--use-deterministic-algorithms",
]


def _interrupt(out_dir: Path, sig: int, after: str, timeout: float = 90):
    """Start a run, send ``sig`` to it once a stdout line starts with ``after``; return (status, stderr)."""
    proc = subprocess.Popen(
        [*RUN, "--output-dir", str(out_dir)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith(after):
                (os.killpg if sig == signal.SIGKILL else os.kill)(proc.pid, sig)
                break
        _, err = proc.communicate()
    finally:
        watchdog.cancel()
    return proc.returncode, err


def _final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(out_dir / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and ckpt["position"] is None
    return {**ckpt["model"], **{f"ema.{k}": v for k, v in ckpt["model_ema"].items()}}


def _assert_bit_exact(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff == 0.0, f"max abs diff {diff} over {len(a)} tensors"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    r = run([*RUN, "--output-dir", str(out_dir)])
    assert r.returncode == 0, r.stderr[-3000:]
    return _final_weights(out_dir)


@pytest.mark.slow
def test_sigkill_then_elastic_restart_resumes_bit_exact(uninterrupted, tmp_path):
    out_dir = tmp_path / "run"
    status, _ = _interrupt(out_dir, signal.SIGKILL, "Epoch 1 [3/")  # killed mid-epoch 1
    assert status == -signal.SIGKILL
    assert load_checkpoint(out_dir / "checkpoint.pth")["epoch"] == 0
    # what torchrun --max-restarts does: restart the same command with TORCHELASTIC_RESTART_COUNT=1
    r = run([*RUN, "--output-dir", str(out_dir)], env={"TORCHELASTIC_RESTART_COUNT": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "at epoch 1" in r.stdout
    _assert_bit_exact(uninterrupted, _final_weights(out_dir))
    assert load_weights(
        adn.create_model("resnet20", num_classes=10), out_dir / "model.safetensors"
    )  # final EMA weights


# A worker that dies hard (SIGKILL) in its first life, once epoch 0's checkpoint is on disk.
_CRASH_ONCE = """
import os, signal, sys
import adn.training.fit
from adn.cli import main

if os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
    train_one_epoch = adn.training.fit.train_one_epoch

    def crash_at_epoch_1(*args, **kwargs):  # epoch 0's checkpoint is on disk by then, whatever the machine's speed
        if args[6] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return train_one_epoch(*args, **kwargs)

    adn.training.fit.train_one_epoch = crash_at_epoch_1
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_restarts_a_killed_worker_and_the_run_resumes_by_itself(tmp_path):
    script, out_dir = tmp_path / "crash_once.py", tmp_path / "run"
    script.write_text(_CRASH_ONCE)
    r = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "--max-restarts=1",
            str(script),
            *RUN[len(ADN) :],
            "--output-dir",
            str(out_dir),
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "failed (exitcode: -9)" in r.stderr  # torchrun saw the first worker die ...
    assert "resumed from" in r.stdout  # ... and the restarted one found the checkpoint without --resume
    assert load_checkpoint(out_dir / "checkpoint.pth")["epoch"] == 2


@pytest.mark.slow
def test_sigterm_saves_at_a_step_boundary_and_resumes_bit_exact(uninterrupted, tmp_path):
    out_dir = tmp_path / "run"
    status, err = _interrupt(out_dir, signal.SIGTERM, "Epoch 1 [2/")
    assert status == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    ckpt = load_checkpoint(out_dir / "checkpoint.pth")
    position = ckpt["position"]
    # mid-epoch (the usual case): the next step of epoch 1 is recorded; on a machine slow to deliver the signal,
    # epoch 1 may have ended first: then it is saved whole. Either way the message and the checkpoint agree.
    mid_epoch = position is not None
    assert ckpt["epoch"] == (0 if mid_epoch else 1)
    assert not mid_epoch or (position["epoch"] == 1 and 2 <= position["step"] < 6), position
    assert (f"stopped at epoch 1 step {position['step']}" if mid_epoch else "stopped after epoch 1") in err
    r = run([*RUN, "--output-dir", str(out_dir), "--resume", "auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_bit_exact(uninterrupted, _final_weights(out_dir))
