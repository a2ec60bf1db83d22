"""adn.convert: torchvision and timm classifiers turned into adaptive-depth models, in place."""

import copy
import importlib
import pickle
import sys
import textwrap
from functools import partial

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

import adn
from adn.conversion import adaptive_class, convert, create_converted, load_pretrained
from helpers import randomize_norms, run

convert_module = importlib.import_module("adn.conversion")  # `adn.convert` is the function

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),  # TorchScript is deprecated upstream
    pytest.mark.usefixtures("one_thread"),  # tiny models: one thread (conftest.py)
]

SWIN = dict(patch_size=[2, 2], embed_dim=16, depths=[2, 2, 4, 2], num_heads=[1, 2, 2, 4], window_size=[2, 2])
CONVNEXT = [CNBlockConfig(16, 32, 2), CNBlockConfig(32, 64, 2), CNBlockConfig(64, 128, 3), CNBlockConfig(128, None, 2)]
MB = partial(MBConvConfig, width_mult=0.25, depth_mult=1.0)
# EfficientNet-B0's setting at a quarter of its width (5 stages of >= 2 blocks: 32 sub-networks)
EFFICIENTNET = [MB(1, 3, 1, 32, 16, 1), MB(6, 3, 2, 16, 24, 2), MB(6, 5, 2, 24, 40, 2), MB(6, 3, 2, 40, 80, 3),
                MB(6, 5, 1, 80, 112, 3), MB(6, 5, 2, 112, 192, 4), MB(6, 3, 1, 192, 320, 1)]  # fmt: skip
# EfficientNetV2's block mix (fused stages first) at a tiny size
EFFICIENTNET_V2 = [FusedMBConvConfig(1, 3, 1, 8, 8, 2), FusedMBConvConfig(4, 3, 2, 8, 16, 2),
                   MBConvConfig(4, 3, 2, 16, 32, 3), MBConvConfig(6, 3, 1, 32, 48, 2)]  # fmt: skip
VIT = dict(image_size=32, patch_size=8, num_layers=8, num_heads=2, hidden_dim=32, mlp_dim=64)

# family -> (builder of a small random-init instance with 10 classes, skippable blocks per stage); input 32x32
TORCHVISION = {
    "resnet18": (lambda: tvm.resnet18(num_classes=10), [1, 1, 1, 1]),
    "regnet_y_400mf": (lambda: tvm.regnet_y_400mf(num_classes=10), [1, 3, 3]),
    "convnext": (lambda: ConvNeXt(CONVNEXT, num_classes=10), [1, 1, 1, 1]),
    "efficientnet": (lambda: EfficientNet(EFFICIENTNET, 0.2, num_classes=10), [1, 1, 1, 1, 2]),
    "efficientnet_v2": (lambda: EfficientNet(EFFICIENTNET_V2, 0.2, num_classes=10, last_channel=64), [1, 1, 1, 1]),
    "mobilenet_v2": (lambda: tvm.mobilenet_v2(num_classes=10, width_mult=0.25), [1, 1, 2, 1, 1]),
    # at half width two rows of the setting have the same width: torchvision makes them one residual run
    "mobilenet_v3_small": (lambda: tvm.mobilenet_v3_small(num_classes=10, width_mult=0.5), [1, 2, 1]),
    "swin": (lambda: SwinTransformer(**SWIN, num_classes=10), [1, 1, 2, 1]),
    "swin_v2": (
        lambda: SwinTransformer(**SWIN, num_classes=10, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2),
        [1, 1, 2, 1],
    ),
    "vit": (lambda: VisionTransformer(**VIT, num_classes=10), [1, 1, 1, 1]),
}
SIZE = 32


def _some(configs, limit=16):
    """All configs up to ``limit``, else both extremes and every stage skipped alone and kept alone."""
    if len(configs) <= limit:
        return configs
    return [c for c in configs if sum(c) in (0, 1, len(c) - 1, len(c))]


