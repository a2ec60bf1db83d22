"""The reference code's README commands, pasted as they are: train each architecture with its published recipe,
then evaluate the checkpoint with the reference's evaluation command. Only the paths change, torchrun becomes one
process, and a tail of overrides (appended, so argparse keeps the last value) shrinks the run to one tiny epoch."""

import shlex
import sys

import numpy as np
import pytest
from PIL import Image

import adn
from adn.core.checkpoint import load_checkpoint
from helpers import ROOT, run

# The reference README's training commands (`torchrun --nproc_per_node=N train_adn.py` prefix and the
# `2>&1 | tee` suffix removed), with <checkpoint directory> -> {out} and <ILSVRC2012 data path> -> {data}.
TRAIN = {
    "resnet50": "--model resnet50 --batch-size 128 --lr-scheduler multisteplr --lr-multi-steps 60 100 140 "
    "--epochs 150 --norm-weight-decay 0 --bias-weight-decay 0 --output-dir {out} --data-path {data}",
    "mobilenet_v2": "--model mobilenet_v2 --epochs 300 --lr 0.1 --wd 0.00001 --lr-scheduler multisteplr "
    "--lr-multi-steps 150 225 285 --batch-size 128 --norm-weight-decay 0 --bias-weight-decay 0 "
    "--output-dir {out} --data-path {data}",
    "swin_t": "--model swin_t --epochs 300 --batch-size 256 --opt adamw --lr 0.001 --weight-decay 0.05 "
    "--norm-weight-decay 0.0  --bias-weight-decay 0.0 --transformer-embedding-decay 0.0 "
    "--lr-scheduler cosineannealinglr --lr-min 0.00001 --lr-warmup-method linear  --lr-warmup-epochs 20 "
    "--lr-warmup-decay 0.01 --amp --label-smoothing 0.1 --mixup-alpha 0.8 --clip-grad-norm 5.0 "
    "--cutmix-alpha 1.0 --random-erase 0.25 --interpolation bicubic --auto-augment ta_wide --model-ema "
    "--ra-sampler --ra-reps 4  --val-resize-size 224 --output-dir {out} --data-path {data}",
    "vit_b_16": "--model vit_b_16 --epochs 300 --batch-size 192 --opt adamw --lr 0.00056 --wd 0.2 "
    "--lr-scheduler cosineannealinglr --lr-warmup-method linear --lr-warmup-epochs 30 "
    "--lr-warmup-decay 0.033 --amp --label-smoothing 0.11 --mixup-alpha 0.2 --auto-augment ra "
    "--clip-grad-norm 1 --ra-sampler --cutmix-alpha 1.0 --model-ema --output-dir {out} "
    "--data-path {data}",
}
# The reference README's evaluation commands (base-net; the super-net ones differ only in --skip-cfg).
EVAL = {
    "resnet50": "--model resnet50 --test-only --resume {ckpt} --batch-size 256 --skip-cfg True True True True  "
    "--data-path {data}",
    "swin_t": "--model swin_t --test-only --resume {ckpt} --batch-size 256 --skip-cfg True True True True "
    "--model-ema --interpolation bicubic --data-path {data}",
    "vit_b_16": "--model vit_b_16 --test-only --resume {ckpt} --batch-size 256 --skip-cfg True True True True "
    "--model-ema --data-path {data}",
}
TINY = "--epochs 1 --lr-warmup-epochs 0 --batch-size 2 --print-freq 1 --calib-images 4"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("n01440764", "n01443537"):  # two ImageNet-style class folders
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.JPEG"
                )
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model", list(TRAIN))
def test_reference_recipe_trains_and_its_eval_command_runs(model, data, tmp_path):
    out = tmp_path / "checkpoint"
    train = run(
        [sys.executable, "train_adn.py", *shlex.split(TRAIN[model].format(out=out, data=data)), *shlex.split(TINY)],
        cwd=ROOT,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert f"sub-networks of {model}-ADN" in train.stdout
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["args"]["model"] == model and ckpt["args"]["epochs"] == 1
    head = adn.model_info(model).classifier
    assert ckpt["model"][f"{head}.bias"].shape == (2,)  # the class count of the folders
    assert (ckpt["model_ema"] is not None) == ("--model-ema" in TRAIN[model])
    if model in EVAL:
        result = run(
            [sys.executable, "train_adn.py", *shlex.split(EVAL[model].format(ckpt=out / "checkpoint.pth", data=data))],
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "sub-network TTTT: Acc@1" in result.stdout
