# Port of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315 and
# Wan-Video/Wan2.2@42bf4cfaa384bc21833865abc2f9e6c0e67233dc wan/modules/model.py (Apache-2.0).
# One class for every variant: Wan2.1 t2v / i2v / flf2v, Wan2.2 t2v / i2v (A14B) / ti2v (5B).
# Deviations:
#   - batched tensors instead of per-sample lists; no padding of the token sequence to seq_len and no
#     attention masks (a batch holds videos of one size, so padding never occurs);
#   - real-valued RoPE in float32 (models/rope.py) instead of complex float64;
#   - timestep sinusoid in float32 (frequencies rounded from float64) instead of float64: no float64
#     in the forward graph. The angle t·ω then carries ≤ ~3e-5 rad of rounding at t ≈ 1000;
#   - dtype policy written out instead of torch.autocast (see below); the residual stream is fp32 from
#     the patch embedding on (the official one is bf16 until the first gated add);
#   - a [B] timestep is broadcast over tokens (Wan2.1 form) also for Wan2.2, instead of Wan2.2's
#     t.expand(B, seq_len) that materialises a per-token e0 (same numbers, far less memory);
#   - forward split into prepare / blocks / finish so callers can stream blocks or cache steps.
"""Wan diffusion transformer (``WanModel``), module names equal to the official checkpoint keys.

Dtype policy (spec §3.10; the official code gets it from autocast(bf16) plus autocast(fp32) regions):
the *compute dtype* is that of the block weights (fp32 → fp32, bf16 → bf16, fp16 → fp16, anything
else such as fp8 storage → bf16). Linears and attention run in the compute dtype. The timestep
embedding and projection, every modulation sum and ``LN(x)·(1+scale)+shift``, the gated residual adds,
the residual stream itself and the whole head run in fp32; LayerNorm / RMSNorm statistics are fp32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..variants import DiTConfig
from .diffusion_forcing import (
    block_causal_attention,
    fps_index,
    fps_modules,
    fps_term,
    frame_modulation,
)
from .diffusion_forcing import per_frame as _per_frame
from .layers import Ops, RMSNorm, in_modules
from .rope import apply_rope, rope_cos_sin

if TYPE_CHECKING:
    from .sequence_parallel import Ulysses
    from .sla import SlaAttnOp

log = logging.getLogger(__name__)

_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """t: [N] (any real dtype) -> [N, dim] fp32 = cat[cos(t·ω), sin(t·ω)], ω_k = 10000^(-k/(dim/2))."""
    half = dim // 2
    # Python floats are float64: the frequencies are exact to fp32 rounding, and no float64 op
    # enters the traced graph (they become a constant).
    freqs = torch.tensor(
        [10000.0 ** (-k / half) for k in range(half)], dtype=torch.float32, device=t.device
    )
    angles = t.float()[:, None] * freqs[None, :]  # [N, half]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _layer_norm_fp32(x: Tensor, norm: nn.Module) -> Tensor:
    """LayerNorm in fp32 whatever the dtype of x or of the norm's weights (WanLayerNorm / autocast)."""
    ln = cast(nn.LayerNorm, norm)  # an ops.LayerNorm
    w = ln.weight.float() if getattr(ln, "weight", None) is not None else None
    b = ln.bias.float() if getattr(ln, "bias", None) is not None else None
    return F.layer_norm(x.float(), ln.normalized_shape, w, b, ln.eps)


def _activation_dtype(weight: Tensor) -> torch.dtype:
    """Dtype that activations take when they meet this weight: its own, or bf16 for fp8/int storage."""
    return weight.dtype if weight.dtype in _COMPUTE_DTYPES else torch.bfloat16


def _split_modulation(table: Tensor, emb: Tensor) -> tuple[Tensor, ...]:
    """table: [1, n, dim]; emb: [B, n, dim] or per token [B, L, n, dim] (fp32).

    Returns n tensors [B, 1, dim] (broadcast over tokens) or [B, L, dim], computed in fp32.
    """
    m = table.float() + emb  # [B, n, dim] or [B, L, n, dim]
    if m.dim() == 3:
        m = m.unsqueeze(1)  # [B, 1, n, dim]
    return m.unbind(dim=2)


