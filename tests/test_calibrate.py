"""Per-sub-network BatchNorm calibration: what changes, what does not, and that it survives every way a model
travels (state dict, safetensors, export, deepcopy)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import adn
from adn.core.checkpoint import load_state_dict_compat, save_weights
from adn.deploy.export import export_subnet
from adn.models.weights import load_weights


def _batches(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 3, size, size, generator=g) * 2 + 0.5, torch.zeros(16, dtype=torch.long)) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def calibrated():
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    uncalibrated = copy.deepcopy(model)
    adn.calibrate(model, _batches(), batches=3)
    return model.eval(), uncalibrated.eval()


def test_calibration_changes_only_the_statistics_it_adds(calibrated):
    model, before = calibrated
    after = model.state_dict()
    for key, value in before.state_dict().items():
        assert torch.equal(after[key], value), key  # weights and trained statistics bit-identical
    added = set(after) - set(before.state_dict())
    assert added and all(k.startswith("calibration.") and k.endswith(("running_mean", "running_var")) for k in added)
    assert adn.is_calibrated(model) and all(adn.is_calibrated(model, s) for s in adn.subnets(model))


def test_calibrated_output_equals_a_copy_recalibrated_by_hand(calibrated):
    """By hand: export the uncalibrated sub-network, reset its BatchNorm statistics, accumulate them over the same
    batches in train mode (cumulative average), evaluate."""
    model, before = calibrated
    x = torch.randn(4, 3, 32, 32)
    for skip in ("FFF", "TFT", "TTT"):
        plain = export_subnet(before, skip)
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.train()
        with torch.no_grad():
            for images, _ in _batches():
                plain(images)
            plain.eval()
            torch.testing.assert_close(model(x, skip=skip), plain(x), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(model(x, skip=skip), before(x, skip=skip))


def test_calibrating_again_replaces_the_statistics(calibrated):
    """A calibrated model (e.g. adn train's model.safetensors) calibrated on other data gets the new statistics:
    the same as calibrating the uncalibrated model on that data."""
    model, before = calibrated
    again, fresh = copy.deepcopy(model), copy.deepcopy(before)
    other = _batches(seed=1)
    adn.calibrate(again, other, subnets=["FFF", "TTT"], batches=3)
    adn.calibrate(fresh, other, subnets=["FFF", "TTT"], batches=3)
    x = torch.randn(4, 3, 32, 32)
    for skip in ("FFF", "TTT"):
        torch.testing.assert_close(again(x, skip=skip), fresh(x, skip=skip), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(again(x, skip=skip), model(x, skip=skip))
    torch.testing.assert_close(again(x, skip="TFT"), model(x, skip="TFT"))  # the others keep theirs


def test_round_trips_state_dict_safetensors_deepcopy_and_export(calibrated, tmp_path):
    model, _ = calibrated
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = {s: model(x, skip=s) for s in ("FFF", "FTF", "TTT")}
        fresh = adn.create_model("resnet20", num_classes=10).eval()
        fresh.load_state_dict(model.state_dict())  # plain torch loading makes the holders it needs
        save_weights(model, tmp_path / "w.safetensors")
        from_file = load_weights(adn.create_model("resnet20", num_classes=10), tmp_path / "w.safetensors").eval()
        for other in (fresh, from_file, copy.deepcopy(model)):
            for skip, out in want.items():
                assert torch.equal(other(x, skip=skip), out), skip
        for skip, out in want.items():
            exported = export_subnet(model, skip)
            assert not any("calibration" in n for n, _ in exported.named_modules())
            torch.testing.assert_close(exported(x), out)


def test_uncalibrated_subnets_fall_back_and_train_mode_is_unaffected():
    torch.manual_seed(0)
    model = adn.create_model("resnet20", num_classes=10)
    before = copy.deepcopy(model)
    adn.calibrate(model, _batches(), subnets=["TTT"], batches=2)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model.eval(), before.eval()
        assert torch.equal(model(x, skip="FTF"), before(x, skip="FTF"))  # never calibrated: trained statistics
        assert not torch.equal(model(x, skip="TTT"), before(x, skip="TTT"))
        model.train(), before.train()
        assert torch.equal(model(x, skip="TTT"), before(x, skip="TTT"))  # batch statistics in train mode
    assert adn.is_calibrated(model, "TTT") and not adn.is_calibrated(model, "FTF")


def test_loading_weights_without_calibration_drops_it_and_reference_weights_still_load(calibrated):
    model, before = calibrated
    model = copy.deepcopy(model)
    load_state_dict_compat(model, before.state_dict())  # weights that never saw this calibration
    assert not adn.is_calibrated(model)
    published = {k.replace(".skip_norm.", "_skip."): v + 1 for k, v in before.state_dict().items()}
    load_state_dict_compat(model, published)  # the reference's naming: each value lands under our name
    loaded = model.state_dict()
    for key, value in before.state_dict().items():
        torch.testing.assert_close(loaded[key], value + 1, rtol=0, atol=0)
    adn.calibrate(model, _batches(1), batches=1)
    assert adn.is_calibrated(model)
    adn.clear_calibration(model)
    assert not adn.is_calibrated(model)


@pytest.mark.parametrize("name", ["vit_cifar", "swin_cifar"])
def test_layer_norm_models_have_nothing_to_calibrate(name):
    model = adn.create_model(name, num_classes=10)
    state = copy.deepcopy(model.state_dict())
    adn.calibrate(model, _batches(1), batches=1)
    assert not adn.is_calibrated(model) and model.state_dict().keys() == state.keys()


def test_calibration_runs_on_a_compiled_free_path_and_is_thread_safe_to_read(calibrated):
    """Calibrated sub-networks are paths too: concurrent eval calls of different ones stay exact."""
    import threading

    model, _ = calibrated
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        want = {s: model(x, skip=s) for s in ("FFF", "TTT")}
    wrong = []

    def work(skip):
        with torch.inference_mode():
            for _ in range(100):
                if not torch.equal(model(x, skip=skip), want[skip]):
                    wrong.append(skip)

    threads = [threading.Thread(target=work, args=(s,)) for s in want]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
