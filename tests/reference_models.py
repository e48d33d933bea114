"""Reference (diffusers / transformers) models with the tiny configs of tests/tiny.py and every
weight randomised — default inits (ones/zeros norms, zero tables) would hide a swapped or skipped
norm. Shared by the parity tests and the checkpoint-format fixtures."""

from __future__ import annotations

import torch

from wan_desktop.variants import VaeConfig


def randomize_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random, scaled so that deep stacks keep O(1) activations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma" or ("norm" in name and leaf == "weight" and p.dim() == 1):
                p.copy_(1.0 + 0.3 * r.view(p.shape))
            elif p.dim() <= 1:
                p.copy_(0.1 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model.eval()


def diffusers_vae(cfg: VaeConfig, seed: int = 7):
    from diffusers import AutoencoderKLWan

    kw = dict(base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
              num_res_blocks=cfg.num_res_blocks, temperal_downsample=list(cfg.temporal_downsample),
              latents_mean=list(cfg.latents_mean), latents_std=list(cfg.latents_std))
    if cfg.version == "2.2":
        kw.update(decoder_base_dim=cfg.decoder_base_dim, is_residual=True, in_channels=12,
                  out_channels=12, patch_size=2, scale_factor_spatial=16)
    return randomize_(AutoencoderKLWan(**kw), seed)
