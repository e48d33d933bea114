"""Our WanModel with SkyReels-V2 DF inputs (a timestep per latent frame, the fps embedding, the
block-causal mask) against diffusers' SkyReelsV2Transformer3DModel on the same random weights
(fp32, CPU). The state dict goes through checkpoints.keymap_dit strictly, so the fps keys are
proven too."""

from __future__ import annotations

import pytest
import torch

from tests.numerics import rel_err
from tests.skyreels_models import diffusers_skyreels_transformer, tiny_skyreels
from wan_desktop.checkpoints.keymap_dit import official_key
from wan_desktop.models.diffusion_forcing import block_causal_attention, fps_index
from wan_desktop.models.dit import WanModel

pytest.importorskip("diffusers")

B, T, H, W = 2, 6, 4, 6  # 6 latent frames, patch grid 6 × 2 × 3


def _pair(name: str):
    cfg = tiny_skyreels(name).dit
    ref = diffusers_skyreels_transformer(cfg, seed=11)
    ours = WanModel(cfg).eval()
    ours.load_state_dict({official_key(k): v for k, v in ref.state_dict().items()}, strict=True)
    return cfg, ref, ours


CASES = {
    # name: (variant, per-frame timesteps, causal_block_size, fps)
    "df-1.3B sync, fps 24": ("skyreels-v2-df-1.3B-540P", True, 1, 24),
    "df-1.3B async block 2, fps 16": ("skyreels-v2-df-1.3B-540P", True, 2, 16),
    "df-1.3B async block 3, fps 24": ("skyreels-v2-df-1.3B-540P", True, 3, 24),
    "df-14B (no fps) block 2": ("skyreels-v2-df-14B-540P", True, 2, None),
    "df-1.3B one timestep per sample": ("skyreels-v2-df-1.3B-540P", False, 1, 24),
}


@pytest.mark.parametrize("case", list(CASES))
def test_df_forward_matches_diffusers(case):
    name, frames, block, fps = CASES[case]
    cfg, ref, ours = _pair(name)
    # diffusers adds the fps term of a [B, F] timestep as repeat(F) over a flattened batch, which
    # is right for B = 1 only (its pipelines call the model once per prompt)
    b = 1 if frames and fps is not None else B
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, cfg.in_dim, T, H, W, generator=g)
    context = torch.zeros(b, cfg.text_len, cfg.text_dim)
    context[:, :7] = torch.randn(b, 7, cfg.text_dim, generator=g)
    if frames:  # the staggered timesteps of an asynchronous schedule: clean, 20, mid, noise
        t = torch.tensor([[0, 20, 333, 333, 999, 999], [0, 0, 0, 666, 666, 999]], dtype=torch.long)
    else:
        t = torch.tensor([999, 421], dtype=torch.long)
    t = t[:b]
    fps_rows = [fps_index(fps)] * b if fps is not None else None
    ref._set_ar_attention(block)
    with torch.no_grad():
        want = ref(x, t, context, enable_diffusion_forcing=frames, fps=fps_rows, return_dict=False)[
            0
        ]
        got = ours(
            x,
            t,
            context,
            fps=fps,
            causal_block_size=block,
        )
    err = rel_err(got, want)
    print(f"DF DiT parity {case}: max rel err {err:.2e}")
    assert got.shape == want.shape == (b, cfg.out_dim, T, H, W)
    assert want.abs().max() > 1e-2
    # 1e-5: the project's DiT parity bound; measured ~2e-6, from diffusers' float64 timestep
    # sinusoid (SkyReelsV2Timesteps) against our float32 one (models/dit.py header)
    assert err <= 1e-5


def test_block_causal_attention_equals_the_masked_softmax():
    """One SDPA per block of queries over the key prefix == diffusers' [L, L] boolean mask, also
    with a last block shorter than the others."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5 * 4, 8, generator=g) for _ in range(3))
    blocks = torch.arange(20) // 8  # blocks of 8 tokens: 8, 8, 4
    mask = blocks[:, None] >= blocks[None, :]
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    got = block_causal_attention(
        torch.nn.functional.scaled_dot_product_attention, q, k, v, block_tokens=8, scale=0.3
    )
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # and it is causal: a change in the last block leaves the first block's output alone
    v2 = v.clone()
    v2[:, :, 16:] += 1
    got2 = block_causal_attention(
        torch.nn.functional.scaled_dot_product_attention, q, k, v2, block_tokens=8, scale=0.3
    )
    assert torch.equal(got2[:, :, :16], got[:, :, :16])
    assert not torch.allclose(got2[:, :, 16:], got[:, :, 16:])


def test_fps_changes_only_models_with_the_fps_embedding():
    """fps 16 and 24 pick different embedding rows of DF-1.3B; the 14B models have none."""
    for name, differs in (("skyreels-v2-df-1.3B-540P", True), ("skyreels-v2-df-14B-540P", False)):
        cfg, _ref, ours = _pair(name)
        x = torch.randn(1, cfg.in_dim, 2, 4, 4, generator=torch.Generator().manual_seed(1))
        ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
        t = torch.tensor([[999, 500]])
        with torch.no_grad():
            a, b = (ours(x, t, ctx, fps=f) for f in (16, 24))
        assert (not torch.equal(a, b)) is differs
        assert fps_index(16) == 0 and fps_index(24) == fps_index(30) == 1
