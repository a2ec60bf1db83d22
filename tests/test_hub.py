"""Sharing: save_pretrained -> from_pretrained round trips (every registered model, a converted torchvision model, a
calibrated model), the model card, push_to_hub against a mocked HfApi, loading offline from a Hub-style cache,
``adn push`` and hubconf.py. Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

import pytest
import torch

import adn
from adn.core.checkpoint import peek_checkpoint
from adn.hub import FORMAT_VERSION
from helpers import ADN, ROOT, randomize_norms, run

huggingface_hub = pytest.importorskip("huggingface_hub")
pytestmark = pytest.mark.usefixtures("one_thread")
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _tiny(name: str, **kwargs):
    """The model's test instance, its norms randomised (so a lost twin or statistic shows), and an input for it."""
    info = adn.model_info(name) if name in adn.list_models() else adn.ModelInfo(name, None, 64)
    size = info.test_kwargs.get("image_size", info.input_size if info.input_size <= 64 else 64)
    model = adn.create_model(name, **{**info.test_kwargs, **kwargs})
    randomize_norms(model, seed=0)
    return model.eval(), torch.randn(1, 3, size, size)


def _assert_same_outputs(model, loaded, x):
    with torch.no_grad():
        for skip in adn.subnets(model):
            assert torch.equal(model(x, skip=skip), loaded(x, skip=skip)), adn.format_skip(skip)


