"""Every registered model: stage layout, twins, execution of every sub-network, compile, export, FLOPs, published
weights -- each generic test iterates ``adn.list_models()``, with the model's expectations in :data:`MODELS`. A new
architecture is tested by registering it and adding its row (and ``test_kwargs`` for a small test instance)."""

import functools
import re
from dataclasses import dataclass

import pytest
import torch
import torchvision.models as tvm
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.convnext import ConvNeXt as TVConvNeXt
from torchvision.models.swin_transformer import SwinTransformer as TVSwin
from torchvision.models.vision_transformer import VisionTransformer as TVViT

import adn
from adn.core.checkpoint import load_state_dict_compat
from adn.core.network import SkipAwareNorm
from adn.models.convnext import ConvNeXt
from adn.models.swin import SwinTransformer
from adn.models.vit import VisionTransformer


@dataclass(frozen=True)
class Expect:
    """What a registered model must look like (its full-size layout, read on the meta device)."""

    skippable: tuple[int, ...]  #: skippable blocks per stage
    twins: frozenset[str]  #: the norms of a mandatory block that have twins (names relative to the block)
    twins_outside: int = 0  #: twins an architecture declares outside its stages
    torchvision: str | None = None  #: torchvision builder whose state-dict names ours keep (twins aside)


BN2, BN3 = frozenset({"bn1", "bn2"}), frozenset({"bn1", "bn2", "bn3"})
MNV2 = frozenset({"conv.0.1", "conv.1.1", "conv.3"})  # expansion, depthwise and projection BNs
SWIN, VIT = frozenset({"norm1", "norm2"}), frozenset({"ln_1", "ln_2"})

#: one row per registered model, keyed by its registered name
MODELS: dict[str, Expect] = {
    "convnext_tiny": Expect((1, 1, 4, 1), frozenset({"block.2"}), 0, "convnext_tiny"),
    # outside the stages, the reference's 7 twins of the stem, the 16- and 320-channel blocks and the last conv
    "mobilenet_v2": Expect((1, 1, 2, 1, 1), MNV2, 7, "mobilenet_v2"),
    "mobilenet_v2_cifar": Expect((1, 1, 2, 1, 1), MNV2, 7),
    "resnet101": Expect((1, 2, 11, 1), BN3, 0, "resnet101"),
    # ResNet-D: the downsampling shortcut's avg-pool + 1x1 conv are not torchvision's names
    "resnet101vd": Expect((1, 2, 11, 1), BN3),
    "resnet20": Expect((1, 1, 1), BN2),
    "resnet50": Expect((1, 2, 3, 1), BN3, 0, "resnet50"),
    "resnet50vd": Expect((1, 2, 3, 1), BN3),
    "resnet56": Expect((4, 4, 4), BN2),
    "swin_cifar": Expect((1, 1, 1, 1), SWIN, 3),  # + the three patch-merging norms
    "swin_t": Expect((1, 1, 3, 1), SWIN, 3, "swin_t"),
    "swin_v2_t": Expect((1, 1, 3, 1), SWIN, 3, "swin_v2_t"),
    "vit_b_16": Expect((1, 1, 1, 1), VIT, 0, "vit_b_16"),
    "vit_b_32": Expect((1, 1, 1, 1), VIT, 0, "vit_b_32"),
    "vit_cifar": Expect((1, 1, 1, 1), VIT),
}
ALL = adn.list_models()
# A small ViT with the 4-stage grouping (8 layers -> 4 stages of 1 mandatory + 1 skippable).
SMALL_VIT = dict(image_size=32, patch_size=8, num_layers=8, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=10)
SMALL_SWIN = dict(
    patch_size=[2, 2], embed_dim=16, depths=[2, 2, 4, 2], num_heads=[1, 2, 2, 4], window_size=[2, 2], num_classes=10
)

SMALL_CONVNEXT = dict(channels=(8, 16, 32, 64), depths=(2, 2, 3, 2), num_classes=10)


def _convnext_setting():
    c, d = SMALL_CONVNEXT["channels"], SMALL_CONVNEXT["depths"]
    return [CNBlockConfig(c[i], c[i + 1] if i < 3 else None, d[i]) for i in range(4)]


def _tiny(name):
    """The model's small test instance (its ``test_kwargs``) and an input size for it (at most 64 px)."""
    info = adn.model_info(name)
    size = info.test_kwargs.get("image_size", info.input_size if info.input_size <= 64 else 64)
    return adn.create_model(name, **info.test_kwargs), size


@functools.cache
def _full(name):
    with torch.device("meta"):  # shapes only: full-size models in milliseconds
        return adn.create_model(name)