@pytest.fixture(scope="module", params=sorted(TORCHVISION))
def converted(request):
    build, skippable = TORCHVISION[request.param]
    torch.manual_seed(0)
    original = randomize_norms(build()).eval()
    reference = copy.deepcopy(original)
    model = convert(original, input_size=SIZE)
    assert model is original  # in place
    return request.param, reference, randomize_norms(model, twins_only=True).eval(), SIZE, skippable


def test_layout_supernet_keys_and_flops(converted):
    name, reference, model, size, skippable = converted
    assert isinstance(model, adn.AdaptiveDepthNet) and isinstance(model, type(reference))
    assert [len(s.skippable) for s in model.adaptive_stages] == skippable, name
    # twins were randomised after converting: the super-net must still be exactly the original network
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = reference(x)
        torch.testing.assert_close(model(x), want)
        torch.testing.assert_close(model(x, skip="F" * model.num_stages), want)
    keys, original_keys = set(model.state_dict()), set(reference.state_dict())
    twins = keys - original_keys
    assert original_keys <= keys and twins and all(".skip_norm." in k for k in twins)
    assert {k.split(".skip_norm.")[0] for k in twins} == {n for n, _ in model.layout.twins}
    super_flops, base_flops = (adn.count_flops(model, s, size) for s in ("F" * model.num_stages, True))
    assert base_flops < 0.9 * super_flops, name


def _assert_only_the_subnet_learns(model, x, skip, what=""):
    """A backward pass of sub-network ``skip`` gives a finite gradient to exactly its parameters; the blocks it
    skips (and the norm sets it does not use) get none."""
    model.zero_grad(set_to_none=True)
    model(x, skip=skip).logsumexp(1).mean().backward()
    used = {id(p) for p in adn.core.modules.used_parameters(model, skip)}
    grads = {id(p) for p in model.parameters() if p.grad is not None}
    assert grads == used, (what, adn.format_skip(skip))
    skipped = [
        b
        for stage, s in zip(model.adaptive_stages, model.resolve_skip(skip), strict=True)
        if s
        for b in stage.skippable
    ]
    assert all(p.grad is None for b in skipped for p in b.parameters()), (what, adn.format_skip(skip))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_subnet_trains(converted):
    name, _, model, size, _ = converted
    model = copy.deepcopy(model).train()
    x = torch.randn(2, 3, size, size)
    for skip in _some(adn.subnets(model)):
        model.zero_grad(set_to_none=True)
        out = model(x, skip=skip)
        assert out.shape == (2, 10)
        out.logsumexp(1).mean().backward()
        used = {id(p) for p in adn.core.modules.used_parameters(model, skip)}
        grads = {id(p) for p in model.parameters() if p.grad is not None}
        assert grads == used, (name, adn.format_skip(skip))
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_export_and_round_trips(converted):
    name, _, model, size, _ = converted
    x = torch.randn(2, 3, size, size)
    configs = adn.subnets(model)
    mixed = configs[len(configs) // 3]
    with torch.no_grad():
        exported = adn.export_subnet(model, mixed)
        assert not any(".skip_norm." in k for k in exported.state_dict())
        assert sum(p.numel() for p in exported.parameters()) == adn.count_params(model, mixed)
        torch.testing.assert_close(exported(x), model(x, skip=mixed))
        for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert type(other) is type(model) and other.layout == model.layout
            for skip in (configs[0], mixed, configs[-1]):
                assert torch.equal(other(x, skip=skip), model(x, skip=skip)), name


def _traced_equal(model, skip, path):
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        adn.deploy.export.export_torchscript(adn.export_subnet(model, skip), x[:1], path)
        torch.testing.assert_close(torch.jit.load(str(path))(x), model(x, skip=skip))


@pytest.mark.parametrize("name", ["convnext", "vit"])
def test_exported_subnet_traces(name, tmp_path):
    model = convert(TORCHVISION[name][0](), input_size=SIZE).eval()
    _traced_equal(model, "TFTF", tmp_path / "net.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(TORCHVISION) - {"convnext", "vit"}))
def test_exported_subnet_traces_every_family(name, tmp_path):
    model = convert(TORCHVISION[name][0](), input_size=SIZE).eval()
    _traced_equal(model, adn.subnets(model)[1], tmp_path / "net.pt")


# ------------------------------------------------------------------------------ discovery, declarations
def _layout(model):
    return model.layout.stages


def test_generic_fallback_finds_what_the_family_rules_find(monkeypatch):
    # stages in a Sequential subclass, flat MobileNet blocks, stages between patch mergings, a flat encoder
    families = ["regnet_y_400mf", "mobilenet_v3_small", "swin", "vit"]
    models = {name: TORCHVISION[name][0]() for name in families}
    ruled = {name: _layout(convert(copy.deepcopy(m), input_size=SIZE)) for name, m in models.items()}
    monkeypatch.setattr(convert_module, "FAMILIES", [])
    for name, model in models.items():
        assert _layout(convert(model, input_size=SIZE)) == ruled[name], name


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "swin_t", "vit_b_16"])
def test_converted_torchvision_model_equals_the_registered_one(name):
    """Same stages, twins and state-dict keys as adn's own model of that name, and the same FLOPs everywhere:
    checkpoints move between the two."""
    with torch.device("meta"):  # full size, shapes only
        registered = adn.create_model(name)
        converted_ = convert(tvm.get_model(name), input_size=224 if name == "vit_b_16" else 64)
    assert set(converted_.state_dict()) == set(registered.state_dict())
    assert _layout(converted_) == _layout(registered)
    assert sorted(converted_.layout.twins) == sorted(registered.layout.twins)
    assert converted_.layout.inactive == registered.layout.inactive
    for skip in (False, True):
        assert adn.count_flops(converted_, skip) == adn.count_flops(registered, skip), adn.format_skip(skip)


