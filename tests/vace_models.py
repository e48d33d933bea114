"""Tiny random-weight VACE models (Wan2.1-VACE, Wan2.2-VACE-Fun A14B) for the VACE tests.

``tiny_vace_variant`` is the tiny DiT of tests/tiny.py with a VACE branch: 2 main blocks, a VACE
block for each (vace_layers (0, 1): the spacing ComfyUI files imply for 2 blocks, len // n).
``build_tiny_vace_model`` writes the same random weights in the diffusers layout (diffusers'
own ``save_pretrained`` of a ``WanVACEPipeline``), the official layout and as ComfyUI files (fp16
and fp8), like tests/fixtures_models.build_tiny_model does for the other variants.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.fixtures_models import (
    DIFFUSERS_SHIFT,
    TinyModel,
    _official_dit_config,
    comfy_dit_state,
    official_dit_state,
)
from tests.fixtures_text import make_tiny_tokenizer
from tests.reference import diffusers_unipc
from tests.reference_models import diffusers_vae, hf_umt5, randomize_
from tests.tiny import tiny_variant
from wan_desktop.checkpoints.keymap_t5 import make_renamer
from wan_desktop.checkpoints.keymap_vae import official_key as vae_key
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
    def vace_pipeline(self):
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
    it as ``comfy_dit.with_name(... _fp8 ...)``) layouts."""
    from diffusers import UniPCMultistepScheduler
    from transformers import T5TokenizerFast

    root = Path(root)
    variant = tiny_vace_variant(name)
    cfg = variant.dit
    tok_dir = make_tiny_tokenizer(root / "tokenizer_src", tokenizer_json=True)
    refs: dict[str, Any] = {
        "tokenizer": T5TokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"), extra_ids=0),
        "text_encoder": hf_umt5(variant.t5, seed=seed + 1),
        "vae": diffusers_vae(variant.vae, seed=seed + 2),
        "transformer": diffusers_vace_transformer(cfg, seed=seed + 3),
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=DIFFUSERS_SHIFT,
        ),
    }
    if variant.experts == 2:
        refs["transformer_2"] = diffusers_vace_transformer(cfg, seed=seed + 4)
        refs["boundary_ratio"] = variant.defaults.boundary
    model = TinyVaceModel(
        name=name,
        variant=variant,
        root=root,
        diffusers=root / "diffusers",
        official=root / "official",
        comfy_dit=Path(),
        comfy_vae=Path(),
        comfy_t5=Path(),
        comfy_clip=None,
        tokenizer=tok_dir,
        refs=refs,
    )
    model.vace_pipeline().save_pretrained(model.diffusers, safe_serialization=True)

    off = model.official
    off.mkdir(parents=True)
    experts = [refs["transformer"]] + ([refs["transformer_2"]] if "transformer_2" in refs else [])
    dirs = [off] if len(experts) == 1 else [off / "high_noise_model", off / "low_noise_model"]
    states = []
    for d, m in zip(dirs, experts, strict=True):
        d.mkdir(exist_ok=True)
        state = official_dit_state(m)
        states.append(state)
        save_file(state, d / "diffusion_pytorch_model.safetensors")
        (d / "config.json").write_text(json.dumps(_official_vace_config(cfg), indent=2))
    vae_state = {
        vae_key(k, variant.vae.version): v.clone() for k, v in refs["vae"].state_dict().items()
    }
    torch.save(vae_state, off / "Wan2.1_VAE.pth")
    t5_hf = refs["text_encoder"].state_dict()
    rename = make_renamer(t5_hf)
    t5_state = {n: v.clone() for k, v in t5_hf.items() if (n := rename(k)) is not None}
    torch.save(t5_state, off / "models_t5_umt5-xxl-enc-bf16.pth")
    (off / "google" / "umt5-xxl").mkdir(parents=True)
    for f in tok_dir.iterdir():
        (off / "google" / "umt5-xxl" / f.name).write_bytes(f.read_bytes())

    comfy = root / "comfyui" / "models"
    for sub in ("diffusion_models", "vae", "text_encoders"):
        (comfy / sub).mkdir(parents=True)
    for precision in ("fp16", "fp8_scaled"):
        if len(states) == 1:
            f = comfy / "diffusion_models" / f"wan2.1_vace_tiny_{precision}.safetensors"
            save_file(comfy_dit_state(states[0], precision), f)
        else:
            for tag, state in zip(("high_noise", "low_noise"), states, strict=True):
                f = comfy / "diffusion_models" / f"wan2.2_vace_fun_{tag}_{precision}.safetensors"
                save_file(comfy_dit_state(state, precision), f)
            f = comfy / "diffusion_models" / f"wan2.2_vace_fun_high_noise_{precision}.safetensors"
        if precision == "fp16":
            model.comfy_dit = f
        else:
            model.refs["comfy_fp8"] = f
    model.comfy_vae = comfy / "vae" / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_state.items()}, model.comfy_vae)
    model.comfy_t5 = comfy / "text_encoders" / "umt5_xxl_fp16.safetensors"
    spm = torch.frombuffer(bytearray((tok_dir / "spiece.model").read_bytes()), dtype=torch.uint8)
    t5_comfy = {
        k: v.clone().contiguous() for k, v in t5_hf.items() if k != "encoder.embed_tokens.weight"
    }
    save_file(t5_comfy | {"spiece_model": spm.clone()}, model.comfy_t5)
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
    pipe = model.vace_pipeline()
    pipe.scheduler = diffusers_unipc(request.shift)
    pipe.set_progress_bar_config(disable=True)
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
