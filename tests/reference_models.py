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
            if leaf == "gamma" or (
                ("norm" in name or "layrnorm" in name) and leaf == "weight" and p.dim() == 1
            ):
                p.copy_(1.0 + 0.3 * r.view(p.shape))
            elif p.dim() <= 1:
                p.copy_(0.1 * r)
            else:
                p.copy_(r / p[0].numel() ** 0.5)
    return model.eval()


def diffusers_vae(cfg: VaeConfig, seed: int = 7):
    from diffusers import AutoencoderKLWan

    kw = dict(
        base_dim=cfg.base_dim,
        z_dim=cfg.z_dim,
        dim_mult=list(cfg.dim_mult),
        num_res_blocks=cfg.num_res_blocks,
        temperal_downsample=list(cfg.temporal_downsample),
        latents_mean=list(cfg.latents_mean),
        latents_std=list(cfg.latents_std),
    )
    if cfg.version == "2.2":
        kw.update(
            decoder_base_dim=cfg.decoder_base_dim,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_spatial=16,
        )
    return randomize_(AutoencoderKLWan(**kw), seed)


def diffusers_transformer(cfg, seed: int = 1234):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(
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
    )
    return randomize_(model, seed)


def hf_umt5(cfg, seed: int = 99):
    import transformers

    hf_cfg = transformers.UMT5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.dim,
        d_kv=cfg.dim_attn // cfg.num_heads,
        num_heads=cfg.num_heads,
        d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    model = transformers.UMT5EncoderModel(hf_cfg)
    model = randomize_(model, seed)
    with torch.no_grad():  # embeddings and position tables at O(1) scale, as trained ones are
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if "relative_attention_bias" in name or name.startswith("shared"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def hf_clip_vision(cfg, seed: int = 4321, projection: bool = True):
    import transformers

    hf_cfg = transformers.CLIPVisionConfig(
        hidden_size=cfg.dim,
        intermediate_size=cfg.dim * cfg.mlp_ratio,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        projection_dim=cfg.out_dim,
        hidden_act="gelu",
        layer_norm_eps=cfg.eps,
    )
    cls = transformers.CLIPVisionModelWithProjection if projection else transformers.CLIPVisionModel
    return randomize_(cls(hf_cfg), seed)
