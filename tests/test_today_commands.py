"""The reference README of today, pasted as it is (reference-today.md): every training and evaluation command parses
to the run it describes -- ``--fpn`` appended to the ResNet ones, as that README suggests -- and the newest recipe
(ResNet-50 v2: ``--train-crop-size 176 --val-resize-size 232 --ra-reps=4``) trains with ``--fpn`` on a tiny
ImageFolder, then its evaluation command runs on a bare state dict (``--weights``). Only the paths change,
torchrun becomes one process, and a tail of overrides (appended: argparse keeps the last value) shrinks the run."""

from __future__ import annotations

import shlex
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from adn.cli.train import parse
from adn.core.checkpoint import load_checkpoint
from helpers import ROOT, run

# today's README training commands (`torchrun --nproc_per_node=4 train_adn.py` removed), placeholders as {out}/{data}
TRAIN = {
    "resnet50": "--model resnet50 --batch-size 64 --lr-scheduler multisteplr --lr-multi-steps 60 100 140 --epochs 150 "
    "--norm-weight-decay 0 --bias-weight-decay 0 --subpath-temp 1.0 --output-dir {out} --data-path {data}",
    "resnet50-v2": "--model resnet50 --batch-size 256 --lr 0.5 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 "
    "--lr-warmup-method linear --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 "
    "--norm-weight-decay 0.0 --mixup-alpha 0.2 --cutmix-alpha 1.0 --train-crop-size 176 --model-ema "
    "--val-resize-size 232 --ra-sampler --ra-reps=4 --bias-weight-decay 0 --amp --subpath-temp 1.0 "
    "--data-path {data}",
    "mobilenet_v2": "--model mobilenet_v2 --epochs 300 --lr 0.1 --wd 0.00001 --lr-scheduler multisteplr "
    "--lr-multi-steps 150 225 285 --batch-size 64 --norm-weight-decay 0 --bias-weight-decay 0 --subpath-temp 1.0 "
    "--output-dir {out} --data-path {data}",
    "swin_t": "--model swin_t --epochs 300 --batch-size 256 --opt adamw --lr 0.001 --weight-decay 0.05 "
    "--norm-weight-decay 0.0  --bias-weight-decay 0.0 --transformer-embedding-decay 0.0 --lr-scheduler "
    "cosineannealinglr --lr-min 0.00001 --lr-warmup-method linear  --lr-warmup-epochs 20 --lr-warmup-decay 0.01 "
    "--amp --label-smoothing 0.1 --mixup-alpha 0.8 --clip-grad-norm 5.0 --cutmix-alpha 1.0 --random-erase 0.25 "
    "--interpolation bicubic --auto-augment ta_wide --model-ema --ra-sampler --ra-reps 4  --val-resize-size 224 "
    "--subpath-temp 1.0 --output-dir {out} --data-path {data}",
    "vit_b_16": "--model vit_b_16 --epochs 300 --batch-size 256 --opt adamw --lr 0.00075 --wd 0.2 --lr-scheduler "
    "cosineannealinglr --lr-warmup-method linear --lr-warmup-epochs 30 --lr-warmup-decay 0.033 --amp "
    "--label-smoothing 0.11 --mixup-alpha 0.2 --auto-augment ra --clip-grad-norm 1 --ra-sampler --cutmix-alpha 1.0 "
    "--model-ema --subpath-temp 1.0 --output-dir {out} --data-path {data}",
}
# today's README evaluation commands; <weights file> -> {weights}
EVAL = {
    "resnet50": "--model resnet50 --test-only --weights {weights} --batch-size 256 --skip-cfg False False False "
    "False  --data-path {data}",
    "resnet50-v2": "--test-only --model resnet50 --batch-size 256 --val-resize-size 232 --weights {weights} "
    "--skip-cfg False False False False --data-path {data}",
    "mobilenet_v2": "--model mobilenet_v2 --test-only --weights {weights} --batch-size 256 --skip-cfg False False "
    "False False False --data-path {data}",
    "swin_t": "--model swin_t --test-only --weights {weights} --batch-size 256 --skip-cfg False False False False "
    "--model-ema --interpolation bicubic --data-path {data}",
    "vit_b_16": "--model vit_b_16 --test-only --weights {weights} --batch-size 256 --skip-cfg False False False "
    "False --model-ema --data-path {data}",
}
TINY = "--epochs 1 --lr-warmup-epochs 0 --batch-size 2 --print-freq 1 --calib-images 0"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("n01440764", "n01443537"):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.JPEG"
                )
    return root


# "Add --fpn to include intermediate features for self-distillation" (its ResNet commands)
CASES = [(r, False) for r in TRAIN] + [(r, True) for r in TRAIN if r.startswith("resnet")]


@pytest.mark.parametrize("recipe, fpn", CASES)
def test_todays_training_commands_parse_to_their_run(recipe, fpn, tmp_path):
    argv = shlex.split(TRAIN[recipe].format(out=tmp_path / "out", data=tmp_path)) + (["--fpn"] if fpn else [])
    args = parse(argv)
    assert args.model == recipe.split("-")[0] and args.subpath_temp == 1.0 and args.fpn is fpn
    if recipe == "resnet50-v2":
        assert (args.train_crop_size, args.val_resize_size, args.ra_reps) == (176, 232, 4)
        assert args.ra_sampler and args.model_ema and args.amp and args.epochs == 600
    if recipe == "swin_t":
        assert args.ra_reps == 4 and args.interpolation == "bicubic"


@pytest.mark.parametrize("recipe", list(EVAL))
def test_todays_evaluation_commands_parse(recipe, tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")  # only its name is read at parse time
    args = parse(shlex.split(EVAL[recipe].format(weights=tmp_path / "w.pth", data=tmp_path)))
    assert args.test_only and args.weights == str(tmp_path / "w.pth") and args.skip_cfg.count("False") >= 4


@pytest.mark.slow
def test_resnet50_v2_recipe_with_fpn_trains_and_its_eval_command_runs_on_a_bare_state_dict(data, tmp_path):
    out, cache = tmp_path / "checkpoint", tmp_path / "cache"
    train = run(
        [
            sys.executable,
            "train_adn.py",
            *shlex.split(TRAIN["resnet50-v2"].format(data=data)),
            "--fpn",
            "--cache-dataset",
            *shlex.split(f"{TINY} --output-dir {out}"),
        ],
        cwd=ROOT,
        env={"ADN_CACHE_DIR": str(cache)},
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "sub-networks of resnet50-ADN" in train.stdout
    assert len(list(cache.glob("*.json"))) == 2  # the train/ and val/ file indexes
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["args"]["fpn"] and ckpt["args"]["train_crop_size"] == 176 and ckpt["args"]["ra_reps"] == 4
    # the weights file as the reference publishes it: the state dict itself, its twins named <norm>_skip
    bare = {k.replace(".skip_norm.", "_skip."): v for k, v in ckpt["model"].items()}
    torch.save(bare, tmp_path / "resnet50_adn.pth")
    result = run(
        [
            sys.executable,
            "train_adn.py",
            *shlex.split(EVAL["resnet50-v2"].format(weights=tmp_path / "resnet50_adn.pth", data=data)),
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sub-network FFFF: Acc@1" in result.stdout
