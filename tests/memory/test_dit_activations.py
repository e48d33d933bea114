"""DiT activation memory at full size, counted exactly on the meta device (tests/live_bytes.py).

The method is checked against the GPU: counted the same way, diffusers' WanTransformer3DModel
comes out 0.03–0.17 GiB under its peaks measured on an H100 (shared/gpu-baseline*.json). Our
DiT's token-chunked blocks peak at 16–21 bytes per token per dim (37 / 28 / 33 before the
chunking), and the planner's formula (wan_desktop/memory.py) covers every count."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.live_bytes import LiveBytes, flash_like_attention
from wan_desktop import memory as M
from wan_desktop.variants import get_variant

META = {"device": "meta"}


def _inputs(v, cfg, width, height, frames, batch, per_token_t=False):
    z, t, h, w = v.latent_shape(width, height, frames)
    x = torch.empty(batch, z, t, h, w, **META)
    y = torch.empty(batch, cfg.in_dim - z, t, h, w, **META) if cfg.in_dim != z else None
    clip = (
        torch.empty(batch, cfg.image_pos_len or 257, cfg.image_dim, **META)
        if cfg.image_dim
        else None
    )
    ctx = torch.empty(batch, cfg.text_len, cfg.text_dim, **META)
    tt = (
        torch.empty(batch, v.seq_len(width, height, frames), **META)
        if per_token_t
        else torch.empty(batch, **META)
    )
    return x, y, clip, ctx, tt


def _ours(name: str):
    from wan_desktop.models.dit import WanModel
    from wan_desktop.models.layers import Ops

    class FlashOps(Ops):
        attention = staticmethod(flash_like_attention)

    v = get_variant(name)
    cfg = replace(v.dit, num_layers=1)  # blocks are alike: one block's peak is the forward's
    with torch.device("meta"):
        model = WanModel(cfg, FlashOps)
    return v, cfg, model.cast_weights(torch.bfloat16)


def forward_peak(name, width, height, frames, batch, per_token_t=False) -> tuple[int, str]:
    v, cfg, model = _ours(name)
    x, y, clip, ctx, tt = _inputs(v, cfg, width, height, frames, batch, per_token_t)
    with torch.inference_mode(), LiveBytes() as m:
        model(x.clone(), tt, ctx.clone(), y=y, clip_fea=clip)
    return m.peak, m.peak_op


# diffusers' 1.3B / 14B DiT forwards measured on an H100 in bf16 (shared/gpu-baseline.json,
# gpu-baseline-720p.json; GiB, max_memory_allocated): (variant, size, frames, batch, peak)
_MEASURED = [
    ("t2v-1.3B", 832, 480, 81, 1, 4.30),
    ("t2v-1.3B", 832, 480, 81, 2, 5.77),
    ("t2v-14B", 832, 480, 81, 1, 30.25),
    ("t2v-14B", 1280, 720, 81, 1, 34.63),
]


@pytest.mark.parametrize(("name", "w", "h", "f", "batch", "measured"), _MEASURED)
def test_counting_reproduces_diffusers_measured_peaks(name, w, h, f, batch, measured, monkeypatch):
    from diffusers import WanTransformer3DModel

    def sdpa(
        query,
        key,
        value,
        attn_mask=None,
        dropout_p=0.0,
        is_causal=False,
        scale=None,
        enable_gqa=False,
    ):
        return flash_like_attention(query, key, value, scale=scale)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    v = get_variant(name)
    cfg = v.dit
    with torch.device("meta"):
        model = WanTransformer3DModel(
            patch_size=cfg.patch_size,
            num_attention_heads=cfg.num_heads,
            attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_dim,
            out_channels=cfg.out_dim,
            text_dim=cfg.text_dim,
            freq_dim=cfg.freq_dim,
            ffn_dim=cfg.ffn_dim,
            num_layers=1,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=cfg.eps,
        ).to(torch.bfloat16)
    x, _, _, ctx, tt = _inputs(v, cfg, w, h, f, batch)
    with torch.inference_mode(), LiveBytes() as m:
        model(x.to(torch.bfloat16), tt, ctx.to(torch.bfloat16), return_dict=False)
    weights = M.dit_params(cfg) * 2 / M.GIB  # diffusers runs every weight in bf16
    above = measured - weights
    counted = m.peak / M.GIB
    print(
        f"diffusers {name} {w}x{h}x{f} b{batch}: counted {counted:.3f} GiB, measured "
        f"{above:.3f} GiB above the weights"
    )
    assert 0.0 <= above - counted <= 0.2


# (variant, size, frames, batch, per-token timesteps)
_OURS = [
    ("t2v-1.3B", 832, 480, 81, 2, False),
    ("t2v-1.3B", 1280, 720, 81, 1, False),
    ("t2v-14B", 832, 480, 81, 2, False),
    ("t2v-14B", 1280, 720, 81, 1, False),
    ("t2v-14B", 832, 480, 33, 1, False),
    ("ti2v-5B", 1280, 704, 121, 2, False),
    ("ti2v-5B", 1280, 704, 121, 1, True),
    ("ti2v-5B", 832, 480, 81, 2, True),
    ("i2v-14B", 1280, 720, 81, 1, False),
    ("i2v-14B", 832, 480, 81, 2, False),
]


@pytest.mark.parametrize(("name", "w", "h", "f", "batch", "per_t"), _OURS)
def test_the_planner_covers_our_dit_forward(name, w, h, f, batch, per_t):
    v = get_variant(name)
    tokens = v.seq_len(w, h, f)
    peak, op = forward_peak(name, w, h, f, batch, per_t)
    planned = M.dit_activation_bytes(v.dit, tokens, batch, per_token_t=per_t)
    print(
        f"{name} {w}x{h}x{f} b{batch}{' per-token t' if per_t else ''}: forward peak "
        f"{peak / M.GIB:.3f} GiB ({peak / (batch * tokens * v.dit.dim):.1f} B/token/dim, at "
        f"{op}); planner {planned / M.GIB:.3f} GiB"
    )
    assert peak <= planned <= 1.4 * peak


# (variant, size, frames, batch, bytes per token per dim of one block, counted after the
# chunking; before it the same counts were 37.3 / 28.1 / 32.7 / 28.1 — above the old
# diffusers-fitted planner figure for the 14B at 720p)
_BLOCKS = [
    ("t2v-1.3B", 832, 480, 81, 2, 20.8),
    ("t2v-14B", 1280, 720, 81, 1, 16.0),
    ("ti2v-5B", 1280, 704, 121, 2, 20.8),
    ("i2v-14B", 1280, 720, 81, 1, 18.0),
]


@pytest.mark.parametrize(("name", "w", "h", "f", "batch", "per"), _BLOCKS)
def test_block_activations_at_full_size(name, w, h, f, batch, per):
    v, cfg, model = _ours(name)
    x, y, clip, ctx, tt = _inputs(v, cfg, w, h, f, batch)
    with torch.inference_mode():
        state = model.prepare(x, tt, ctx, y=y, clip_fea=clip)
        with LiveBytes() as m:
            hx = state.x.clone()
            model.blocks[0](hx, state.e0, state.context, state.cos, state.sin)
    got = m.peak / (batch * v.seq_len(w, h, f) * cfg.dim)
    print(
        f"{name} {w}x{h}x{f} b{batch}: block peak {m.peak / M.GIB:.2f} GiB ({got:.1f} "
        f"B/token/dim, at {m.peak_op})"
    )
    assert got == pytest.approx(per, abs=0.3)


def test_the_planner_knows_the_dit_token_chunk():
    from wan_desktop.models import dit

    assert M.DIT_TOKEN_CHUNK == dit.TOKEN_CHUNK
