"""Video-to-video test helpers: input videos with content the VAE encodes to something, and
diffusers' WanVideoToVideoPipeline run on a tiny model's reference weights (tests/fixtures_models.py)
with UniPC on Wan's official sigma grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.reference import on_wan_grid


def input_frames(n: int, w: int, h: int, *, seed: int = 5) -> list[Image.Image]:
    """A smooth gradient moving right with a little texture."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    out = []
    for i in range(n):
        base = 255 * np.concatenate(
            [(x + 0.05 * i) % 1 * (0.5 + 0.5 * y), 1 - x * y, 0.3 + 0.4 * y * np.ones_like(x)],
            axis=-1,
        )
        arr = (base + rng.uniform(-10, 10, base.shape)).clip(0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr))
    return out


def png_folder(path: Path, frames: list[Image.Image]) -> Path:
    path.mkdir()
    for i, f in enumerate(frames):
        f.save(path / f"{i:05d}.png")
    return path


def wan_v2v_reference(model, request, frames: list[Image.Image]) -> torch.Tensor:
    """diffusers' WanVideoToVideoPipeline on ``model``'s reference weights for a resolved v2v
    ``request``: uint8 frames [F, H, W, 3] (truncated, as export_to_video)."""
    from diffusers import WanVideoToVideoPipeline

    r = model.refs
    pipe = WanVideoToVideoPipeline(
        tokenizer=r["tokenizer"],
        text_encoder=r["text_encoder"],
        vae=r["vae"],
        scheduler=r["scheduler"],
        transformer=r["transformer"],
    )
    on_wan_grid(pipe, request.shift)
    # it takes its latent size from 2^len(temperal_downsample) (8), wrong for Wan2.2's VAE (16,
    # after its 2x2 patchify); WanPipeline reads the VAE config, as we do: use that
    pipe.vae_scale_factor_spatial = r["vae"].config.scale_factor_spatial
    with torch.no_grad():
        video = pipe(
            video=frames,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            height=request.height,
            width=request.width,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            strength=request.strength,
            generator=torch.Generator().manual_seed(request.seed),
            output_type="np",
            max_sequence_length=512,
        ).frames[0]
    return torch.from_numpy((video * 255).astype(np.uint8))
