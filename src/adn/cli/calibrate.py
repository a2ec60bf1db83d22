"""``adn calibrate``: estimate every sub-network's BatchNorm statistics of a trained model (ours or a reference
checkpoint) on training images, and write a new weights file that carries them (see :mod:`adn.core.calibrate`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from ..runtime.threads import apply_threads
from ..training.recipes import preset_for
from .eval import eval_config, resolve_eval_args
from .options import (
    Parser,
    add_data_args,
    add_model_args,
    add_run_args,
    add_weights_args,
    explicit_dests,
)


def get_args_parser(prog: str = "adn calibrate") -> Parser:
    p = Parser(prog, "calibrate the BatchNorm statistics of every sub-network and write a new weights file")
    add_model_args(p)
    add_data_args(p, train=False)
    add_weights_args(p, "training checkpoint to calibrate")
    g = p.add_argument_group("calibration")
    g.add_argument(
        "--calib-images",
        type=int,
        default=None,
        metavar="N",
        help="training images to estimate the statistics on (evaluation transform, spread over the training set; "
        "default: 256 built-in, 1024 with --data-path)",
    )
    g.add_argument("--model-ema", action="store_true", help="calibrate the checkpoint's EMA weights")
    g.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="weights file to write (.safetensors or .pth; default: <input>-calibrated.safetensors beside the input)",
    )
    g.add_argument("--no-eval", action="store_true", help="skip the before/after table on the validation split")
    add_run_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser, argv = get_args_parser(), list(argv or [])
    args = parser.parse_args(argv)
    args.skip_cfg, args.all_subnets, args.no_calibration, args.format = None, True, True, "table"
    resolve_eval_args(args, explicit_dests(parser, argv))
    if args.calib_images is None:
        args.calib_images = preset_for(args.data_path)["calib_images"]
    if args.calib_images < 1:
        raise UsageError(f"--calib-images must be >= 1, got {args.calib_images}")
    apply_threads(args.threads)
    import torch

    from ..core.calibrate import calibrate, clear_calibration
    from ..data import calibration_loader, eval_loader
    from ..evaluation.evaluate import default_input_size, evaluate_subnets, format_rows
    from ..evaluation.metrics import interactive
    from ..models.loading import build_model

    config = eval_config(args)
    source = Path(config.source)
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}-calibrated.safetensors")
    if not output.parent.is_dir():
        raise NotADirectoryError(f"output directory {output.parent} does not exist; create it first")
    device, size = torch.device(config.device), default_input_size(config.model)
    val, num_classes = eval_loader(config.data, size)
    model, meta = build_model(config.model, source, num_classes, ema=args.model_ema, unsafe_pickle=args.unsafe_pickle)
    model.to(device)
    loader = calibration_loader(config.data, size, args.calib_images, seed=0)
    clear_calibration(model)  # "as trained": without the statistics of an earlier calibration
    show = not args.quiet
    rows = [] if args.no_eval else evaluate_subnets(model, val, device, column="acc1_trained", progress=show)
    start = time.time()
    calibrate(model, loader, batches=len(loader), progress=show and interactive())
    print(
        f"calibrated {len(model.calibration.configs()) if hasattr(model, 'calibration') else 0} sub-networks of "
        f"{args.model} on {len(loader.dataset)} training images in {time.time() - start:.1f} s"
    )
    if rows:
        for row, new in zip(rows, evaluate_subnets(model, val, device, progress=show), strict=True):
            row.update(acc1=new["acc1"], acc5=new["acc5"])
        print(format_rows(rows, "table", num_classes))
        meta = {**meta, "subnets": rows}
    from ..core.checkpoint import save_weights

    save_weights(model, output, meta={**meta, "model": args.model, "num_classes": num_classes})
    print(f"wrote {output}")
    return 0


__all__ = ["get_args_parser", "main"]
