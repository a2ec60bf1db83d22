"""``adn predict``: classify image files with one sub-network of a trained model, printing the top-k labels.

The model's checkpoint (or ``model.safetensors``) carries what inference needs -- class names, input size,
normalisation, resizing -- so nothing about the training data has to be given again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from .options import Parser, add_device_arg, check_device


def get_args_parser() -> Parser:
    p = Parser("adn predict", "classify image files with one sub-network of a trained model")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything PIL opens)")
    p.add_argument("--weights", required=True, help="checkpoint.pth or model.safetensors written by adn train")
    p.add_argument("--model", default=None, help="model name (default: the one the file records)")
    p.add_argument(
        "--skip-cfg", default=None, help="the sub-network, e.g. TTT or True,True,False (default: the super-net)"
    )
    p.add_argument("--topk", type=int, default=3, help="labels to print per image")
    add_device_arg(p, default="cpu")
    return p


def preprocess(meta: dict):
    """The evaluation transform recorded in a checkpoint's metadata (ImageNet defaults without one)."""
    import torch
    from torchvision.transforms import v2 as T

    from ..data import IMAGENET_MEAN, IMAGENET_STD

    crop = int(meta.get("val_crop_size") or meta.get("input_size") or 224)
    resize = int(meta.get("val_resize_size") or round(crop * 256 / 224))
    mode = T.InterpolationMode[str(meta.get("interpolation", "bilinear")).upper()]
    if meta.get("square_resize"):  # the built-in datasets: whole images resized to a square
        steps = [T.Resize((crop, crop), interpolation=mode, antialias=True)]
    else:
        steps = [T.Resize(resize, interpolation=mode, antialias=True), T.CenterCrop(crop)]
    return T.Compose(
        [
            *steps,
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(meta.get("mean", IMAGENET_MEAN), meta.get("std", IMAGENET_STD)),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from ..core.checkpoint import load_checkpoint
    from ..core.skipconfig import format_skip
    from ..data import load_image
    from ..models.loading import build_model, checkpoint_meta

    args = get_args_parser().parse_args(list(argv or []))
    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    meta = checkpoint_meta(load_checkpoint(args.weights))
    name = args.model or meta.get("model")
    if not isinstance(name, str):
        raise UsageError(f"{args.weights} does not record its model; give --model NAME")
    model, meta = build_model(name, args.weights, meta.get("num_classes"))
    device = check_device(args.device)
    model.to(device).eval()
    skip = model.resolve_skip(args.skip_cfg)
    transform, classes = preprocess(meta), meta.get("classes") or []
    images = torch.stack([transform(load_image(path)) for path in args.images]).to(device)
    with torch.inference_mode():
        probs = model(images, skip=skip).softmax(dim=1)
    top = probs.topk(min(args.topk, probs.shape[1]), dim=1)
    print(f"{name} sub-network {format_skip(skip)}")
    for path, values, indices in zip(args.images, top.values.tolist(), top.indices.tolist(), strict=True):
        labels = ", ".join(
            f"{classes[i] if i < len(classes) else i} {100 * v:.1f}%" for v, i in zip(values, indices, strict=True)
        )
        print(f"{path}: {labels}")
    return 0


__all__ = ["get_args_parser", "main", "preprocess"]