# Tokens per chunk of the per-token parts of a block (modulation, q/k norms + RoPE, the residual
# terms, the FFN) over long sequences: a chunk's fp32 / ffn_dim temporaries instead of the
# sequence's (832x480x81 is 32,760 tokens a video). Large enough that the GPU's matmuls stay
# full-size.
TOKEN_CHUNK = 8192


def _chunked(n: object) -> bool:
    """Chunk a sequence of ``n`` tokens? Not when tracing with symbolic sizes (ONNX export: the
    graph keeps one op per layer) and not when one chunk holds it all."""
    return isinstance(n, int) and n > TOKEN_CHUNK


def by_tokens(fn: Callable[..., Tensor], x: Tensor, *args: object) -> Tensor:
    """``fn(x[:, a:b], a, b, *args)`` -> [B, b − a, ·] (a per-token function of tokens a:b) over
    the whole of x [B, L, ·], a TOKEN_CHUNK of tokens at a time into one output, so only a
    chunk's temporaries are ever alive; short sequences in one call ``fn(x, 0, L, *args)``. The
    same numbers either way."""
    n = x.shape[1]
    if not _chunked(n):
        return fn(x, 0, n, *args)
    out: Tensor | None = None
    for a in range(0, n, TOKEN_CHUNK):
        b = min(a + TOKEN_CHUNK, n)
        part = fn(x[:, a:b], a, b, *args)
        if out is None:
            out = part.new_empty(x.shape[0], n, part.shape[-1])
        out[:, a:b] = part
    assert out is not None
    return out


class Modulation:
    """A block's six modulation vectors e[i] = table[i] + e0[i] in fp32 (the official ``e``):
    e[0], e[1], e[2] the shift, scale and gate of the self-attention, e[3], e[4], e[5] those of
    the FFN; ``at(i, a, b)`` is e[i] for tokens a:b.

    e0 [B, 6, dim] (a timestep per sample): made once, each e[i] [B, 1, dim] (broadcast).
    e0 [B, L, 6, dim] (per-token timesteps, TI2V): e[i] is made for the asked tokens only,
    [B, b − a, dim], so the [B, L, 6, dim] sum never exists.
    """

    def __init__(self, table: Tensor, e0: Tensor, tokens: int = 0) -> None:
        self.table = table  # [1, 6, dim]
        self.e0 = e0  # or per frame (SkyReels DF) [B, F', 1, 6, dim] over ``tokens`` tokens
        self.tokens = tokens
        self._whole = _split_modulation(table, e0) if e0.dim() == 3 else None

    def at(self, i: int, a: int, b: int) -> Tensor:
        if self._whole is not None:
            return self._whole[i]
        if self.e0.dim() == 5:
            return frame_modulation(self.table, self.e0, self.tokens, i, a, b)
        return _split_modulation(self.table[:, i : i + 1], self.e0[:, a:b, i : i + 1])[0]


class WanSelfAttention(nn.Module):
    """q/k/v/o with bias; RMS q/k norm over all heads together; 3D RoPE on q and k."""

    # Ulysses sequence parallel (models/sequence_parallel.py), set while a sharded forward runs:
    # the attention kernel sees every token of a share of the heads
    sequence_parallel: Ulysses | None = None

    def __init__(
        self, dim: int, num_heads: int, eps: float, ops: type[Ops], sla_topk: float | None = None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.ops = ops
        self.q = ops.Linear(dim, dim)
        self.k = ops.Linear(dim, dim)
        self.v = ops.Linear(dim, dim)
        self.o = ops.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=eps)
        self.norm_k = RMSNorm(dim, eps=eps)
        # TurboDiffusion rCM checkpoints only: sparse-linear attention replaces the kernel
        self.attn_op: SlaAttnOp | None = None
        if sla_topk is not None:
            from .sla import SlaAttnOp

            self.attn_op = SlaAttnOp(self.head_dim, sla_topk, ops)

    def _qk(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Normed, RoPE'd q and k [B, L, H, D] in x's dtype; RoPE in fp32 (official: float64)."""
        heads = (self.num_heads, self.head_dim)
        q = by_tokens(self._roped, x, self.q, self.norm_q, cos, sin)
        k = by_tokens(self._roped, x, self.k, self.norm_k, cos, sin)
        return q.unflatten(-1, heads), k.unflatten(-1, heads)

    def _roped(
        self, x: Tensor, a: int, b: int, lin: nn.Module, norm: nn.Module, cos: Tensor, sin: Tensor
    ) -> Tensor:
        """RoPE(norm(lin(x))) of tokens a:b: [B, b − a, dim] in x's dtype."""
        h = norm(lin(x)).unflatten(-1, (self.num_heads, self.head_dim))
        return apply_rope(h, cos[a:b], sin[a:b], seq_dim=1).to(x.dtype).flatten(2)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, block_tokens: int | None = None
    ) -> Tensor:
        """x: [B, L, dim] compute dtype; cos/sin: [L, head_dim/2] fp32 -> [B, L, dim].
        ``block_tokens``: block-causal attention over blocks of that many tokens (SkyReels DF)."""
        dtype = x.dtype
        heads = (self.num_heads, self.head_dim)
        q, k = self._qk(x, cos, sin)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, L, D]
        v = self.v(x).unflatten(-1, heads).to(dtype).transpose(1, 2)
        sp = self.sequence_parallel
        if sp is not None:  # tokens-sharded [B, H, L/N, D] -> heads-sharded [B, H/N, L, D]
            q, k, v = sp.to_heads(q, k, v)
        if block_tokens is not None:
            out = block_causal_attention(
                self.ops.attention, q, k, v, block_tokens=block_tokens, scale=self.head_dim**-0.5
            )
        elif self.attn_op is not None:
            out = self.attn_op.local_attn(q, k, v, scale=self.head_dim**-0.5)
        else:
            out = self.ops.attention(q, k, v, scale=self.head_dim**-0.5)
        if sp is not None:
            out = sp.to_tokens(out)
        return self.o(out.transpose(1, 2).flatten(2))  # [B, L, dim]


