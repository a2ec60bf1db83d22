"""adn train --pretrained FILE: a trained plain model (torchvision's own, no twins) fine-tuned into an ADN from the
command line, with the fine-tuning preset for every flag not given."""

import json
import math

import pytest
import torch

from adn.cli.train import BUILTIN_PRESET, FINETUNE_PRESET, REFERENCE_DEFAULTS, parse
from adn.errors import UsageError
from helpers import ADN, run

SMALL_32PX = ["--train-crop-size", "32", "--val-crop-size", "32"]


def test_pretrained_resolves_the_fine_tuning_preset(tmp_path):
    out = ["--output-dir", str(tmp_path / "run"), "--device", "cpu"]
    args = parse(["--model", "tv:mobilenet_v3_small", "--pretrained", "plain.pth", *out])
    assert args.epochs == FINETUNE_PRESET["epochs"] == 5
    assert args.lr == pytest.approx(BUILTIN_PRESET["lr"] * FINETUNE_PRESET["lr_scale"])  # 0.02
    assert args.lr_scheduler == "cosineannealinglr"
    assert args.batch_size == BUILTIN_PRESET["batch_size"]  # everything else: the built-in preset
    given = parse(["--pretrained", "plain.pth", "--epochs", "2", "--lr", "0.05", "--lr-scheduler", "steplr", *out])
    assert (given.epochs, given.lr, given.lr_scheduler) == (2, 0.05, "steplr")
    imagenet = parse(["--pretrained", "plain.pth", "--data-path", str(tmp_path), *out])
    assert imagenet.epochs == 5 and imagenet.lr == pytest.approx(REFERENCE_DEFAULTS["lr"] / 10)
    plain = parse(out)  # without --pretrained nothing changes
    assert (plain.epochs, plain.lr) == (BUILTIN_PRESET["epochs"], BUILTIN_PRESET["lr"])
    with pytest.raises(UsageError, match="--pretrained"):
        parse(["--pretrained", "plain.pth", "--weights", "other.pth", *out])


@pytest.mark.slow
def test_fine_tunes_a_plain_torchvision_model_and_tables_every_subnet(tmp_path):
    import torchvision

    torch.manual_seed(0)
    plain = torchvision.models.mobilenet_v3_small(num_classes=10)
    torch.save(plain.state_dict(), tmp_path / "plain.pth")
    out_dir = tmp_path / "run"
    cmd = [*ADN, "train", "--model", "tv:mobilenet_v3_small", "--pretrained", str(tmp_path / "plain.pth")]
    cmd += ["--train-subset", "64", "--val-subset", "32", "-b", "32", "--calib-images", "32", *SMALL_32PX]
    result = run([*cmd, "--output-dir", str(out_dir)], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    start = next(line for line in result.stdout.splitlines() if "fine-tuning" in line)
    assert f"fine-tuning {tmp_path / 'plain.pth'} into tv:mobilenet_v3_small-ADN (4 stages" in start
    assert "at 32x32 px for 5 epochs" in start  # the preset's epochs
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["lr"] == pytest.approx(0.02)  # a tenth of the built-in 0.2, then cosine
    assert records[-1]["lr"] < records[0]["lr"] and all(math.isfinite(r["train_loss"]) for r in records)

    # every one of the 2^4 sub-networks in the final table, as trained and calibrated
    table = result.stdout[result.stdout.index("sub-networks of tv:mobilenet_v3_small-ADN") :]
    assert "Acc@1 as trained" in table and "Acc@1 calibrated" in table
    rows = {line.split()[0] for line in table.splitlines() if line[:4].strip("TF") == "" and line[4:5] == " "}
    assert rows == {f"{a}{b}{c}{d}" for a in "TF" for b in "TF" for c in "TF" for d in "TF"}

    # it started from the plain weights (a few small steps away), not from a fresh initialisation
    from safetensors.torch import load_file

    tuned = load_file(out_dir / "model.safetensors")
    name = "features.0.0.weight"
    torch.manual_seed(1)
    other = torchvision.models.mobilenet_v3_small(num_classes=10).state_dict()[name]
    moved = (tuned[name] - plain.state_dict()[name]).abs().mean()
    assert moved < 0.1 * (other - plain.state_dict()[name]).abs().mean()
    assert any(".skip_norm." in k for k in tuned)  # the twins are in the ADN's weights
