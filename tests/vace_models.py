"""Tiny random-weight VACE models (Wan2.1-VACE, Wan2.2-VACE-Fun A14B) for the VACE tests.

``tiny_vace_variant`` is the tiny DiT of tests/tiny.py with a VACE branch: 2 main blocks, a VACE
block for each (vace_layers (0, 1): the spacing ComfyUI files imply for 2 blocks, len // n).
``build_tiny_vace_model`` writes the same random weights in the diffusers layout (diffusers'
own ``save_pretrained`` of a ``WanVACEPipeline``), the official layout and as ComfyUI files (fp16
and fp8), like tests/fixtures_models.build_tiny_model does for the other variants.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tests.fixtures_models import (
    TinyModel,
    _official_dit_config,
    build_tiny_model,
    experts,
    official_dit_state,
    save_comfy_dits,
)
from tests.reference import on_wan_grid
from tests.reference_models import randomize_
from tests.tiny import tiny_variant
from wan_desktop.variants import DiTConfig, Variant

TINY_VACE_LAYERS = (0, 1)
W, H, FRAMES = 64, 32, 9  # the size of the test inputs below
BASES = {"vace-1.3B": "t2v-1.3B", "vace-14B": "t2v-14B", "vace-A14B": "t2v-A14B"}


def tiny_vace_variant(name: str = "vace-1.3B") -> Variant:
    from wan_desktop.variants import VARIANTS

    base = tiny_variant(BASES[name])
    dit = replace(base.dit, vace_in_dim=96, vace_layers=TINY_VACE_LAYERS)
    return replace(base, name=name, tasks=VARIANTS[name].tasks, dit=dit)


def diffusers_vace_transformer(cfg: DiTConfig, seed: int = 1234):
    from diffusers import WanVACETransformer3DModel

    model = WanVACETransformer3DModel(
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
        vace_layers=list(cfg.vace_layers),
        vace_in_channels=cfg.vace_in_dim,
    )
    return randomize_(model, seed)


class TinyVaceModel(TinyModel):
    def diffusers_pipeline(self):  # the pipeline build_tiny_model saves as the diffusers layout
        return self.vace_pipeline()

    def vace_pipeline(self):
        """diffusers' WanVACEPipeline over the reference weights."""
        from diffusers import WanVACEPipeline

        r = self.refs
        return WanVACEPipeline(
            tokenizer=r["tokenizer"],
            text_encoder=r["text_encoder"],
            vae=r["vae"],
            scheduler=r["scheduler"],
            transformer=r["transformer"],
            transformer_2=r.get("transformer_2"),
            boundary_ratio=r.get("boundary_ratio"),
        )


def _official_vace_config(cfg: DiTConfig) -> dict[str, Any]:
    return _official_dit_config(cfg) | {
        "_class_name": "VaceWanModel",
        "model_type": "vace",
        "vace_layers": list(cfg.vace_layers),
        "vace_in_dim": cfg.vace_in_dim,
    }


def build_tiny_vace_model(root: str | Path, name: str = "vace-1.3B", *, seed: int = 0):
    """The same random VACE weights in the diffusers, official and ComfyUI (fp16, and fp8 beside
    it as ``refs["comfy_fp8"]``) layouts."""
    variant = tiny_vace_variant(name)
    names = (
        "wan2.1_vace_tiny_{precision}.safetensors",
        "wan2.2_vace_fun_{tag}_{precision}.safetensors",
    )
    model = build_tiny_model(
        root,
        name,
        seed=seed,
        variant=variant,
        transformer=diffusers_vace_transformer,
        model_cls=TinyVaceModel,
        config=_official_vace_config(variant.dit),
        comfy_names=tuple(n.replace("{precision}", "fp16") for n in names),
    )
    single, pair = (n.replace("{precision}", "fp8_scaled") for n in names)
    states = [official_dit_state(m) for m in experts(model.refs)]
    comfy = model.comfy_dit.parents[1]
    model.refs["comfy_fp8"] = save_comfy_dits(comfy, states, single, pair, "fp8_scaled")
    return model


# ----------------------------------------------------------------------------- inputs


def control_frames(n: int = FRAMES) -> list[Image.Image]:
    """A moving gradient with a bright square: something the control branch can see."""
    out = []
    for i in range(n):
        x = np.linspace(0, 1, W)[None, :] * np.linspace(0.2, 1, H)[:, None]
        arr = np.stack([x, np.roll(x, 4 * i, axis=1), 1 - x], axis=-1) * 255
        arr[8:20, 6 + 3 * i : 18 + 3 * i] = 250
        out.append(Image.fromarray(arr.clip(0, 255).astype(np.uint8)))
    return out


def mask_frames(n: int = FRAMES) -> list[Image.Image]:
    """White (generate) on a moving box, black (keep) elsewhere; a grey edge (not 0 or 1)."""
    out = []
    for i in range(n):
        arr = np.zeros((H, W), np.uint8)
        arr[4:28, 10 + 2 * i : 40 + 2 * i] = 255
        arr[4:28, 9 + 2 * i] = 128
        out.append(Image.fromarray(arr).convert("RGB"))
    return out


def reference_image(seed: int = 5, size: tuple[int, int] = (48, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def write_inputs(tmp_path, *, control=True, mask=True, refs=1):
    """PNG folders / files the CLI and the request read; returns (paths, PIL inputs)."""
    paths: dict[str, object] = {}
    pil: dict[str, object] = {}
    if control:
        d = tmp_path / "control"
        d.mkdir()
        frames = control_frames()
        for i, f in enumerate(frames):
            f.save(d / f"{i:05d}.png")
        paths["control_video"], pil["video"] = str(d), frames
    if mask:
        d = tmp_path / "mask"
        d.mkdir()
        frames = mask_frames()
        for i, f in enumerate(frames):
            f.save(d / f"{i:05d}.png")
        paths["mask_video"], pil["mask"] = str(d), frames
    if refs:
        images = [reference_image(5 + j, (48, 48) if j == 0 else (32, 48)) for j in range(refs)]
        files = []
        for j, im in enumerate(images):
            im.save(tmp_path / f"ref{j}.png")
            files.append(str(tmp_path / f"ref{j}.png"))
        paths["ref_images"] = tuple(files)
        # diffusers prepends each reference before the previous ones (official: in order)
        pil["reference_images"] = images[::-1]
    return paths, pil


def reference_frames(model, request, pil: dict, scale: float = 1.0) -> torch.Tensor:
    pipe = on_wan_grid(model.vace_pipeline(), request.shift)
    kw = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        height=request.height,
        width=request.width,
        num_frames=request.frames,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        conditioning_scale=scale,
        generator=torch.Generator().manual_seed(request.seed),
        output_type="np",
        max_sequence_length=512,
        **pil,
    )
    if model.variant.experts == 2:
        kw["guidance_scale_2"] = request.guidance_low
    with torch.no_grad():
        video = pipe(**kw).frames[0]
    return torch.from_numpy((video * 255).astype(np.uint8))
