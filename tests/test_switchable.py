"""The switchable form: the skip config as a tensor input; eager, torch.export (.pt2) and onnxruntime equal
``model.eval()(x, skip=c)`` for every config c, calibrated and not."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torchvision
from torch import nn

import adn
from adn.deploy.export_switchable import export_program, export_switchable
from adn.deploy.switchable import STATS_MODES, switchable
from helpers import randomize_norms

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest.py)

# (model, calibrated statistics): every small registered model as trained (None: constant norms), a converted
# torchvision ResNet calibrated with its BatchNorms gathering per-config statistics, and calibrated ResNet-20s
# holding them as constants of a branch per upstream config, corrected at run time, and both (the default, also
# on MobileNetV2). Exports are the slow part: one per case.
CASES = [
    ("resnet20", None),
    ("mobilenet_v2_cifar", None),
    ("vit_cifar", None),
    ("converted_resnet", "gathered"),
    ("resnet20", "constant"),
    ("resnet20", "affine"),
    ("resnet20", "hybrid"),
]
NO_ONNX: set[str] = set()


def make_model(name, calibrated=False):
    if name == "converted_resnet":  # a torchvision model made adaptive by adn.convert, at a tiny size
        tv = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10)
        model, size = randomize_norms(adn.convert(tv, input_size=32), seed=0).eval(), 32
    else:
        info = adn.model_info(name)
        model, size = randomize_norms(adn.create_model(name, **info.test_kwargs), seed=0).eval(), info.input_size
    if calibrated:
        torch.manual_seed(1)
        adn.calibrate(model, [torch.randn(4, 3, size, size) for _ in range(2)], batches=2)
    return model.eval(), size


def close(got, want):
    got = torch.as_tensor(got)
    # random norms make deep nets' logits large: a relative bound
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, size, paths) per case, exported once for the module."""
    cache = {}

    def get(name, calibrated):
        if (name, calibrated) not in cache:
            model, size = make_model(name, calibrated is not None)
            out = tmp_path_factory.mktemp(f"{name}-{calibrated}") / "net.onnx"
            kwargs = {"stats": calibrated} if calibrated else {}  # the default otherwise
            paths = export_switchable(model, out, resolution=size, onnx=name not in NO_ONNX, **kwargs)
            cache[name, calibrated] = model, size, paths
        return cache[name, calibrated]

    return get


def test_small_models_covered():
    small = {n for n in adn.list_models() if adn.model_info(n).input_size <= 64}
    # resnet56 is resnet20, deeper; Swin's switchable form runs in eager and torch.compile, not export (torch 2.14)
    assert small - {"resnet56", "swin_cifar"} == {n for n, _ in CASES} - {"converted_resnet"}


def test_swin_eager_every_config():
    model, size = make_model("swin_cifar")
    net, x = switchable(model), torch.randn(2, 3, size, size)
    with torch.no_grad():
        for c in adn.skip_configs(model):
            close(net(x, torch.tensor(c)), model(x, skip=c))


def test_calibrated_mobilenet_every_stats_mode():
    # its twinned stem and last block sit outside the stages; every way of holding the statistics equals eager in
    # PyTorch (resnet20 carries them through ONNX and torch.export: mobilenet's export costs minutes per mode)
    model, size = make_model("mobilenet_v2_cifar", calibrated=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for stats in STATS_MODES:
            net = switchable(model, stats)
            assert net.stats_mode == stats
            for c in adn.skip_configs(model):
                close(net(x, torch.tensor(c)), model(x, skip=c))


@pytest.mark.parametrize(("name", "calibrated"), CASES)
def test_every_config_equals_eager(name, calibrated, exported):
    import onnxruntime as ort

    model, size, paths = exported(name, calibrated)
    assert adn.is_calibrated(model) == (calibrated is not None)
    session = None
    if "onnx" in paths:
        session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image", "skip"]
    program = torch.export.load(paths["pt2"]).module()
    net = switchable(model)
    x = torch.randn(3, 3, size, size)  # batch 3: the batch axis is dynamic (traced at 2)
    with torch.no_grad():
        for c in adn.skip_configs(model):
            want, skip = model(x, skip=c), torch.tensor(c)
            close(net(x, skip), want)
            close(program(x, skip), want)
            if session is not None:
                close(session.run(None, {"image": x.numpy(), "skip": np.array(c)})[0], want)
    if session is None:
        return
    meta = json.loads(onnx.load(str(paths["onnx"]), load_external_data=False).metadata_props[0].value)
    assert meta["num_stages"] == model.num_stages and len(meta["subnets"]) == 2**model.num_stages
    assert meta["input_size"] == size and meta["calibrated_stats"] == (calibrated or "none")


def test_weights_stored_once(exported):
    model, _, paths = exported("resnet20", None)
    weights = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    data = paths["onnx"].with_name(paths["onnx"].name + ".data").stat().st_size
    assert data <= 1.05 * weights  # every branch of every If reads the outer initializers


def _graphs(graph, outer=None):
    """(graph, enclosing graph) for ``graph`` and every ``If`` branch below it."""
    yield graph, outer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g, graph)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2_cifar"])
