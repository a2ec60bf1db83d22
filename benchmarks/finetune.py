"""Fine-tuning a trained plain network into an ADN vs training the ADN from scratch, on the built-in digits.

"I have a trained model, make it adaptive": for each model, with the trainer's own data pipeline, optimiser and
schedules, the same seed, initial weights and data order everywhere:

1. the *plain* network (for ``tv:NAME`` torchvision's own, unconverted model) is trained with cross-entropy for
   ``--epochs`` epochs (the built-in preset of ``adn train``);
2. its weights are saved as a plain state dict (no twins) and fine-tuned into an ADN by self-distillation with the
   fine-tuning preset of ``adn train --pretrained FILE`` (a tenth of the learning rate, cosine), for 1, 2, 3, 5
   epochs and for the number of epochs that makes the total compute equal to (3) -- separate runs, each with
   its own schedule, as ``--epochs N`` would give;
3. an ADN is trained from scratch by self-distillation for ``--epochs`` epochs.

Every sub-network of every run is measured as trained and after per-sub-network BatchNorm calibration. Compute
is counted in plain-epoch units: a plain epoch is 1, an ADN epoch is the ratio of an ADN step's time to a plain
step's (two passes, ~1.7x), measured on the plain and from-scratch runs. Writes ``benchmarks/results/finetune.md``.

    python benchmarks/finetune.py [--models resnet20 tv:mobilenet_v3_small] [--epochs 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import adn
from adn.training.fit import build_distillation
from common import adn_epoch, calib_loader, flags_of, loaders, plain_epoch, run_config, subnet_rows, train_epochs
from harness import Report, Stopwatch

FT_EPOCHS = (1, 2, 3, 5)
SIZE = 32  # every model here runs on 32x32 digits; torchvision models via --train-crop-size/--val-crop-size
OUT = Path(__file__).parent / "results" / "finetune.md"


def plain_model(name: str, num_classes: int) -> torch.nn.Module:
    """The network as its user has it: torchvision's own model for ``tv:NAME``, else our registered model (trained
    on its super-net only, its twins unused)."""
    if name.startswith("tv:"):
        import torchvision

        return torchvision.models.get_model(name[3:], weights=None, num_classes=num_classes)
    return adn.create_model(name, num_classes=num_classes)


def adaptive_model(name: str, num_classes: int) -> adn.AdaptiveDepthNet:
    return adn.create_converted(name, num_classes) if ":" in name else adn.create_model(name, num_classes=num_classes)


def plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a plain model's weights file holds: no twin norms, no calibration."""
    skip = (".skip_norm.", "calibration.")
    return {k: v.clone() for k, v in model.state_dict().items() if not any(s in k for s in skip)}