def test_declared_shared_norms():
    model = convert(tvm.resnet18(), input_size=SIZE)
    twins = {n for n, _ in model.layout.twins}
    assert "layer2.0.bn1" in twins and "layer2.0.downsample.1" not in twins and "layer2.1.bn1" not in twins
    regnet = convert(tvm.regnet_y_400mf(), input_size=SIZE)
    assert not any(".proj." in n for n, _ in regnet.layout.twins)
    custom = convert(tvm.resnet18(), shared_norms=(), input_size=SIZE)
    assert "layer2.0.downsample.1" in {n for n, _ in custom.layout.twins}


def test_vit_num_stages_option():
    build = TORCHVISION["vit"][0]
    assert [len(s) for s in convert(build()).adaptive_stages] == [2, 2, 2, 2]
    assert [len(s) for s in convert(build(), num_stages=3).adaptive_stages] == [3, 3, 2]
    with pytest.raises(ValueError, match="num_stages=5 needs at least 10 layers"):
        convert(build(), num_stages=5)
    with pytest.raises(ValueError, match="num_stages is for flat encoders"):
        convert(tvm.resnet18(), num_stages=2)


def test_explicit_stages_are_checked():
    model = tvm.resnet18()
    convert(model, stages=[["layer3.0", "layer3.1"], [model.layer4[0], model.layer4[1]]], input_size=SIZE)
    assert model.num_stages == 2 and model.adaptive_stages[1].skippable == [model.layer4[1]]
    with pytest.raises(ValueError, match=r"block 'layer2.0' of stage 0 .*cannot be skipped: it changes the shape"):
        convert(tvm.resnet18(), stages=[["layer1.1", "layer2.0"]], input_size=SIZE)
    with pytest.raises(ValueError, match=r"'layer1.1.conv2' .* no identity shortcut"):
        convert(tvm.resnet18(), stages=[["layer1.1.conv1", "layer1.1.conv2"]], input_size=SIZE)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()) for _ in range(3)))
        self.stem, self.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def test_resnext_and_wide_resnet():
    """The other ResNet variants (grouped and wide bottlenecks), shallow: parity and both sub-networks."""
    for kwargs in (dict(groups=32, width_per_group=4), dict(width_per_group=128)):
        torch.manual_seed(0)
        original = randomize_norms(ResNet(Bottleneck, [2, 1, 1, 1], num_classes=10, **kwargs)).eval()
        reference = copy.deepcopy(original)
        model = randomize_norms(convert(original, input_size=SIZE), twins_only=True)
        assert model.num_stages == 1  # one-block stages have nothing to skip
        x = torch.randn(2, 3, SIZE, SIZE)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x))
        model.train()
        for skip in adn.subnets(model):
            _assert_only_the_subnet_learns(model, x, skip, str(kwargs))


