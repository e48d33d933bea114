"""Our DiT block's activation memory at full size, counted exactly on the meta device
(tests/live_bytes.py): the token-chunked q/k norms + RoPE, cross-attention q and FFN keep the
peak near 16–21 bytes per token per dim; the planner (calibrated on diffusers' measured peaks)
stays above it, so its plans are safe for our DiT."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.live_bytes import LiveBytes, flash_like_attention
from wan_desktop import memory as M
from wan_desktop.variants import get_variant


def block_peak(name: str, width: int, height: int, frames: int, batch: int) -> tuple[int, str]:
    """Peak live bytes of one block forward (its fp32 input included), bf16 compute."""
    from wan_desktop.models.dit import WanModel
    from wan_desktop.models.layers import Ops

    class FlashOps(Ops):
        attention = staticmethod(flash_like_attention)

    v = get_variant(name)
    cfg = replace(v.dit, num_layers=1)
    with torch.device("meta"):
        model = WanModel(cfg, FlashOps)
    model.cast_weights(torch.bfloat16)
    z, t, h, w = v.latent_shape(width, height, frames)
    meta = {"device": "meta"}
    x = torch.empty(batch, z, t, h, w, **meta)
    y = torch.empty(batch, cfg.in_dim - z, t, h, w, **meta) if cfg.in_dim != z else None
    clip = (torch.empty(batch, cfg.image_pos_len or 257, cfg.image_dim, **meta)
            if cfg.image_dim else None)
    ctx = torch.empty(batch, cfg.text_len, cfg.text_dim, **meta)
    with torch.inference_mode():
        state = model.prepare(x, torch.empty(batch, **meta), ctx, y=y, clip_fea=clip)
        with LiveBytes() as m:
            hx = state.x.clone()
            hx = model.blocks[0](hx, state.e0, state.context, state.cos, state.sin)
    return m.peak, m.peak_op


# (variant, size, frames, batch, bytes per token per dim counted after the chunking; before it
# the same counts were 37.3 / 28.1 / 32.7 / 28.1 — above the planner for the 14B at 720p)
_CASES = [("t2v-1.3B", 832, 480, 81, 2, 20.8), ("t2v-14B", 1280, 720, 81, 1, 16.0),
          ("ti2v-5B", 1280, 704, 121, 2, 20.8), ("i2v-14B", 1280, 720, 81, 1, 18.0)]


@pytest.mark.parametrize(("name", "w", "h", "f", "batch", "per"), _CASES)
def test_block_activations_at_full_size(name, w, h, f, batch, per):
    v = get_variant(name)
    tokens = v.seq_len(w, h, f)
    peak, op = block_peak(name, w, h, f, batch)
    got = peak / (batch * tokens * v.dit.dim)
    planned = M.dit_activation_bytes(v.dit, tokens, batch, per_token_t=False)
    print(f"{name} {w}x{h}x{f} batch {batch}: block peak {peak / M.GIB:.2f} GiB "
          f"({got:.1f} B/token/dim, at {op}); planner {planned / M.GIB:.2f} GiB")
    assert got == pytest.approx(per, abs=0.3)
    assert peak < planned  # the planner's figure covers our DiT