def test_branch_weights_are_branch_initializers(name, exported):
    # onnxruntime pre-packs (NCHWc) only convolutions whose weight is an initializer of their own graph: a weight
    # that one branch alone reads must live in that branch, and a weight two branches read stays outside, once
    _, _, paths = exported(name, None)
    graphs = list(_graphs(onnx.load(str(paths["onnx"]), load_external_data=False).graph))
    readers: dict[str, int] = {}
    for graph, _ in graphs:
        for used in {i for node in graph.node for i in node.input}:
            readers[used] = readers.get(used, 0) + 1
    main = graphs[0][0]
    outer_only = [
        i.name
        for i in main.initializer
        if readers.get(i.name, 0) == 1 and i.name not in {x for node in main.node for x in node.input}
    ]
    assert not outer_only
    branch_convs = [
        (node, graph) for graph, outer in graphs if outer is not None for node in graph.node if node.op_type == "Conv"
    ]
    local = [node.input[1] in {i.name for i in graph.initializer} for node, graph in branch_convs]
    assert branch_convs and all(
        ok or readers[node.input[1]] >= 2 for ok, (node, _) in zip(local, branch_convs, strict=True)
    )
    assert any(local)
    # mobilenet's stem and first and last blocks join the first and last stages' conds: one If per stage
    ifs = [node for node in main.node if node.op_type == "If"]
    assert len(ifs) == (3 if name == "resnet20" else 5)


def test_constant_stats_are_branch_constants(exported):
    # stage i's cond sits under a tree over the i flags before it: 2^(i+1) branches, no statistics gathered
    model, _, paths = exported("resnet20", "constant")
    graphs = list(_graphs(onnx.load(str(paths["onnx"]), load_external_data=False).graph))
    ifs = sum(node.op_type == "If" for graph, _ in graphs for node in graph.node)
    assert ifs == sum(2 ** (i + 1) - 1 for i in range(model.num_stages))
    constants = {i.name for graph, _ in graphs for i in graph.initializer}
    norms = [node for graph, _ in graphs for node in graph.node if node.op_type == "BatchNormalization"]
    assert norms and all(set(node.input[3:5]) <= constants for node in norms)  # mean, var: no Gather output


def _if_stages(graph) -> list[tuple[int, onnx.NodeProto]]:
    """(the stage whose flag it reads, the node) for every ``If``: its condition is ``Gather(skip, <index>)``."""
    graphs = [g for g, _ in _graphs(graph)]
    made = {o: node for g in graphs for node in g.node for o in node.output}
    values = {i.name: onnx.numpy_helper.to_array(i) for g in graphs for i in g.initializer if not i.dims}
    values.update(
        {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in made.values() if n.op_type == "Constant"}
    )
    out = []
    for node in (node for g in graphs for node in g.node if node.op_type == "If"):
        gather = made[node.input[0]]
        while gather.op_type != "Gather":  # a Cast or Squeeze on the way
            gather = made[gather.input[0]]
        out.append((int(values[gather.input[1]]), node))
    return out


