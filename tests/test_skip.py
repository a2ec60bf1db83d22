"""The shared skip mechanism: parsing, which blocks run, skip-aware norms, gradients."""

import pytest
import torch
from torch import nn

import adn
from adn.skip import SkipAwareNorm


# ----------------------------------------------------------------------------------------------- parse_skip
@pytest.mark.parametrize(
    "value, expected",
    [
        ("TFTF", (True, False, True, False)),
        ("tftf", (True, False, True, False)),
        ("True False True False", (True, False, True, False)),
        (["True", "False", "true", "FALSE"], (True, False, True, False)),
        ([True, False, True, False], (True, False, True, False)),
        ((1, 0, 1, 0), (True, False, True, False)),
        ("T,F,T,F", (True, False, True, False)),
        (True, (True,) * 4),
        (None, (False,) * 4),
    ],
)
def test_parse_skip_accepts(value, expected):
    assert adn.parse_skip(value, 4) == expected


@pytest.mark.parametrize("value", ["TFT", "TFTFT", [True] * 3, "TXTF", ["yes please"] * 4, [2, 0, 0, 0], 3.5, ""])
def test_parse_skip_rejects(value):
    with pytest.raises(ValueError) as err:
        adn.parse_skip(value, 4)
    msg = str(err.value)
    assert "TFTF" in msg  # names the accepted forms
    if isinstance(value, (list, str)) and len(value) in (3, 5):
        assert "4 stages" in msg  # names the model's stage count


def test_format_and_subnets():
    configs = adn.subnets(3)
    assert len(configs) == 8 and len(set(configs)) == 8
    assert configs[0] == (False,) * 3 and configs[-1] == (True,) * 3
    assert adn.format_skip(configs[1]) == "FFT"


# ------------------------------------------------------------------------------------------ execution
def _count_executed(model, skip, x):
    ran = []
    hooks = [
        b.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
        for name, b in model.named_modules()
        if any(b is blk for s in model.stages for blk in s.mandatory + s.skippable)
    ]
    with torch.no_grad():
        model(x, skip=skip)
    for h in hooks:
        h.remove()
    return ran


@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet50", 64)])
def test_skipping_removes_exactly_the_skippable_blocks(name, size):
    model = adn.create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, size, size)
    names = {id(m): n for n, m in model.named_modules()}
    for skip in adn.subnets(model):
        ran = set(_count_executed(model, skip, x))
        expected = set()
        for stage, s in zip(model.stages, skip):
            expected |= {names[id(b)] for b in stage.mandatory}
            if not s:
                expected |= {names[id(b)] for b in stage.skippable}
        assert ran == expected, adn.format_skip(skip)


def test_resnet_stage_split():
    model = adn.create_model("resnet50")
    assert model.num_stages == 4
    assert [len(s.skippable) for s in model.stages] == [1, 2, 3, 1]
    assert [len(s.mandatory) for s in model.stages] == [2, 2, 3, 2]
    assert model.stages[1].mandatory[0] is model.layer2[0]  # the downsampling block is mandatory
    assert [len(s.skippable) for s in adn.create_model("resnet56").stages] == [4, 4, 4]


def test_skip_aware_norms_only_in_mandatory_blocks():
    model = adn.create_model("resnet50")
    aware = {n for n, m in model.named_modules() if isinstance(m, SkipAwareNorm)}
    assert "layer1.0.bn1" in aware and "layer1.1.bn3" in aware
    assert "layer1.2.bn1" not in aware  # skippable block
    assert "layer1.0.downsample.1" not in aware  # shortcut norm is shared
    assert "bn1" not in aware  # stem
    assert len(aware) == 3 * sum(len(s.mandatory) for s in model.stages)
    bn = model.layer1[0].bn1
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(bn.skip_norm, nn.BatchNorm2d)
    assert bn.skip_norm is not bn and not isinstance(bn.skip_norm, SkipAwareNorm)


def test_skip_norm_is_used_only_when_stage_skipped():
    model = adn.create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SkipAwareNorm):
                m.skip_norm.weight.mul_(3.0)  # make the twins different from the main norms
        super_before = model(x, skip="FFF")
        base_before = model(x, skip="TTT")
        # changing stage 0's twins must change outputs of configs that skip stage 0 only
        for m in model.stages[0].skip_aware_norms():
            m.skip_norm.bias.add_(1.0)
        assert torch.equal(model(x, skip="FFF"), super_before)
        assert not torch.allclose(model(x, skip="TTT"), base_before)


def test_default_skip_attribute_and_forward_argument():
    model = adn.create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model(x, skip="TTT")
        assert model.skip == (False, False, False)
        model.skip = "True True True"
        assert torch.equal(model(x), base)
    with pytest.raises(ValueError, match="3 stages"):
        model.skip = "TTTT"


# ------------------------------------------------------------------------------------- torchvision parity
def test_resnet50_supernet_equals_torchvision():
    from torchvision.models import resnet50

    ref = resnet50(num_classes=10).eval()
    model = adn.create_model("resnet50", num_classes=10).eval()
    missing, unexpected = model.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(".skip_norm." in k for k in missing)  # only the twins are new
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, skip="FFFF"), ref(x))


# ------------------------------------------------------------------------------------------ gradients
def _grad_names(model, skip):
    model.zero_grad(set_to_none=True)
    model(torch.randn(2, 3, 32, 32), skip=skip).sum().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


def test_gradients_reach_exactly_the_expected_parameters():
    model = adn.create_model("resnet20", num_classes=10).train()
    names = {id(m): n for n, m in model.named_modules()}
    skippable = tuple(names[id(b)] + "." for b in model.skippable_blocks())
    everything = {n for n, _ in model.named_parameters()}
    twins = {n for n in everything if ".skip_norm." in n}
    main_of_aware = {
        f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, SkipAwareNorm) for p in ("weight", "bias")
    }
    in_skippable = {n for n in everything if n.startswith(skippable)}

    assert _grad_names(model, "FFF") == everything - twins
    assert _grad_names(model, "TTT") == everything - in_skippable - main_of_aware
    # super-net + base-net together touch every parameter (why DDP needs no find_unused_parameters)
    assert _grad_names(model, "FFF") | _grad_names(model, "TTT") == everything


@pytest.mark.parametrize("name", adn.list_models())
def test_every_subnet_forward_backward(name):
    info = adn.model_info(name)
    model = adn.create_model(name, **info.test_kwargs).train()
    size = info.test_kwargs.get("image_size", 32 if info.input_size <= 64 else 64)  # ViT: fixed input size
    configs = adn.subnets(model)
    if len(configs) > 8:  # big models: the extremes and a couple of mixed configs keep the suite fast
        configs = [configs[0], configs[1], configs[len(configs) // 2], configs[-1]]
    for skip in configs:
        out = model(torch.randn(2, 3, size, size), skip=skip)
        assert out.shape == (2, info.test_kwargs.get("num_classes", 1000))
        out.logsumexp(1).mean().backward()
        assert model.fc.weight.grad is not None if hasattr(model, "fc") else True
        model.zero_grad()


def test_sync_batchnorm_conversion_keeps_skip_awareness():
    model = adn.convert_sync_batchnorm(adn.create_model("resnet20", num_classes=10))
    aware = [m for m in model.modules() if isinstance(m, SkipAwareNorm)]
    assert aware and all(isinstance(m, nn.SyncBatchNorm) for m in aware)
    assert all(isinstance(m.skip_norm, nn.SyncBatchNorm) for m in aware)
