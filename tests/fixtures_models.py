"""Tiny random-weight Wan models written in the three on-disk layouts users have.

``build_tiny_model(root, "t2v-1.3B")`` makes the diffusers reference components (random weights,
tests/reference_models.py), saves them with diffusers' own ``save_pretrained`` (diffusers layout),
and writes the same weights as an official Wan folder (config.json + safetensors, Wan2.x_VAE.pth,
the umT5 .pth, google/umt5-xxl tokenizer, the open-clip .pth) and as ComfyUI files
(diffusion_models/, vae/, text_encoders/ with the embedded sentencepiece model, clip_vision/).
The official and ComfyUI names are produced by our key maps' inverse of diffusers' conversion,
which the parity tests check independently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tests.fixtures_text import make_tiny_tokenizer
from tests.reference_models import diffusers_transformer, diffusers_vae, hf_clip_vision, hf_umt5
from tests.tiny import tiny_variant
from wan_desktop.checkpoints.keymap_clip import convert_hf_state_dict
from wan_desktop.checkpoints.keymap_dit import official_key as dit_key
from wan_desktop.checkpoints.keymap_t5 import make_renamer
from wan_desktop.checkpoints.keymap_vae import official_key as vae_key
from wan_desktop.variants import Variant

DIFFUSERS_SHIFT = 3.0


@dataclass
class TinyModel:
    name: str
    variant: Variant
    root: Path
    diffusers: Path
    official: Path
    comfy_dit: Path  # the (high-noise) diffusion-model file; a low_noise sibling for Wan2.2 A14B
    comfy_vae: Path
    comfy_t5: Path
    comfy_clip: Path | None
    tokenizer: Path
    refs: dict[str, Any] = field(repr=False, default_factory=dict)

    def diffusers_pipeline(self):
        from diffusers import WanImageToVideoPipeline, WanPipeline

        r = self.refs
        common = dict(
            tokenizer=r["tokenizer"],
            text_encoder=r["text_encoder"],
            vae=r["vae"],
            scheduler=r["scheduler"],
            transformer=r["transformer"],
            transformer_2=r.get("transformer_2"),
            boundary_ratio=r.get("boundary_ratio"),
            expand_timesteps=self.variant.dit.model_type == "ti2v",
        )
        if self.variant.dit.model_type in ("i2v", "flf2v") or r.get("i2v_pipeline"):
            return WanImageToVideoPipeline(
                image_processor=r.get("image_processor"),
                image_encoder=r.get("image_encoder"),
                **common,
            )
        return WanPipeline(**common)


def _official_dit_config(cfg) -> dict[str, Any]:
    return {
        "_class_name": "WanModel",
        "_diffusers_version": "0.30.0",
        "model_type": cfg.model_type,
        "dim": cfg.dim,
        "ffn_dim": cfg.ffn_dim,
        "freq_dim": cfg.freq_dim,
        "in_dim": cfg.in_dim,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.num_layers,
        "out_dim": cfg.out_dim,
        "text_len": cfg.text_len,
        "eps": cfg.eps,
    }


def _save_sharded(state: dict[str, torch.Tensor], folder: Path, stem: str, shards: int) -> None:
    keys = list(state)
    if shards <= 1:
        save_file(state, folder / f"{stem}.safetensors")
        return
    weight_map = {}
    per = (len(keys) + shards - 1) // shards
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i * per : (i + 1) * per]}
        save_file(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def experts(refs: dict[str, Any]) -> list[torch.nn.Module]:
    """The reference DiT(s) of ``refs``, high-noise expert first."""
    return [refs["transformer"]] + ([refs["transformer_2"]] if "transformer_2" in refs else [])


def official_dit_state(model) -> dict[str, torch.Tensor]:
    return {dit_key(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def comfy_dit_state(
    official: dict[str, torch.Tensor],
    precision: str = "fp16",
    prefix: str = "model.diffusion_model.",
) -> dict[str, torch.Tensor]:
    """An official DiT state as a ComfyUI file stores it: fp16/bf16/fp32, or block linear weights in
    fp8_e4m3fn (plain, or "fp8_scaled" with a per-tensor ``scale_weight`` and the marker)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in official.items():
        is_linear = k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2
        if precision in ("fp8", "fp8_scaled") and is_linear:
            if precision == "fp8_scaled":
                scale = v.abs().max().float() / 448.0
                out[prefix + k] = (v.float() / scale).to(torch.float8_e4m3fn)
                out[prefix + k.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
            else:
                out[prefix + k] = v.to(torch.float8_e4m3fn)
        else:
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(precision, torch.float16)
            out[prefix + k] = v.to(dtype) if v.is_floating_point() else v
    if precision == "fp8_scaled":
        out[prefix + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def reference_components(
    variant: Variant,
    tok_dir: Path,
    *,
    seed: int = 0,
    transformer: Callable[..., torch.nn.Module] = diffusers_transformer,
    scheduler: bool = True,
) -> dict[str, Any]:
    """The diffusers / transformers reference components of a tiny ``variant`` with random weights
    (seeds seed + 1 ...): tokenizer, text encoder, VAE, ``transformer(cfg, seed=...)`` (two for a
    two-expert variant, with the boundary), CLIP vision for image-conditioned DiTs, and the UniPC
    scheduler the diffusers layout stores (``scheduler=False``: none)."""
    from transformers import T5TokenizerFast

    cfg = variant.dit
    refs: dict[str, Any] = {
        "tokenizer": T5TokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"), extra_ids=0),
        "text_encoder": hf_umt5(variant.t5, seed=seed + 1),
        "vae": diffusers_vae(variant.vae, seed=seed + 2),
        "transformer": transformer(cfg, seed=seed + 3),
    }
    if scheduler:
        from diffusers import UniPCMultistepScheduler

        refs["scheduler"] = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=DIFFUSERS_SHIFT,
        )
    if variant.experts == 2:
        refs["transformer_2"] = transformer(cfg, seed=seed + 4)
        refs["boundary_ratio"] = variant.defaults.boundary
    if cfg.image_dim is not None:
        from transformers import CLIPImageProcessor

        refs["image_encoder"] = hf_clip_vision(variant.clip, seed=seed + 5)
        refs["image_processor"] = CLIPImageProcessor(
            size={"shortest_edge": variant.clip.image_size},
            crop_size={"height": variant.clip.image_size, "width": variant.clip.image_size},
        )
    return refs


@dataclass(frozen=True)
class OfficialStates:
    """What ``save_official`` wrote, for the other layouts to store the same numbers."""

    dits: list[dict[str, torch.Tensor]]  # official DiT keys, high-noise expert first
    vae: dict[str, torch.Tensor]  # official VAE keys
    t5_hf: dict[str, torch.Tensor]  # the text encoder's transformers keys (ComfyUI keeps them)


def save_official(
    off: Path,
    refs: dict[str, Any],
    variant: Variant,
    tok_dir: Path,
    *,
    config: dict[str, Any] | None = None,
    dit_file: str = "diffusion_pytorch_model",
    shards: int = 1,
) -> OfficialStates:
    """An official Wan folder of ``refs``: config.json (``config``, default the plain WanModel
    one) + ``<dit_file>.safetensors`` (in ``shards`` parts; high_noise_model/ and low_noise_model/
    for two experts), the Wan2.x VAE .pth, the umT5 .pth, google/umt5-xxl and, with an image
    encoder, the open-clip .pth."""
    config = _official_dit_config(variant.dit) if config is None else config
    off.mkdir(parents=True)
    dits = experts(refs)
    dirs = [off] if len(dits) == 1 else [off / "high_noise_model", off / "low_noise_model"]
    dit_states = []
    for d, m in zip(dirs, dits, strict=True):
        d.mkdir(exist_ok=True)
        state = official_dit_state(m)
        dit_states.append(state)
        _save_sharded(state, d, dit_file, shards)
        (d / "config.json").write_text(json.dumps(config, indent=2))
    vae_state = {
        vae_key(k, variant.vae.version): v.clone() for k, v in refs["vae"].state_dict().items()
    }
    torch.save(
        vae_state, off / ("Wan2.2_VAE.pth" if variant.vae.version == "2.2" else "Wan2.1_VAE.pth")
    )
    t5_hf = refs["text_encoder"].state_dict()
    rename = make_renamer(t5_hf)
    t5_state = {n: v.clone() for k, v in t5_hf.items() if (n := rename(k)) is not None}
    torch.save(t5_state, off / "models_t5_umt5-xxl-enc-bf16.pth")
    (off / "google" / "umt5-xxl").mkdir(parents=True)
    for f in tok_dir.iterdir():
        (off / "google" / "umt5-xxl" / f.name).write_bytes(f.read_bytes())
    if "image_encoder" in refs:
        clip_state = convert_hf_state_dict(refs["image_encoder"].state_dict())
        clip_state |= {
            "textual.token_embedding.weight": torch.randn(8, 4),
            "log_scale": torch.tensor(4.6),
        }
        torch.save(clip_state, off / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    return OfficialStates(dits=dit_states, vae=vae_state, t5_hf=t5_hf)


def save_comfy_dits(
    comfy: Path, dits: list[dict[str, torch.Tensor]], single: str, pair: str, precision: str
) -> Path:
    """ComfyUI diffusion-model file(s) of official DiT states in ``precision``: ``single`` names
    the one file, ``pair`` (with ``{tag}``) the high_noise / low_noise files of two experts.
    Returns the (high-noise) file."""
    folder = comfy / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    if len(dits) == 1:
        save_file(comfy_dit_state(dits[0], precision), folder / single)
        return folder / single
    for tag, state in zip(("high_noise", "low_noise"), dits, strict=True):
        save_file(comfy_dit_state(state, precision), folder / pair.format(tag=tag))
    return folder / pair.format(tag="high_noise")


def save_comfy_vae_t5(comfy: Path, states: OfficialStates, variant: Variant, tok_dir: Path):
    """The ComfyUI VAE (official keys) and umT5 (transformers keys + the embedded sentencepiece
    model) files; returns their paths."""
    vae_name = (
        "wan2.2_vae.safetensors" if variant.vae.version == "2.2" else "wan_2.1_vae.safetensors"
    )
    vae = comfy / "vae" / vae_name
    t5 = comfy / "text_encoders" / "umt5_xxl_fp16.safetensors"
    for f in (vae, t5):
        f.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in states.vae.items()}, vae)
    spm = torch.frombuffer(bytearray((tok_dir / "spiece.model").read_bytes()), dtype=torch.uint8)
    t5_comfy = {
        k: v.clone().contiguous()
        for k, v in states.t5_hf.items()
        if k != "encoder.embed_tokens.weight"
    }
    save_file(t5_comfy | {"spiece_model": spm.clone()}, t5)
    return vae, t5


