"""The generic part of :func:`adn.convert`: one forward probe that records every module's input and output
shapes, the residual test of a block, and the bottom-up search for stages in models without a family rule."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.network import NORM_TYPES
from .families import Blocks, split_at_non_residual

__all__ = ["DEFAULT_INPUT", "Inspector", "first_param", "generic_stages", "group", "probe_size"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
DEFAULT_INPUT = 224


@dataclass
class _Call:
    order: int  # position of the module's first call in the forward pass
    count: int
    in_shape: tuple[int, ...] | None  # None unless called with exactly one tensor (and no keyword arguments)
    out_shape: tuple[int, ...] | None  # None unless it returned one tensor


def first_param(model: nn.Module) -> torch.Tensor:
    return next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0))


def probe_size(model: nn.Module, input_size: int | Sequence[int] | None) -> tuple[int, int]:
    """The probe's input resolution: ``input_size``, else what the model says it expects, else 224."""
    size: Any = input_size
    if size is None:
        embed = getattr(model, "patch_embed", None)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        for candidate in (
            getattr(model, "image_size", None),  # torchvision ViT
            None if getattr(model, "dynamic_img_size", False) else getattr(embed, "img_size", None),  # timm ViT
            cfg.get("input_size", (None,))[1:] or None,  # timm: (C, H, W)
        ):
            if candidate:
                size = candidate
                break
    size = size or DEFAULT_INPUT
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))


def _probe(model: nn.Module, size: tuple[int, int]) -> dict[int, _Call]:
    """Shapes seen by every module in one eval forward of a ``1x3xHxW`` input, run on the meta device (no
    arithmetic, nothing of the model touched; a real batch-1 pass if an operation has no meta kernel)."""
    calls: dict[int, _Call] = {}

    def pre(module, args, kwargs):
        call = calls.get(id(module))
        if call is None:
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            calls[id(module)] = _Call(len(calls), 1, tuple(args[0].shape) if single else None, None)
        else:
            call.count += 1

    def post(module, args, kwargs, output):
        call = calls[id(module)]
        if call.count == 1 and isinstance(output, torch.Tensor):
            call.out_shape = tuple(output.shape)

    ref = first_param(model)
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    flags = [(m, m.training) for m in model.modules()]
    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    model.eval()
    try:
        with torch.no_grad():
            try:
                tensors = itertools.chain(
                    model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
                )
                state = {n: torch.empty_like(t, device="meta") for n, t in tensors}
                x = torch.empty(1, 3, *size, device="meta", dtype=dtype)
                torch.func.functional_call(model, state, (x,), strict=False)
            except Exception as meta_error:
                calls.clear()
                if ref.device.type == "meta":
                    raise meta_error
                model(torch.randn(1, 3, *size, device=ref.device, dtype=dtype))
    except Exception as exc:
        raise ValueError(
            f"cannot convert {type(model).__name__}: its forward fails on a 1x3x{size[0]}x{size[1]} probe "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}); "
            "pass input_size=... (the resolution the model expects)"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m, training in flags:
            m.training = training
    return calls


def _has_weights(module: nn.Module) -> bool:
    """Whether ``module`` has parameters outside its norm layers."""
    norm_params = {id(p) for m in module.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}
    return any(id(p) not in norm_params for p in module.parameters())