def test_errors_are_one_line():
    for model in (Plain(), tvm.squeezenet1_1(num_classes=10)):
        with pytest.raises(ValueError) as err:
            convert(model)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"cannot convert {type(model).__name__}: no residual stage")
        assert "stages=" in message  # says what to do
        assert not isinstance(model, adn.AdaptiveDepthNet)  # left as it was
    with pytest.raises(ValueError, match="forward fails on a 1x3x16x16 probe .*input_size"):
        convert(VisionTransformer(**VIT), input_size=16)


def test_already_adaptive_is_idempotent():
    model = adn.create_model("resnet20", num_classes=10)
    assert convert(model) is model
    converted_ = convert(tvm.resnet18(), input_size=SIZE)
    layout = converted_.layout
    assert convert(converted_) is converted_ and converted_.layout == layout
    with pytest.raises(ValueError, match="already an adaptive-depth model"):
        convert(converted_, shared_norms=())


def test_class_is_cached_and_keeps_the_original():
    a, b = convert(tvm.resnet18(), input_size=SIZE), convert(tvm.resnet18(), input_size=SIZE)
    assert type(a) is type(b) is adaptive_class(tvm.ResNet)
    assert isinstance(a, tvm.ResNet) and type(a).__name__ == "AdaptiveResNet"