def _some(configs):
    """All sub-networks up to 8; else the extremes and a few mixed ones (keeps the suite fast)."""
    return (
        configs if len(configs) <= 8 else [configs[0], configs[1], configs[len(configs) // 2], configs[-2], configs[-1]]
    )


def _block_names(model):
    names = {id(m): n for n, m in model.named_modules()}
    return [([names[id(b)] for b in s.mandatory], [names[id(b)] for b in s.skippable]) for s in model.adaptive_stages]


# ------------------------------------------------------------------------------------------------ layout
def test_every_registered_model_has_its_row():
    assert sorted(MODELS) == ALL, "add the new model's row to MODELS"


@pytest.mark.parametrize("name", ALL)
def test_stages_and_twins_are_the_tables(name):
    model, row = _full(name), MODELS[name]
    assert tuple(len(s.skippable) for s in model.adaptive_stages) == row.skippable
    mandatory = tuple(n + "." for stage in _block_names(model) for n in stage[0])
    aware = [n for n, m in model.named_modules() if isinstance(m, SkipAwareNorm)]
    inside = [n for n in aware if n.startswith(mandatory)]
    assert {n[len(p) :] for n in inside for p in mandatory if n.startswith(p)} == row.twins
    assert len(inside) == len(row.twins) * sum(len(s.mandatory) for s in model.adaptive_stages)
    assert len(aware) - len(inside) == row.twins_outside


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


@pytest.mark.parametrize("name", [n for n in ALL if MODELS[n].torchvision])
def test_state_dict_keys_are_torchvisions(name):
    with torch.device("meta"):
        theirs = tvm.get_model(MODELS[name].torchvision).state_dict()
    ours = _full(name).state_dict()
    assert {k for k in ours if ".skip_norm." not in k} == set(theirs)
    assert all(ours[k].shape == v.shape for k, v in theirs.items())


def test_vit_rejects_layer_counts_that_do_not_form_stages():
    with pytest.raises(ValueError, match="multiple of 4"):
        VisionTransformer(**{**SMALL_VIT, "num_layers": 6})


# --------------------------------------------------------------------------------------------- execution
@pytest.mark.parametrize("name", ALL)
def test_every_registered_model_runs_every_subnet_forward_backward(name):
    model, size = _tiny(name)
    model.train()
    x = torch.randn(2, 3, size, size)
    for skip in _some(adn.subnets(model)):
        model.zero_grad(set_to_none=True)
        out = model(x, skip=skip)
        assert out.shape == (2, adn.model_info(name).test_kwargs["num_classes"])
        out.logsumexp(1).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert grads and all(torch.isfinite(g).all() for g in grads.values()), adn.format_skip(skip)
        assert {n for n in grads} == {
            n for n, p in model.named_parameters() if any(p is q for q in adn.core.modules.used_parameters(model, skip))
        }


@pytest.mark.parametrize("name", ALL)
def test_skipped_blocks_are_not_executed(name):
    model, size = _tiny(name)
    model.eval()
    blocks = {n: m for stage in _block_names(model) for n in stage[0] + stage[1] for m in [model.get_submodule(n)]}
    ran: list[str] = []
    hooks = [b.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, b in blocks.items()]
    x = torch.randn(1, 3, size, size)
    for skip in _some(adn.subnets(model)):
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
        (lambda: ConvNeXt(**SMALL_CONVNEXT), lambda: TVConvNeXt(_convnext_setting(), num_classes=10), 32),
    ],
    ids=["mobilenet_v2", "swin", "vit", "convnext"],
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
@pytest.mark.parametrize("name", ALL)
def test_flops_strictly_decrease_as_stages_are_skipped(name):
    """Skipping any one stage of the super-net, and each further stage on the way to the base-net, costs fewer
    FLOPs and parameters (2 * stages + 1 counts: every stage's part shown without counting all 2^stages)."""
    model = _full(name)
    n = model.num_stages
    chain = [tuple(j < k for j in range(n)) for k in range(n + 1)]  # FFF, TFF, TTF, TTT
    singles = [tuple(j == i for j in range(n)) for i in range(n)]  # TFF, FTF, FFT

    def cost(skip):
        return adn.count_flops(model, skip), adn.count_params(model, skip)

    costs = {s: cost(s) for s in {*chain, *singles}}
    for fewer, more in [*zip(chain, chain[1:], strict=False), *((chain[0], s) for s in singles)]:
        assert all(b < a for a, b in zip(costs[fewer], costs[more], strict=True)), adn.format_skip(more)


def test_vit_counts_flops_at_its_own_image_size():
    with torch.device("meta"):
        model = adn.create_model("vit_cifar")
    assert model.image_size == 32
    assert adn.count_flops(model) == adn.count_flops(model, None, 32)


# ------------------------------------------------------------------------------------ published weights
def _published_naming(state_dict):
    """Our ``<norm>.skip_norm.<t>`` keys renamed to the published checkpoints' ``<norm>_skip.<t>``."""
    return {re.sub(r"\.skip_norm\.", "_skip.", k): v for k, v in state_dict.items()}


@pytest.mark.parametrize("name", ALL)
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


# ------------------------------------------------------------------------------------ compile and export
def _three(model):
    """Super-net, a mixed sub-network and base-net: three paths that differ in every stage's state."""
    n = model.num_stages
    return [(False,) * n, tuple(i % 2 == 0 for i in range(n)), (True,) * n]


def _extremes(model):
    """Super-net and base-net: every stage's skip state both ways."""
    return [(False,) * model.num_stages, (True,) * model.num_stages]


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_torch_compile_fullgraph_one_graph_per_subnet(name):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model, size = _tiny(name)
    model.eval()
    configs = _extremes(model)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)  # fullgraph: any graph break fails
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=len(configs)):
        for _ in range(2):  # the second pass reuses the graphs
            for skip in configs:
                assert torch.equal(compiled(x, skip=skip), model(x, skip=skip)), adn.format_skip(skip)
    assert counter.frame_count == len(configs)


@pytest.mark.parametrize("name", ALL)
def test_exported_subnets_equal_the_model(name):
    """adn.export_subnet of the super- and base-net is the same function; the base-net goes through
    torch.export too."""
    model, size = _tiny(name)
    model.eval()
    x = torch.randn(1, 3, size, size)
    super_net, _, base = _three(model)
    with torch.no_grad():
        for skip in (super_net, base):
            exported = adn.export_subnet(model, skip)
            assert sum(p.numel() for p in exported.parameters()) == adn.count_params(model, skip)
            torch.testing.assert_close(exported(x), model(x, skip=skip))
        program = torch.export.export(exported, (x,))
        torch.testing.assert_close(program.module()(x), model(x, skip=base))
