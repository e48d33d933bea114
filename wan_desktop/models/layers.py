"""Layer factory shared by every model file (the ComfyUI ``operations`` idea, typed).

Model code builds its layers through an ``Ops`` class, so a backend can swap in FP8 / INT8 /
offloading linears or another attention kernel without touching model code. Nothing here touches a
device at import time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Linear(nn.Linear):
    """nn.Linear whose weight may be stored in another dtype than the activations.

    fp8 checkpoints (ComfyUI ``fp8_e4m3fn`` / ``fp8_e4m3fn_scaled``) keep their weights fp8 in memory;
    the weight is cast (and multiplied by ``scale_weight`` when the file has one) only when the layer
    runs. With matching dtypes this is exactly nn.Linear.
    """

    scale_weight: Tensor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # None buffers stay out of the state dict: the official key set is unchanged.
        self.register_buffer("scale_weight", None)

    def forward(self, x: Tensor) -> Tensor:
        w: Tensor = self.weight
        b: Tensor | None = self.bias
        if self.scale_weight is not None:  # scale in fp32: rounding it first costs ~4e-3
            w = (w.float() * self.scale_weight.float()).to(x.dtype)
        elif w.dtype != x.dtype:
            w = w.to(x.dtype)
        if b is not None and b.dtype != x.dtype:
            b = b.to(x.dtype)
        return F.linear(x, w, b)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
    """q: [B, H, Lq, D], k/v: [B, H, Lk, D] -> [B, H, Lq, D]."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """RMS norm over the last dim in fp32, cast back, then scaled.

    Written out (not aten::rms_norm) so the graph exports to ONNX opset 17.
    """
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return y * weight if weight is not None else y


class RMSNorm(nn.Module):
    """WanRMSNorm: ``(x.float() * rsqrt(mean(x²) + eps)).type_as(x) * weight``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


def in_modules(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether parameter path ``name`` lies under one of ``patterns`` (dotted prefixes, component-wise;
    "*" matches one component): "blocks.*.modulation" matches "blocks.3.modulation"."""
    parts = name.split(".")
    for pattern in patterns:
        pat = pattern.split(".")
        if len(parts) >= len(pat) and all(p in ("*", n) for p, n in zip(pat, parts, strict=False)):
            return True
    return False


class Ops:
    """Default layers: plain torch compute in the activations' dtype.

    Backends subclass this and replace members (e.g. ``Linear = Fp8Linear``,
    ``attention = staticmethod(sage_attention)``).
    """

    Linear: type[nn.Linear] = Linear
    Conv2d: type[nn.Conv2d] = nn.Conv2d
    Conv3d: type[nn.Conv3d] = nn.Conv3d
    LayerNorm: type[nn.LayerNorm] = nn.LayerNorm
    Embedding: type[nn.Embedding] = nn.Embedding
    attention = staticmethod(sdpa_attention)
