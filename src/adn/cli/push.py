"""``adn push``: a trained model as a shareable folder (config.json, model.safetensors, README.md model card), and
with ``--repo-id`` uploaded to the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .options import Parser


def get_args_parser() -> Parser:
    p = Parser(
        "adn push",
        "write a model as config.json + model.safetensors + README.md (a model card with every sub-network's "
        "GFLOPs, params and Acc@1) to --save-dir, and/or upload it to the Hugging Face Hub as --repo-id",
    )
    p.add_argument("--weights", required=True, help="checkpoint or weights file (e.g. output/NAME/model.safetensors)")
    p.add_argument("--model", help="model name (default: the one the weights file records)")
    p.add_argument("--num-classes", type=int, help="classes (default: from --weights)")
    p.add_argument("--model-ema", action="store_true", help="share the checkpoint's EMA weights")
    p.add_argument("--save-dir", help="folder to write (created if needed)")
    p.add_argument("--repo-id", help="Hub repository to upload to, ORG/NAME (created if needed; needs a login)")
    p.add_argument("--private", action="store_true", help="create the Hub repository as private")
    p.add_argument(
        "--skip-cfg", nargs="+", help="the sub-network a plain model(x) runs after loading, e.g. TTFF (default: FF..F)"
    )
    p.add_argument("--onnx", action="store_true", help="also write the switchable ONNX file (every depth, one file)")
    p.add_argument("--plot", help="a Pareto plot to show on the model card (the PNG adn bench --output-dir writes)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..core.checkpoint import peek_checkpoint_arg
    from ..hub import push_to_hub, save_pretrained, upload_folder
    from ..models.loading import build_model

    args = get_args_parser().parse_args(list(argv or []))
    if not args.save_dir and not args.repo_id:
        raise UsageError("where to? give --save-dir DIR (a local folder), --repo-id ORG/NAME (the Hub), or both")
    if not Path(args.weights).is_file():
        raise FileNotFoundError(f"weights file not found: {args.weights}")
    name = args.model or peek_checkpoint_arg(args.weights, "model")
    if not isinstance(name, str):
        raise UsageError("which model? give --model NAME (the weights file does not record it)")
    model, meta = build_model(name, args.weights, args.num_classes, ema=args.model_ema)
    if args.skip_cfg:
        model.skip = " ".join(args.skip_cfg)  # "TTFF" or "True True False False"
    options = dict(meta=meta, onnx=args.onnx, plot=args.plot)
    if args.save_dir:
        folder = save_pretrained(model, args.save_dir, repo_id=args.repo_id, **options)
        print(f"wrote {', '.join(sorted(p.name for p in folder.iterdir()))} to {folder}")
    if args.repo_id:  # the folder just written, else one written for the upload
        private = args.private or None
        if args.save_dir:
            commit = upload_folder(args.save_dir, args.repo_id, private=private)
        else:
            commit = push_to_hub(model, args.repo_id, private=private, **options)
        print(f"uploaded to {getattr(commit, 'commit_url', None) or args.repo_id}")
    return 0


__all__ = ["get_args_parser", "main"]