def test_hybrid_stats_structure(exported):
    # the first two stages (their weights are small: folding a copy per upstream config costs less than the model)
    # are cond trees with constant leaves; the last is one cond whose norms take a per-config correction
    model, _, paths = exported("resnet20", "hybrid")
    graph = onnx.load(str(paths["onnx"]), load_external_data=False).graph
    ifs = _if_stages(graph)
    # stage 0: 1 If (2 leaves); stage 1: a tree on flag 0 over 2 Ifs on flag 1 (4 leaves); stage 2: 1 If
    assert sorted(stage for stage, _ in ifs) == [0, 0, 1, 1, 2]
    corrected = {}  # BatchNormalization nodes whose scale is gathered, per stage of the If around them
    for stage, node in ifs:
        for branch in node.attribute:
            constants = {i.name for g, _ in _graphs(branch.g) for i in g.initializer} | {
                i.name for i in graph.initializer
            }
            norms = [n for g, _ in _graphs(branch.g) for n in g.node if n.op_type == "BatchNormalization"]
            corrected[stage] = corrected.get(stage, 0) + sum(n.input[1] not in constants for n in norms)
    assert corrected[0] == corrected[1] == 0 < corrected[2]


def test_constant_stats_fall_back_to_gathered():
    # calibrated for two configs only: the others keep the trained statistics, so a norm's statistics depend
    # on downstream flags too and cannot be one constant per upstream config
    model, size = make_model("resnet20")
    torch.manual_seed(1)
    adn.calibrate(model, [torch.randn(4, 3, size, size)], batches=1, subnets=["FFF", "TTT"])
    net, x = switchable(model, "constant"), torch.randn(2, 3, size, size)
    assert net.stats_mode == "gathered"
    with torch.no_grad():
        for c in adn.skip_configs(model):
            close(net(x, torch.tensor(c)), model(x, skip=c))
    assert switchable(make_model("resnet20")[0], "constant").stats_mode == "none"
    with pytest.raises(ValueError, match="stats must be one of hybrid, affine, gathered, constant"):
        switchable(model, "folded")


def test_bad_skip_tensor():
    model, size = make_model("resnet20")
    net, x = switchable(model), torch.randn(1, 3, size, size)
    with pytest.raises(ValueError, match=r"shape \[3\]"):
        net(x, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="torch.bool"):
        net(x, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="bool tensor"):
        net(x, "TFT")
    with pytest.raises(ValueError, match="inference only"):
        net.train()


class _Branchy(nn.Module):  # a residual block with data-dependent Python control flow
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return x + y if y.mean() > 0 else x - y


def test_untraceable_model_gets_one_line(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), *[_Branchy(8) for _ in range(4)], nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.append(nn.Linear(8, 10))
    model = adn.convert(net, input_size=16).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():  # eager: fine
        base = (True,) * model.num_stages
        close(switchable(model)(x, torch.tensor(base)), model(x, skip=base))
    with pytest.raises(ValueError, match=r"cannot make \S+ \(_Branchy\) switchable.*single depths"):
        export_switchable(model, tmp_path / "x.onnx", resolution=16)
    assert list(tmp_path.iterdir()) == []  # nothing written on failure
    with pytest.raises(ValueError, match="single depths"):
        export_program(model, x)


