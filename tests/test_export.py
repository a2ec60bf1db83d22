"""Export: a sub-network as a plain module, TorchScript and ONNX, numerically equal to the adaptive model."""

import pytest
import torch

import adn
from adn.cli import main as cli_main
from adn.core.network import SkipAwareNorm
from adn.deploy.export import export_onnx, export_subnet, export_torchscript, onnx_max_abs_diff
from helpers import ADN, randomize_norms, run

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),  # TorchScript is deprecated upstream
    pytest.mark.usefixtures("one_thread"),  # tiny models: one thread (conftest.py)
]

SMALL_MODELS = [n for n in adn.list_models() if adn.model_info(n).input_size <= 64]


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", params=SMALL_MODELS)
def small_model(request):
    info = adn.model_info(request.param)
    model = randomize_norms(adn.create_model(request.param, **info.test_kwargs), seed=0).eval()
    return model, info.input_size


def test_small_models_found():
    assert "resnet20" in SMALL_MODELS


def test_export_equal_and_smaller_for_every_subnet(small_model, tmp_path):
    """Every sub-network in eager mode; every one through TorchScript and ONNX for models of <= 8 sub-networks,
    else the super-net, the base-net and two mixed ones (to keep the suite fast)."""
    model, size = small_model
    x = torch.randn(2, 3, size, size)
    total = _num_params(model)
    configs = adn.subnets(model)
    to_files = set(configs) if len(configs) <= 8 else {configs[0], configs[1], configs[-2], configs[-1]}
    for skip in configs:
        exported = export_subnet(model, skip)
        assert not any(isinstance(m, SkipAwareNorm) for m in exported.modules())
        assert not any(n.endswith("skip_norm") for n, _ in exported.named_modules())
        assert _num_params(exported) == adn.count_params(model, skip) < total
        with torch.no_grad():
            want = model(x, skip=skip)
            torch.testing.assert_close(exported(x), want)
        if skip not in to_files:
            continue
        with torch.no_grad():
            ts_path = tmp_path / f"{adn.format_skip(skip)}.pt"
            export_torchscript(exported, x[:1], ts_path)
            torch.testing.assert_close(torch.jit.load(str(ts_path))(x), want)

        onnx_path = tmp_path / f"{adn.format_skip(skip)}.onnx"
        export_onnx(exported, x[:1], onnx_path)
        # Batch 2 also checks the dynamic batch axis. Random norms make deep nets' logits large: relative bound.
        assert onnx_max_abs_diff(onnx_path, exported, x) < 1e-4 * max(1.0, want.abs().max().item())


def test_export_leaves_model_untouched_and_is_fixed(small_model):
    model, size = small_model
    x = torch.randn(1, 3, size, size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = (True,) * model.num_stages
    exported = export_subnet(model, base)
    assert model.state_dict().keys() == before.keys()
    assert any(isinstance(m, SkipAwareNorm) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(exported(x, skip=base), model(x, skip=base))
        with pytest.raises(ValueError, match="export another skip config"):
            exported(x, skip=(False,) * model.num_stages)
    # The exported parameters keep their names: a subset of the adaptive model's state dict.
    assert set(exported.state_dict()) < set(before)


def test_export_cli_onnx_subprocess(tmp_path):
    out = tmp_path / "r20.onnx"
    proc = run(
        [
            *ADN,
            "export",
            "--model",
            "resnet20",
            "--num-classes",
            "10",
            "--skip-cfg",
            "True",
            "False",
            "True",
            "--format",
            "onnx",
            "--output",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    assert "TFT" in proc.stdout and "max abs diff" in proc.stdout
    diff = float(proc.stdout.split("max abs diff")[1].split()[0])
    assert diff < 1e-4


def test_export_cli_torchscript_and_errors(tmp_path, capsys):
    out, weights = tmp_path / "r20.pt", tmp_path / "weights.pth"
    model = randomize_norms(adn.create_model("resnet20", num_classes=10), seed=0).eval()
    torch.save({"model": model.state_dict()}, weights)
    # The class count comes from the weights' classifier.
    assert (
        cli_main(
            [
                "export",
                "--model",
                "resnet20",
                "--weights",
                str(weights),
                "--skip-cfg",
                "TTT",
                "--format",
                "torchscript",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    before, after = (float(s.split("M")[0].split()[-1]) for s in printed.split("parameters")[0:2])
    assert after < before
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), model(x, skip="TTT"))

    assert cli_main(["export", "--model", "resnet20", "--skip-cfg", "TT", "--output", str(out)]) == 2
    assert "3 stages" in capsys.readouterr().err
    assert (
        cli_main(["export", "--model", "resnet20", "--skip-cfg", "TTT", "--output", str(tmp_path / "no" / "x.pt")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