def _error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message  # one line
    return message


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A resnet20 folder, the model it was saved from, and an input."""
    model, x = _tiny("resnet20")
    folder = model.save_pretrained(tmp_path_factory.mktemp("hub") / "resnet20")
    return folder, model, x


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", adn.list_models())
def test_round_trip_every_registered_model(name, tmp_path, monkeypatch):
    # the FLOPs column is counted in the other tests (and in test_flops.py); here: weights, config, outputs
    monkeypatch.setattr(adn.hub, "count_flops_table", lambda model, configs: [0] * len(configs))
    model, x = _tiny(name)
    model.skip = "T" * model.num_stages  # a non-default default sub-network travels too
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = adn.from_pretrained(tmp_path)
    assert loaded.skip == model.skip and not loaded.training and loaded.hub_config["architecture"] == name
    _assert_same_outputs(model, loaded, x)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == name and len(config["subnets"]) == len(adn.subnets(model))


def test_round_trip_converted_torchvision_model(tmp_path):
    model, x = _tiny("tv:resnet18", num_classes=5)
    model.save_pretrained(tmp_path)
    loaded = adn.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "AdaptiveResNet" and loaded.fc.out_features == 5
    _assert_same_outputs(model, loaded, x)


def test_round_trip_calibrated_model_keeps_every_subnet_statistics(tmp_path):
    model, x = _tiny("resnet20")
    torch.manual_seed(1)
    adn.calibrate(model, [torch.randn(8, 3, 32, 32) * 2 + 1 for _ in range(2)])
    model.save_pretrained(tmp_path)
    loaded = adn.from_pretrained(tmp_path)
    assert adn.is_calibrated(loaded) and json.loads((tmp_path / "config.json").read_text())["calibrated"]
    _assert_same_outputs(model, loaded, x)
    adn.clear_calibration(loaded)  # the statistics matter: without them the outputs change
    assert not torch.allclose(model(x, skip="TFT"), loaded(x, skip="TFT"))


def test_num_classes_gives_a_fresh_classifier(saved):
    folder, model, _ = saved
    loaded = adn.from_pretrained(folder, num_classes=3)
    assert loaded.fc.out_features == 3 and torch.equal(loaded.conv1.weight, model.conv1.weight)


# ------------------------------------------------------------------------------------------------ errors
def test_folder_of_another_architecture(saved, tmp_path):
    folder = saved[0]
    with pytest.raises(ValueError) as e:
        adn.from_pretrained(folder, model_name="resnet56")
    assert "holds a resnet20 model, not resnet56" in _error(e)
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)  # config.json of resnet20, weights of mobilenet_v2
    adn.save_weights(_tiny("mobilenet_v2")[0], tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as e:
        adn.from_pretrained(tmp_path)
    assert "weights do not fit this model" in _error(e)


@pytest.mark.parametrize(
    ("damage", "error", "expected"),
    [
        (lambda f: (f / "model.safetensors").unlink(), FileNotFoundError, "checkpoint file not found"),
        (lambda f: (f / "config.json").unlink(), FileNotFoundError, "has no config.json"),
        (lambda f: _truncate(f / "model.safetensors"), ValueError, "truncated or corrupt"),
        (lambda f: _truncate(f / "config.json"), ValueError, "is not valid JSON"),
        (lambda f: _edit_config(f, adn_format=FORMAT_VERSION + 1), ValueError, "newer than this adn reads"),
        (lambda f: _edit_config(f, adn_format=None), ValueError, "not an adn model config"),
        (lambda f: _edit_config(f, architecture="resnet7"), ValueError, "unknown model 'resnet7'"),
    ],
)
def test_missing_corrupt_or_newer_files_are_one_line(saved, tmp_path, damage, error, expected):
    shutil.copytree(saved[0], tmp_path, dirs_exist_ok=True)
    damage(tmp_path)
    with pytest.raises(error) as e:
        adn.from_pretrained(tmp_path)
    assert expected in _error(e)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    if changes.get("adn_format", 0) is None:
        del config["adn_format"]
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_huggingface_hub_names_the_extra(saved, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    for call in (lambda: _tiny("resnet20")[0].save_pretrained(tmp_path), lambda: adn.from_pretrained("org/name")):
        with pytest.raises(ValueError) as e:
            call()
        assert 'pip install -e ".[hub]"' in _error(e) and not any(tmp_path.iterdir())
    _assert_same_outputs(saved[1], adn.from_pretrained(saved[0]), saved[2])  # a local folder needs no extra


def test_model_not_built_by_create_model(tmp_path):
    with pytest.raises(ValueError, match="not built by adn.create_model"):
        adn.save_pretrained(torch.nn.Linear(2, 2), tmp_path)


# ------------------------------------------------------------------------------------------------ model card
def test_model_card_has_the_table_and_model_index(tmp_path):
    model, _ = _tiny("resnet20")
    rows = [
        {"skip": adn.format_skip(s), "acc1": 90.0 - i, "latency_ms": 2.0 - i / 8}
        for i, s in enumerate(adn.subnets(model))
    ]
    meta = {"classes": [str(i) for i in range(10)], "dataset": "digits", "subnets": rows, "mean": [0.5] * 3}
    model.save_pretrained(tmp_path, meta=meta, repo_id="org/resnet20-digits")
    card = huggingface_hub.ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "adn"
    results = {r.metric_config: r.metric_value for r in card.data.eval_results}
    assert results == {r["skip"]: r["acc1"] for r in rows}
    table = [line for line in card.text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows) and "Acc@1 (%)" in table[0] and "**FFF** (default)" in table[1]
    assert 'adn.create_model("hf-hub:org/resnet20-digits")' in card.text
    assert "](pareto.png)" in card.text and (tmp_path / "pareto.png").stat().st_size > 1000  # drawn: acc + latency
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["classes"] == meta["classes"] and config["mean"] == [0.5] * 3 and config["subnets"][7]["acc1"] == 83


# ------------------------------------------------------------------------------------------------ the Hub
class FakeHfApi:
    """``HfApi`` whose uploads land in a Hugging Face cache laid out as downloads leave it:
    ``models--ORG--NAME/snapshots/<revision>/...`` and ``refs/main``."""

    cache = None
    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private))

    def upload_folder(self, *, repo_id, folder_path, commit_message, revision, create_pr):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder_path, repo / "snapshots" / REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REVISION)
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{REVISION}",
            commit_message=commit_message,
            commit_description="",
            oid=REVISION,
        )


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(FakeHfApi, "cache", tmp_path / "cache")
    monkeypatch.setattr(FakeHfApi, "calls", [])
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


def test_push_to_hub_then_load_offline_from_the_cache(fake_hub, tmp_path):
    model, x = _tiny("resnet20")
    commit = model.push_to_hub("org/resnet20-adn", private=True)
    assert commit.oid == REVISION
    assert fake_hub.calls == [
        ("create_repo", "org/resnet20-adn", True),
        ("upload_folder", "org/resnet20-adn", ["README.md", "config.json", "model.safetensors"]),
    ]
    loaded = adn.from_pretrained("org/resnet20-adn", cache_dir=fake_hub.cache, local_files_only=True)
    _assert_same_outputs(model, loaded, x)
    torch.save({"x": x, "y": model(x, skip="TFT")}, tmp_path / "expected.pt")
    # as a user would: HF_HUB_OFFLINE=1 (read at import) with the cache where huggingface_hub looks for it
    script = (
        "import sys, torch, adn; torch.set_num_threads(1); e = torch.load(sys.argv[1]); "  # the parent's threads
        "m = adn.create_model('hf-hub:org/resnet20-adn'); "
        "assert torch.equal(m(e['x'], skip='TFT'), e['y']); print(m.hub_config['source']); "
        "adn.create_model('hf-hub:org/missing')"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(fake_hub.cache)}
    proc = run([sys.executable, "-c", script, str(tmp_path / "expected.pt")], env=env)
    assert proc.stdout.strip() == "org/resnet20-adn", proc.stderr
    assert "FileNotFoundError: cannot get Hub repository org/missing" in proc.stderr


def test_adn_push_uploads_then_create_model_hf_hub(fake_hub, tmp_path, capsys, monkeypatch):
    from adn.cli import main

    adn.save_weights(_tiny("resnet20")[0], tmp_path / "w.safetensors", meta={"model": "resnet20"})
    assert main(["push", "--weights", str(tmp_path / "w.safetensors"), "--repo-id", "org/r20"]) == 0
    assert fake_hub.calls[0] == ("create_repo", "org/r20", None)
    assert "uploaded to https://huggingface.co/org/r20/commit/" in capsys.readouterr().out
    assert adn.from_pretrained("org/r20", cache_dir=fake_hub.cache, local_files_only=True).fc.out_features == 10
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # in-process HF_HUB_OFFLINE=1
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(fake_hub.cache))
    model = adn.create_model("hf-hub:org/r20", pretrained=True, num_classes=3)  # timm's call: a fresh head
    assert model.fc.out_features == 3 and model.hub_config["num_classes"] == 10
    with pytest.raises(ValueError, match=r"hf-hub:org/r20 is built from its config.json: drop weights, drop_rate"):
        adn.create_model("hf-hub:org/r20", weights="w.pth", drop_rate=0.1)
    argv = ["push", "--weights", str(tmp_path / "w.safetensors"), "--save-dir", str(tmp_path / "out")]
    assert main([*argv, "--repo-id", "org/r20b", "--private"]) == 0  # the folder written is the one uploaded
    assert fake_hub.calls[-2:] == [
        ("create_repo", "org/r20b", True),
        ("upload_folder", "org/r20b", ["README.md", "config.json", "model.safetensors"]),
    ]
    assert 'adn.create_model("hf-hub:org/r20b")' in (tmp_path / "out" / "README.md").read_text()
    assert main(["push", "--weights", str(tmp_path / "w.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("adn: error: where to? give --save-dir")


def test_adn_push_writes_a_folder_as_a_user_runs_it(tmp_path):
    model, x = _tiny("resnet20")
    rows = [{"skip": "FFF", "acc1": 91.5, "acc5": 99.0}]
    adn.save_weights(model, tmp_path / "w.safetensors", meta={"model": "resnet20", "subnets": rows})
    proc = run([*ADN, "push", "--weights", str(tmp_path / "w.safetensors"), "--save-dir", str(tmp_path / "out")])
    assert proc.returncode == 0, proc.stderr
    assert "wrote README.md, config.json, model.safetensors" in proc.stdout
    assert "| **FFF** (default) | 0.04081 | 0.272 | 91.50 | 99.00 |" in (tmp_path / "out" / "README.md").read_text()
    _assert_same_outputs(model, adn.from_pretrained(tmp_path / "out"), x)
    # the weights file alone serves adn eval/predict --weights: it names its model and carries the table
    assert peek_checkpoint(tmp_path / "out" / "model.safetensors")["meta"]["subnets"][0]["acc1"] == 91.5


# ------------------------------------------------------------------------------------------------ torch.hub
def test_hubconf_has_every_registered_model_and_loads_a_folder(saved):
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    public = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert public == adn.list_models() and "torch" in hubconf.dependencies
    assert all("weights:" in getattr(hubconf, n).__doc__ for n in public)
    folder, model, x = saved
    for weights in (folder, folder / "model.safetensors"):  # a save_pretrained folder, a plain weights file
        loaded = torch.hub.load(str(ROOT), "resnet20", source="local", weights=str(weights), trust_repo=True)
        _assert_same_outputs(model, loaded.eval(), x)
    with pytest.raises(ValueError, match="holds a resnet20 model, not resnet56"):
        torch.hub.load(str(ROOT), "resnet56", source="local", weights=str(folder), trust_repo=True)
    with pytest.raises(ValueError, match="is built as its config.json says: drop widths"):
        hubconf.resnet20(weights=str(folder), widths=[8, 8, 8])


@pytest.mark.slow
def test_onnx_file_beside_the_weights_runs_every_depth(saved, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    _, model, x = saved
    model.save_pretrained(tmp_path, onnx=True)
    assert {"model.onnx", "model.onnx.data"} <= {p.name for p in tmp_path.iterdir()}
    assert "`model.onnx`" in (tmp_path / "README.md").read_text()
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    for skip in ("FFF", "TFT"):
        flags = torch.tensor(adn.parse_skip(skip, 3)).numpy()
        (out,) = session.run(None, {"image": x.numpy(), "skip": flags})
        torch.testing.assert_close(torch.from_numpy(out), model(x, skip=skip), rtol=1e-4, atol=1e-4)
