"""A run as a user lives it: resume continues the same run, checkpoints are kept within bounds and carry what
inference needs, the final table is calibrated, and every subcommand's help shows its own flags only."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from adn.cli import COMMANDS
from adn.cli import main as cli_main
from adn.core.checkpoint import load_checkpoint
from helpers import ADN, ROOT, child_env, run

TINY = ["--train-subset", "64", "--val-subset", "48", "-b", "32", "--print-freq", "100", "--calib-images", "64"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A 1-epoch run with non-default flags, then the same run resumed and extended to 3 epochs."""
    out = tmp_path_factory.mktemp("run") / "r"
    args = [
        *ADN,
        "train",
        *TINY,
        "--epochs",
        "1",
        "--lr",
        "0.05",
        "--use-deterministic-algorithms",
        "--keep-checkpoints",
        "1",
        "--output-dir",
        str(out),
    ]
    one = run(args)
    assert one.returncode == 0, one.stderr[-2000:]
    extended = run([*ADN, "train", "--resume", str(out / "checkpoint.pth"), "--epochs", "3"])
    assert extended.returncode == 0, extended.stderr[-2000:]
    return out, one.stdout, extended.stdout


def test_resume_is_the_same_run(first):
    out, _, resumed = first
    assert "the run's own arguments restored:" in resumed and "--lr" in resumed and "--use-deterministic" in resumed
    assert "--epochs 1 -> 3: the cosine schedule now spans 3 epochs" in resumed
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["epoch"] == 2 and ckpt["args"]["lr"] == 0.05 and ckpt["args"]["use_deterministic_algorithms"]
    assert ckpt["args"]["output_dir"] == str(out)  # continued in its own folder, no output/<model>-2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_resumed_run_refuses_changed_arguments(first, capsys):
    out, _, _ = first
    assert cli_main(["train", "--resume", str(out / "checkpoint.pth"), "--lr", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.3 differs from the resumed run's 0.05" in err and len(err.strip().splitlines()) == 1


def test_checkpoints_are_bounded_readable_and_carry_inference_metadata(first):
    out, _, _ = first
    models = sorted(p.name for p in out.glob("model_*.pth"))
    best = load_checkpoint(out / "checkpoint.pth")["best"]["epoch"]
    assert "model_2.pth" in models and len(models) <= 2 and f"model_{best}.pth" in models  # last 1 + the best
    mode = stat.S_IMODE((out / "checkpoint.pth").stat().st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # an ordinary file, not 0600
    meta = load_checkpoint(out / "model.safetensors")["meta"]
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input_size"] == 32
    assert len(meta["mean"]) == 3 and meta["model"] == "resnet20"
    assert [r["skip"] for r in meta["subnets"]] == ["FFF", "FFT", "FTF", "FTT", "TFF", "TFT", "TTF", "TTT"]
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_final_table_shows_as_trained_and_calibrated_accuracy(first):
    _, _, resumed = first
    assert re.search(r"skip\s+GFLOPs\s+params\(M\)\s+Acc@1 as trained\s+Acc@1 calibrated\s+Acc@5", resumed)
    assert "calibrated the BatchNorm statistics of 8 sub-networks on 64 training images" in resumed


def test_predict_prints_labels_from_the_checkpoint(first, tmp_path):
    out, _, _ = first
    image = tmp_path / "digit.png"
    Image.fromarray(np.tile(np.eye(8, dtype=np.uint8)[:, :, None] * 255, (1, 1, 3))).save(image)
    result = run([*ADN, "predict", "--weights", str(out / "model.safetensors"), "--skip-cfg", "TTT", str(image)])
    assert result.returncode == 0, result.stderr
    assert "resnet20 sub-network TTT" in result.stdout
    line = result.stdout.splitlines()[-1]
    assert line.startswith(f"{image}: ") and line.count("%") == 3


def test_calibrate_command_writes_a_calibrated_file(first, tmp_path, capsys):
    out, _, _ = first
    target = tmp_path / "cal.safetensors"
    assert (
        cli_main(
            [
                "calibrate",
                "--weights",
                str(out / "model_2.pth"),
                "--calib-images",
                "32",
                "--val-subset",
                "32",
                "--output",
                str(target),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "calibrated 8 sub-networks of resnet20 on 32 training images" in printed and "Acc@1 calibrated" in printed
    assert any(k.startswith("calibration.TTT.") for k in load_checkpoint(target)["model"])


def test_quiet_runs_print_only_the_result(tmp_path):
    result = run([*ADN, "train", *TINY, "--epochs", "1", "--quiet", "--output-dir", str(tmp_path / "q")])
    assert result.returncode == 0, result.stderr
    assert "Epoch 0 [" not in result.stdout and "epoch 0:" not in result.stdout and "TTT " in result.stdout


def test_eval_into_a_closed_pipe_ends_quietly(first):
    out, _, _ = first
    proc = subprocess.run(
        f"{sys.executable} -m adn eval --resume {out / 'checkpoint.pth'} --all-subnets | head -1",
        shell=True,
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------------ help
#: every command's --help, a command group's (adn detect) for each of its commands
HELP = [[c] for c in COMMANDS if c != "detect"] + [["detect", "train"], ["detect", "eval"]]


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_each_subcommand_documents_every_flag_once(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line
    flags = re.findall(r"^\s{2}(-{1,2}[\w-]+)", text, re.M)
    assert flags, text
    # every option has help text: an option line never ends bare (its help follows on the same or next line)
    blocks = re.split(r"\n(?=\s{2}-)", text)
    assert all(len(b.split()) > 2 for b in blocks if b.lstrip().startswith("-")), text


def test_eval_help_lists_evaluation_flags_only(capsys):
    with pytest.raises(SystemExit):
        cli_main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "--skip-cfg" in text and "--all-subnets" in text
    for training_flag in ("--lr ", "--mixup-alpha", "--opt ", "--epochs", "--model-ema-decay"):
        assert training_flag not in text, training_flag


def test_pretrained_true_says_what_to_do(tmp_path):
    import adn

    with pytest.raises(ValueError, match="downloads no weights: pass weights=PATH"):
        adn.create_model("resnet20", pretrained=True)
    model = adn.create_model("resnet20", num_classes=10)
    assert model.info.input_size == 32 and model.info.classifier == "fc"
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = adn.create_model("resnet20", num_classes=10, pretrained_cfg_overlay={"file": tmp_path / "w.pth"})
    assert torch.equal(again.fc.weight, model.fc.weight)


def test_export_format_follows_the_suffix_and_carries_metadata(first, tmp_path, capsys):
    out, _, _ = first
    target = tmp_path / "m.pt"
    assert (
        cli_main(["export", "--weights", str(out / "model.safetensors"), "--skip-cfg", "TTT", "--output", str(target)])
        == 0
    )
    extra = {"adn.json": ""}
    torch.jit.load(str(target), _extra_files=extra)
    meta = json.loads(extra["adn.json"])
    assert meta["skip"] == "TTT" and meta["classes"][:2] == ["0", "1"] and meta["input_size"] == 32
    capsys.readouterr()
    assert (
        cli_main(
            [
                "export",
                "--model",
                "resnet20",
                "--skip-cfg",
                "TTT",
                "--format",
                "torchscript",
                "--output",
                str(tmp_path / "x.onnx"),
            ]
        )
        == 2
    )
    assert "names an ONNX file" in capsys.readouterr().err


def test_fashion_mnist_end_to_end_and_eval_takes_the_dataset_it_was_trained_on(tmp_path, capsys):
    from adn.data import fashion_mnist

    if not (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / "f"
    result = run([*ADN, "train", "--dataset", "fashion-mnist", *TINY, "--epochs", "1", "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Fashion-MNIST" in result.stdout and "TTT " in result.stdout
    assert cli_main(["eval", "--resume", str(out / "checkpoint.pth"), "--val-subset", "64"]) == 0
    assert "sub-network FFF" in capsys.readouterr().out
    meta = load_checkpoint(out / "model.safetensors")["meta"]
    assert meta["dataset"] == "fashion-mnist" and meta["classes"][0] == "T-shirt/top"
