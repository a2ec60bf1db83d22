"""How many training images BatchNorm calibration needs: every sub-network of a trained checkpoint calibrated on N
images (several draws of them), its Acc@1 on the validation split and the seconds it took, next to ``adn train``'s
default. Run it on the quick start's checkpoint (``adn train`` first):

    python benchmarks/calibration_size.py --resume output/resnet20/checkpoint.pth [--images 128 256 512 1024]
"""

from __future__ import annotations

import argparse
import statistics

from adn.core.calibrate import calibrate, clear_calibration
from adn.core.checkpoint import peek_checkpoint_arg
from adn.data import calibration_loader, eval_loader
from adn.evaluation.evaluate import default_input_size, evaluate_subnets
from adn.models.loading import build_model
from adn.runtime.threads import apply_threads
from adn.training.config import DataConfig
from harness import Report, Stopwatch, table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resume", required=True, help="checkpoint of adn train (built-in digits)")
    parser.add_argument("--images", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--seeds", type=int, default=3, help="draws of the calibration images per size")
    parser.add_argument("--output", default=None, help="also write the markdown here")
    opts = parser.parse_args(argv)
    apply_threads("auto")  # as adn calibrate: a busy core must not stall every batch
    report = Report(opts.output, "Calibration size", script=__file__, argv=argv)
    name = peek_checkpoint_arg(opts.resume, "model")
    data, size = DataConfig(), default_input_size(name)
    val, num_classes = eval_loader(data, size)
    model, _ = build_model(name, opts.resume, num_classes)
    clear_calibration(model)
    trained = [r["acc1"] for r in evaluate_subnets(model, val, "cpu")]
    report.add(
        "sizes",
        f"{name}, built-in digits ({len(val.dataset)} val images: one image is {100 / len(val.dataset):.2f} pt). "
        f"Acc@1 of the {len(trained)} sub-networks, {opts.seeds} draws of the images per size (seeds 0..). "
        f"As trained: worst {min(trained):.2f}, mean {statistics.mean(trained):.2f}.",
        *table("images", "seconds (mean)", "worst sub-network Acc@1 (per draw)", "mean Acc@1 (per draw)"),
    )

    def one_size(images: int) -> None:
        worst, mean, seconds = [], [], []
        for seed in range(opts.seeds):
            clear_calibration(model)
            loader = calibration_loader(data, size, images, seed)
            with Stopwatch() as clock:
                calibrate(model, loader, batches=len(loader))
            seconds.append(clock.seconds)
            acc = [r["acc1"] for r in evaluate_subnets(model, val, "cpu")]
            worst.append(min(acc))
            mean.append(statistics.mean(acc))
        report.row(
            "sizes",
            images,
            f"{statistics.mean(seconds):.1f}",
            " / ".join(f"{w:.2f}" for w in worst),
            " / ".join(f"{m:.2f}" for m in mean),
        )

    for images in opts.images:
        report.guard(f"{images} images", lambda images=images: one_size(images), slot="sizes", lead=(images,))
    report.finish()


if __name__ == "__main__":
    main()