class WanCrossAttention(nn.Module):
    """Cross-attention to the text context; Wan2.1 I2V/FLF2V add a second softmax over image tokens.

    With ``image=True`` the context is ``[image tokens ; text_len text tokens]`` (official order) and
    the two attention outputs (same q) are summed before ``o``.
    """

    def __init__(
        self, dim: int, num_heads: int, eps: float, ops: type[Ops], *, text_len: int, image: bool
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.text_len = text_len
        self.ops = ops
        self.q = ops.Linear(dim, dim)
        self.k = ops.Linear(dim, dim)
        self.v = ops.Linear(dim, dim)
        self.o = ops.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=eps)
        self.norm_k = RMSNorm(dim, eps=eps)
        self.image = image
        if image:
            self.k_img = ops.Linear(dim, dim)
            self.v_img = ops.Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps=eps)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q: [B, H, Lq, D]; k/v: [B, Lk, dim] -> [B, Lq, dim]."""
        heads = (self.num_heads, self.head_dim)
        k = k.to(q.dtype).unflatten(-1, heads).transpose(1, 2)
        v = v.to(q.dtype).unflatten(-1, heads).transpose(1, 2)
        out = self.ops.attention(q, k, v, scale=self.head_dim**-0.5)
        return out.transpose(1, 2).flatten(2)

    def _query(self, x: Tensor, a: int, b: int) -> Tensor:
        return self.norm_q(self.q(x)).to(x.dtype)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: [B, L, dim]; context: [B, (n_img +) text_len, dim] -> [B, L, dim] (x's dtype)."""
        heads = (self.num_heads, self.head_dim)
        q = by_tokens(self._query, x).unflatten(-1, heads).transpose(1, 2)  # [B, H, L, D]
        if self.image:
            n_img = context.shape[1] - self.text_len
            img, context = context[:, :n_img], context[:, n_img:]
            out_img = self._attend(q, self.norm_k_img(self.k_img(img)), self.v_img(img))
        out = self._attend(q, self.norm_k(self.k(context)), self.v(context))
        if self.image:
            out = out + out_img
        return self.o(out)


