"""The shared skip mechanism: parsing, which blocks run, skip-aware norms, gradients."""

import copy
import pickle
import threading

import pytest
import torch
from torch import nn

import adn
from adn.core.network import SkipAwareNorm


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
    ],
)
def test_parse_skip_accepts(value, expected):
    assert adn.parse_skip(value, 4) == expected


@pytest.mark.parametrize("value", ["TFT", "TFTFT", [True] * 3, "TXTF", ["yes please"] * 4, [2, 0, 0, 0], 3.5, "", None])
def test_parse_skip_rejects(value):
    with pytest.raises(ValueError) as err:
        adn.parse_skip(value, 4)
    msg = str(err.value)
    assert "TFTF" in msg  # names the accepted forms
    if isinstance(value, (list, str)) and len(value) in (3, 5):
        assert "4 stages" in msg  # names the model's stage count


def test_format_and_skip_configs():
    configs = adn.skip_configs(3)
    assert len(configs) == 8 and len(set(configs)) == 8
    assert configs[0] == (False,) * 3 and configs[-1] == (True,) * 3
    assert adn.format_skip(configs[1]) == "FFT"
    assert adn.subnets(adn.create_model("resnet20")) == configs  # the earlier name: the same configs


# ------------------------------------------------------------------------------------------ execution
def test_resnet_stage_split_and_declared_shared_norms():
    model = adn.create_model("resnet50")
    assert model.num_stages == 4
    assert [len(s.skippable) for s in model.adaptive_stages] == [1, 2, 3, 1]
    assert [len(s.mandatory) for s in model.adaptive_stages] == [2, 2, 3, 2]
    assert model.adaptive_stages[1].mandatory[0] is model.layer2[0]  # the downsampling block is mandatory
    assert [len(s.skippable) for s in adn.create_model("resnet56").adaptive_stages] == [4, 4, 4]
    aware = {n for n, m in model.named_modules() if isinstance(m, SkipAwareNorm)}
    assert "layer1.0.bn1" in aware and "layer1.1.bn3" in aware
    assert "layer1.2.bn1" not in aware  # skippable block
    assert "layer1.0.downsample.1" not in aware  # declared shared: shortcut norms have no twin
    assert "bn1" not in aware  # stem
    assert len(aware) == 3 * sum(len(s.mandatory) for s in model.adaptive_stages)
    assert {n for n, _ in model.layout.twins} == aware
    bn = model.layer1[0].bn1
    assert type(bn) is nn.BatchNorm2d and type(bn.skip_norm) is nn.BatchNorm2d  # plain, importable classes
    assert bn.skip_norm is not bn and not isinstance(bn.skip_norm, SkipAwareNorm)


def test_skip_norm_is_used_only_when_stage_skipped():
    model = adn.create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SkipAwareNorm):
                m.skip_norm.weight.mul_(3.0)  # make the twins different from the main norms
        before = {s: model(x, skip=s) for s in adn.subnets(model)}
        model.layer1[0].bn2.skip_norm.bias.add_(1.0)  # a twin of stage 0
        moved = {adn.format_skip(s) for s in before if not torch.equal(model(x, skip=s), before[s])}
    assert moved == {"TFF", "TFT", "TTF", "TTT"}  # exactly the configs that skip stage 0


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


def test_sync_batchnorm_conversion_keeps_twins_and_rebuilds_paths():
    model = adn.convert_sync_batchnorm(adn.create_model("resnet20", num_classes=10))
    aware = [m for m in model.modules() if isinstance(m, SkipAwareNorm)]
    assert aware and all(isinstance(m, nn.SyncBatchNorm) for m in aware)
    assert all(isinstance(m.skip_norm, nn.SyncBatchNorm) for m in aware)
    assert model.subnet("TTT").layer2[0].bn1 is model.layer2[0].bn1.skip_norm  # the path follows the new modules


# ------------------------------------------------------------------------------- a pure, safe depth switch
def _tiny(name):
    info = adn.model_info(name)
    return adn.create_model(name, **info.test_kwargs).eval(), info.test_kwargs.get("image_size", 32)


