"""torch.hub entry points: one per registered adn model, generated from the registry.

    model = torch.hub.load("path/to/adn", "resnet50", source="local", weights="model.safetensors")
    logits = model(images, skip="TTFF")

``weights``: a local weights file (ours, a published ADN checkpoint, torchvision's) or a folder written by
``save_pretrained``; nothing is downloaded. ``torch.hub.list("OWNER/adn")`` lists the entries of a GitHub copy.
"""

import sys
from pathlib import Path as _Path  # private names: torch.hub.list shows every public callable

dependencies = ["torch", "torchvision", "numpy", "tqdm", "safetensors"]  # what `import adn` and loading need

# a clone (what torch.hub loads) has the package under src/; prefer it to another installed version
sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))

import adn  # noqa: E402
from adn.models.loading import build_model as _build_model  # noqa: E402


def _entry(name: str):
    info = adn.model_info(name)

    def entry(weights=None, num_classes=None, **kwargs):
        if weights is not None and _Path(weights).is_dir():
            if kwargs:
                raise ValueError(f"{weights} is built as its config.json says: drop {', '.join(kwargs)}")
            return adn.from_pretrained(weights, model_name=name, num_classes=num_classes)
        if weights is not None and not kwargs:  # the class count comes from the file
            return _build_model(name, weights, num_classes)[0]
        return adn.create_model(name, num_classes=num_classes or 1000, weights=weights, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{info.description or name} -- adaptive depth, {info.input_size}px input.\n\n"
        "weights: a local weights file or a save_pretrained folder (default: random weights); num_classes: "
        "default from the weights, else 1000; other keyword arguments go to the builder. "
        "Run a sub-network with model(x, skip=...): one T (skip) or F per stage."
    )
    return entry


for _name in adn.list_models():
    globals()[_name] = _entry(_name)
