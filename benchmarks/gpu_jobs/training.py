"""Training throughput: the trainer's ADN self-distillation step against a plain step on the same model, on
synthetic data on the device (docs/gpu.md, section 1)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

import adn
from adn.training import engine
from adn.training.losses import DEFAULT_TOPK, SelfDistillation
from gpu_jobs import DTYPES, MODES, build, compile_model, counter, peak_mib, reset_peak
from harness import call_times

#: adn train's defaults: the super-net's CE weight and temperature (no teacher), the top-k classes distilled
DISTILL = adn.train_config("resnet20").distill
ALPHA, TEMPERATURE, KD_TOPK = DISTILL.subpath_alpha, DISTILL.subpath_temp, DEFAULT_TOPK


def make_steps(model, sup, base, opt, scaler, x, y, dtype, topk: int):
    """The plain step and the ADN self-distillation step (``adn.training.engine.train_step``: the trainer's own)."""
    autocast = partial(torch.autocast, x.device.type, dtype=dtype)

    def backward(loss):
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def update():
        if scaler is not None:
            scaler.step(opt)  # checks for inf gradients on the host: one sync per step (as in training)
            scaler.update()
        else:
            opt.step()

    def plain():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x, skip=sup), y)
        backward(loss)
        update()

    distill, criterion = SelfDistillation(ALPHA, TEMPERATURE, topk), torch.nn.CrossEntropyLoss()
    options = engine.StepOptions(amp=True, amp_dtype=dtype)

    def adn_step():  # the trainer's own step (super-net backward, then base-net backward; no host sync)
        engine.train_step(model, distill, x, y, criterion, opt, options, scaler)

    return {"plain": plain, "ADN": adn_step}


def train_item(report, rates: dict, name, batch, precision, mode, args, device) -> None:
    """One row of the training table; ``rates[name]`` collects (ADN img/s, plain img/s, how) for the data job."""
    classes = 10 if args.smoke else (1000 if adn.model_info(name).input_size >= 224 else 100)
    model, res, fmt, sup, base, g_sup, g_base = build(name, device, classes, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    x = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    callee = model if mode == "eager" else compile_model(model, MODES[mode], args)
    graphs = counter("stats", "unique_graphs")
    out = {}
    for kind, fn in make_steps(callee, sup, base, opt, scaler, x, y, DTYPES[precision], min(KD_TOPK, classes)).items():
        reset_peak(device)
        warmup = args.warmup if mode == "eager" else max(args.warmup, 3)
        warm, (t,) = call_times(fn, args.steps, warmup=warmup, device=device, per_call=False)
        out[kind] = (batch / t, t, warm, peak_mib(device))
    graphs = f"{counter('stats', 'unique_graphs') - graphs}" if mode != "eager" else "–"
    (p_ips, p_t, p_warm, p_mem), (a_ips, a_t, a_warm, a_mem) = out["plain"], out["ADN"]
    report.row(
        "train",
        name,
        batch,
        res,
        precision,
        mode,
        f"{p_ips:.0f}",
        f"{a_ips:.0f}",
        f"{a_t / p_t:.3f}",
        f"{(g_sup + g_base) / g_sup:.3f}",
        p_mem,
        a_mem,
        f"{p_warm:.1f} / {a_warm:.1f}",
        graphs,
        "",
    )
    rates.setdefault(name, []).append((a_ips, p_ips, f"{precision}, {mode}"))
