"""The model card (``README.md``) of a shared model: what every depth costs and scores, as a table and as
model-index metadata (one Acc@1 result per measured sub-network), built with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    ("skip", "skip", "s"),
    ("gflops", "GFLOPs", "#.4g"),  # significant digits: ResNet-20's 0.04081 and ViT-B/16's 17.56 alike
    ("params_m", "params (M)", "#.3g"),
    ("acc1", "Acc@1 (%)", ".2f"),
    ("acc5", "Acc@5 (%)", ".2f"),
    ("latency_ms", "latency (ms)", ".2f"),
)


def markdown_table(rows: Sequence[Mapping[str, Any]], default_skip: str) -> str:
    """The sub-network table in Markdown: the columns some row has, the default sub-network marked."""
    columns = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |", "|:--" + "|--:" * (len(columns) - 1) + "|"]
    for row in rows:
        cells = ["-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns]
        if row["skip"] == default_skip:
            cells[0] = f"**{cells[0]}** (default)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _eval_results(config: Mapping[str, Any], hub) -> list:
    dataset = config.get("dataset") or "custom"
    return [
        hub.EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            metric_type="accuracy",
            metric_name=f"Acc@1, sub-network {row['skip']}",
            metric_config=row["skip"],
            metric_value=round(float(row["acc1"]), 2),
        )
        for row in config["subnets"]
        if row.get("acc1") is not None
    ]


def _body(config: Mapping[str, Any], name: str, plot: bool, onnx: bool, on_hub: bool) -> str:
    rows, skip = config["subnets"], config["default_skip"]
    cheapest = min(rows, key=lambda r: r["gflops"])
    full = max(rows, key=lambda r: r["gflops"])
    size = config["input_size"]
    measured = ""
    if any("acc1" in r for r in rows):
        where = f"the {config['dataset']} validation split" if config.get("dataset") else "the validation data"
        measured = f"accuracies as recorded with the weights (measured on {where} after training); "
    calibrated = "calibrated per sub-network" if config.get("calibrated") else "as trained (not calibrated)"
    parts = [
        f"# {name}",
        f"An adaptive-depth **{config['architecture']}** ({config['num_classes']} classes, {size}x{size} input) for "
        f"`adn` (Adaptive Depth Networks): one set of weights that runs at {len(rows)} depths, from "
        f"{full['gflops']:.4g} GFLOPs (`{full['skip']}`) down to {cheapest['gflops']:.4g} GFLOPs "
        f"(`{cheapest['skip']}`). Pick the depth per call; nothing is retrained.",
        "## Sub-networks",
        f"A skip config has one letter per stage: `T` skips the second half of that stage's blocks, `F` runs them. "
        f"GFLOPs are multiply-accumulates for one {size}x{size} image; params are the parameters a sub-network "
        f"runs; {measured}BatchNorm statistics {calibrated}.",
        markdown_table(rows, skip),
    ]
    if plot:
        parts.append("![Acc@1 against cost of every sub-network; the Pareto-optimal ones in red](pareto.png)")
    load = f'adn.from_pretrained("{name}")  # ' + (
        f'or adn.create_model("hf-hub:{name}")' if on_hub else "this folder (on the Hub: its repository id)"
    )
    parts.append(
        f"## Use\n\n```python\nimport adn\n\nmodel = {load}\n"
        f'logits = model(images, skip="{cheapest["skip"]}")  # any skip config of the table; '
        f"plain model(images) runs {skip}\n```"
    )
    if onnx:
        parts.append(
            "`model.onnx` (weights in `model.onnx.data`) runs every depth in onnxruntime: inputs `image` "
            f"(float32, N x 3 x {size} x {size}) and `skip` (bool, {config['num_stages']} values)."
        )
    classes = config.get("classes") or []
    if 0 < len(classes) <= 30:  # a longer list (ImageNet's 1000) stays in config.json
        parts.append("Classes: " + ", ".join(f"`{c}`" for c in classes) + ".")
    elif classes:
        parts.append(f"The {len(classes)} class names are in `config.json` (`classes`).")
    return "\n\n".join(parts) + "\n"


def huggingface_hub():
    """The ``huggingface_hub`` module, or one line saying how to install it."""
    try:
        import huggingface_hub as hub
    except ImportError:
        raise ValueError('sharing on the Hugging Face Hub needs huggingface_hub: pip install -e ".[hub]"') from None
    return hub


def model_card(config: Mapping[str, Any], name: str, *, on_hub: bool = False, plot: bool = False, onnx: bool = False):
    """The ``huggingface_hub.ModelCard`` of a model whose ``config.json`` is ``config``; ``name``: its
    repository id (``on_hub``) or folder name."""
    hub = huggingface_hub()
    results = _eval_results(config, hub)
    data = hub.ModelCardData(
        library_name="adn",
        pipeline_tag="image-classification",
        tags=["image-classification", "adaptive-depth", "adn", config["architecture"]],
        model_name=name,
        eval_results=results or None,
        datasets=[config["dataset"]] if config.get("dataset") else None,
    )
    return hub.ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(config, name, plot, onnx, on_hub)}")


__all__ = ["huggingface_hub", "markdown_table", "model_card"]
