"""The data pipeline: images/s per DataLoader worker of ``adn train``'s ImageFolder loader on synthetic JPEGs, and
how many workers each training model needs (docs/gpu.md, section 3)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

import adn
from adn import data as adn_data
from harness import Stopwatch, cores


def write_images(root: Path, n: int, classes: int = 8) -> float:
    """``n`` train JPEGs of 500x375 (smooth colour fields plus noise: ~100 KB, like ImageNet's) and one val image
    per class; returns the mean train file size in KB."""
    from PIL import Image

    rng, sizes = np.random.default_rng(0), []
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            path = root / split / f"class{i % classes}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            low = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((500, 375), 3)
            pixels = np.clip(np.asarray(low, dtype=np.float32) + rng.normal(0, 20, (375, 500, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
            sizes.append(path.stat().st_size / 1024)
    return float(np.mean(sizes[:n]))


def loader_rate(train_set, workers: int, args, pin: bool) -> float:
    """Images/s of the training loader, wrapped as in ``adn train``, after 2 batches per worker."""
    warm, timed, batch = 2 * workers, args.loader_batches * workers, args.loader_batch
    data = torch.utils.data.ConcatDataset([train_set] * math.ceil((warm + timed) * batch / len(train_set)))
    sampler = adn_data.ResumableSampler(adn_data.SeededRandomSampler(data))
    loader = torch.utils.data.DataLoader(
        adn_data.SeededDataset(data), batch_size=batch, sampler=sampler, num_workers=workers, pin_memory=pin
    )
    images, clock = 0, Stopwatch()
    for i, (x, _) in enumerate(loader):
        if i == warm - 1:
            clock.restart()
        elif i >= warm:
            images += x.shape[0]
            if i == warm + timed - 1:
                break
    return images / clock.seconds


def data_item(report, rates: dict, args, device) -> None:
    """The data table, then how many workers feed each training model measured before (``rates``)."""
    n = cores()
    counts = sorted({2**k for k in range(int(math.log2(n)) + 1)} | {n})
    with tempfile.TemporaryDirectory(prefix="adn-gpu-bench-") as tmp:
        kb = write_images(Path(tmp), args.images)
        train_set, _, _ = adn_data.build_datasets(tmp, image_size=224)
        report.add("data_notes", f"{args.images} JPEGs, mean {kb:.0f} KB; CPU cores available: {n}.")
        for workers in counts:
            per_worker = loader_rate(train_set, workers, args, pin=device.type == "cuda") / workers
            report.row("data", workers, f"{per_worker * workers:.0f}", f"{per_worker:.0f}")
    for name, measured in rates.items():
        if adn.model_info(name).input_size >= 224 or args.smoke:  # the small models do not use this pipeline
            adn_ips, plain_ips, how = max(measured)
            report.add(
                "data_notes",
                f"Feeding {name} ({how}): the ADN step ({adn_ips:.0f} img/s) needs ~{math.ceil(adn_ips / per_worker)} "
                f"workers, the plain step ({plain_ips:.0f} img/s) ~{math.ceil(plain_ips / per_worker)}, at the "
                f"{per_worker:.0f} img/s per worker measured with {counts[-1]} workers.",
            )
