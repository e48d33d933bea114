# Port of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315 wan/modules/t5.py (Apache-2.0),
# encoder only (byte-identical in Wan-Video/Wan2.2@42bf4cfaa384bc21833865abc2f9e6c0e67233dc).
# Deviations:
#   - encoder only, per-layer relative position bias (the umT5 form, ``shared_pos=False``); no decoder,
#     no dropout modules (inference);
#   - the bucket indices are computed once per forward and shared by the blocks (each block still
#     looks up its own table);
#   - the key mask is applied with ``where`` instead of an in-place ``masked_fill_`` (same values), and
#     log(0) is avoided in the bucket formula (same buckets), so the graph exports to ONNX;
#   - fp16 compute clamps the residual stream to ±(max − 1000) after every add, unconditionally
#     (official: only when an inf appeared; a data-dependent branch would not export);
#   - attention is written out here rather than through ``ops.attention``: T5 adds a per-head bias
#     and uses no 1/√d scale, which the Ops kernel interface does not take.
"""umT5 encoder (``T5Encoder``) with module names equal to ``models_t5_umt5-xxl-enc-bf16.pth`` keys.

Dtype policy (as the official code with bf16 weights): linears, attention scores and the residual
stream run in the *compute dtype* — that of the weights (fp32, bf16 or fp16; fp8/int storage → bf16).
The RMS norms compute their statistics in fp32, the softmax runs in fp32.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..variants import T5Config
from .layers import Ops, rms_norm

log = logging.getLogger(__name__)

_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _activation_dtype(weight: Tensor) -> torch.dtype:
    return weight.dtype if weight.dtype in _COMPUTE_DTYPES else torch.bfloat16


def relative_position_bucket(rel: Tensor, num_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """Bidirectional T5 bucket of ``rel = key index − query index`` (int64 tensor, any shape).

    Half the buckets for rel ≤ 0, half for rel > 0; within each, |rel| < nb/2 gets its own bucket,
    larger distances share log-spaced buckets up to ``max_distance`` (spec §2.3). The float ops are
    the official ones in the official order, so boundary cases truncate identically.
    """
    nb = num_buckets // 2
    bucket = (rel > 0).long() * nb
    a = rel.abs()
    max_exact = nb // 2
    # clamp keeps log() finite where the exact branch is taken anyway (official: log(0) = -inf,
    # discarded by the where)
    a_large = a.clamp(min=max_exact)
    large = (
        max_exact
        + (
            torch.log(a_large.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (nb - max_exact)
        ).long()
    )
    large = large.clamp(max=nb - 1)
    return bucket + torch.where(a < max_exact, a, large)


class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias: ``(x.float() · rsqrt(mean(x²) + eps)) → x.dtype, · weight``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight.to(x.dtype), self.eps)


class T5RelativeEmbedding(nn.Module):
    """Per-layer table bucket -> per-head bias."""

    def __init__(self, num_buckets: int, num_heads: int, ops: type[Ops]) -> None:
        super().__init__()
        self.embedding = ops.Embedding(num_buckets, num_heads)

    def forward(self, buckets: Tensor, dtype: torch.dtype) -> Tensor:
        """buckets: [Lq, Lk] int64 -> bias [1, heads, Lq, Lk] in ``dtype``."""
        return self.embedding(buckets).to(dtype).permute(2, 0, 1).unsqueeze(0)


class T5Attention(nn.Module):
    """Bias-free q/k/v/o; scores q·kᵀ without 1/√d, plus the position bias / key mask."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int, ops: type[Ops]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = ops.Linear(dim, dim_attn, bias=False)
        self.k = ops.Linear(dim, dim_attn, bias=False)
        self.v = ops.Linear(dim, dim_attn, bias=False)
        self.o = ops.Linear(dim_attn, dim, bias=False)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        """x: [B, L, dim]; bias: [B or 1, H, L, L] (masked keys at finfo.min) -> [B, L, dim]."""
        heads = (self.num_heads, self.head_dim)
        q = self.q(x).unflatten(-1, heads).transpose(1, 2)  # [B, H, L, D]
        k = self.k(x).unflatten(-1, heads).transpose(1, 2)
        v = self.v(x).unflatten(-1, heads).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) + bias  # [B, H, L, L], compute dtype (as upstream)
        attn = F.softmax(scores.float(), dim=-1).to(x.dtype)
        out = attn @ v  # [B, H, L, D]
        return self.o(out.transpose(1, 2).flatten(2))


