"""Tiny random-weight SkyReels-V2 models: diffusers' SkyReelsV2Transformer3DModel with the tiny
configs of tests/tiny.py, and whole DF models written in the three on-disk layouts (a
``-Diffusers`` folder saved by diffusers' SkyReelsV2DiffusionForcingPipeline itself, an official
SkyReels folder with ``model.safetensors``, a ComfyUI file named like the repackaged releases)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.fixtures_models import (
    _official_dit_config,
    reference_components,
    save_comfy_dits,
    save_comfy_vae_t5,
    save_official,
)
from tests.fixtures_text import make_tiny_tokenizer
from tests.reference import diffusers_unipc
from tests.reference_models import randomize_
from tests.tiny import TINY_T5, tiny_variant
from wan_desktop.variants import SKYREELS_VARIANTS, Variant


def tiny_skyreels(name: str) -> Variant:
    """A SkyReels-V2 variant with the tiny DiT / VAE / T5 of tests/tiny.py."""
    v = SKYREELS_VARIANTS[name]
    base = tiny_variant("t2v-1.3B")
    dit = replace(base.dit, inject_sample_info=v.dit.inject_sample_info)
    return replace(v, dit=dit, vae=base.vae, t5=TINY_T5, clip=None)


def diffusers_skyreels_transformer(cfg, seed: int = 1234):
    from diffusers import SkyReelsV2Transformer3DModel

    model = SkyReelsV2Transformer3DModel(
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
        inject_sample_info=cfg.inject_sample_info,
    )
    return randomize_(model, seed)


@dataclass
class TinySkyReels:
    name: str
    variant: Variant
    diffusers: Path
    official: Path
    comfy_dit: Path
    comfy_vae: Path
    comfy_t5: Path
    refs: dict[str, Any] = field(repr=False, default_factory=dict)

    def pipeline(self, kind: str = "t2v", shift: float = 8.0):
        """diffusers' DF pipeline of that kind (t2v, i2v, v2v) over the same weights, stepping
        UniPC on Wan's official grid."""
        import diffusers

        cls = {
            "t2v": diffusers.SkyReelsV2DiffusionForcingPipeline,
            "i2v": diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline,
            "v2v": diffusers.SkyReelsV2DiffusionForcingVideoToVideoPipeline,
        }[kind]
        r = self.refs
        pipe = cls(
            tokenizer=r["tokenizer"],
            text_encoder=r["text_encoder"],
            vae=r["vae"],
            transformer=r["transformer"],
            scheduler=diffusers_unipc(shift),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def build_tiny_skyreels(root: str | Path, name: str, *, seed: int = 0) -> TinySkyReels:
    """Write one tiny SkyReels-V2 model in the three layouts; the folder and file names carry the
    release's name, as users' downloads do."""
    root = Path(root)
    variant = tiny_skyreels(name)
    release = {
        "skyreels-v2-df-1.3B-540P": "SkyReels-V2-DF-1.3B-540P",
        "skyreels-v2-df-14B-540P": "SkyReels-V2-DF-14B-540P",
        "skyreels-v2-df-14B-720P": "SkyReels-V2-DF-14B-720P",
        "skyreels-v2-t2v-14B-540P": "SkyReels-V2-T2V-14B-540P",
    }[name]
    tok_dir = make_tiny_tokenizer(root / "tokenizer_src", tokenizer_json=True)
    refs = reference_components(
        variant, tok_dir, seed=seed, transformer=diffusers_skyreels_transformer, scheduler=False
    )
    model = TinySkyReels(
        name=name,
        variant=variant,
        diffusers=root / f"{release}-Diffusers",
        official=root / release,
        comfy_dit=Path(),
        comfy_vae=Path(),
        comfy_t5=Path(),
        refs=refs,
    )
    kind = "t2v" if "-df-" in name else None
    if kind:
        model.pipeline(kind).save_pretrained(model.diffusers, safe_serialization=True)
    else:
        from diffusers import SkyReelsV2Pipeline

        SkyReelsV2Pipeline(
            tokenizer=refs["tokenizer"],
            text_encoder=refs["text_encoder"],
            vae=refs["vae"],
            transformer=refs["transformer"],
            scheduler=diffusers_unipc(8.0),
        ).save_pretrained(model.diffusers, safe_serialization=True)

    # official SkyReels folder: config.json + model.safetensors (SkyReels' name for the DiT file)
    config = _official_dit_config(variant.dit) | {
        "inject_sample_info": variant.dit.inject_sample_info
    }
    states = save_official(model.official, refs, variant, tok_dir, config=config, dit_file="model")

    # ComfyUI files (fp32 here, so the three layouts hold the very same numbers)
    comfy = root / "comfyui" / "models"
    file = f"Wan2_1-{release}_fp16.safetensors"
    model.comfy_dit = save_comfy_dits(comfy, states.dits, file, file, "fp32")
    model.comfy_vae, model.comfy_t5 = save_comfy_vae_t5(comfy, states, variant, tok_dir)
    return model


def reference_frames(model, r, kind: str = "t2v", **extra) -> torch.Tensor:
    """diffusers' DF pipeline of ``kind`` (t2v, i2v, v2v) for the resolved request ``r``: uint8
    [F, H, W, 3]. diffusers draws the carried frames' noise (addnoise_condition) from torch's global
    generator, we from a generator seeded with seed + 1: the global one is seeded so first."""
    pipe = model.pipeline(kind, shift=r.shift)
    torch.manual_seed(r.seed + 1)  # the carried frames' noise (see the module docstring)
    with torch.no_grad():
        video = pipe(
            prompt=r.prompt,
            negative_prompt=r.negative_prompt,
            height=r.height,
            width=r.width,
            num_frames=r.frames,
            num_inference_steps=r.steps,
            guidance_scale=r.guidance,
            generator=torch.Generator().manual_seed(r.seed),
            overlap_history=r.overlap_history,
            addnoise_condition=r.addnoise_condition,
            base_num_frames=r.base_frames,
            ar_step=r.ar_step,
            causal_block_size=r.causal_block_size,
            fps=r.fps,
            output_type="np",
            max_sequence_length=512,
            **extra,
        ).frames[0]
    return torch.from_numpy((video * 255).astype(np.uint8))
