"""How long per-sub-network BatchNorm calibration takes on this machine: every sub-network of a small model at its
own size, and one sub-network of ResNet-50 at 224 px, extrapolated to all 16 and to ``adn train``'s default
1,024 calibration images. Calibration is forward passes only, so the time does not depend on the images' content:
random tensors stand in for data.

    python benchmarks/calibration_time.py [--images 1024] [--resnet50-images 64]
"""

from __future__ import annotations

import argparse

import torch

import adn
from harness import Report, Stopwatch, table


def seconds(model, size: int, images: int, batch: int, subnets) -> float:
    batch = min(batch, images)
    data = [torch.randn(batch, 3, size, size) for _ in range(max(1, images // batch))]
    with Stopwatch() as clock:
        adn.calibrate(model, data, subnets=subnets, batches=len(data))
    return clock.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024, help="calibration images per sub-network")
    parser.add_argument("--resnet50-images", type=int, default=64, help="images actually run for ResNet-50")
    parser.add_argument("--output", default=None, help="also write the markdown here")
    opts = parser.parse_args(argv)
    torch.manual_seed(0)
    title = "Time to calibrate per-sub-network BatchNorm statistics"
    report = Report(opts.output, title, script=__file__, argv=argv)
    columns = ("model", "px", "sub-networks", "images each", "measured s", "s per sub-network", "all sub-networks, s")
    report.add("times", *table(*columns)[1:])

    def small(name: str) -> None:
        model = adn.create_model(name, num_classes=10)
        size, n = adn.model_info(name).input_size, len(adn.skip_configs(model))
        s = seconds(model, size, opts.images, 64, "all")
        report.row("times", name, size, n, opts.images, f"{s:.1f}", f"{s / n:.2f}", f"{s:.1f}")

    def resnet50() -> None:
        model = adn.create_model("resnet50", num_classes=1000)
        n = len(adn.skip_configs(model))
        ends = [adn.format_skip(adn.skip_configs(model)[i]) for i in (0, -1)]  # super-net, base-net
        seconds(model, 224, 8, 8, ends[-1:])  # warm-up: allocator, oneDNN kernels
        for skip in ends:
            s = seconds(model, 224, opts.resnet50_images, 32, [skip])
            per = s * opts.images / opts.resnet50_images
            report.row(
                "times",
                f"resnet50 ({skip})",
                224,
                n,
                f"{opts.images} (measured on {opts.resnet50_images})",
                f"{s:.1f}",
                f"{per:.0f}",
                f"~{n * per / 60:.0f} min if every one cost this",
            )

    for name in ("resnet20", "resnet56", "mobilenet_v2_cifar"):
        report.guard(name, lambda name=name: small(name), slot="times", lead=(name,))
    report.guard("resnet50", resnet50, slot="times", lead=("resnet50",))
    report.finish()


if __name__ == "__main__":
    main()
