"""The command line end to end, as a user runs it: adn train, adn eval, the seed's train_adn.py commands."""

import json
import sys

import pytest

from adn.core.checkpoint import load_checkpoint
from helpers import ADN, run

TINY = ["--train-subset", "64", "--val-subset", "48", "-b", "32", "--epochs", "1", "--calib-images", "32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("train") / "run"
    result = run([*ADN, "train", *TINY, "--model-ema", "--model-ema-steps", "1", "--output-dir", str(out_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    return out_dir, result.stdout


def test_train_writes_seed_layout_checkpoints_metrics_and_table(trained):
    out_dir, stdout = trained
    assert {"checkpoint.pth", "model_0.pth", "metrics.jsonl"} <= {p.name for p in out_dir.iterdir()}
    ckpt = load_checkpoint(out_dir / "checkpoint.pth")
    assert {"model", "optimizer", "lr_scheduler", "epoch", "args", "model_ema", "scaler"} <= set(ckpt)
    assert ckpt["args"]["model"] == "resnet20" and ckpt["args"]["epochs"] == 1
    record = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert {"epoch", "super_acc1", "base_acc1", "ema_base_acc1", "train_loss", "train_images_per_s"} <= set(record)
    assert ckpt["model_ema"]["n_averaged"].item() == 2  # one EMA update per step
    # the final sub-network table lists all 2^3 sub-networks
    for skip in ("FFF", "TFT", "TTT"):
        assert any(line.startswith(skip + " ") for line in stdout.splitlines()), stdout
    assert "built-in" in stdout or "Handwritten Digits" in stdout


def test_eval_one_subnet_and_the_seed_command_shape(trained):
    out_dir, _ = trained
    result = run(
        [
            *ADN,
            "eval",
            "--model",
            "resnet20",
            "--resume",
            str(out_dir / "checkpoint.pth"),
            "--skip-cfg",
            "True",
            "True",
            "True",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert "sub-network TTT: Acc@1" in result.stdout
    ema = run([*ADN, "eval", "--resume", str(out_dir / "checkpoint.pth"), "--model-ema", "--skip-cfg", "FTF"])
    assert ema.returncode == 0, ema.stderr
    assert "(EMA weights), sub-network FTF: Acc@1" in ema.stdout
    seed = run(
        [
            sys.executable,
            "train_adn.py",
            "--model",
            "resnet20",
            "--test-only",
            "--resume",
            str(out_dir / "model_0.pth"),
            "--batch-size",
            "256",
            "--skip-cfg",
            "False",
            "False",
            "False",
        ]
    )
    assert seed.returncode == 0, seed.stderr
    assert "sub-network FFF: Acc@1" in seed.stdout


def test_eval_all_subnets_as_json_and_csv_file(trained, tmp_path):
    out_dir, _ = trained
    result = run(
        [
            *ADN,
            "eval",
            "--resume",
            str(out_dir / "checkpoint.pth"),
            "--all-subnets",
            "--format",
            "json",
            "--output",
            str(tmp_path / "subnets.csv"),
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["skip"] for r in rows][:2] == ["FFF", "FFT"] and len(rows) == 8
    assert rows[0]["gflops"] > rows[-1]["gflops"] and rows[0]["params_m"] > rows[-1]["params_m"]
    assert all(0 <= r["acc1"] <= r["acc5"] <= 100 for r in rows)
    assert (tmp_path / "subnets.csv").read_text().startswith("[")  # --output writes the --format shown


def test_weights_flag_accepts_a_published_style_state_dict(trained, tmp_path):
    import torch

    out_dir, _ = trained
    sd = load_checkpoint(out_dir / "checkpoint.pth")["model"]
    torch.save({"module." + k.replace(".skip_norm.", "_skip."): v for k, v in sd.items()}, tmp_path / "pub.pth")
    result = run([*ADN, "eval", "--weights", str(tmp_path / "pub.pth"), "--skip-cfg", "TTT", "--format", "csv"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "skip,gflops,params_m,acc1,acc5"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--skip-cfg", "True", "True", "True"], "evaluation only"),
        (["eval"], "nothing to evaluate"),
        (["eval", "--resume", "missing.pth"], "not found"),
        (["eval", "--resume", "a.pth", "--weights", "b.pth"], "give one of them"),
        (["train", "--model", "nosuchnet"], "unknown model"),
        (["train", "--subpath-alpha", "1.5"], "--subpath-alpha"),
        (["train", "--opt", "lbfgs"], "invalid choice"),
        (["train", "--lr-scheduler", "multisteplr"], "--lr-multi-steps"),
    ],
)
def test_bad_flags_give_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    from adn.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_help_lists_the_seed_flags():
    from adn.cli.train import get_args_parser

    text = get_args_parser().format_help()
    for flag in (
        "--skip-cfg",
        "--subpath-alpha",
        "--subpath-temp",
        "--kd-topk",
        "--lr-multi-steps",
        "--model-ema",
        "--ra-sampler",
        "--norm-weight-decay",
        "--transformer-embedding-decay",
        "--all-subnets",
        "--train-subset",
        "--use-deterministic-algorithms",
        "--clip-grad-norm",
        "--lr-warmup-decay",
    ):
        assert flag in text, flag


def test_built_in_preset_warms_up_and_short_or_other_runs_do_not(tmp_path):
    """Two linear warm-up epochs in the built-in preset (deeper models diverge at lr 0.2 without), shrunk for
    short runs; none with --data-path (the torchvision reference's default) or when fine-tuning; flags win."""
    from adn.cli.train import parse

    def warm(argv):
        args = parse([*argv, "--output-dir", str(tmp_path / "run"), "--device", "cpu"])
        return args.lr_warmup_epochs, args.lr_warmup_method

    assert warm([]) == (2, "linear")
    assert warm(["--epochs", "7"]) == (1, "linear") and warm(["--epochs", "4"])[0] == 0
    assert warm(["--data-path", str(tmp_path)]) == (0, "constant")
    assert warm(["--pretrained", "plain.pth"])[0] == 0
    assert warm(["--lr-warmup-epochs", "3", "--lr-warmup-method", "constant"]) == (3, "constant")
