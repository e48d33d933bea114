"""LoRAs beside quantized weights, unmerged: ``y = x Wᵀ + b + ((x Dᵀ) Uᵀ)``.

A GGUF (models/quant_linear.py), fp8 or int8 weight cannot take a LoRA without requantizing it (one
more rounding of every touched weight, and a strength change means doing it again). Instead the
low-rank factors sit beside the layer as buffers — ``lora_down`` D [R, in] with the strengths and
``alpha / rank`` folded in, ``lora_up`` U [out, R]; several LoRAs on one layer are concatenated
along R — and a forward hook adds their product. A full-weight delta (``.diff``) is kept as
``lora_diff`` [out, in]. Being buffers, they move with ``.to()`` and are packed with the block by
block streaming (engines/block_swap.py); the hook reads them from the module it runs on, so the
copies block streaming makes run their own block's factors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_BUFFERS = ("lora_down", "lora_up", "lora_diff")


def _lowrank_hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    x = args[0]
    down: Tensor | None = getattr(module, "lora_down", None)
    up: Tensor | None = getattr(module, "lora_up", None)
    diff: Tensor | None = getattr(module, "lora_diff", None)
    if down is not None and up is not None:
        out = out + F.linear(F.linear(x, down.to(x.dtype)), up.to(x.dtype))
    if diff is not None:
        out = out + F.linear(x, diff.to(x.dtype))
    return out


def _ensure_hook(module: nn.Module) -> None:
    if _lowrank_hook not in module._forward_hooks.values():
        module.register_forward_hook(_lowrank_hook)


def add_lowrank(module: nn.Module, down: Tensor, up: Tensor, dtype: torch.dtype) -> None:
    """Add the pair (D [R, in] already scaled, U [out, R]) to ``module``'s unmerged LoRAs."""
    down, up = down.to(dtype), up.to(dtype)
    old_d: Tensor | None = getattr(module, "lora_down", None)
    old_u: Tensor | None = getattr(module, "lora_up", None)
    if old_d is not None and old_u is not None:
        down = torch.cat([old_d, down.to(old_d.device)], dim=0)
        up = torch.cat([old_u, up.to(old_u.device)], dim=1)
    module.register_buffer("lora_down", down, persistent=False)
    module.register_buffer("lora_up", up, persistent=False)
    _ensure_hook(module)


def add_dense(module: nn.Module, diff: Tensor, dtype: torch.dtype) -> None:
    """Add a full-weight delta [out, in] to ``module``'s unmerged LoRAs."""
    old: Tensor | None = getattr(module, "lora_diff", None)
    diff = diff.to(dtype) if old is None else old + diff.to(old.device, old.dtype)
    module.register_buffer("lora_diff", diff, persistent=False)
    _ensure_hook(module)


def remove_lowrank(module: nn.Module) -> None:
    """Drop every unmerged LoRA of ``module`` (its base weights were never touched)."""
    for name in _BUFFERS:
        module._buffers.pop(name, None)
    for key, hook in list(module._forward_hooks.items()):
        if hook is _lowrank_hook:
            del module._forward_hooks[key]


def has_lowrank(module: nn.Module) -> bool:
    return any(name in module._buffers for name in _BUFFERS)