def test_pt2_runs_without_adn(exported, tmp_path):
    model, size, paths = exported("converted_resnet", "gathered")
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = model(x, skip="TFTF")
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys; sys.modules['adn'] = None\n"
        "import json, torch\n"
        f"p = torch.export.load({str(paths['pt2'])!r}).module()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "print(json.dumps(p(x, torch.tensor([True, False, True, False])).flatten().tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    close(torch.tensor(json.loads(out.stdout.strip().splitlines()[-1])).reshape(want.shape), want)


def test_torch_compile_every_config_default_settings():
    """torch.compile(model, fullgraph=True) with dynamo's defaults: one frame serves all 32 sub-networks of
    mobilenet_v2_cifar (the default recompile limit is 8), then a second model in the same process."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    for name, frames in (("mobilenet_v2_cifar", 1), ("vit_cifar", 1)):
        model, size = make_model(name)
        counter = CompileCounter()
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            for c in adn.skip_configs(model):
                close(compiled(x, torch.tensor(c)), model(x, skip=c))
        assert counter.frame_count == frames, name


def test_torch_compile_inductor_tiny():
    # a transformer: torch 2.14's inductor miscompiles a torch.cond around convolutions on the CPU (it lays the
    # branch input out channels-last but the branch expects it contiguous), see docs/deploy.md
    torch._dynamo.reset()
    model, size = make_model("vit_cifar")
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for c in [(False,) * 4, (True, False, True, False), (True,) * 4]:
            close(compiled(x, torch.tensor(c)), model(x, skip=c))


def test_cli_all_subnets(tmp_path, capsys):
    from adn.cli import main as cli_main

    out = tmp_path / "r20.onnx"
    args = ["export", "--model", "resnet20", "--num-classes", "10", "--all-subnets", "--output", str(out)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "8 sub-networks in one file" in printed
    assert float(printed.split("max abs diff")[1].split()[0]) < 1e-4
    assert out.exists() and out.with_name("r20.onnx.data").exists() and out.with_suffix(".pt2").exists()
    assert cli_main([*args[:-2], "--skip-cfg", "TTT", "--output", str(tmp_path / "x.onnx")]) == 2
    assert "either --skip-cfg" in capsys.readouterr().err
    assert cli_main([*args[:-1], str(tmp_path / "x.pt")]) == 2
    assert "ending in .onnx" in capsys.readouterr().err
    assert cli_main([*args, "--calibrated-stats", "hybrid", "--quantize", "int8"]) == 2  # int8 needs constants
    assert "use --calibrated-stats constant" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r20.onnx", "r20.onnx.data", "r20.pt2"]


@pytest.mark.parametrize("move", ["double", "to"])
def test_calibrated_follows_model_to(move):
    """Issue 29 defect 3: a calibrated model moved after its switchable form was built (model.double(),
    model.to(dtype)) runs a tensor skip in the new dtype, with the per-config statistics, like a tuple skip."""
    model, size = make_model("converted_resnet", calibrated=True)  # gathers per-config statistics
    skip = (True, False, True, False)
    model(torch.randn(1, 3, size, size), skip=torch.tensor(skip))  # builds the switchable form in float32
    model = model.double() if move == "double" else model.to(torch.float64)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        got = model(x, skip=torch.tensor(skip))
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, model(x, skip=skip))


@pytest.mark.parametrize(("name", "calibrated"), [c for c in CASES if c[0] not in NO_ONNX])
def test_no_warning_at_session_creation(name, calibrated, exported):
    """No unused initializer in the file: onnxruntime warned 'Removing initializer' at every session (MobileNetV2)."""
    _, _, paths = exported(name, calibrated)
    code = "import onnxruntime as o, sys; o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    done = subprocess.run([sys.executable, "-c", code, str(paths["onnx"])], capture_output=True, text=True, check=True)
    assert "[W:onnxruntime" not in done.stderr, done.stderr


def test_torch_compile_inductor_cnn_every_config():
    """A CNN on the CPU under inductor with its default options, every sub-network from one compiled graph:
    inductor's layout optimisation (channels-last convolution outputs) broke the stride check of a torch.cond
    branch in torch 2.14 (docs/deploy.md has the reduced case) until each cond's operand became an opaque copy."""
    torch._dynamo.reset()
    model, size = make_model("resnet20")
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for c in adn.skip_configs(model):
            close(compiled(x, torch.tensor(c)), model(x, skip=c))


@pytest.mark.parametrize("mode", ["hybrid", "affine"])
def test_int8_refuses_run_time_stats(mode, exported, tmp_path):
    # INT8 folds the norms into the weights: statistics corrected at run time cannot be, one line says what to do
    from adn.deploy.quantize_switchable import quantize_switchable_int8

    _, size, paths = exported("resnet20", mode)
    with pytest.raises(ValueError, match=f"at run time \\({mode}\\).*--calibrated-stats constant"):
        quantize_switchable_int8(paths["onnx"], tmp_path / "int8.onnx", [torch.randn(2, 3, size, size)])
    assert not (tmp_path / "int8.onnx").exists()