def run_family(name: str, opts: argparse.Namespace, workdir: Path) -> dict:
    """Train plain, fine-tune it for each epoch count, train the ADN from scratch; measure every sub-network."""
    flags = ["--seed", str(opts.seed), "--calib-images", str(opts.calib_images)]
    if name.startswith("tv:"):
        flags += ["--train-crop-size", str(SIZE), "--val-crop-size", str(SIZE)]
    if opts.train_subset:
        flags += ["--train-subset", str(opts.train_subset)]
    args = run_config(name, **flags_of(shlex.join(flags)), epochs=opts.epochs)
    loader, _, sampler, classes = loaders(args, SIZE)
    _, val_set, _ = adn.data.build_datasets(None, image_size=SIZE)
    val_loader, calib = DataLoader(val_set, batch_size=256), calib_loader(args, SIZE)
    distill = build_distillation(args.distill, len(classes))
    step, n = adn_epoch(distill, "cpu"), len(classes)

    torch.manual_seed(args.run.seed)
    plain = plain_model(name, n)
    scratch = adn.load_weights(adaptive_model(name, n), plain_state(plain))  # the same initial weights
    plain_s, plain_ms = train_epochs(args, plain, plain_epoch, loader, sampler)
    print(f"{name}: plain, {args.optim.epochs} epochs: {plain_s:.0f} s ({plain_ms:.0f} ms/step)", flush=True)
    scratch_s, scratch_ms = train_epochs(args, scratch, step, loader, sampler)
    epochs = args.optim.epochs
    print(f"{name}: ADN from scratch, {epochs} epochs: {scratch_s:.0f} s ({scratch_ms:.0f} ms/step)", flush=True)
    ratio = scratch_ms / plain_ms  # what an ADN step costs in plain steps, measured on these two runs
    equal = max(1, round(args.optim.epochs * (ratio - 1) / ratio))  # plain E + k * ratio = E * ratio

    weights = workdir / f"{name.replace(':', '-')}-plain.pth"
    torch.save(plain_state(plain), weights)
    start = adn.load_weights(adaptive_model(name, n), weights)  # 0 epochs: naive skipping of the plain net
    runs = [dict(label="scratch ADN", ft=None, model=scratch, seconds=scratch_s)]
    runs.append(dict(label="plain (FT 0)", ft=0, model=start, seconds=0.0))
    for k in sorted(set(FT_EPOCHS) | {equal}):
        ft_args = run_config(name, **flags_of(shlex.join(flags)), pretrained=str(weights), epochs=k)
        assert ft_args.optim.lr_scheduler == "cosineannealinglr" and abs(ft_args.optim.lr - args.optim.lr / 10) < 1e-12
        model = adn.load_weights(adaptive_model(name, n), weights)
        seconds, _ = train_epochs(ft_args, model, step, loader, sampler)
        print(f"{name}: fine-tuned {k} epoch(s) at lr {ft_args.optim.lr:g}: {seconds:.0f} s", flush=True)
        runs.append(dict(label=f"FT {k}" + (" (=)" if k == equal else ""), ft=k, model=model, seconds=seconds))
    for run in runs:
        run["rows"], _ = subnet_rows(run["model"], val_loader, calib, SIZE)
        k = run["ft"]
        epochs = args.optim.epochs
        run["compute"] = epochs * ratio if k is None else epochs + k * ratio
        run["wall"] = run["seconds"] + (plain_s if k is not None else 0.0)
    result = dict(name=name, args=args, runs=runs, ratio=ratio, equal=equal)
    result.update(plain_s=plain_s, images=len(loader.dataset), val_images=len(val_set), steps=len(loader) * epochs)
    result["momentum"] = min(m.momentum or 0.1 for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    return result


def epochs_needed(result: dict, key: str, slack: int = 0) -> str:
    """The fewest fine-tuning epochs whose base-net gets as many val images right as the from-scratch base-net,
    less ``slack`` images."""
    runs, n = result["runs"], result["val_images"]

    def right(run: dict) -> int:
        return round(run["rows"][-1][key] * n / 100)

    target = right(runs[0])
    for run in runs[1:]:
        if right(run) >= target - slack:
            return f"**{run['ft']}** ({right(run)} vs {target} of {n} right)"
    best = max(runs[1:], key=right)
    return f"none up to {runs[-1]['ft']} (best: FT {best['ft']}, {right(best)} vs {target} of {n} right)"


def report_lines(result: dict) -> list[str]:
    runs, epochs, ratio = result["runs"], result["args"].optim.epochs, result["ratio"]
    scratch, equal = runs[0]["compute"], result["equal"]
    lines = [
        f"## {result['name']}",
        "",
        f"Plain training: {epochs} epochs, {result['plain_s']:.0f} s. ADN step / plain step: **{ratio:.2f}x** "
        f"(the mean step times of the plain and the from-scratch runs, {result['steps']} steps each), so a "
        f"fine-tune of {equal} epoch(s) (=) costs as much in total as the {epochs}-epoch ADN from scratch: "
        f"{epochs} + {equal} x {ratio:.2f} = {epochs + equal * ratio:.1f} vs {epochs} x {ratio:.2f} = "
        f"{scratch:.1f} plain-epoch units.",
        "",
    ]
    if result["momentum"] < 0.1:
        lines += [
            f"Its BatchNorm layers use momentum {result['momentum']:g} (the model's own default): over a run of "
            f"{result['steps']} steps their running statistics lag the weights, so every run's accuracy *as "
            "trained* is low, the plain net's included (with momentum 0.1 the plain net's as-trained accuracy "
            "matches its calibrated one; checked separately). Compare the calibrated numbers.",
            "",
        ]
    lines += [
        "| run | ADN epochs | total compute (plain-epoch units) | vs scratch | of which fine-tuning | "
        "wall s (plain + ADN) | super-net trained / calibrated | base-net trained / calibrated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sup, base = r["rows"][0], r["rows"][-1]
        adn_epochs = epochs if r["ft"] is None else r["ft"]
        own = "–" if r["ft"] is None else f"{r['ft'] * ratio:.1f} ({r['ft'] * ratio / scratch:.0%})"
        lines.append(
            f"| {r['label']} | {adn_epochs} | {r['compute']:.1f} | {r['compute'] / scratch:.0%} | {own} "
            f"| {r['wall']:.0f} | {sup['acc1_trained']:.2f} / {sup['acc1_calibrated']:.2f} "
            f"| {base['acc1_trained']:.2f} / {base['acc1_calibrated']:.2f} |"
        )
    for key, what in (("acc1_trained", "as trained"), ("acc1_calibrated", "calibrated")):
        lines += ["", f"Acc@1 of every sub-network, {what}:", ""]
        lines.append("| sub-network | GFLOPs | " + " | ".join(r["label"] for r in runs) + " |")
        lines.append("|---|---|" + "---|" * len(runs))
        for i, row in enumerate(runs[0]["rows"]):
            tag = " (super)" if "T" not in row["skip"] else " (base)" if "F" not in row["skip"] else ""
            accs = " | ".join(f"{r['rows'][i][key]:.2f}" for r in runs)
            lines.append(f"| {row['skip']}{tag} | {row['gflops']:.4f} | {accs} |")
    lines += [
        "",
        "Fine-tuning epochs the base-net needs to reach the from-scratch base-net's accuracy:",
        "",
        "| base-net | as accurate | within one val image |",
        "|---|---|---|",
        *(
            f"| {what} | {epochs_needed(result, key)} | {epochs_needed(result, key, 1)} |"
            for key, what in (("acc1_trained", "as trained"), ("acc1_calibrated", "calibrated"))
        ),
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "tv:mobilenet_v3_small"])
    parser.add_argument("--epochs", type=int, default=15, help="plain and from-scratch epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calib-images", type=int, default=512, help="calibration images (adn train: 1024; halved to save time)"
    )
    parser.add_argument("--train-subset", type=int, default=None, help="fewer training images (smoke runs)")
    parser.add_argument("--output", default=str(OUT))
    opts = parser.parse_args(argv)
    title = "Fine-tuning a trained plain network into an ADN vs training the ADN from scratch"
    report, clock, results = Report(opts.output, title, script=__file__, argv=argv), Stopwatch(), []
    report.set("about", "(running)")
    with tempfile.TemporaryDirectory() as tmp:

        def family(name: str) -> None:
            results.append(run_family(name, opts, Path(tmp)))
            report.add(name, *report_lines(results[-1]))
            print("\n".join(report.slots[name]), flush=True)

        for name in opts.models:
            report.guard(name, lambda name=name: family(name))
    report.set("about", *(about(results[-1], clock.seconds / 60) if results else ["No model finished."]))
    report.finish(echo=False)
    print(f"{clock.seconds / 60:.1f} min; wrote {opts.output}")


def about(result: dict, minutes: float) -> list[str]:
    """What every run shares: data, recipes, calibration; what the run labels mean."""
    args, n_val = result["args"], result["val_images"]
    lr, wd, batch = args.optim.lr, args.optim.weight_decay, args.data.batch_size
    return [
        f"{minutes:.1f} min in all. Built-in digits at {SIZE} px: {result['images']} train / {n_val} val images (one "
        f"val image is {100 / n_val:.2f} pt). The built-in preset of `adn train` (SGD lr {lr:g}, cosine, wd {wd:g}, "
        f"batch {batch}) for the plain net and the ADN from scratch, its fine-tuning preset (`--pretrained`: lr "
        f"{lr / 10:g}, cosine) for the fine-tunes; seed, initial weights and data order shared. Calibration: "
        f"per-sub-network BatchNorm statistics on {args.run.calib_images} training images.",
        "",
        "Runs: *scratch ADN* = self-distillation from the same initial weights; *plain (FT 0)* = the plain "
        "net converted, before fine-tuning (its sub-networks are naive skipping); *FT k* = the plain net "
        "self-distilled for k epochs (its own cosine schedule); *(=)* marks the fine-tune of equal total compute. "
        "Total compute of a fine-tune counts the plain training too; *of which fine-tuning* is what it adds to a "
        "model you already have. The machine was shared with other jobs: wall times and the step-time ratio are "
        "noisy (between earlier runs of this script here, the ratio moved by up to 0.11).",
    ]


if __name__ == "__main__":
    main()
