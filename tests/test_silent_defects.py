"""Results that were silently wrong (issue 29's review): each test failed before its fix."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

import adn
from adn.core.checkpoint import load_state_dict_compat
from adn.training.config import DataConfig, TrainConfig
from adn.training.optim import build_optimizer, build_scheduler


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(opt="adam"), "opt='adam' is not one of"),
        (dict(lr_scheduler="cosine"), "lr_scheduler='cosine' is not one of"),
        (dict(lr=-0.1), "lr=-0.1 must be > 0"),
        (dict(batch_size=0), "batch_size=0 must be >= 1"),
        (dict(subpath_alpha=1.5), "subpath_alpha=1.5 must be <= 1"),
        (dict(interpolation="lanczos"), "interpolation='lanczos' is not one of"),
    ],
)
def test_library_configs_refuse_unknown_values(flags, message):
    with pytest.raises(ValueError, match=message):
        adn.train_config("resnet20", **flags)


def test_optimiser_and_schedule_builders_refuse_what_they_do_not_know():
    model = nn.Linear(2, 2)
    config = adn.train_config("resnet20").optim
    bad_opt = object.__new__(type(config))  # past the dataclass's check, as a hand-made object would be
    bad_opt.__dict__.update({**config.__dict__, "opt": "adam"})
    with pytest.raises(ValueError, match="unknown optimiser 'adam'"):
        build_optimizer(model, bad_opt)
    bad_sched = object.__new__(type(config))
    bad_sched.__dict__.update({**config.__dict__, "lr_scheduler": "cosine"})
    with pytest.raises(ValueError, match="unknown lr scheduler 'cosine'"):
        build_scheduler(build_optimizer(model, config), bad_sched)


def test_dataclass_and_train_config_build_the_same_run():
    made = TrainConfig(model="resnet50", data=DataConfig(data_path="/data/imagenet"))
    assert made == adn.train_config("resnet50", data_path="/data/imagenet")
    assert (made.optim.lr, made.optim.epochs, made.optim.lr_scheduler) == (0.1, 90, "steplr")  # the reference's
    assert TrainConfig() == adn.train_config()  # and the built-in recipe without data


def test_skip_none_means_the_models_default_everywhere():
    model = adn.create_model("resnet20", num_classes=10)
    model.skip = "TTT"
    assert adn.count_flops(model) == adn.count_flops(model, "TTT") < adn.count_flops(model, "FFF")
    assert adn.count_params(model) == adn.count_params(model, "TTT") < adn.count_params(model, "FFF")
    exported = adn.export_subnet(model, None)
    assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"model.resolve_skip\(None\)"):
        adn.parse_skip(None, 3)  # no model to ask: refused, not the super-net


def test_paths_see_attributes_set_after_they_were_built():
    timm = pytest.importorskip("timm")
    model = adn.convert(timm.create_model("resnet18", num_classes=4))
    assert model.subnet("TTTT").grad_checkpointing is False
    model.set_grad_checkpointing(True)  # timm sets an attribute on the model: the paths must see it
    assert model.subnet("TTTT").grad_checkpointing is True and model.subnet("FFFF").grad_checkpointing is True
    model.layer1[0].conv1.stride = (1, 1)  # a hand-set attribute on a copied container's child is shared anyway
    model.fc.note = "x"  # an attribute on a leaf: the same object in every path
    assert model.subnet("TTTT").fc.note == "x"


def test_calibrating_a_compiled_model_calibrates_the_model():
    model = adn.create_model("resnet20", num_classes=10)
    compiled = torch.compile(model)
    loader = [torch.randn(8, 3, 32, 32)]
    adn.calibrate(compiled, loader, subnets=["TTT"], batches=1)
    assert adn.is_calibrated(model, "TTT") and adn.is_calibrated(compiled, "TTT")
    assert "calibration" not in compiled._modules  # not stored on the wrapper, where the model never looks


def test_a_partial_twin_set_keeps_the_twins_the_file_has(capsys):
    model = adn.create_model("resnet20", num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)  # main norms and twins all different
    state = model.state_dict()
    dropped = "layer1.0.bn1.skip_norm.weight"
    partial = {k: v for k, v in state.items() if k != dropped}
    fresh = adn.create_model("resnet20", num_classes=10)
    load_state_dict_compat(fresh, partial)
    loaded = fresh.state_dict()
    kept = [k for k in partial if ".skip_norm." in k]
    assert all(torch.equal(loaded[k], state[k]) for k in kept)  # the file's twins, not copies of the main norms
    assert torch.equal(loaded[dropped], state["layer1.0.bn1.weight"])  # the missing one: a copy of its main norm
    assert "lack 1 of" in capsys.readouterr().err


def test_the_teacher_distils_at_the_configs_temperature():
    from adn.training.teacher import make_distillation

    assert adn.train_config("resnet20", teacher="tv:resnet18", teacher_weights="w.pth").distill.subpath_temp == 2.0
    assert adn.train_config("resnet20").distill.subpath_temp == 1.0
    config = adn.train_config("resnet20", teacher="tv:resnet18", teacher_weights="w.pth", subpath_temp=4.0)
    assert config.distill.subpath_temp == 4.0
    teacher = torchvision.models.resnet18(num_classes=10)
    path = "teacher.pth"
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, path)
        torch.save(teacher.state_dict(), path)
        loss = make_distillation(10, temperature=4.0, teacher="tv:resnet18", teacher_weights=path)
    assert loss.temperature == 4.0


def test_a_failed_convert_leaves_the_model_as_it_was(monkeypatch):
    model = torchvision.models.resnet18(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(adn.AdaptiveDepthNet, "build_subnets", broken)
    with pytest.raises(RuntimeError, match="boom"):
        adn.convert(model)
    monkeypatch.undo()
    assert type(model) is torchvision.models.ResNet
    assert list(model.state_dict()) == list(before)  # no twins left behind
    model.load_state_dict(before)  # no hook of the adaptive class left behind
    assert dataclasses.is_dataclass(TrainConfig) and adn.convert(model).num_stages == 4  # and it converts again


def test_one_loader_reads_every_kind_of_weights(tmp_path):
    """adn.load_weights works out what a file holds: ours, torchvision's plain model, the reference's names, a
    converted model's original -- and create_model(weights=...) is the same loader."""
    from helpers import randomize_norms

    trained = randomize_norms(adn.create_model("resnet50", num_classes=4, widths=[8, 16, 32, 64]), seed=0)
    ours = trained.state_dict()
    reference = {k.replace(".skip_norm.", "_skip."): v for k, v in ours.items()}
    plain = {k: v for k, v in ours.items() if ".skip_norm." not in k}
    for name, state in {"ours": ours, "reference": reference, "torchvision": plain}.items():
        torch.save(state, tmp_path / f"{name}.pth")
        model = adn.create_model("resnet50", num_classes=4, widths=[8, 16, 32, 64], weights=tmp_path / f"{name}.pth")
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in plain.items()), name
        twins_from = ours if name != "torchvision" else {k: ours[k.replace(".skip_norm", "")] for k in ours}
        assert all(torch.equal(loaded[k], twins_from[k]) for k in ours if ".skip_norm." in k), name
    original = torchvision.models.resnet18(num_classes=3)
    converted = adn.load_weights(adn.create_model("tv:resnet18", num_classes=3), original.state_dict())
    assert torch.equal(converted.fc.weight, original.fc.weight)
    with pytest.raises(ValueError, match="do not fit"):
        adn.load_weights(adn.create_model("resnet20", num_classes=4), ours)