# ------------------------------------------------------------------------------ saving and loading
def test_torch_save_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = randomize_norms(convert(tvm.mobilenet_v3_small(num_classes=10))).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.save({"x": x, "out": model(x, skip="TFTF")}, tmp_path / "expected.pt")
    torch.save(model, tmp_path / "model.pt")
    script = textwrap.dedent(
        f"""
        import torch, torchvision
        torch.set_num_threads(1)  # the parent's count (one_thread): the same kernels, so the same sums, bit for bit
        model = torch.load({str(tmp_path / "model.pt")!r}, weights_only=False)
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert isinstance(model, torchvision.models.MobileNetV3), type(model)
        assert type(model).__name__ == "AdaptiveMobileNetV3" and model.num_stages == 4
        with torch.no_grad():
            assert torch.equal(model(expected["x"], skip="TFTF"), expected["out"])
        print("ok")
        """
    )
    result = run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_load_pretrained_reads_the_original_weights(tmp_path):
    torch.manual_seed(0)
    original = randomize_norms(tvm.mobilenet_v3_small(num_classes=10, width_mult=0.5)).eval()
    torch.save(original.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": original.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = original(x)
    for source in (tmp_path / "plain.pt", tmp_path / "checkpoint.pt", {"state_dict": original.state_dict()}):
        model = create_converted("tv:mobilenet_v3_small", num_classes=10, width_mult=0.5)
        randomize_norms(model).eval()
        assert load_pretrained(model, source) is model
        with torch.no_grad():
            torch.testing.assert_close(model(x), want)
        for norm, _ in model.layout.twins:  # twins start as copies of the loaded main norms
            main = model.get_submodule(norm)
            assert torch.equal(main.skip_norm.weight, main.weight)
            assert torch.equal(main.skip_norm.running_var, main.running_var)
    with pytest.raises(ValueError, match=r"plain.pt: weights do not fit this model"):
        load_pretrained(create_converted("tv:mobilenet_v3_small", num_classes=7, width_mult=0.5), tmp_path / "plain.pt")


class Residual(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv, self.bn_skip = nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out)  # a norm named *_skip
        self.keep = c_in == c_out and stride == 1

    def forward(self, x):
        y = self.bn_skip(self.conv(x))
        return x + y if self.keep else y


class Custom(nn.Module):
    """A model no rule knows: stages in ModuleLists that its forward loops over."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stages_ = nn.ModuleList(
            nn.ModuleList([Residual(c_in, c_out, 2), *(Residual(c_out, c_out) for _ in range(n - 1))])
            for c_in, c_out, n in [(8, 8, 3), (8, 16, 2)]
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages_:
            for block in stage:
                x = block(x)
        return self.head(x.mean((2, 3)))


def test_generic_conversion_of_a_custom_model_and_its_weights():
    torch.manual_seed(0)
    original = randomize_norms(Custom()).eval()
    model = convert(copy.deepcopy(original), input_size=SIZE)
    assert model.layout.stages == (
        (("stages_.0.0", "stages_.0.1"), ("stages_.0.2",)),
        (("stages_.1.0",), ("stages_.1.1",)),
    )
    assert {n for n, _ in model.layout.twins} == {f"stages_.{i}.bn_skip" for i in ("0.0", "0.1", "1.0")}
    model = load_pretrained(randomize_norms(model), original.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))
        base = model.subnet(True)
        assert isinstance(base.stages_[0][2], nn.Identity)  # a skipped block in a ModuleList: Identity
        assert adn.count_flops(model, True, SIZE) < adn.count_flops(model, False, SIZE)
        torch.testing.assert_close(adn.export_subnet(model, "TF")(x), model(x, skip="TF"))


def _has_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def test_create_converted_specs():
    model = create_converted("torchvision:mobilenet_v3_small", num_classes=10)
    assert isinstance(model, tvm.MobileNetV3) and model.num_stages == 4
    with pytest.raises(ValueError, match="num_stages is for flat encoders"):  # convert's options reach convert
        create_converted("tv:mobilenet_v3_small", num_stages=2)
    for spec, match in [
        ("tv:resnet19", "unknown torchvision classification model 'resnet19'; did you mean resnet18"),
        ("resnet18", "invalid model spec 'resnet18': use 'tv:<name>'"),
        ("keras:resnet18", "invalid model spec"),
        ("tv:fasterrcnn_resnet50_fpn", "unknown torchvision classification model"),
        (
            "timm:resnet5O",
            "unknown timm model 'resnet5O'; did you mean" if _has_timm() else "timm is not installed",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            create_converted(spec)


def test_calibrate_and_bench_work_on_a_converted_model():
    torch.manual_seed(0)
    model = convert(tvm.mobilenet_v3_small(num_classes=10)).eval()
    x = torch.randn(4, 3, 32, 32)
    adn.calibrate(model, [x, x], subnets=["TTTT", "FTFT"])
    assert adn.is_calibrated(model, "TTTT") and not adn.is_calibrated(model, "FFFF")
    rows = adn.bench_subnets(
        model, resolution=32, batch_size=1, min_run_time=0.01, configs=["FFFF", "TTTT"], progress=False
    )
    assert [r["skip"] for r in rows] == ["FFFF", "TTTT"] and rows[1]["gflops"] < rows[0]["gflops"]


# ------------------------------------------------------------------------------ timm (optional)
TIMM = {
    "resnet18": dict(),
    "convnext_atto": dict(),
    "efficientnet_b0": dict(),
    "mobilenetv3_small_050": dict(),
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8),
}


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_models(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    original = randomize_norms(timm.create_model(name, pretrained=False, num_classes=10, **TIMM[name])).eval()
    reference = copy.deepcopy(original)
    model = randomize_norms(convert(original), twins_only=True)
    assert model.num_stages >= 4 and isinstance(model, type(reference))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        base = model(x, skip=True)
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x, skip=True), base)
        torch.testing.assert_close(adn.export_subnet(model, True)(x), base)
    assert set(model.state_dict()) - set(reference.state_dict()) == {
        k for k in model.state_dict() if ".skip_norm." in k
    }
    assert adn.count_flops(model, True, 32) < adn.count_flops(model, False, 32)
    model.train()
    for skip in _some(adn.subnets(model), 4):
        _assert_only_the_subnet_learns(model, x, skip, name)
    if name == "convnext_atto":  # its own `stages` module stays what its forward runs
        assert isinstance(model.stages, nn.Sequential) and len(model.adaptive_stages) == 4
