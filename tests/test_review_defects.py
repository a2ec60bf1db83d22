"""Defects a code review found (issue 23, item 3): each test failed before its fix."""

from __future__ import annotations

import importlib
import importlib.util
import json
import types

import pytest
import torch
from torch import nn

import adn
from adn.core.checkpoint import load_checkpoint, save_weights
from helpers import ROOT

TINY = ["--train-subset", "32", "--val-subset", "32", "-b", "16", "--max-steps", "1", "-q", "--device", "cpu"]


def test_importing_the_trainer_keeps_adn_evaluate_the_function():
    importlib.import_module("adn.training.fit")
    assert callable(adn.evaluate) and not isinstance(adn.evaluate, types.ModuleType)
    assert importlib.import_module("adn.evaluation.evaluate").evaluate_subnets  # evaluation lives under its own name


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory):
    """One epoch of resnet20 (32 px) trained on 24 px crops, with an EMA."""
    from adn.cli.train import main

    out = tmp_path_factory.mktemp("crop") / "run"
    flags = [*TINY, "--epochs", "1", "--train-crop-size", "24", "--model-ema", "--calib-images", "16"]
    assert main([*flags, "--output-dir", str(out)]) == 0
    return out


def test_train_crop_size_does_not_become_the_inference_size(cropped_run):
    meta = load_checkpoint(cropped_run / "checkpoint.pth")["meta"]
    assert meta["input_size"] == 32 and meta["val_crop_size"] == 32  # validation ran at the model's 32 px


def test_resume_with_ema_starts_from_uncalibrated_ema_statistics(cropped_run, monkeypatch):
    import adn.training.fit
    from adn.cli.train import main

    ema_state = load_checkpoint(cropped_run / "checkpoint.pth")["model_ema"]
    assert any(k.startswith("module.calibration.") for k in ema_state)  # the final checkpoint's EMA is calibrated
    seen = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        from torch.optim.swa_utils import AveragedModel

        (ema,) = [a for a in (*args, *kwargs.values()) if isinstance(a, AveragedModel)]
        seen.append(adn.is_calibrated(ema.module))
        raise Stop

    monkeypatch.setattr(adn.training.fit, "train_one_epoch", spy)
    with pytest.raises(Stop):
        main(["--resume", str(cropped_run / "checkpoint.pth"), "--epochs", "2", "-q"])
    assert seen == [False]


def _digits_model_calibrated_on_noise(path):
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    g = torch.Generator().manual_seed(0)
    noise = [(torch.randn(16, 3, 32, 32, generator=g) * 5 + 3, torch.zeros(16, dtype=torch.long)) for _ in range(2)]
    adn.calibrate(model, noise, batches=2)
    save_weights(model, path, meta={"model": "resnet20", "num_classes": 10, "dataset": "digits"})


def test_calibrate_again_reports_as_trained_without_the_old_calibration(tmp_path, capsys):
    from adn.cli.calibrate import main as calibrate_main
    from adn.cli.eval import main as eval_main

    source = tmp_path / "calibrated.safetensors"
    _digits_model_calibrated_on_noise(source)
    common = ["--weights", str(source), "--val-subset", "48", "-b", "48", "--device", "cpu", "-q"]
    assert eval_main([*common, "--all-subnets", "--no-calibration", "--format", "json"]) == 0
    as_trained = json.loads(capsys.readouterr().out)
    out = tmp_path / "again.safetensors"
    assert calibrate_main([*common, "--calib-images", "32", "--output", str(out)]) == 0
    rows = load_checkpoint(out)["meta"]["subnets"]
    assert [r["acc1_trained"] for r in rows] == [r["acc1"] for r in as_trained]


def _autocast_in_backward(model: nn.Module) -> list[bool]:
    seen: list[bool] = []
    model.fc.register_full_backward_hook(lambda m, gi, go: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


def test_train_one_epoch_runs_backward_outside_autocast():
    from adn.training.engine import StepOptions, train_one_epoch

    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=4)
    seen = _autocast_in_backward(model)
    data = [(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    options = StepOptions(amp=True, amp_dtype=torch.bfloat16, print_freq=10**9)
    train_one_epoch(model, adn.SelfDistillation(0.5, 1.0, 4), nn.CrossEntropyLoss(), optimizer, data, "cpu", 0, options)
    assert seen == [False, False]  # super-net and base-net backward


def test_gpu_benchmark_times_the_trainers_step(monkeypatch):
    import adn.training.engine

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    calls = []
    real = adn.training.engine.train_step
    monkeypatch.setattr(adn.training.engine, "train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = adn.create_model("resnet20", num_classes=4)
    seen = _autocast_in_backward(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    steps = gpu.make_steps(model, "FFF", "TTT", opt, None, x, y, torch.bfloat16, 4)
    steps["ADN"]()
    assert calls == [1] and seen == [False, False]