def build_tiny_model(
    root: str | Path,
    name: str,
    *,
    seed: int = 0,
    shards: int = 1,
    variant: Variant | None = None,
    transformer: Callable[..., torch.nn.Module] = diffusers_transformer,
    model_cls: type[TinyModel] = TinyModel,
    config: dict[str, Any] | None = None,
    comfy_names: tuple[str, str] = (
        "wan_tiny_{name}_fp16.safetensors",
        "wan2.2_tiny_{tag}_14B_fp16.safetensors",
    ),
) -> TinyModel:
    """``name``'s tiny model (or ``variant``, built with ``transformer``) in the three layouts.
    ``model_cls``' ``diffusers_pipeline`` saves the diffusers layout, ``config`` is the official
    config.json (default WanModel's), ``comfy_names`` the ComfyUI DiT file names (one file, two
    experts' with ``{tag}``; ``{name}``: the model's name)."""
    root = Path(root)
    variant = tiny_variant(name) if variant is None else variant
    tok_dir = make_tiny_tokenizer(root / "tokenizer_src", tokenizer_json=True)
    refs = reference_components(variant, tok_dir, seed=seed, transformer=transformer)
    model = model_cls(
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

    # --- diffusers layout, by diffusers itself
    model.diffusers_pipeline().save_pretrained(model.diffusers, safe_serialization=True)

    # --- official layout
    states = save_official(model.official, refs, variant, tok_dir, config=config, shards=shards)

    # --- ComfyUI files (fp16 diffusion models, as the repackaged releases ship them)
    comfy = root / "comfyui" / "models"
    single, pair = (n.format(name=name, tag="{tag}") for n in comfy_names)
    model.comfy_dit = save_comfy_dits(comfy, states.dits, single, pair, "fp16")
    model.comfy_vae, model.comfy_t5 = save_comfy_vae_t5(comfy, states, variant, tok_dir)
    (comfy / "clip_vision").mkdir()  # as in a ComfyUI tree; empty without CLIP vision
    if "image_encoder" in refs:
        model.comfy_clip = comfy / "clip_vision" / "clip_vision_h.safetensors"
        save_file(
            {k: v.contiguous() for k, v in refs["image_encoder"].state_dict().items()},
            model.comfy_clip,
        )
    return model
