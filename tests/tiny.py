"""Tiny configs with the real structure (few layers, small widths) for CPU tests in seconds.

The VAEs keep their real depth (4 stages, 2 res blocks, both temporal stages) with small channels;
the DiT keeps every sub-module with 2 blocks; T5 and CLIP keep per-layer structure with 2-3 layers.
"""

from __future__ import annotations

from dataclasses import replace

from wan_desktop.variants import VARIANTS, ClipConfig, T5Config

TINY_T5 = T5Config(vocab_size=384, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2)
# Head dims are the real ones (DiT 128, CLIP 80): ComfyUI single files and the official CLIP .pth
# carry no config, so the loader infers the head count as dim // head_dim, as for the released models.
TINY_CLIP = ClipConfig(
    image_size=28, patch_size=14, dim=160, num_heads=2, num_layers=3, out_dim=16, tap_layers=2
)

_DIT = dict(dim=256, ffn_dim=320, num_heads=2, num_layers=2, text_dim=TINY_T5.dim, freq_dim=16)


def tiny_variant(name: str):
    """The named variant with tiny DiT / VAE / T5 / CLIP configs (same tasks and defaults)."""
    v = VARIANTS[name]
    vace = {"vace_layers": (0, 1)} if v.dit.is_vace else {}  # tests/vace_models.py: the same
    dit = replace(v.dit, **_DIT, **vace)
    if dit.image_dim is not None:
        dit = replace(
            dit,
            image_dim=TINY_CLIP.dim,
            image_pos_len=(2 * (TINY_CLIP.num_patches + 1)) if dit.image_pos_len else None,
        )
    if v.vae.version == "2.1":
        vae = replace(v.vae, base_dim=8, decoder_base_dim=8)
    else:
        vae = replace(v.vae, base_dim=8, decoder_base_dim=12)
    clip = TINY_CLIP if v.clip is not None else None
    return replace(v, dit=dit, vae=vae, t5=TINY_T5, clip=clip)