def _randomize_twins(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SkipAwareNorm):  # twins that differ from the main norms, so a mix-up shows
                m.skip_norm.weight.uniform_(0.5, 1.5)
                m.skip_norm.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "vit_cifar"])
def test_concurrent_calls_of_different_subnets_are_exact(name):
    """Threads run different sub-networks of one model at once: every output equals the sequential one
    (10,000 calls in all over the two models)."""
    model = adn.create_model(name, num_classes=10, **({"image_size": 16} if name == "vit_cifar" else {})).eval()
    _randomize_twins(model)
    x = torch.randn(1, 3, 16, 16)
    all_ = adn.subnets(model)
    configs = [all_[0], all_[-1], all_[len(all_) // 3], all_[2 * len(all_) // 3]]  # every stage differs
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' count: the same kernels, so equal outputs are bit-identical
    with torch.inference_mode():
        expected = {c: model(x, skip=c) for c in configs}
    wrong, done, calls = [], {}, 1250
    barrier = threading.Barrier(len(configs))

    def worker(config):
        torch.set_num_threads(1)
        barrier.wait()
        with torch.inference_mode():
            for i in range(calls):
                if not torch.equal(model(x, skip=config), expected[config]):
                    wrong.append(config)
                done[config] = i + 1

    pool = [threading.Thread(target=worker, args=(c,)) for c in configs]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    torch.set_num_threads(threads_before)
    assert done == dict.fromkeys(configs, calls)  # every thread ran all its calls (none died early) ...
    assert wrong == []  # ... and each got the sequential output every time


def test_no_state_outlives_a_call():
    model, _ = _tiny("resnet20")
    _randomize_twins(model)
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        full = model.layer1[0](x)
        model(torch.randn(1, 3, 32, 32), skip="TTT")
        assert torch.equal(model.layer1[0](x), full)  # a direct block call uses the main norms
        assert not torch.equal(model.subnet("TTT").layer1[0](x), full)  # the base-net's path uses the twins


@pytest.mark.parametrize("name", ["resnet20", "swin_cifar"])
def test_pickle_and_deepcopy_round_trips(name, tmp_path):
    model, size = _tiny(name)
    _randomize_twins(model)
    x = torch.randn(2, 3, size, size)
    torch.save(model, tmp_path / "model.pt")
    copies = [
        torch.load(tmp_path / "model.pt", weights_only=False),
        copy.deepcopy(model),
        pickle.loads(pickle.dumps(model)),
    ]
    with torch.no_grad():
        for other in copies:
            assert other.state_dict().keys() == model.state_dict().keys()
            for skip in (adn.subnets(model)[0], adn.subnets(model)[-1], adn.subnets(model)[1]):
                assert torch.equal(other(x, skip=skip), model(x, skip=skip))
            # the copy's paths run the copy's weights: a change to the copy shows in its paths, not the model's
            for skip in (adn.subnets(model)[0], adn.subnets(model)[-1]):
                ours = {id(p) for p in other.parameters()}
                assert {id(p) for p in other.subnet(skip).parameters()} <= ours
                assert not {id(p) for p in model.subnet(skip).parameters()} & ours


def test_paths_share_weights_and_follow_module_replacement():
    model, _ = _tiny("resnet20")
    base = model.subnet("TTT")
    assert base.conv1 is model.conv1 and base.layer1[0].conv1 is model.layer1[0].conv1
    assert len(base.layer1) == 2 and len(model.layer1) == 3  # the skipped block is not in the path
    model.fc = nn.Linear(64, 3)  # module registration: paths are rebuilt at the next call
    assert model(torch.randn(1, 3, 32, 32), skip="TTT").shape == (1, 3)
    assert model.subnet("TTT").fc is model.fc


def test_hooks_on_blocks_fire_in_every_subnet():
    model, _ = _tiny("resnet20")
    ran = []
    model.layer2[0].register_forward_hook(lambda m, i, o: ran.append("layer2.0"))
    with torch.no_grad():
        for skip in ("FFF", "TTT"):
            model(torch.randn(1, 3, 32, 32), skip=skip)
    assert ran == ["layer2.0", "layer2.0"]


# torch.compile of every registered model: tests/test_architectures.py
