"""Ulysses sequence parallel for the Wan DiT over a torch.distributed process group.

The DiT's token sequence (L = F'·H'·W', frame-major) is cut into N equal shards, one per rank of
the group (zero-padded at the end when L does not divide; the padding never reaches a real token,
see below). Each rank runs every block on its own shard: the modulation, the q/k/v projections,
the q/k RMS norms (over all heads, so they need the whole token, which a shard has), RoPE by the
token's *global* position (the rank's rows of the global cos/sin table), the cross-attention (text
and, for Wan2.1 I2V / FLF2V, CLIP tokens are replicated on every rank) and the FFN. Only the
self-attention kernel needs every token: around it, one all-to-all turns q/k/v from
tokens-sharded ``[B, H, L/N, D]`` into heads-sharded ``[B, H/N, L, D]`` and one turns the output
back (DeepSpeed-Ulysses, as the official Wan repos' xDiT USP and LightX2V). The padded tokens sit
at the end of the gathered sequence and are cut off before the kernel, so no mask is needed and
the numbers are the single-process ones; the block-causal attention of SkyReels DF and the SLA
kernel run unchanged on the heads-sharded whole sequence.

Conditioning: a ``[B]`` timestep is replicated; TI2V's per-token timesteps ``[B, L]`` are sharded
like the tokens; SkyReels DF's per-frame timesteps ``[B, F']`` stay per frame, the shards then
being whole frames (the shard size is a multiple of H'·W'). VACE hints are made by the VACE blocks
on the shard, through the same all-to-all. Wan2.2's two experts are two models: each call shards
whichever runs. The head runs on the shard; one all-gather of its small output
(``prod(patch)·out_dim`` numbers a token) gives every rank the whole velocity.

The caller gives every rank the same inputs (latents, timestep, text / image features) and gets
the same velocity back on every rank. Sizes: ``seq_len`` padded as the official code does
(spec §6.8: rounded up to a multiple of N).

What this sends per step is counted on paper in wan_desktop/parallel_cost.py (4 all-to-alls a
block; here q/k/v travel in one collective, the same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError
from ..parallel_cost import check_heads
from ..variants import DiTConfig
from .dit import DiTState, WanModel, WanSelfAttention, _activation_dtype

if TYPE_CHECKING:
    from .vace import VaceWanAttentionBlock

BlockRunner = Callable[[Tensor, DiTState], Tensor]
"""(x [B, n, dim] fp32 of the shard, the shard's state) -> x after every block, hints added
(``DiTState.after_block``): a resident loop, or a block-swap runner (engines/block_swap.py)."""


# ---------------------------------------------------------------------------------- shards


@dataclass(frozen=True, kw_only=True)
class TokenShards:
    """Which tokens a rank holds: ``world`` equal shards of ``size`` tokens over ``tokens`` real
    tokens plus zero padding at the end; ``align`` (H'·W' for per-frame timesteps) makes every
    shard whole frames."""

    tokens: int
    world: int
    rank: int
    align: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world) or self.tokens < 1 or self.align < 1:
            raise ConfigError(f"bad token shards {self}")

    @property
    def size(self) -> int:
        """Tokens per shard (padding included), a multiple of ``align``."""
        return math.ceil(self.tokens / (self.world * self.align)) * self.align

    @property
    def padded(self) -> int:
        return self.size * self.world

    @property
    def start(self) -> int:
        return self.rank * self.size

    def take(self, t: Tensor, dim: int = 1, unit: int = 1) -> Tensor:
        """This rank's rows of ``t`` along ``dim`` (one row per ``unit`` tokens: 1 for tokens,
        H'·W' for frames), zero-padded to ``size / unit`` rows."""
        a, n = self.start // unit, self.size // unit
        part = t.narrow(dim, min(a, t.shape[dim]), max(0, min(n, t.shape[dim] - a)))
        if part.shape[dim] == n:
            return part
        pad = list(t.shape)
        pad[dim] = n - part.shape[dim]
        return torch.cat([part, t.new_zeros(pad)], dim=dim)


# ---------------------------------------------------------------------------------- all-to-all


class Ulysses:
    """The two all-to-alls around a self-attention kernel (hooked into WanSelfAttention).

    ``to_heads``: q/k/v [B, H, n, D] of this rank's tokens -> [B, H/N, L, D] of every real token
    for this rank's heads (one collective for the three); ``to_tokens``: the kernel's output back
    to [B, H, n, D]."""

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        shards: TokenShards,
        guard: Callable[[], None] | None = None,
    ) -> None:
        self.group = group
        self.shards = shards
        self.guard = guard

    def _exchange(self, t: Tensor) -> Tensor:
        """[N, ...] contiguous: slice j goes to rank j; slice i of the result came from rank i.
        ``guard`` runs between the allocation and the exchange (see sequence_parallel_forward)."""
        out = torch.empty_like(t)
        if self.guard is not None:
            self.guard()
        dist.all_to_all_single(out, t, group=self.group)
        return out

    def to_heads(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n_ranks = self.shards.world
        b, h, n, d = q.shape
        qkv = torch.stack([q, k, v]).view(3, b, n_ranks, h // n_ranks, n, d)
        qkv = self._exchange(qkv.permute(2, 0, 1, 3, 4, 5).contiguous())  # [N, 3, B, H/N, n, D]
        whole = qkv.permute(1, 2, 3, 0, 4, 5).reshape(3, b, h // n_ranks, n_ranks * n, d)
        whole = whole[:, :, :, : self.shards.tokens]  # the padding never reaches the kernel
        return whole[0], whole[1], whole[2]

    def to_tokens(self, out: Tensor) -> Tensor:
        n_ranks, n = self.shards.world, self.shards.size
        b, h_part, length, d = out.shape
        if length < n_ranks * n:
            out = torch.cat([out, out.new_zeros(b, h_part, n_ranks * n - length, d)], dim=2)
        parts = out.view(b, h_part, n_ranks, n, d).permute(2, 0, 1, 3, 4).contiguous()
        back = self._exchange(parts)  # [N, B, H/N, n, D]: rank j's heads of my tokens
        return back.permute(1, 0, 2, 3, 4).reshape(b, n_ranks * h_part, n, d)


@contextmanager
def attached(model: nn.Module, ulysses: Ulysses) -> Iterator[None]:
    """Every self-attention of ``model`` (main and VACE blocks) runs through ``ulysses``."""
    attns = [m for m in model.modules() if isinstance(m, WanSelfAttention)]
    for m in attns:
        m.sequence_parallel = ulysses
    try:
        yield
    finally:
        for m in attns:
            m.sequence_parallel = None


# ---------------------------------------------------------------------------------- forward


def shard_state(state: DiTState, shards: TokenShards) -> DiTState:
    """The rank's part of a whole-sequence state: its tokens, their cos/sin rows (global
    positions), their per-token or per-frame time embeddings; the context is replicated."""
    _, h, w = state.grid
    e, e0 = state.e, state.e0
    if e0.dim() == 4:  # per token (TI2V): e [B, L, dim], e0 [B, L, 6, dim]
        e, e0 = shards.take(e), shards.take(e0)
    elif e0.dim() == 5:  # per frame (SkyReels DF): e [B, F', dim], e0 [B, F', 1, 6, dim]
        e, e0 = shards.take(e, unit=h * w), shards.take(e0, unit=h * w)
    return replace(
        state,
        x=shards.take(state.x),
        e=e,
        e0=e0,
        cos=shards.take(state.cos, dim=0),
        sin=shards.take(state.sin, dim=0),
        hints=None,
    )


def _resident_blocks(model: WanModel) -> BlockRunner:
    def run(x: Tensor, state: DiTState) -> Tensor:
        for i, block in enumerate(model.blocks):
            x = state.after_block(
                i, block(x, state.e0, state.context, state.cos, state.sin, state.block_tokens)
            )
        return x

    return run


def _vace_hints(
    model: WanModel, local: DiTState, shards: TokenShards, vace: Tensor, vace_scale: float | Tensor
) -> dict[int, Tensor]:
    """VaceWanModel.prepare's hints for this rank's tokens (models/vace.py), the VACE blocks
    running sequence parallel like the main ones."""
    cfg = model.cfg
    if vace.dim() != 5 or vace.shape[1] != cfg.vace_in_dim or vace.shape[0] != local.x.shape[0]:
        raise ConfigError(
            f"VACE context must be [{local.x.shape[0]}, {cfg.vace_in_dim}, T, H, W], "
            f"got {tuple(vace.shape)}"
        )
    embed = cast(nn.Conv3d, model.vace_patch_embedding)
    c = embed(vace.to(_activation_dtype(embed.weight)))
    if tuple(c.shape[2:]) != local.grid:
        raise ConfigError(f"VACE context {tuple(vace.shape)} does not match the latents")
    c = shards.take(c.flatten(2).transpose(1, 2).float())
    hints: dict[int, Tensor] = {}
    for layer, block in zip(cfg.vace_layers, cast(nn.ModuleList, model.vace_blocks), strict=True):
        blk = cast("VaceWanAttentionBlock", block)
        hint, c = blk.vace(c, local.x, local.e0, local.context, local.cos, local.sin)
        hints[layer] = (hint.float() * vace_scale).to(hint.dtype)
    return hints


def _head(model: WanModel, x: Tensor, local: DiTState) -> Tensor:
    """The head on the shard: x [B, n, dim] fp32 -> [B, n, prod(patch)·out_dim] fp32."""
    if local.e0.dim() == 5:  # per frame: each frame's tokens take that frame's e
        b, nf = local.e.shape[:2]
        out = model.head(x.unflatten(1, (nf, -1)).flatten(0, 1), local.e.flatten(0, 1))
        return out.unflatten(0, (b, nf)).flatten(1, 2)
    return model.head(x, local.e)


def _unpatchify(tokens: Tensor, grid: tuple[int, int, int], cfg: DiTConfig) -> Tensor:
    """[B, L, pt·ph·pw·C] -> [B, C, T, H, W] fp32 (WanModel.finish's rearrangement)."""
    pt, ph, pw = cfg.patch_size
    f, h, w = grid
    x = tokens.unflatten(1, (f, h, w)).unflatten(-1, (pt, ph, pw, cfg.out_dim))
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, f, p, h, q, w, r]
    return x.reshape(x.shape[0], cfg.out_dim, f * pt, h * ph, w * pw).float()


