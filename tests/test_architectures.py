"""MobileNetV2-, Swin- and ViT-ADN: stage layout, execution, torchvision parity, FLOPs, published weights."""

import re

import pytest
import torch
import torchvision.models as tvm
from torchvision.models.swin_transformer import SwinTransformer as TVSwin
from torchvision.models.vision_transformer import VisionTransformer as TVViT

import adn
from adn.checkpoint import load_state_dict_compat
from adn.models.swin import SwinTransformer
from adn.models.vit import VisionTransformer
from adn.skip import SkipAwareNorm

# CPU-size variants (every family) plus tiny-width ViT-B/16, whose stages (2 + 1 layers) differ from vit_cifar's
SMALL = ["mobilenet_v2_cifar", "swin_cifar", "vit_cifar", "vit_b_16"]
# A small ViT with the 4-stage grouping (8 layers -> 4 stages of 1 mandatory + 1 skippable).
SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=8, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=10)
SMALL_SWIN = dict(
    patch_size=[2, 2], embed_dim=16, depths=[2, 2, 4, 2], num_heads=[1, 2, 2, 4], window_size=[2, 2], num_classes=10
)


def _tiny(name):
    info = adn.model_info(name)
    size = info.test_kwargs.get("image_size", info.input_size if info.input_size <= 64 else 64)
    return adn.create_model(name, **info.test_kwargs), size


def _block_names(model):
    names = {id(m): n for n, m in model.named_modules()}
    return [([names[id(b)] for b in s.mandatory], [names[id(b)] for b in s.skippable]) for s in model.adaptive_stages]


# ------------------------------------------------------------------------------------------------ layout
def test_stage_layouts_keep_torchvision_names():
    with torch.device("meta"):
        mnv2, swin, vit = (adn.create_model(n) for n in ("mobilenet_v2", "swin_t", "vit_b_16"))
    assert _block_names(mnv2) == [
        (["features.2"], ["features.3"]),
        (["features.4", "features.5"], ["features.6"]),
        (["features.7", "features.8"], ["features.9", "features.10"]),
        (["features.11", "features.12"], ["features.13"]),
        (["features.14", "features.15"], ["features.16"]),
    ]
    assert [len(s.skippable) for s in swin.adaptive_stages] == [1, 1, 3, 1]
    assert _block_names(swin)[2] == (
        ["features.5.0", "features.5.1", "features.5.2"],
        ["features.5.3", "features.5.4", "features.5.5"],
    )
    layer = "encoder.layers.encoder_layer_{}".format
    assert _block_names(vit) == [([layer(3 * i), layer(3 * i + 1)], [layer(3 * i + 2)]) for i in range(4)]


@pytest.mark.parametrize(
    "name, expected, outside",
    [
        # the three BNs of a mandatory inverted-residual block (expansion, depthwise, projection); outside the
        # stages, the reference's 7 twins of the stem, the 16- and 320-channel blocks and the last conv
        ("mobilenet_v2", {"conv.0.1", "conv.1.1", "conv.3"}, 7),
        ("swin_t", {"norm1", "norm2"}, 3),  # + the three patch-merging norms
        ("vit_b_16", {"ln_1", "ln_2"}, 0),
    ],
)
def test_twins_are_those_of_mandatory_blocks_plus_declared_ones(name, expected, outside):
    with torch.device("meta"):
        model = adn.create_model(name)
    mandatory = tuple(n + "." for stage in _block_names(model) for n in stage[0])
    aware = [n for n, m in model.named_modules() if isinstance(m, SkipAwareNorm)]
    inside = [n for n in aware if n.startswith(mandatory)]
    suffixes = {n[len(p) :] for n in inside for p in mandatory if n.startswith(p)}
    assert suffixes == expected
    per_block = {"mobilenet_v2": 3, "swin_t": 2, "vit_b_16": 2}[name]
    assert len(inside) == per_block * sum(len(s.mandatory) for s in model.adaptive_stages)
    assert len(aware) - len(inside) == outside


@pytest.mark.parametrize(
    "name, tv_builder", [("mobilenet_v2", tvm.mobilenet_v2), ("swin_t", tvm.swin_t), ("vit_b_16", tvm.vit_b_16)]
)
def test_state_dict_keys_are_torchvisions(name, tv_builder):
    with torch.device("meta"):
        ours, theirs = adn.create_model(name).state_dict(), tv_builder().state_dict()
    assert {k for k in ours if ".skip_norm." not in k} == set(theirs)
    assert all(ours[k].shape == v.shape for k, v in theirs.items())


def test_vit_rejects_layer_counts_that_do_not_form_stages():
    with pytest.raises(ValueError, match="multiple of 4"):
        VisionTransformer(**{**SMALL_VIT, "num_layers": 6})