def _passes_input_through(block: nn.Module, shape: tuple[int, ...], ref: torch.Tensor) -> bool | str:
    """The residual test: with every parameter of ``block`` zeroed except its norms', does its output still
    depend on its input? (Two random inputs, one batch-1 call each.) A string says why the test could not run."""
    device = torch.device("cpu") if ref.device.type == "meta" else ref.device
    dtype = ref.dtype if ref.is_floating_point() else torch.float32
    norm_params = {id(p) for m in block.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()}

    def real(name: str, t: torch.Tensor, zero: bool) -> torch.Tensor:
        if t.device.type != "meta" and not zero:
            return t
        if zero or not t.is_floating_point():
            return torch.zeros_like(t, device=device)
        unit = name.rsplit(".", 1)[-1] in ("weight", "running_var")  # a meta model's norms: identity-like
        return (torch.ones_like if unit else torch.zeros_like)(t, device=device)

    state = {n: real(n, p, id(p) not in norm_params) for n, p in block.named_parameters(remove_duplicate=False)}
    state.update({n: real(n, b, False) for n, b in block.named_buffers(remove_duplicate=False)})
    flags = [(m, m.training) for m in block.modules()]
    block.eval()
    try:
        with torch.no_grad():
            generator = torch.Generator(device="cpu").manual_seed(0)
            a, b = (torch.randn(shape, generator=generator, device="cpu").to(device, dtype) for _ in range(2))
            out_a = torch.func.functional_call(block, state, (a,), strict=False)
            out_b = torch.func.functional_call(block, state, (b,), strict=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
    finally:
        for m, training in flags:
            m.training = training
    return isinstance(out_a, torch.Tensor) and not torch.equal(out_a, out_b)


class Inspector:
    """The probe's records plus cached residual tests."""

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        self.model = model
        self.calls = _probe(model, size)
        self.ref = first_param(model)
        self._residual: dict[int, bool | str] = {}

    def candidate(self, module: nn.Module) -> bool:
        call = self.calls.get(id(module))
        return (
            type(module) not in _CONTAINERS
            and not isinstance(module, NORM_TYPES)
            and call is not None
            and call.count == 1
            and call.in_shape is not None
            and call.out_shape is not None
            and _has_weights(module)
        )

    def why_not_skippable(self, block: nn.Module) -> str | None:
        call = self.calls.get(id(block))
        if call is None:
            return "it does not run in the model's forward"
        if call.count != 1:
            return f"it runs {call.count} times per forward"
        if call.in_shape is None or call.out_shape is None:
            return "it is not called with one tensor returning one tensor"
        if call.in_shape != call.out_shape:
            return f"it changes the shape {call.in_shape} -> {call.out_shape}"
        self.residual(block)
        result = self._residual[id(block)]
        if isinstance(result, str):
            return f"its residual test fails to run ({result})"
        if not result:
            return "it has no identity shortcut (with its weights zeroed its output no longer depends on its input)"
        return None

    def residual(self, block: nn.Module) -> bool:
        """Whether ``block`` is a shape-preserving residual block (see the module docstring)."""
        key = id(block)
        if key not in self._residual:
            call = self.calls.get(key)
            shape_kept = (
                call is not None and call.count == 1 and call.in_shape is not None and call.in_shape == call.out_shape
            )
            self._residual[key] = shape_kept and _passes_input_through(block, call.in_shape, self.ref)
        return self._residual[key] is True

    def order(self, block: nn.Module) -> int:
        call = self.calls.get(id(block))
        return call.order if call is not None else math.inf  # type: ignore[return-value]


def generic_stages(inspector: Inspector) -> tuple[list[Blocks], bool]:
    """The fallback (see the module docstring): stages, and whether the model is one flat run of layers."""
    stages: list[Blocks] = []

    def visit(module: nn.Module) -> bool:
        """Find stages below and in ``module``; whether it holds one."""
        children = list(module.children())
        held = [visit(child) for child in children]
        run: Blocks = []
        found = False

        def flush() -> None:
            nonlocal found
            if len(run) >= 2:
                for group in split_at_non_residual(run, inspector.residual):
                    if len(group) >= 2:
                        stages.append(group)
                        found = True
            run.clear()

        for child, child_holds in zip(children, held, strict=True):
            if child_holds or not inspector.candidate(child) or (run and type(child) is not type(run[0])):
                flush()
            if not child_holds and inspector.candidate(child):
                run.append(child)
        flush()
        return found or any(held)

    visit(inspector.model)
    stages.sort(key=lambda s: inspector.order(s[0]))
    flat = len(stages) == 1 and inspector.residual(stages[0][0])
    return stages, flat


def group(layers: Blocks, num_stages: int | None, what: str) -> list[Blocks]:
    """``layers`` as ``num_stages`` consecutive groups of near-equal size, the larger ones first."""
    n = len(layers)
    k = num_stages if num_stages is not None else max(1, min(4, n // 2))
    if k < 1 or n < 2 * k:
        raise ValueError(
            f"cannot convert {what}: num_stages={k} needs at least {2 * k} layers and the model has {n}; "
            f"pass num_stages=1..{max(1, n // 2)}"
        )
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    out, start = [], 0
    for size in sizes:
        out.append(layers[start : start + size])
        start += size
    return out
