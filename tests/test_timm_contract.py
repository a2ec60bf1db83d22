"""The timm model contract, for every registered model (at its test size) and a converted torchvision and timm
model: forward_features is the chosen sub-network's unpooled map, forward_head finishes it, the classifier can be
read and reset, gradient checkpointing works, and the factory speaks timm's signatures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import adn
from helpers import randomize_norms

torch.manual_seed(0)
CASES = [*adn.list_models(), "tv:resnet18", "timm:resnet18"]


def _build(name: str) -> tuple[nn.Module, int]:
    if name.startswith("tv:"):
        return adn.create_model(name, num_classes=5), 32
    if name.startswith("timm:"):
        pytest.importorskip("timm")
        return adn.create_model(name, num_classes=5), 32
    info = adn.model_info(name)
    size = info.test_kwargs.get("image_size", min(info.input_size, 64))
    return adn.create_model(name, **info.test_kwargs), size


@pytest.fixture(scope="module", params=CASES)
def built(request):
    torch.manual_seed(0)
    model, size = _build(request.param)
    randomize_norms(model, seed=0)  # timm zero-inits each block's last norm: skipping would change nothing
    return model.eval(), torch.randn(2, 3, size, size)


def test_features_then_head_is_the_forward_of_every_depth(built):
    model, x = built
    for skip in (adn.subnets(model)[0], adn.subnets(model)[-1]):
        with torch.no_grad():
            features = model.forward_features(x, skip=skip)
            assert features.dim() >= 3  # unpooled: a map or a token sequence, not (N, C)
            torch.testing.assert_close(model.forward_head(features, skip=skip), model(x, skip=skip))
            pooled = model.forward_head(features, pre_logits=True, skip=skip)
        assert pooled.shape == (2, model.num_features)
    base, supernet = adn.subnets(model)[-1], adn.subnets(model)[0]
    with torch.no_grad():
        assert not torch.equal(model.forward_features(x, skip=base), model.forward_features(x, skip=supernet))
        model.skip = base  # skip=None: the model's default, as in model(x)
        torch.testing.assert_close(model.forward_features(x), model.forward_features(x, skip=base))
    model.skip = supernet


def test_intermediates_are_the_stage_outputs_of_the_chosen_depth(built):
    model, x = built
    base, supernet = adn.subnets(model)[-1], adn.subnets(model)[0]
    with torch.no_grad():
        features, outs = model.forward_intermediates(x, skip=base)
        torch.testing.assert_close(features, model.forward_features(x, skip=base))
        assert len(outs) == model.num_stages and all(o.shape[0] == 2 for o in outs)
        with adn.core.features.capture_stage_outputs(model, base, range(model.num_stages), detach=True) as pooled:
            model(x, skip=base)
        for out, mean in zip(outs, pooled, strict=True):  # the tapped block's output is what the hooks see
            torch.testing.assert_close(
                adn.core.features.pool_channels(out, getattr(model, "feature_channel_dim", None)), mean
            )
        last = model.forward_intermediates(x, 1, skip=supernet, intermediates_only=True)
        assert len(last) == 1 and not torch.equal(last[0], outs[-1])  # the super-net's last stage, not the base's
        head = model.get_classifier()
        calls = []
        handle = head.register_forward_hook(lambda *_: calls.append(1))
        try:
            model.forward_intermediates(x, [0], skip=base, intermediates_only=True)
        finally:
            handle.remove()
        assert not calls  # stopped after stage 0: the head never ran
    with pytest.raises(ValueError, match="stage numbers"):
        model.forward_intermediates(x, [model.num_stages], intermediates_only=True)


def test_classifier_read_and_reset(built):
    model, x = built
    model = _copy(model)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.in_features == model.num_features
    features = model.num_features
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_features == features
    with torch.no_grad():
        assert model(x).shape == (2, features)  # pooled pre-logits features, every depth
        assert model(x, skip=adn.subnets(model)[-1]).shape == (2, features)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7)


def test_grad_checkpointing_gives_the_same_gradients(built):
    model, x = built
    model = _copy(model)
    model.train()
    base = adn.subnets(model)[-1]
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(0)  # dropout / drop-path draw the same masks
        model(x, skip=base).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_recomputes_the_blocks():
    model = adn.create_model("resnet20", num_classes=10).train()
    calls, block = [], model.layer1[0]
    forward = block.forward
    block.forward = lambda x: calls.append(1) or forward(x)  # (module hooks do not run in the recomputation)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing is True
    model(torch.randn(2, 3, 32, 32), skip="FFF").sum().backward()
    assert len(calls) == 2  # the forward, and its recomputation in the backward pass


def test_factory_speaks_timms_signatures():
    assert adn.list_models("resnet*") == [n for n in adn.list_models() if n.startswith("resnet")] != []
    assert adn.list_models("no-such-*") == []
    assert adn.is_model("resnet50") and adn.is_model("tv:resnet18") and not adn.is_model("resnet5")
    model = adn.create_model("resnet20", False, num_classes=3)  # timm's positional order: name, pretrained
    assert model.get_classifier().out_features == 3
    with pytest.raises(ValueError, match="num_classes=10"):
        adn.create_model("resnet20", 10)  # the old positional class count: one line naming the fix
    with pytest.raises(ValueError, match="downloads no weights"):
        adn.create_model("resnet20", True)


def test_a_converted_timm_model_keeps_timms_own_methods_on_the_path():
    timm = pytest.importorskip("timm")
    plain = timm.create_model("resnet18", num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = plain.forward_features(x)
        model = adn.convert(plain)
        torch.testing.assert_close(model.forward_features(x, skip="FFFF"), expected)  # the super-net: timm's
        assert model.forward_features(x, skip="TTTT").shape == expected.shape
    assert model.num_features == 512 and model.grad_checkpointing is False
    model.set_grad_checkpointing()
    assert model.grad_checkpointing is True and "_checkpoint_blocks" not in model.__dict__  # timm's mechanism


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_torchvision_models_are_untouched():
    assert not hasattr(torchvision.models.resnet18(), "forward_features")  # the contract is ours, not patched in