class WanAttentionBlock(nn.Module):
    """adaLN self-attention, plain cross-attention, adaLN FFN (spec §3.3).

    Official naming: norm1 = pre-self-attn, norm3 = pre-cross-attn (affine), norm2 = pre-FFN.
    """

    def __init__(self, cfg: DiTConfig, ops: type[Ops]) -> None:
        super().__init__()
        dim = cfg.dim
        self.norm1 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(dim, cfg.num_heads, cfg.eps, ops, cfg.sla_topk)
        self.norm3 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True)
        self.cross_attn = WanCrossAttention(
            dim, cfg.num_heads, cfg.eps, ops, text_len=cfg.text_len, image=cfg.image_dim is not None
        )
        self.norm2 = ops.LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            ops.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), ops.Linear(cfg.ffn_dim, dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def modulated_input(self, x: Tensor, e0: Tensor) -> Tensor:
        """Input of the self-attention, norm1(x)·(1 + e[1]) + e[0] in fp32: [B, L, dim] (TeaCache's
        signal)."""
        e = Modulation(self.modulation, e0, x.shape[1])
        return self._modulate(x, 0, x.shape[1], self.norm1, e, 0)

    def forward(
        self,
        x: Tensor,
        e0: Tensor,
        context: Tensor,
        cos: Tensor,
        sin: Tensor,
        block_tokens: int | None = None,
    ) -> Tensor:
        """x: [B, L, dim] fp32; e0: [B, 6, dim], [B, L, 6, dim] or per frame [B, F', 1, 6, dim]
        fp32; context: [B, Lc, dim] in the compute dtype; cos/sin: [L, head_dim/2] fp32;
        block_tokens: block-causal self-attention (SkyReels DF) -> x: [B, L, dim] fp32.

        The compute dtype is taken from ``context`` so a block needs nothing from its model. The
        per-token terms (modulated inputs, gated residuals, the FFN) are made a token chunk at a
        time (``by_tokens``): the fp32 and [L, ffn_dim] temporaries are a chunk's, never the
        sequence's; the attentions see whole compute-dtype inputs."""
        dtype = context.dtype
        e = Modulation(self.modulation, e0, x.shape[1])  # e[0] … e[5], fp32

        # self-attention: x = x + self_attn(norm1(x)·(1 + e[1]) + e[0])·e[2]
        h = by_tokens(self._modulate, x, self.norm1, e, 0, dtype)
        y = self.self_attn(h, cos, sin, block_tokens)
        del h
        x = by_tokens(self._gated_add, x, y, e, 2)
        del y

        # cross-attention, no modulation and no gate: x = x + cross_attn(norm3(x), context)
        x = x + self.cross_attn(_layer_norm_fp32(x, self.norm3).to(dtype), context).float()

        # feed-forward: x = x + ffn(norm2(x)·(1 + e[4]) + e[3])·e[5]
        h = by_tokens(self._modulate, x, self.norm2, e, 3, dtype)
        return by_tokens(self._ffn_add, x, h, e, 5)

    @staticmethod
    def _modulate(
        x: Tensor,
        a: int,
        b: int,
        norm: nn.Module,
        e: Modulation,
        i: int,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """norm(x)·(1 + e[i+1]) + e[i] of tokens a:b, in fp32 (cast to ``dtype`` if given)."""
        h = _layer_norm_fp32(x, norm) * (1 + e.at(i + 1, a, b)) + e.at(i, a, b)
        return h if dtype is None else h.to(dtype)

    @staticmethod
    def _gated_add(x: Tensor, a: int, b: int, y: Tensor, e: Modulation, i: int) -> Tensor:
        """x + y·e[i] of tokens a:b (y: the whole sequence's), in fp32."""
        return x + y[:, a:b].float() * e.at(i, a, b)

    def _ffn_add(self, x: Tensor, a: int, b: int, h: Tensor, e: Modulation, i: int) -> Tensor:
        """x + ffn(h)·e[i] of tokens a:b (h: the whole sequence's FFN input), in fp32."""
        return x + self.ffn(h[:, a:b]).float() * e.at(i, a, b)


class Head(nn.Module):
    """Final adaLN (shift, scale from the time embedding e, not e0) and linear to patch pixels; fp32."""

    def __init__(self, cfg: DiTConfig, ops: type[Ops]) -> None:
        super().__init__()
        self.norm = ops.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = ops.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        """x: [B, L, dim] fp32; e: [B, dim] or [B, L, dim] fp32 -> [B, L, prod(patch)·out_dim] fp32."""
        shift, scale = _split_modulation(self.modulation, e.unsqueeze(-2))
        # ops.Linear casts its weight to the fp32 input, so the head is fp32 even with bf16 weights.
        return self.head(_layer_norm_fp32(x, self.norm) * (1 + scale) + shift)


class MLPProj(nn.Module):
    """CLIP features -> context tokens (Wan2.1 I2V/FLF2V): LN, Linear, GELU(erf), Linear, LN."""

    def __init__(self, in_dim: int, out_dim: int, ops: type[Ops], pos_len: int | None) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            ops.LayerNorm(in_dim),
            ops.Linear(in_dim, in_dim),
            nn.GELU(),
            ops.Linear(in_dim, out_dim),
            ops.LayerNorm(out_dim),
        )
        self.pos_len = pos_len
        if pos_len is not None:  # FLF2V: learned position of the first-frame / last-frame tokens
            self.emb_pos = nn.Parameter(torch.zeros(1, pos_len, in_dim))

    def forward(self, clip_fea: Tensor, dtype: torch.dtype) -> Tensor:
        """clip_fea: [B, n_img, in_dim] -> [B, n_img, out_dim] in ``dtype``; LayerNorms in fp32."""
        x = clip_fea.float()
        if self.pos_len is not None:
            x = x + self.emb_pos.float()
        ln0, fc1, act, fc2, ln4 = self.proj
        x = _layer_norm_fp32(x, ln0).to(dtype)
        x = fc2(act(fc1(x)))
        return _layer_norm_fp32(x, ln4).to(dtype)


@dataclass
class DiTState:
    """What every block needs besides the residual stream, built once per forward by ``prepare``."""

    x: Tensor  # [B, L, dim] fp32 tokens after the patch embedding (input of block 0)
    e: Tensor  # [B, dim] or per token [B, L, dim] fp32: time embedding (for the head)
    e0: Tensor  # [B, 6, dim] or [B, L, 6, dim] fp32: time projection (for the blocks)
    context: Tensor  # [B, (n_img +) text_len, dim] compute dtype
    cos: Tensor  # [L, head_dim/2] fp32
    sin: Tensor  # [L, head_dim/2] fp32
    grid: tuple[int, int, int]  # (F', H', W') patch grid
    # per-block addends (VACE hints, already scaled; models/vace.py): block i's output gets
    # hints[i] [B, L, dim] added. Every block loop calls ``after_block``.
    hints: dict[int, Tensor] | None = None
    # SkyReels DF with causal_block_size > 1: tokens per causal block (block-causal self-attention)
    block_tokens: int | None = None

    def after_block(self, i: int, x: Tensor) -> Tensor:
        """The output of block ``i`` with its hint added (x itself when it has none)."""
        if self.hints is None or i not in self.hints:
            return x
        return x + self.hints[i]


class WanModel(nn.Module):
    """The Wan DiT. ``forward`` = ``prepare`` → every block → ``finish``."""

    # Kept fp32 when the model is cast to a lower precision (``cast_weights``). Entries match a
    # parameter path by prefix, component-wise; "*" matches one component (a block index).
    # Chosen by measurement (random 4-layer dim-512 model, fp32 compute, one group's weights rounded
    # to bf16, max rel. error of the output): time_embedding 1.3e-3, head.head 1.9e-3,
    # patch_embedding 1.6e-3, time_projection 5.8e-4, norm3 2.2e-4, modulation tables 4e-5..6e-5 —
    # as much as rounding all cross-attention weights (1.2e-3) for a few percent of the parameters
    # (time_projection, 6·dim², is the only sizeable one). text_embedding (9e-4, dim·(4096+dim)) and
    # the block linears stay in the compute dtype.
    FP32_MODULES: tuple[str, ...] = (
        "patch_embedding",
        "time_embedding",
        "time_projection",
        "blocks.*.modulation",
        "blocks.*.norm3",
        "head",
        "img_emb.proj.0",
        "img_emb.proj.4",
        "img_emb.emb_pos",
        "blocks.*.self_attn.attn_op",  # SLA's proj_l (TurboDiffusion keeps it fp32)
        "fps_embedding",  # SkyReels DF: added to the fp32 time projection
        "fps_projection",
    )
    BLOCK_TYPE = "WanAttentionBlock"

    def __init__(self, cfg: DiTConfig, ops: type[Ops] = Ops) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = ops.Conv3d(
            cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.text_embedding = nn.Sequential(
            ops.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), ops.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(
            ops.Linear(cfg.freq_dim, dim), nn.SiLU(), ops.Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(cfg, ops) for _ in range(cfg.num_layers))
        self.head = Head(cfg, ops)
        if cfg.image_dim is not None:
            self.img_emb = MLPProj(cfg.image_dim, dim, ops, cfg.image_pos_len)
        if cfg.inject_sample_info:  # SkyReels-V2 DF-1.3B (models/diffusion_forcing.py)
            self.fps_embedding, self.fps_projection = fps_modules(dim, ops)

    # ------------------------------------------------------------------ dtype policy

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of linears/attention: that of the block weights (fp8 or int storage → bf16)."""
        return _activation_dtype(cast(WanAttentionBlock, self.blocks[0]).self_attn.q.weight)

    def keeps_fp32(self, name: str) -> bool:
        """Whether parameter/buffer ``name`` belongs to one of FP32_MODULES."""
        return in_modules(name, self.FP32_MODULES)

    def cast_weights(self, dtype: torch.dtype) -> WanModel:
        """Cast floating parameters and buffers to ``dtype`` in place, except FP32_MODULES (fp32)."""
        with torch.no_grad():
            for name, p in [*self.named_parameters(), *self.named_buffers()]:
                if p is None or not p.is_floating_point():
                    continue
                target = torch.float32 if self.keeps_fp32(name) else dtype
                if p.dtype != target:
                    p.data = p.data.to(target)
        return self

    # ------------------------------------------------------------------ forward

    def prepare(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        fps: int | None = None,
        causal_block_size: int = 1,
    ) -> DiTState:
        """Patchify and embed everything the blocks need. Arguments as in ``forward``; ``rope`` may
        pass precomputed ``rope_cos_sin(grid, head_dim)`` (depends only on the grid)."""
        cfg = self.cfg
        self._check_inputs(x, t, context, y, clip_fea)
        dtype = self.compute_dtype

        # patchify: [B, C, T, H, W] -> [B, dim, F', H', W'] -> [B, L, dim], L = F'·H'·W' (f, h, w order)
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        x = self.patch_embedding(x.to(_activation_dtype(self.patch_embedding.weight)))
        grid = (x.shape[2], x.shape[3], x.shape[4])
        x = x.flatten(2).transpose(1, 2).float()
        if rope is None:
            rope = rope_cos_sin(grid, cfg.head_dim, device=x.device)
        cos, sin = rope

        # time embedding (fp32): [B] -> e [B, dim], e0 [B, 6, dim]; [B, L] -> [B, L, dim], [B, L, 6, dim]
        s = sinusoidal_embedding(t.flatten(), cfg.freq_dim).unflatten(0, t.shape)
        e = self.time_embedding(s)
        e0 = self.time_projection(e).unflatten(-1, (6, cfg.dim))
        if cfg.inject_sample_info:  # SkyReels DF: + the fps term [B, 6, dim] on every frame's e0
            b = x.shape[0]
            row = fps_index(24 if fps is None else fps)
            term = fps_term(self.fps_embedding, self.fps_projection, row, b)
            e0 = e0 + term.view(b, *([1] * (e0.dim() - 3)), 6, cfg.dim)
        if _per_frame(t, grid):  # SkyReels DF: [B, F'] -> e [B, F', dim], e0 [B, F', 1, 6, dim]
            e0 = e0.unsqueeze(2)
        block_tokens = causal_block_size * grid[1] * grid[2] if causal_block_size > 1 else None

        # text (already zero-padded to text_len rows; padded rows are attended to, as upstream)
        context = self.text_embedding(context.to(dtype))  # [B, text_len, dim]
        if clip_fea is not None:
            context = torch.cat([self.img_emb(clip_fea, dtype), context], dim=1)
        return DiTState(
            x=x, e=e, e0=e0, context=context, cos=cos, sin=sin, grid=grid, block_tokens=block_tokens
        )

    def finish(self, x: Tensor, state: DiTState) -> Tensor:
        """Head + unpatchify: x [B, L, dim] fp32 -> velocity [B, out_dim, T, H, W] fp32."""
        pt, ph, pw = self.cfg.patch_size
        f, h, w = state.grid
        if state.e0.dim() == 5:  # per frame (SkyReels DF): frame i's tokens take e[:, i]
            b = x.shape[0]
            x = self.head(x.unflatten(1, (f, h * w)).flatten(0, 1), state.e.flatten(0, 1))
            x = x.unflatten(0, (b, f)).flatten(1, 2)
        else:
            x = self.head(x, state.e)  # [B, L, pt·ph·pw·C], channel ((p·ph + q)·pw + r)·C + c
        x = x.unflatten(1, (f, h, w)).unflatten(-1, (pt, ph, pw, self.cfg.out_dim))
        # x: [B, f, h, w, p, q, r, C]
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, f, p, h, q, w, r]
        return x.reshape(x.shape[0], self.cfg.out_dim, f * pt, h * ph, w * pw).float()

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        *,
        fps: int | None = None,
        causal_block_size: int = 1,
    ) -> Tensor:
        """Predict the flow velocity.

        x: [B, C_x, T, H, W] noisy latents (H, W divisible by the patch).
        t: [B] timesteps (σ·1000), or [B, L] per-token timesteps (TI2V; L = T·H/2·W/2, order f, h, w).
        context: [B, text_len, text_dim] T5 features, zero-padded to text_len rows.
        y: [B, C_y, T, H, W] conditioning concatenated on channels after x (I2V: mask 4 + latents 16);
           C_x + C_y = in_dim.
        clip_fea: Wan2.1 I2V [B, 257, image_dim]; FLF2V [B, 514, image_dim] (first frame's tokens,
           then the last frame's).
        SkyReels-V2 DF: t may be [B, F'] (a timestep per latent frame); fps: the frame rate the
           fps embedding is told (inject_sample_info models: 16 or other; None: 24);
           causal_block_size > 1: block-causal self-attention over blocks of that many frames.
        Returns [B, out_dim, T, H, W] float32.
        """
        state = self.prepare(
            x, t, context, y=y, clip_fea=clip_fea, fps=fps, causal_block_size=causal_block_size
        )
        h = state.x
        for i, block in enumerate(self.blocks):
            h = state.after_block(
                i, block(h, state.e0, state.context, state.cos, state.sin, state.block_tokens)
            )
        return self.finish(h, state)

    def _check_inputs(
        self, x: Tensor, t: Tensor, context: Tensor, y: Tensor | None, clip_fea: Tensor | None
    ) -> None:
        """Shape checks only (no tensor values): raise ConfigError naming the tensor."""
        cfg = self.cfg
        if x.dim() != 5:
            raise ConfigError(f"DiT input x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b = x.shape[0]
        c = x.shape[1] + (y.shape[1] if y is not None else 0)
        if c != cfg.in_dim:
            raise ConfigError(
                f"DiT expects {cfg.in_dim} input channels (x + y), got {c} "
                f"(x {tuple(x.shape)}, y {None if y is None else tuple(y.shape)})"
            )
        if y is not None and (y.shape[0] != b or y.shape[2:] != x.shape[2:]):
            raise ConfigError(
                f"DiT conditioning y {tuple(y.shape)} does not match x {tuple(x.shape)}"
            )
        pt, ph, pw = cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ConfigError(
                f"latent size {tuple(x.shape[2:])} is not divisible by the patch {cfg.patch_size}"
            )
        seq_len = (x.shape[2] // pt) * (x.shape[3] // ph) * (x.shape[4] // pw)
        frames = x.shape[2] // pt  # SkyReels DF: a timestep per latent frame
        if tuple(t.shape) not in ((b,), (b, seq_len), (b, frames)):
            raise ConfigError(
                f"timestep t must be [{b}], [{b}, {frames}] or [{b}, {seq_len}], "
                f"got {tuple(t.shape)}"
            )
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim:
            raise ConfigError(
                f"context must be [{b}, {cfg.text_len}, {cfg.text_dim}], got {tuple(context.shape)}"
            )
        if cfg.image_dim is not None and context.shape[1] != cfg.text_len:
            # the image/text split of the cross-attention counts text_len rows from the end
            raise ConfigError(
                f"context must have {cfg.text_len} rows (zero-padded), got {context.shape[1]}"
            )
        if cfg.image_dim is None:
            if clip_fea is not None:
                raise ConfigError(f"this {cfg.model_type} DiT takes no CLIP features (clip_fea)")
        else:
            n = cfg.image_pos_len
            if clip_fea is None:
                raise ConfigError(f"the {cfg.model_type} DiT needs CLIP image features (clip_fea)")
            if (
                clip_fea.dim() != 3
                or clip_fea.shape[0] != b
                or clip_fea.shape[2] != cfg.image_dim
                or (n is not None and clip_fea.shape[1] != n)
            ):
                want = f"[{b}, {n if n is not None else 'n'}, {cfg.image_dim}]"
                raise ConfigError(f"clip_fea must be {want}, got {tuple(clip_fea.shape)}")
