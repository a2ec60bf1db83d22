"""Plots written as PNG files: the accuracy/cost trade-off of sub-networks, and training curves."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..deploy.bench import _has, pareto_front


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
    metric: str = "acc1",
    batch_size: int | None = None,
) -> Path:
    """Save the trade-off plot as a PNG.

    With accuracy: ``metric`` vs batch-1 latency and vs GFLOPs, Pareto-optimal sub-networks highlighted and
    labelled. Without: latency (batch 1 and batch N) vs GFLOPs, with the line latency ∝ GFLOPs through the
    super-net for reference.
    """
    plt = _pyplot()
    has_acc = all(_has(r, metric) for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=90)
    if has_acc:
        _accuracy_panels(axes, rows, metric)
    else:
        _latency_panels(axes, rows, batch_size)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if has_acc else "upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _accuracy_panels(axes, rows: Sequence[Mapping[str, Any]], metric: str) -> None:
    """``metric`` vs batch-1 latency and vs GFLOPs, the Pareto-optimal sub-networks highlighted and labelled."""
    panels = [("latency_ms", "latency, batch 1 (ms)"), ("gflops", "GFLOPs (MACs)")]
    for ax, (cost, label) in zip(axes, panels, strict=False):
        ax.scatter([r[cost] for r in rows], [r[metric] for r in rows], s=18, c="0.6", label="sub-network")
        front = pareto_front(rows, cost, metric)
        ax.plot(
            [r[cost] for r in front],
            [r[metric] for r in front],
            "o-",
            c="tab:red",
            ms=6,
            drawstyle="steps-post",
            label="Pareto-optimal",
        )
        on_front = {r["skip"] for r in front}
        for r in rows:
            ax.annotate(
                r["skip"],
                (r[cost], r[metric]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7 if r["skip"] in on_front else 6,
                c="k" if r["skip"] in on_front else "0.5",
            )
        ax.set_xlabel(label)
        ax.set_ylabel(f"{'Acc@1' if metric == 'acc1' else metric} (%)")


def _latency_panels(axes, rows: Sequence[Mapping[str, Any]], batch_size: int | None) -> None:
    """Latency at batch 1 and batch N vs GFLOPs, with the line latency ∝ GFLOPs through the super-net."""
    super_net = max(rows, key=lambda r: r["gflops"])
    panels = zip(axes, ("latency_ms", "batch_latency_ms"), ("batch 1", f"batch {batch_size or 'N'}"), strict=True)
    for ax, key, label in panels:
        ax.scatter([r["gflops"] for r in rows], [r[key] for r in rows], s=18, c="tab:blue")
        for r in rows:
            ax.annotate(r["skip"], (r["gflops"], r[key]), textcoords="offset points", xytext=(3, 3), fontsize=6)
        g = np.linspace(0, super_net["gflops"] * 1.05, 2)
        ax.plot(g, g * super_net[key] / super_net["gflops"], "--", c="0.5", label="latency ∝ GFLOPs")
        ax.set_xlabel("GFLOPs (MACs)")
        ax.set_ylabel(f"latency, {label} (ms)")


def plot_metrics(metrics: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Training curves from a run's ``metrics.jsonl``: the (weighted) losses, and the super-net's and base-net's
    validation Acc@1 per epoch (the EMA ones too when recorded)."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    epochs = [r["epoch"] for r in records]
    for key, label in (("train_loss_super", "super-net CE (x alpha)"), ("train_loss_base", "base-net KD (x 1-alpha)")):
        loss_ax.plot(epochs, [r.get(key) for r in records], "o-", ms=3, label=label)
    for key, label in (
        ("super_acc1", "super-net"),
        ("base_acc1", "base-net"),
        ("ema_super_acc1", "super-net EMA"),
        ("ema_base_acc1", "base-net EMA"),
    ):
        if all(key in r for r in records):
            acc_ax.plot(epochs, [r[key] for r in records], "o-", ms=3, label=label)
    loss_ax.set_ylabel("training loss (weighted)")
    acc_ax.set_ylabel("validation Acc@1 (%)")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["plot_metrics", "plot_pareto"]
