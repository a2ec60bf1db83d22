"""Exactly the published networks: the reference implementation's state dicts (key lists in
``tests/data/reference-state-dicts``) load strictly, and each reference twin moves exactly the sub-networks
whose flag drives it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import adn
from adn.core.checkpoint import convert_published_state_dict, load_state_dict_compat

DATA = Path(__file__).parent / "data" / "reference-state-dicts"


def _reference_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random but well-scaled values for every key of the reference model (shapes and dtypes from the tsv)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for line in (DATA / f"{name}.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        leaf = key.rsplit(".", 1)[-1]
        if dtype == "int64":
            high = 169 if leaf == "relative_position_index" else 1  # a valid index into the bias table
            out[key] = torch.randint(0, high, shape, generator=g)
        elif leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):
            out[key] = torch.empty(shape).uniform_(0.5, 1.5, generator=g)
        elif len(shape) >= 2:  # conv / linear / embedding: variance-preserving
            fan_in = math.prod(shape[1:]) if leaf != "class_token" else 1
            out[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        else:
            out[key] = torch.empty(shape).uniform_(-0.1, 0.1, generator=g)
    return out


def _our_name(model, name: str, reference_key: str) -> str:
    """Where the reference's ``reference_key`` lands in our model (the mapping of the whole reference dict)."""
    keys = {k: k for k in _reference_state_dict(name)}
    mapped = model.from_reference(convert_published_state_dict(keys))  # values ride along: our key -> theirs
    return next(ours for ours, theirs in mapped.items() if theirs == reference_key)


def _build(name: str) -> torch.nn.Module:
    model = adn.create_model(name, num_classes=1000).eval()
    load_state_dict_compat(model, _reference_state_dict(name))
    return model


#: the reference's newer architectures (reference-today.md), besides the four of the paper
NEWER = ["resnet101", "resnet50vd", "resnet101vd", "swin_v2_t", "vit_b_32"]


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "swin_t", "vit_b_16", *NEWER])
def test_reference_state_dict_loads_strictly(name):
    reference = _reference_state_dict(name)
    with torch.device("meta"):
        model = adn.create_model(name, num_classes=1000)
    mapped = model.from_reference(convert_published_state_dict(reference))
    ours = model.state_dict()
    assert set(mapped) == set(ours)  # every key maps, none is left over: twins included
    assert all(tuple(mapped[k].shape) == tuple(v.shape) for k, v in ours.items())
    # published checkpoint layout: {"model": ...}, and an EMA with DDP's prefix and n_averaged
    ema = {"module." + k: v for k, v in reference.items()} | {"n_averaged": torch.tensor(3)}
    assert all(k.startswith("module.") for k in ema if k != "n_averaged")


def _configs(model, stage: int) -> list[tuple[bool, ...]]:
    """The flag of ``stage`` on and off, with the other flags all off, all on, and alternating: enough to tell which
    flag a twin follows, at a fraction of 2^S forward passes of a full-size model."""
    n = model.num_stages
    others = [(False,) * n, (True,) * n, tuple(i % 2 == 0 for i in range(n)), tuple(i % 2 == 1 for i in range(n))]
    return sorted({o[:stage] + (flag,) + o[stage + 1 :] for o in others for flag in (False, True)})


def _moved(model, x, perturb, configs) -> set[str]:
    with torch.no_grad():
        before = {adn.format_skip(s): model(x, skip=s) for s in configs}
        perturb()
        return {k for k, v in before.items() if not torch.equal(model(x, skip=k), v)}


def _expected(configs, stage: int) -> set[str]:
    return {adn.format_skip(s) for s in configs if s[stage]}


# (model, reference twin whose bias is perturbed, the stage whose flag must drive it)
TWIN_CASES = [
    ("mobilenet_v2", "features.0.norm_skip", 0),  # stem
    ("mobilenet_v2", "features.1.conv.1.norm_skip", 0),  # 16-channel block
    ("mobilenet_v2", "features.4.1.conv.1.norm_skip", 2),  # a mandatory block of the 64-channel stage
    ("mobilenet_v2", "features.7.conv.2.norm_skip", 4),  # 320-channel block
    ("mobilenet_v2", "features.8.norm_skip", 4),  # last 1x1 conv
    ("swin_t", "features.1.norm_skip", 1),  # patch merging before stage 2
    ("swin_t", "features.5.norm_skip", 3),  # patch merging before stage 4
    ("swin_t", "features.4.2.norm2_skip", 2),  # a mandatory block of stage 3
    ("resnet50", "layer3.1.bn2_skip", 2),
    ("vit_b_16", "encoder.layers.encoder_layer_4.ln_1_skip", 1),
    ("resnet101", "layer3.10.bn3_skip", 2),  # the last mandatory block of the 23-block stage
    ("resnet50vd", "layer4.0.bn1_skip", 3),
    ("resnet101vd", "layer2.1.bn2_skip", 1),
    ("swin_v2_t", "features.1.norm_skip", 1),  # patch merging (V2: norm after the reduction) before stage 2
    ("swin_v2_t", "features.4.2.norm1_skip", 2),  # a mandatory block of stage 3
    ("vit_b_32", "encoder.layers.encoder_layer_10.ln_2_skip", 3),
]


