"""Our WanModel against diffusers' WanTransformer3DModel on the same random weights (fp32, CPU).

diffusers' state dict is renamed with checkpoints.keymap_dit and loaded strictly, so the test also
proves the key map (including the norm2 <-> norm3 swap and the image-embedder keys) complete.
"""

from __future__ import annotations

import pytest
import torch

from tests.numerics import rel_err
from tests.tiny import tiny_variant
from wan_desktop.checkpoints.keymap_dit import (
    is_ignored_diffusers_key,
    key_layout,
    official_key,
)
from wan_desktop.models.dit import WanModel
from wan_desktop.models.rope import rope_cos_sin

diffusers = pytest.importorskip("diffusers")

B, T, H, W = 2, 3, 4, 6  # non-square latent: patch grid 3 × 2 × 3


def _diffusers_model(cfg):
    model = diffusers.WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
        image_dim=cfg.image_dim,
        added_kv_proj_dim=cfg.dim if cfg.image_dim is not None else None,
        pos_embed_seq_len=cfg.image_pos_len,
    ).eval()
    # Default inits (ones / zeros norms, zero pos_embed, xavier) would hide a swapped or skipped
    # norm or table: give every parameter its own random values.
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.3 * r)
            elif p.dim() == 1:
                p.copy_(0.2 * r)
            elif "scale_shift_table" in name or "pos_embed" in name:
                p.copy_(0.5 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model


CASES = {
    # name: (variant, per-token timesteps with first-frame tokens at t = 0)
    "t2v": ("t2v-1.3B", False),
    "i2v-wan2.1": ("i2v-14B", False),
    "flf2v": ("flf2v-14B", False),
    "i2v-wan2.2": ("i2v-A14B", False),
    "ti2v": ("ti2v-5B", True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_matches_diffusers(case):
    variant, per_token = CASES[case]
    cfg = tiny_variant(variant).dit
    ref_model = _diffusers_model(cfg)
    sd = ref_model.state_dict()
    assert key_layout(sd) == "diffusers"
    ours = WanModel(cfg).eval()
    converted = {official_key(k): v for k, v in sd.items()}
    assert key_layout(converted) == "official"
    ours.load_state_dict(converted, strict=True)

    g = torch.Generator().manual_seed(7)
    cx = 16 if cfg.in_dim == 36 else cfg.in_dim
    x = torch.randn(B, cx, T, H, W, generator=g)
    y = torch.randn(B, cfg.in_dim - cx, T, H, W, generator=g) if cx != cfg.in_dim else None
    context = torch.zeros(B, cfg.text_len, cfg.text_dim)
    context[0, :9] = torch.randn(9, cfg.text_dim, generator=g)
    context[1, :23] = torch.randn(23, cfg.text_dim, generator=g)
    t = torch.tensor([999.0, 421.0])
    if per_token:
        seq = T * (H // 2) * (W // 2)
        t = t[:, None].expand(B, seq).clone()
        t[:, : seq // T] = 0.0  # TI2V image mode: frame-0 tokens are clean
    clip_ours = clip_ref = None
    if cfg.image_dim is not None:
        n = 5  # tiny CLIP tokens per image (4 patches + class)
        images = 2 if cfg.image_pos_len else 1
        # FLF2V: diffusers takes [2B, n, d] (first, last per sample); we take [B, 2n, d]
        clip_ref = torch.randn(B * images, n, cfg.image_dim, generator=g)
        clip_ours = clip_ref.reshape(B, images * n, cfg.image_dim)

    with torch.no_grad():
        hidden = x if y is None else torch.cat([x, y], dim=1)
        ref = ref_model(
            hidden, t, context, encoder_hidden_states_image=clip_ref, return_dict=False
        )[0]
        out = ours(x, t, context, y=y, clip_fea=clip_ours)
    err = rel_err(out, ref)
    print(f"DiT parity {case} ({variant}, B={B}, latent {T}x{H}x{W}): max rel err {err:.2e}")
    assert out.shape == ref.shape == (B, cfg.out_dim, T, H, W)
    assert ref.abs().max() > 1e-2  # a live output, not a degenerate one
    assert err <= 1e-5


def test_rope_tables_match_diffusers():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    rope = WanRotaryPosEmbed(128, (1, 2, 2), 1024)
    grid = (5, 7, 11)
    ref_cos, ref_sin = rope(torch.zeros(1, 16, grid[0], 2 * grid[1], 2 * grid[2]))  # [1, L, 1, 128]
    cos, sin = rope_cos_sin(grid, 128)  # [L, 64], one value per pair
    assert torch.equal(cos.repeat_interleave(2, dim=1), ref_cos[0, :, 0])
    assert torch.equal(sin.repeat_interleave(2, dim=1), ref_sin[0, :, 0])


def test_keymap_rejects_unknown_keys_and_detects_layouts():
    assert official_key("blocks.12.norm2.weight") == "blocks.12.norm3.weight"
    assert (
        official_key("blocks.0.attn2.norm_added_k.weight")
        == "blocks.0.cross_attn.norm_k_img.weight"
    )
    assert official_key("scale_shift_table") == "head.modulation"
    assert official_key("blocks.3.scale_shift_table") == "blocks.3.modulation"
    for bad in (
        "blocks.0.norm3.weight",
        "blocks.0.attn1.to_qkv.weight",
        "head.modulation",
        "blocks.x.attn1.to_q.weight",
        "proj_out.scale",
    ):
        with pytest.raises(KeyError):
            official_key(bad)
    assert is_ignored_diffusers_key("blocks.0.attn2.norm_added_q.weight")
    assert not is_ignored_diffusers_key("blocks.0.attn2.norm_added_k.weight")
    assert key_layout(["model.diffusion_model.head.modulation", "x"]) == "official"
    assert key_layout(["scale_shift_table", "proj_out.weight"]) == "diffusers"
    assert key_layout(["encoder.block.0.layer.0.SelfAttention.q.weight"]) == "unknown"
