"""The jobs of ``benchmarks/gpu.py``, one module each: ``training`` (throughput of the ADN step vs a plain step),
``inference`` (latency of super- vs base-net, switching cost, torch.compile and CUDA graphs) and ``data`` (images/s
per DataLoader worker). What they share is here: the model under test, compilation, memory and Dynamo counters.
How and why each job measures what it does: docs/gpu.md."""

from __future__ import annotations

import gc

import torch

import adn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODES = {"eager": None, "torch.compile": "default", "CUDA graphs": "reduce-overhead"}


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "n/a"


def counter(group: str, key: str) -> int:
    from torch._dynamo.utils import counters

    return int(counters[group][key])


def build(name: str, device: torch.device, num_classes: int = 1000, train: bool = False):
    """``(model, resolution, memory format, super config, base config, GMACs super, GMACs base)``."""
    torch.manual_seed(0)
    fmt = torch.channels_last if name.startswith(("resnet", "mobilenet")) else torch.contiguous_format
    model = adn.create_model(name, num_classes=num_classes).to(device, memory_format=fmt).train(train)
    res = adn.model_info(name).input_size
    sup, base = (False,) * model.num_stages, (True,) * model.num_stages
    return model, res, fmt, sup, base, *(adn.count_flops(model, s, res) / 1e9 for s in (sup, base))


def compile_model(model, mode: str | None, args):
    """``torch.compile`` of the whole model (one graph per sub-network); ``mode`` only with Inductor."""
    torch._dynamo.reset()
    how = {"mode": mode} if args.compile_backend == "inductor" else {"backend": args.compile_backend}
    return torch.compile(model, dynamic=False, **how)
