"""How many training images BatchNorm calibration needs: every sub-network of a trained checkpoint calibrated on N
images (several draws of them), its Acc@1 on the validation split and the seconds it took, next to ``adn train``'s
default. Run it on the quick start's checkpoint (``adn train`` first):

    python benchmarks/calibration_size.py --resume output/resnet20/checkpoint.pth [--images 128 256 512 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from adn.core.calibrate import calibrate, clear_calibration
from adn.core.checkpoint import peek_checkpoint_arg
from adn.data import calibration_loader, eval_loader
from adn.evaluation.evaluate import default_input_size, evaluate_subnets
from adn.models.loading import build_model
from adn.runtime.threads import apply_threads
from adn.training.config import DataConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", required=True, help="checkpoint of adn train (built-in digits)")
    parser.add_argument("--images", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--seeds", type=int, default=3, help="draws of the calibration images per size")
    parser.add_argument("--output", default=None, help="also write the markdown here")
    opts = parser.parse_args()
    apply_threads("auto")  # as adn calibrate: a busy core must not stall every batch
    name = peek_checkpoint_arg(opts.resume, "model")
    data, size = DataConfig(), default_input_size(name)
    val, num_classes = eval_loader(data, size)
    model, _ = build_model(name, opts.resume, num_classes)
    clear_calibration(model)
    trained = [r["acc1"] for r in evaluate_subnets(model, val, "cpu")]
    lines = [
        f"# Calibration size (`python benchmarks/calibration_size.py --resume {opts.resume}`)",
        "",
        f"{name}, built-in digits ({len(val.dataset)} val images: one image is {100 / len(val.dataset):.2f} pt), "
        f"{torch.get_num_threads()} torch thread(s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Acc@1 of the {len(trained)} sub-networks, {opts.seeds} draws of the images per size (seeds 0..). "
        f"As trained: worst {min(trained):.2f}, mean {statistics.mean(trained):.2f}.",
        "",
        "| images | seconds (mean) | worst sub-network Acc@1 (per draw) | mean Acc@1 (per draw) |",
        "|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for images in opts.images:
        worst, mean, seconds = [], [], []
        for seed in range(opts.seeds):
            clear_calibration(model)
            loader = calibration_loader(data, size, images, seed)
            start = time.perf_counter()
            calibrate(model, loader, batches=len(loader))
            seconds.append(time.perf_counter() - start)
            acc = [r["acc1"] for r in evaluate_subnets(model, val, "cpu")]
            worst.append(min(acc))
            mean.append(statistics.mean(acc))
        row = (
            f"| {images} | {statistics.mean(seconds):.1f} | {' / '.join(f'{w:.2f}' for w in worst)} | "
            f"{' / '.join(f'{m:.2f}' for m in mean)} |"
        )
        lines.append(row)
        print(row, flush=True)
    if opts.output:
        Path(opts.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