@pytest.fixture(scope="module")
def reference_models():
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("name, twin, stage", TWIN_CASES, ids=[f"{n}:{t}" for n, t, _ in TWIN_CASES])
def test_each_reference_twin_moves_exactly_the_configs_of_its_flag(name, twin, stage, reference_models):
    torch.set_num_threads(2)
    if name not in reference_models:
        reference_models[name] = _build(name)
    model = reference_models[name]
    norm = model.get_submodule(_our_name(model, name, twin + ".bias").rsplit(".", 1)[0])
    size = 224 if name.startswith("vit") or name == "swin_t" else 64  # the others take any resolution
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    configs = _configs(model, stage)
    assert _moved(model, x, lambda: norm.bias.data.add_(0.5), configs) == _expected(configs, stage)


def test_twins_outside_stages_are_declared_per_architecture():
    with torch.device("meta"):
        mnv2, swin = adn.create_model("mobilenet_v2"), adn.create_model("swin_t")
    outside = {
        n: s
        for n, s in mnv2.layout.twins
        if not n.startswith(tuple(b + "." for st in mnv2.layout.stages for b in st[0]))
    }
    assert outside == {
        "features.0.1": 0,
        "features.1.conv.0.1": 0,
        "features.1.conv.2": 0,
        "features.17.conv.0.1": 4,
        "features.17.conv.1.1": 4,
        "features.17.conv.3": 4,
        "features.18.1": 4,
    }
    merges = {n: s for n, s in swin.layout.twins if n.endswith(".norm")}
    assert merges == {"features.2.norm": 1, "features.4.norm": 2, "features.6.norm": 3}


def test_swin_base_net_has_no_stochastic_depth_in_train_mode():
    torch.manual_seed(0)
    model = adn.create_model("swin_cifar", num_classes=10, stochastic_depth_prob=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        base = [model(x, skip="TTTT") for _ in range(3)]
        super_ = [model(x, skip="FFFF") for _ in range(3)]
    assert all(torch.equal(b, base[0]) for b in base)  # deterministic: no path is dropped
    assert not all(torch.equal(s, super_[0]) for s in super_)  # the super-net drops paths
    assert adn.model_info("swin_t").builder.__defaults__[1] == 0.1  # the reference's default probability


def test_default_distillation_is_top_500_capped():
    from adn.cli.train import parse
    from adn.training.losses import DEFAULT_TOPK, SelfDistillation

    assert DEFAULT_TOPK == 500 and SelfDistillation().topk == 500
    assert parse(["--kd-topk", "7"]).kd_topk == 7 and parse([]).kd_topk is None  # None: min(500, classes) at start


def test_resnet_d_shortcut_average_pools_before_its_conv():
    with torch.device("meta"):
        vd, plain = adn.create_model("resnet50vd"), adn.create_model("resnet50")
    pool, conv, norm = vd.layer2[0].downsample
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.ceil_mode and pool.kernel_size == pool.stride == 2
    assert conv.stride == (1, 1) and isinstance(norm, torch.nn.BatchNorm2d)
    assert len(vd.layer1[0].downsample) == 2  # the stride-1 shortcut of layer1 is a plain 1x1 conv + norm
    assert [n for n, _ in vd.named_parameters() if not n.startswith("layer")] == [
        n for n, _ in plain.named_parameters() if not n.startswith("layer")
    ]  # stem and head unchanged
    assert "layer2.0.downsample.1" not in dict(vd.layout.twins)  # shortcut norms stay shared


@pytest.mark.parametrize("name", NEWER)
def test_registry_holds_the_flops_of_every_subnetwork(name):
    from adn.core.flops import count_flops_table

    info = adn.model_info(name)
    with torch.device("meta"):
        model = adn.create_model(name)
    configs = list(adn.subnets(model))
    assert set(info.published) == {adn.format_skip(c) for c in configs}
    counts = count_flops_table(model, configs, info.input_size)
    for skip, count in zip(configs, counts, strict=True):
        assert count / 1e9 == pytest.approx(info.published[adn.format_skip(skip)][0], abs=0.006), skip