# --------------------------------------------------------------------------------------------- execution
@pytest.mark.parametrize("name", adn.list_models())
def test_every_registered_model_runs_every_subnet_forward_backward(name):
    model, size = _tiny(name)
    model.train()
    x = torch.randn(2, 3, size, size)
    configs = adn.subnets(model)
    if len(configs) > 8:  # 16-32 sub-networks: the extremes and a few mixed ones keep the suite fast
        configs = [configs[0], configs[1], configs[len(configs) // 2], configs[-2], configs[-1]]
    for skip in configs:
        model.zero_grad(set_to_none=True)
        out = model(x, skip=skip)
        assert out.shape == (2, adn.model_info(name).test_kwargs["num_classes"])
        out.logsumexp(1).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert grads and all(torch.isfinite(g).all() for g in grads.values()), adn.format_skip(skip)
        assert {n for n in grads} == {
            n for n, p in model.named_parameters() if any(p is q for q in adn.skip.used_parameters(model, skip))
        }


@pytest.mark.parametrize("name", [*SMALL, "resnet20", "resnet50"])
def test_skipped_blocks_are_not_executed(name):
    model, size = _tiny(name)
    model.eval()
    blocks = {n: m for stage in _block_names(model) for n in stage[0] + stage[1] for m in [model.get_submodule(n)]}
    ran: list[str] = []
    hooks = [b.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, b in blocks.items()]
    x = torch.randn(1, 3, size, size)
    for skip in adn.subnets(model):
        ran.clear()
        with torch.no_grad():
            model(x, skip=skip)
        expected = [
            n
            for (mandatory, skippable), s in zip(_block_names(model), skip, strict=False)
            for n in mandatory + ([] if s else skippable)
        ]
        assert ran == expected, adn.format_skip(skip)  # in execution order, each once
    for h in hooks:
        h.remove()


# ------------------------------------------------------------------------------------- torchvision parity
@pytest.mark.parametrize(
    "build, build_tv, size",
    [
        (
            lambda: adn.create_model("mobilenet_v2", num_classes=10, width_mult=0.5),
            lambda: tvm.mobilenet_v2(num_classes=10, width_mult=0.5),
            32,
        ),
        (lambda: SwinTransformer(**SMALL_SWIN), lambda: TVSwin(**SMALL_SWIN), 32),
        (lambda: VisionTransformer(**SMALL_VIT), lambda: TVViT(**SMALL_VIT), 32),
    ],
    ids=["mobilenet_v2", "swin", "vit"],
)
def test_supernet_equals_torchvision(build, build_tv, size):
    torch.manual_seed(0)
    ref, model = build_tv().eval(), build().eval()
    load_state_dict_compat(model, ref.state_dict())  # torchvision weights: twins start as copies
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        torch.testing.assert_close(model(x, skip="F" * model.num_stages), ref(x))


# ------------------------------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("name", ["mobilenet_v2", "swin_t", "swin_cifar", "vit_b_16", "vit_cifar"])
def test_flops_strictly_decrease_as_stages_are_skipped(name):
    with torch.device("meta"):  # shapes only: counts full-size models in milliseconds
        model = adn.create_model(name)
    flops = {s: adn.count_flops(model, s) for s in adn.subnets(model)}
    params = {s: adn.count_params(model, s) for s in adn.subnets(model)}
    for skip in flops:
        for i, s in enumerate(skip):
            if not s:
                more = skip[:i] + (True,) + skip[i + 1 :]
                assert flops[more] < flops[skip] and params[more] < params[skip], adn.format_skip(more)


def test_vit_counts_flops_at_its_own_image_size():
    with torch.device("meta"):
        model = adn.create_model("vit_cifar")
    assert model.image_size == 32
    assert adn.count_flops(model) == adn.count_flops(model, None, 32)


# ------------------------------------------------------------------------------------ published weights
def _published_naming(state_dict):
    """Our ``<norm>.skip_norm.<t>`` keys renamed to the published checkpoints' ``<norm>_skip.<t>``."""
    return {re.sub(r"\.skip_norm\.", "_skip.", k): v for k, v in state_dict.items()}


@pytest.mark.parametrize("name", ["mobilenet_v2_cifar", "swin_cifar", "vit_cifar", "vit_b_16"])
def test_state_dict_in_published_naming_loads(name):
    torch.manual_seed(0)
    source, size = _tiny(name)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, SkipAwareNorm):  # twins differ from main norms, so a mix-up shows in the outputs
                m.skip_norm.weight.uniform_(0.5, 1.5)
                m.skip_norm.bias.normal_()
    published = _published_naming(source.state_dict())
    if name == "vit_b_16":
        assert "encoder.layers.encoder_layer_0.ln_1_skip.weight" in published
        assert "encoder.layers.encoder_layer_2.ln_1_skip.weight" not in published  # skippable layers have none
    target, _ = _tiny(name)
    load_state_dict_compat(target, published)
    source.eval(), target.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for skip in ("F" * source.num_stages, "T" * source.num_stages):
            torch.testing.assert_close(target(x, skip=skip), source(x, skip=skip))