class GELUTanh(nn.Module):
    """tanh-approximate GELU written out as upstream (and transformers' ``gelu_new``) does, op for
    op: in bf16 every step rounds like theirs, so outputs match bit for bit (F.gelu would round once
    and differ by ~1e-2 after a few layers)."""

    def forward(self, x: Tensor) -> Tensor:
        return (
            0.5
            * x
            * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        )


class T5FeedForward(nn.Module):
    """Gated GELU: ``fc2(fc1(x) · gelu_tanh(gate(x)))``."""

    def __init__(self, dim: int, dim_ffn: int, ops: type[Ops]) -> None:
        super().__init__()
        self.gate = nn.Sequential(ops.Linear(dim, dim_ffn, bias=False), GELUTanh())
        self.fc1 = ops.Linear(dim, dim_ffn, bias=False)
        self.fc2 = ops.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


def _clamp_fp16(x: Tensor) -> Tensor:
    if x.dtype == torch.float16:
        c = torch.finfo(torch.float16).max - 1000
        return x.clamp(-c, c)
    return x


class T5SelfAttention(nn.Module):
    """One pre-norm encoder block with its own relative position table."""

    def __init__(self, cfg: T5Config, ops: type[Ops]) -> None:
        super().__init__()
        self.norm1 = T5LayerNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.dim_attn, cfg.num_heads, ops)
        self.norm2 = T5LayerNorm(cfg.dim, cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.dim_ffn, ops)
        self.pos_embedding = T5RelativeEmbedding(cfg.num_buckets, cfg.num_heads, ops)

    def forward(self, x: Tensor, buckets: Tensor, key_mask: Tensor) -> Tensor:
        """x: [B, L, dim]; buckets: [L, L] int64; key_mask: [B, 1, 1, L] bool -> [B, L, dim]."""
        pos = self.pos_embedding(buckets, x.dtype)  # [1, H, L, L]
        bias = torch.where(key_mask, pos, torch.finfo(x.dtype).min)  # [B, H, L, L]
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        return _clamp_fp16(x + self.ffn(self.norm2(x)))


class T5Encoder(nn.Module):
    """umT5 encoder: token embedding (unscaled) → blocks → final RMS norm."""

    BLOCK_TYPE = "T5SelfAttention"

    def __init__(self, cfg: T5Config, ops: type[Ops] = Ops) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = ops.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(T5SelfAttention(cfg, ops) for _ in range(cfg.num_layers))
        self.norm = T5LayerNorm(cfg.dim, cfg.eps)

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of linears/attention/residual: that of the block weights (fp8/int storage → bf16)."""
        first = cast(T5SelfAttention, self.blocks[0])
        return _activation_dtype(first.attn.q.weight)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """ids: [B, L] int64 token ids; mask: [B, L] (1 = token, 0 = padding) or None (all tokens).

        Returns hidden states [B, L, dim] in the compute dtype for every position (padding rows are
        computed too — they attend to the real tokens only — and are meant to be dropped).
        """
        dtype = self.compute_dtype
        L = ids.shape[1]
        x = self.token_embedding(ids).to(dtype)  # [B, L, dim]
        pos = torch.arange(L, device=ids.device)
        buckets = relative_position_bucket(
            pos[None, :] - pos[:, None], self.cfg.num_buckets, self.cfg.max_distance
        )  # [Lq, Lk]
        if mask is None:
            key_mask = torch.ones(ids.shape[0], 1, 1, L, dtype=torch.bool, device=ids.device)
        else:
            key_mask = (mask != 0)[:, None, None, :]  # [B, 1, 1, L]
        for block in self.blocks:
            x = block(x, buckets, key_mask)
        return self.norm(x)
