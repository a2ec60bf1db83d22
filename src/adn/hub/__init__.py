"""Sharing models: a Hub-style folder (``config.json``, ``model.safetensors``, ``README.md``), loaded back from a
local folder or a Hugging Face Hub repository, and uploaded with ``huggingface_hub``.

``config.json`` holds what rebuilding the model needs (the architecture, its builder's keyword arguments, the class
count) and what using it needs (class names, input size, normalisation, the default sub-network), plus the
sub-network table (GFLOPs, parameters, Acc@1 when measured). ``model.safetensors`` is the state dict, the calibrated
statistics (``calibration.*``) included. ``README.md`` is a model card with that table and model-index metadata
(:mod:`adn.hub.card`). ``huggingface_hub`` is an optional extra (``pip install -e ".[hub]"``): needed to write a
card, to download and to upload; a local folder loads without it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..core.calibrate import is_calibrated
from ..core.checkpoint import _one_line, _write_atomically, save_weights
from ..core.flops import count_flops_table, count_params
from ..core.modules import unwrap
from ..core.sharing import register_sharing
from ..core.skipconfig import format_skip, parse_skip, skip_configs
from ..models.registry import create_model, register_hub_loader
from ..models.weights import load_weights
from .card import huggingface_hub, model_card

#: version of the config.json layout written here; a newer one is refused with a message saying to upgrade adn
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, ONNX_NAME, PLOT_NAME = (
    "config.json",
    "model.safetensors",
    "README.md",
    "model.onnx",
    "pareto.png",
)
#: ``create_model("hf-hub:org/name")``: timm's prefix for a model stored on the Hub
HUB_PREFIX = "hf-hub:"
#: inference metadata carried over from a checkpoint's ``meta`` (what ``adn predict`` reads) into config.json
META_KEYS = (
    "classes",
    "input_size",
    "mean",
    "std",
    "interpolation",
    "val_resize_size",
    "val_crop_size",
    "square_resize",
    "dataset",
)
FILE_META_KEYS = (*META_KEYS, "num_classes", "subnets")


# ------------------------------------------------------------------------------------------------------- save
def subnet_rows(model: nn.Module, measured: list[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per sub-network: skip config, GMACs at the model's input size, executed parameters (M), and the
    measured figures of ``measured`` rows with the same skip config (Acc@1, Acc@5, latency ...)."""
    by_skip = {row["skip"]: row for row in measured or [] if "skip" in row}
    configs = skip_configs(model)
    rows = []
    for skip, flops in zip(configs, count_flops_table(model, configs), strict=True):
        key = format_skip(skip)
        extra = {k: v for k, v in by_skip.get(key, {}).items() if k not in ("skip", "gflops", "params_m")}
        rows.append({"skip": key, "gflops": flops / 1e9, "params_m": count_params(model, skip) / 1e6, **extra})
    return rows