def sequence_parallel_forward(
    model: WanModel,
    group: dist.ProcessGroup | None,
    x: Tensor,
    t: Tensor,
    context: Tensor,
    *,
    y: Tensor | None = None,
    clip_fea: Tensor | None = None,
    fps: int | None = None,
    causal_block_size: int = 1,
    vace: Tensor | None = None,
    vace_scale: float | Tensor = 1.0,
    run_blocks: BlockRunner | None = None,
    guard: Callable[[], None] | None = None,
) -> Tensor:
    """``model(x, t, context, ...)`` computed by the ranks of ``group`` (None: the default group)
    together, each on its shard of the tokens; arguments as ``WanModel.forward`` /
    ``VaceWanModel.forward`` and equal on every rank. Returns the whole velocity
    [B, out_dim, T, H, W] fp32 on every rank. ``run_blocks``: how to run the blocks on the shard
    (default: every block resident). ``guard``: called before every exchange, once its buffers
    are allocated (a parallel run's check that no rank ran out of memory before joining it)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    cfg = model.cfg
    check_heads(cfg, world)  # ConfigError naming the valid sizes
    if (vace is None) == cfg.is_vace:
        raise ConfigError(
            "a VACE model needs its VACE context (control frames, mask)"
            if cfg.is_vace
            else f"this {cfg.model_type} DiT takes no VACE context"
        )
    # the whole-sequence embeddings (cheap, per token); VACE hints are made sharded below
    state = WanModel.prepare(
        model, x, t, context, y=y, clip_fea=clip_fea, fps=fps, causal_block_size=causal_block_size
    )
    f, h, w = state.grid
    per_frame = state.e0.dim() == 5
    shards = TokenShards(tokens=f * h * w, world=world, rank=rank, align=h * w if per_frame else 1)
    local = shard_state(state, shards)
    del state
    with attached(model, Ulysses(group, shards, guard)):
        if vace is not None:
            local.hints = _vace_hints(model, local, shards, vace, vace_scale)
        out = (run_blocks or _resident_blocks(model))(local.x, local)
    out = _head(model, out, local).contiguous()  # [B, n, P] fp32
    parts = [torch.empty_like(out) for _ in range(world)]
    if guard is not None:
        guard()
    dist.all_gather(parts, out, group=group)
    tokens = torch.cat(parts, dim=1)[:, : shards.tokens]
    return _unpatchify(tokens, local.grid, cfg)
