"""ADN self-distillation vs plain training of the same architecture, on the built-in dataset.

Trains (a) ResNet-20-ADN with self-distillation and (b) the same network plainly (cross-entropy on the
super-net only), same data, epochs, schedule and seed. Reports Acc@1 of every ADN sub-network, of the plain
net, and of the plain net with the same blocks skipped (naive skipping: its twin norms are copies of the main
norms), plus the ADN / plain step-time ratio measured on one batch in this process.

    python benchmarks/adn_vs_plain.py [--model resnet20] [--epochs 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

import adn
from adn import data as adn_data
from adn.engine import evaluate, train_one_epoch
from adn.skip import format_skip, init_skip_norms_from_main
from adn.train import BUILTIN_PRESET, build_optimizer, build_scheduler


def _train_args(epochs: int, seed: int) -> argparse.Namespace:
    return argparse.Namespace(
        **{**BUILTIN_PRESET, "epochs": epochs, "print_freq": 10**9},
        momentum=0.9,
        opt="sgd",
        norm_weight_decay=None,
        bias_weight_decay=None,
        transformer_embedding_decay=None,
        lr_min=0.0,
        lr_warmup_epochs=0,
        lr_multi_steps=None,
        subpath_alpha=0.5,
        subpath_temp=1.0,
        kd_topk=None,
        amp=False,
        clip_grad_norm=None,
        model_ema_steps=32,
        max_steps=None,
        seed=seed,
    )


def plain_step(model, criterion, optimizer, image, target) -> None:
    optimizer.zero_grad(set_to_none=True)
    criterion(model(image, skip=None), target).backward()
    optimizer.step()


def train(model_name: str, adaptive: bool, args: argparse.Namespace, train_set, val_set, num_classes) -> nn.Module:
    torch.manual_seed(args.seed)
    model = adn.create_model(model_name, num_classes=num_classes)
    sampler, _ = adn_data.build_samplers(train_set, val_set, distributed=False, seed=args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    criterion = nn.CrossEntropyLoss()
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        if adaptive:
            train_one_epoch(model, criterion, optimizer, loader, "cpu", epoch, args)
        else:
            model.train()
            for image, target in loader:
                plain_step(model, criterion, optimizer, image, target)
        scheduler.step()
    return model


def step_time_ratio(model_name: str, args, batch, num_classes: int, repeats: int = 15) -> tuple[float, float]:
    """Median seconds per optimisation step (ADN, plain), interleaved on the same batch."""
    model = adn.create_model(model_name, num_classes=num_classes)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    adn_times, plain_times = [], []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        train_one_epoch(model, criterion, optimizer, [batch], "cpu", 0, args)
        t1 = time.perf_counter()
        model.train()
        plain_step(model, criterion, optimizer, *batch)
        t2 = time.perf_counter()
        if i >= 2:  # warm-up
            adn_times.append(t1 - t0)
            plain_times.append(t2 - t1)
    return statistics.median(adn_times), statistics.median(plain_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--epochs", type=int, default=BUILTIN_PRESET["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    args = _train_args(opts.epochs, opts.seed)
    size = adn.model_info(opts.model).input_size
    train_set, val_set, num_classes = adn_data.build_datasets(None, image_size=size)
    val_loader = DataLoader(val_set, batch_size=256)

    start = time.perf_counter()
    adaptive = train(opts.model, True, args, train_set, val_set, num_classes)
    t_adn = time.perf_counter() - start
    plain = train(opts.model, False, args, train_set, val_set, num_classes)
    t_plain = time.perf_counter() - start - t_adn
    init_skip_norms_from_main(plain)  # naive skipping: the skipped net keeps the main norms

    print(
        f"{opts.model} on {adn_data.BUILTIN_NAME.split(' (')[0]}: {len(train_set)} train / {len(val_set)} val, "
        f"{opts.epochs} epochs, batch {args.batch_size}, seed {opts.seed}"
    )
    print(f"training wall time: ADN {t_adn:.0f} s, plain {t_plain:.0f} s (training loops only; noisy on a shared CPU)")
    print(f"{'skip':<6}{'ADN Acc@1':>10}{'plain, naive skip Acc@1':>25}")
    for skip in adn.subnets(adaptive):
        a = evaluate(adaptive, val_loader, "cpu", skip=skip, print_freq=10**9)["acc1"]
        p = evaluate(plain, val_loader, "cpu", skip=skip, print_freq=10**9)["acc1"]
        label = " (super-net)" if not any(skip) else " (base-net)" if all(skip) else ""
        print(f"{format_skip(skip):<6}{a:>10.2f}{p:>25.2f}{label}")
    image, target = next(iter(DataLoader(train_set, batch_size=args.batch_size, shuffle=True)))
    t_a, t_p = step_time_ratio(opts.model, args, (image, target), num_classes)
    print(
        f"step time on one batch of {args.batch_size}: ADN {t_a * 1e3:.1f} ms, plain {t_p * 1e3:.1f} ms, "
        f"ratio {t_a / t_p:.2f}"
    )


if __name__ == "__main__":
    main()