def make_config(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``model`` (built by :func:`adn.create_model`). ``meta``: a checkpoint's inference
    metadata (class names, normalisation, measured sub-network table ...); default: what the model was loaded
    with (``model.hub_config``)."""
    info = getattr(model, "info", None)
    if info is None or not hasattr(model, "num_stages"):
        raise ValueError(
            f"{type(model).__name__} was not built by adn.create_model, so its architecture is unknown; build it "
            "with adn.create_model(NAME) (or 'tv:NAME' for a converted torchvision model) and load its weights"
        )
    meta = dict(getattr(model, "hub_config", None) or {}) if meta is None else dict(meta)
    kwargs = dict(getattr(model, "build_kwargs", None) or meta.get("model_kwargs") or {})
    kwargs.pop("num_classes", None)
    head = model.get_submodule(model.classifier_name())
    return {
        "adn_format": FORMAT_VERSION,
        "library_name": "adn",
        "architecture": info.name,
        "model_kwargs": kwargs,
        "num_classes": head.out_features,
        "num_stages": model.num_stages,
        **{k: meta[k] for k in META_KEYS if meta.get(k) is not None},
        "input_size": meta.get("input_size") or info.input_size,
        "default_skip": format_skip(model.skip),
        "calibrated": is_calibrated(model),
        "subnets": subnet_rows(model, meta.get("subnets")),
    }


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike,
    *,
    meta: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    onnx: bool = False,
    plot: str | os.PathLike | None = None,
) -> Path:
    """Write ``model`` as a Hub-style folder: ``config.json``, ``model.safetensors`` (calibration included) and
    ``README.md`` (the model card; ``repo_id`` is the name it shows). ``meta``: see :func:`make_config`.
    ``onnx``: also the switchable ONNX file (every depth, ``model.onnx`` + ``model.onnx.data``). ``plot``: a
    Pareto plot to include (a PNG from ``adn bench``); one is drawn when the table has Acc@1 and latency."""
    huggingface_hub()  # before writing anything: the card needs it
    model = unwrap(model)  # DDP, EMA, torch.compile
    folder = Path(save_directory)
    if plot is not None and not Path(plot).is_file():
        raise FileNotFoundError(f"plot {plot} not found; give a PNG file (e.g. the one adn bench --output-dir writes)")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; give a folder to save the model in")
    config = make_config(model, meta)
    folder.mkdir(parents=True, exist_ok=True)
    # the weights file carries the inference metadata too: adn eval/predict --weights FOLDER/model.safetensors
    file_meta = {"model": config["architecture"], **{k: v for k, v in config.items() if k in FILE_META_KEYS}}
    if onnx:  # first: the one step that can refuse a model (Swin), and it writes nothing when it does
        from ..deploy.export_switchable import export_switchable

        export_switchable(model, folder / ONNX_NAME, meta=file_meta, pt2=False)
    save_weights(model, folder / WEIGHTS_NAME, meta=file_meta)
    _write_atomically(folder / CONFIG_NAME, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
    rows = config["subnets"]
    drawn = plot is not None or all("acc1" in r and "latency_ms" in r for r in rows)
    if plot is not None:
        shutil.copyfile(plot, folder / PLOT_NAME)
    elif drawn:
        from ..evaluation.plots import plot_pareto

        plot_pareto(rows, folder / PLOT_NAME, title=config["architecture"])
    card = model_card(config, repo_id or folder.name, on_hub=repo_id is not None, plot=drawn, onnx=onnx)
    card.save(folder / CARD_NAME)
    return folder


# ------------------------------------------------------------------------------------------------------- load
def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: is it a folder written by save_pretrained?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); is it truncated? re-download or re-save it") from None
    if not isinstance(config, dict) or not {"adn_format", "architecture", "num_classes"} <= set(config):
        raise ValueError(f"{path} is not an adn model config (adn_format, architecture, num_classes); save it with adn")
    if not isinstance(config["adn_format"], int) or config["adn_format"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format {config['adn_format']}, newer than this adn reads ({FORMAT_VERSION}); upgrade adn"
        )
    return config


def _local_folder(source: str, revision: str | None, cache_dir: str | None, local_files_only: bool) -> Path:
    """``source`` as a folder: a local folder as it is, a repository id through the Hugging Face cache (only
    config.json and the weights are fetched, not the ONNX files; ``HF_HUB_OFFLINE=1`` reads the cache alone)."""
    path = Path(source)
    if path.is_dir():
        return path
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise FileNotFoundError(f"{source} is neither a folder nor a Hub repository id (org/name)")
    hub = huggingface_hub()
    try:  # one revision resolved for both files
        return Path(
            hub.snapshot_download(
                source,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
                library_name="adn",
            )
        )
    except Exception as exc:  # not found, offline without a cached copy, no network ...
        raise FileNotFoundError(
            f"cannot get Hub repository {source} ({_one_line(exc)}); check the id and the network, or offline "
            "(HF_HUB_OFFLINE=1) that the repository is in the Hugging Face cache"
        ) from None


def from_pretrained(
    source: str | os.PathLike,
    *,
    model_name: str | None = None,
    num_classes: int | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> nn.Module:
    """The model saved by :func:`save_pretrained` in folder ``source`` or in Hub repository ``source``
    (``"org/name"``), weights and calibration loaded, its default sub-network set, in eval mode. The config
    rides along as ``model.hub_config`` (class names, normalisation, the sub-network table).

    ``model_name``: the architecture expected (an error if the folder holds another). ``num_classes``: a fresh
    classifier for that many classes (fine-tuning), when it differs from the saved one.
    """
    folder = _local_folder(str(source), revision, cache_dir, local_files_only)
    config = _read_config(folder)
    arch = config["architecture"]
    if model_name is not None and model_name != arch:
        raise ValueError(f"{source} holds a {arch} model, not {model_name}; load it as {arch}")
    model = create_model(arch, num_classes=config["num_classes"], **config.get("model_kwargs", {}))
    load_weights(model, folder / WEIGHTS_NAME, model_name=arch)
    model.skip = parse_skip(config.get("default_skip"), model.num_stages)
    # not timm's pretrained_cfg: a converted timm model keeps its own, in timm's schema
    model.hub_config = {**config, "source": str(source)}
    if num_classes is not None and num_classes != config["num_classes"]:
        model.reset_classifier(num_classes)
    return model.eval()


def create_from_hub(name: str, num_classes: int, weights: str | None = None, **kwargs: Any) -> nn.Module:
    """``create_model("hf-hub:org/name")``: the repository's model, its weights loaded (``pretrained=True``, timm's
    habit, is accepted: the weights are the point). ``num_classes`` other than 1000: a fresh classifier."""
    kwargs.pop("pretrained", None)
    extra = [*(["weights"] if weights is not None else []), *kwargs]
    if extra:
        raise ValueError(
            f"{name} is built from its config.json: drop {', '.join(extra)} (or create the architecture by name "
            "to change how it is built)"
        )
    return from_pretrained(name[len(HUB_PREFIX) :], num_classes=None if num_classes == 1000 else num_classes)


# ------------------------------------------------------------------------------------------------------- push
def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    meta: Mapping[str, Any] | None = None,
    onnx: bool = False,
    plot: str | os.PathLike | None = None,
    **upload_options: Any,
):
    """:func:`save_pretrained` into a temporary folder, then :func:`upload_folder` it to Hub repository
    ``repo_id``. Returns the commit's information (``.commit_url``)."""
    huggingface_hub()
    with tempfile.TemporaryDirectory(prefix="adn-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "model", meta=meta, repo_id=repo_id, onnx=onnx, plot=plot)
        return upload_folder(folder, repo_id, **upload_options)


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload adn model",
    create_pr: bool = False,
):
    """Upload a :func:`save_pretrained` folder to Hub repository ``repo_id`` (created if needed) with
    ``huggingface_hub.HfApi``; ``token``: default the login's (``hf auth login``, ``HF_TOKEN``)."""
    _read_config(Path(folder))  # a folder that would not load back is not uploaded
    api = huggingface_hub().HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision, create_pr=create_pr
    )


register_sharing(save_pretrained, push_to_hub)  # model.save_pretrained(dir), model.push_to_hub(repo_id)
register_hub_loader(create_from_hub)  # create_model("hf-hub:org/name")

__all__ = [
    "FORMAT_VERSION",
    "HUB_PREFIX",
    "create_from_hub",
    "from_pretrained",
    "make_config",
    "push_to_hub",
    "save_pretrained",
]
