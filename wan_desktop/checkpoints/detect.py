"""Detect the layout (official / diffusers / ComfyUI) and the Wan variant of what a user points at.

Architecture comes from the tensors themselves (shapes in the headers, no weights read), cross-checked
with config files where a layout has them; the variant (defaults, tasks) from the structure: image
cross-attention, input channels, Wan2.2 expert pairs. Something we cannot identify is a
CheckpointError, never a guess.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Container
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor
from ..variants import VARIANTS, ClipConfig, DiTConfig, T5Config, VaeConfig, Variant
from .reader import StateReader, safetensors_shards
from .skyreels import SkyReelsHints, hints_for, official_dit_shards, skyreels_variant

COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Per-layer quantization side tensors of ComfyUI fp8 files (legacy "scaled_fp8" and comfy-kitchen).
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
IGNORED_KEYS = ("scaled_fp8",)

OFFICIAL_VAE = ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth")
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
UNSUPPORTED_DIT_KEYS = {
    "audio_injector.": "a Wan S2V (speech-to-video) model",
    "casual_audio_encoder.": "a Wan S2V (speech-to-video) model",
    "motion_encoder.": "a Wan Animate model",
    "face_adapter.": "a Wan Animate model",
}


@dataclass(frozen=True)
class ComponentFiles:
    """One component's files and how its tensors are named."""

    files: tuple[Path, ...]
    naming: str  # "official" | "diffusers" (DiT, VAE) | "hf" (T5, CLIP)
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    prefix: str = ""  # stripped from every key (ComfyUI "model.diffusion_model.")

    def reader(self) -> StateReader:
        return StateReader(self.files)


@dataclass(frozen=True)
class ModelFiles:
    """Everything detected about one model: layout, variant (with the real architecture) and files."""

    path: Path
    format: str  # "official" | "diffusers" | "comfyui" | "gguf"
    variant: Variant
    experts: tuple[ComponentFiles, ...]  # (dit,) or (high_noise, low_noise)
    vae: ComponentFiles | None
    text_encoder: ComponentFiles | None
    tokenizer: (
        Path | None
    )  # a folder with tokenizer.json / spiece.model, or None (embedded / missing)
    image_encoder: ComponentFiles | None
    boundary: float | None = None
    notes: tuple[str, ...] = ()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _is_whole(v: object) -> bool:
    """A JSON whole number (``true`` is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    """A finite JSON number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bad_value(where: str, name: str, rule: str, value: object) -> CheckpointError:
    shown = json.dumps(value, default=str)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(
        f"{where}: {name} must be {rule}, got {shown}",
        remedy=f"Fix {name} in that file, or re-download the model.",
    )


def _config_json(where: str) -> str:
    """The config.json beside the weights file ``where``."""
    return str(Path(where).parent / "config.json")


def _config_int(config: dict[str, Any], keys: tuple[str, ...], where: str) -> int | None:
    """The first of ``keys`` set in a config.json, as a positive whole number (None: not set)."""
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if not _is_whole(value) or value <= 0:
            raise _bad_value(_config_json(where), key, "a positive whole number", value)
        return int(value)
    return None


def strip_prefix(keys: list[str]) -> str:
    """The ComfyUI prefix shared by the DiT keys of a single file ("" if none)."""
    for p in COMFY_PREFIXES:
        if any(k.startswith(p) for k in keys):
            return p
    return ""


SLA_KEY = "blocks.0.self_attn.attn_op.local_attn.proj_l.weight"  # TurboDiffusion rCM + SLA


def turbo_patch_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """TurboDiffusion stores the patch embedding as a Linear [dim, in_dim·1·2·2] over patches
    flattened in (c, kt, kh, kw) order — exactly a flattened Conv3d weight: the Conv3d shape to view
    it as, or None for any other tensor."""
    if key != "patch_embedding.weight" or len(shape) != 2 or shape[1] % 4:
        return None
    return (shape[0], shape[1] // 4, 1, 2, 2)


INT8_SUFFIX = ".int8_weight"  # TurboDiffusion's -quant files: ops.Int8Linear int8_weight + scale
INT8_BLOCK = 128  # their scale is one float per 128×128 block of the weight


def turbo_int8_scale(key: str, keys: Container[str]) -> bool:
    """Whether ``key`` is the block scale of a TurboDiffusion Int8Linear (read with its weight)."""
    return key.endswith(".scale") and key.removesuffix(".scale") + INT8_SUFFIX in keys


def turbo_int8_dequant(q: Tensor, scale: Tensor) -> Tensor:
    """int8 weight [out, in] × per-128×128-block scale [⌈out/128⌉, ⌈in/128⌉] -> float32 weight."""
    s = scale.float().repeat_interleave(INT8_BLOCK, 0).repeat_interleave(INT8_BLOCK, 1)
    return q.float() * s[: q.shape[0], : q.shape[1]]


def is_side_tensor(key: str) -> bool:
    # the scaled_fp8 marker of a diffusion model sits under its prefix (model.diffusion_model.)
    return key.rpartition(".")[2] in IGNORED_KEYS or key.endswith(SCALE_SUFFIXES + IGNORED_SUFFIXES)


# ----------------------------------------------------------------------------- naming per component


def dit_naming(keys: list[str]) -> str:
    if any(k.endswith("head.modulation") for k in keys) or any(".self_attn.q." in k for k in keys):
        return "official"
    if any(k.startswith("condition_embedder.") or ".attn1.to_q." in k for k in keys):
        return "diffusers"
    raise CheckpointError(
        "no Wan diffusion-model tensors found (expected head.modulation or condition_embedder.*)"
    )


def vae_naming(keys: list[str]) -> str:
    if "decoder.conv1.weight" in keys or "conv2.weight" in keys:
        return "official"
    if "post_quant_conv.weight" in keys or "decoder.conv_in.weight" in keys:
        return "diffusers"
    raise CheckpointError("no Wan VAE tensors found (expected decoder.conv1 or decoder.conv_in)")


def t5_naming(keys: list[str]) -> str:
    if "token_embedding.weight" in keys:
        return "official"
    if any(k.startswith(("encoder.block.", "shared.", "encoder.embed_tokens.")) for k in keys):
        return "hf"
    raise CheckpointError(
        "no umT5 encoder tensors found (expected token_embedding or encoder.block.*)"
    )


def clip_naming(keys: list[str]) -> str:
    from .keymap_clip import is_hf_layout

    if is_hf_layout(keys):
        return "hf"
    if any(k.startswith("visual.") for k in keys):
        return "official"
    raise CheckpointError("no CLIP vision tensors found (expected visual.* or vision_model.*)")


def official_shapes(comp: ComponentFiles, kind: str) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of a component, read from headers only (side tensors skipped)."""
    reader = comp.reader()
    shapes: dict[str, tuple[int, ...]] = {}
    if kind == "clip" and comp.naming == "hf":
        from .keymap_clip import official_shapes_from_hf

        try:
            return official_shapes_from_hf({k: reader.info(k).shape for k in reader})
        except KeyError as e:
            raise CheckpointError(f"{comp.files[0]}: {e.args[0]}") from None
    rename = official_renamer(comp, kind)
    unknown: list[str] = []
    for k in reader:
        if is_side_tensor(k) or (kind == "dit" and turbo_int8_scale(k, reader)):
            continue
        try:
            new = rename(
                k.removesuffix(INT8_SUFFIX) + ".weight"
                if kind == "dit" and k.endswith(INT8_SUFFIX)
                else k
            )
        except KeyError:  # a foreign name our key map does not know
            raw = k[len(comp.prefix) :] if comp.prefix and k.startswith(comp.prefix) else k
            if kind == "dit" and raw.startswith(tuple(UNSUPPORTED_DIT_KEYS)):
                shapes[raw] = reader.info(k).shape  # dit_config names the unsupported model
            else:
                unknown.append(k)
            continue
        if new is not None:
            shape = tuple(reader.info(k).shape)
            shapes[new] = turbo_patch_shape(new, shape) or shape
    if unknown and not any(k.startswith(tuple(UNSUPPORTED_DIT_KEYS)) for k in shapes):
        more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        raise CheckpointError(
            f"{comp.files[0]}: {len(unknown)} unexpected tensor(s) "
            f"({', '.join(unknown[:4])}{more}) that a Wan {_KIND_NAMES[kind]} "
            "does not have; is it another model?"
        )
    return shapes


_KIND_NAMES = {
    "dit": "diffusion model",
    "vae": "VAE",
    "t5": "umT5 text encoder",
    "clip": "CLIP image encoder",
}


def official_renamer(comp: ComponentFiles, kind: str):
    """A function foreign key -> official key (None: a key to ignore)."""
    prefix = comp.prefix

    def strip(k: str) -> str | None:
        if prefix:
            if not k.startswith(prefix):
                return None  # other parts of a ComfyUI all-in-one file
            k = k[len(prefix) :]
        return k

    if comp.naming == "official":
        if kind == "clip":  # the official CLIP file holds the text tower too
            return lambda k: k if k.startswith("visual.") else None
        return strip
    if kind == "dit":
        from .keymap_dit import is_ignored_diffusers_key
        from .keymap_dit import official_key as dit_key

        # keys diffusers itself ignores on load (norm_added_q in early Wan2.1 I2V conversions)
        return lambda k: (
            None if (s := strip(k)) is None or is_ignored_diffusers_key(s) else dit_key(s)
        )
    if kind == "vae":
        from .keymap_vae import official_key as vae_key

        version = comp.config.get("_version", "2.1")
        return lambda k: vae_key(k, version)
    if kind == "t5":
        from .keymap_t5 import make_renamer

        return make_renamer(comp.reader().keys())
    raise CheckpointError(f"no key mapping for {kind} in {comp.naming} naming")


# ----------------------------------------------------------------------------- architecture


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in shapes if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def _need(shapes: dict[str, tuple[int, ...]], key: str, where: str, ndim: int) -> tuple[int, ...]:
    """The shape of tensor ``key``, which must have ``ndim`` non-zero dimensions."""
    if key not in shapes:
        raise CheckpointError(
            f"{where}: tensor {key} is missing; the file is incomplete or not a Wan model"
        )
    return _check_rank(shapes, key, where, ndim)


def _check_rank(
    shapes: dict[str, tuple[int, ...]], key: str, where: str, ndim: int
) -> tuple[int, ...]:
    shape = tuple(shapes[key])
    if len(shape) != ndim or not all(shape):
        raise CheckpointError(
            f"{where}: tensor {key} has shape {list(shape)}, expected "
            f"{ndim} non-zero dimensions; the file is corrupt or not a Wan model"
        )
    return shape


def _optional(
    shapes: dict[str, tuple[int, ...]], key: str, where: str, ndim: int
) -> tuple[int, ...] | None:
    return _check_rank(shapes, key, where, ndim) if key in shapes else None


def dit_config(shapes: dict[str, tuple[int, ...]], where: str, config: dict[str, Any]) -> DiTConfig:
    for marker, what in UNSUPPORTED_DIT_KEYS.items():
        if any(k.startswith(marker) for k in shapes):
            raise CheckpointError(
                f"{where}: this is {what}, which Wan Desktop does not support yet",
                remedy="Use a Wan2.1/Wan2.2 T2V, I2V, FLF2V or TI2V-5B model.",
            )
    pe = _need(shapes, "patch_embedding.weight", where, 5)  # [dim, in_dim, 1, 2, 2]
    dim, in_dim = pe[0], pe[1]
    head = _need(shapes, "head.head.weight", where, 2)  # [4·out_dim, dim]
    patch = (pe[2], pe[3], pe[4])
    out_dim = head[0] // (patch[0] * patch[1] * patch[2])
    layers = _count(shapes, r"blocks\.(\d+)\.")
    ffn_dim = _need(shapes, "blocks.0.ffn.0.weight", where, 2)[0]
    text_dim = _need(shapes, "text_embedding.0.weight", where, 2)[1]
    freq_dim = _need(shapes, "time_embedding.0.weight", where, 2)[1]
    heads = _config_int(config, ("num_heads", "num_attention_heads"), where)
    if heads is None:  # files without config: every released Wan DiT has head_dim 128
        if dim % 128:
            raise CheckpointError(
                f"{where}: a {dim}-wide diffusion model without a config.json: its number of "
                "attention heads cannot be told (released Wan models have 128-wide heads)",
                remedy="Use the model's diffusers or official folder (its config.json gives "
                "num_heads), or a released Wan model.",
            )
        heads = dim // 128
    img_proj = _optional(shapes, "img_emb.proj.0.weight", where, 1)  # LayerNorm [image_dim]
    emb_pos = _optional(shapes, "img_emb.emb_pos", where, 3)  # [1, 2·257, dim]
    image_dim = img_proj[0] if img_proj else None
    image_pos_len = emb_pos[1] if emb_pos else None
    if image_dim is not None:
        model_type = "flf2v" if image_pos_len else "i2v"
    elif in_dim == out_dim == 48:
        model_type = "ti2v"
    elif in_dim == out_dim:
        model_type = "t2v"
    elif in_dim == 2 * out_dim + 4:
        model_type = "i2v"  # Wan2.2 I2V-A14B: conditioning only through the extra channels
    else:
        raise CheckpointError(
            f"{where}: unknown Wan variant (in_dim={in_dim}, out_dim={out_dim}, dim={dim})"
        )
    if model_type in ("i2v", "flf2v") and in_dim != 2 * out_dim + 4:
        raise CheckpointError(
            f"{where}: image-to-video model with {in_dim} input channels, "
            f"expected {2 * out_dim + 4}"
        )
    if dim % heads:
        raise CheckpointError(f"{where}: dim {dim} is not divisible by {heads} heads")
    # the top-k ratio is not in the file: TurboDiffusion's inference default
    sla_topk: float | None = None
    if SLA_KEY in shapes:
        topk = config.get("sla_topk", 0.1)
        if not _is_number(topk) or not 0 < topk <= 1:
            raise _bad_value(_config_json(where), "sla_topk", "a number in (0, 1]", topk)
        sla_topk = float(topk)
    vace_in_dim, vace_layers = _vace_config(shapes, where, config, layers)
    if vace_in_dim is not None and model_type != "t2v":
        raise CheckpointError(f"{where}: a VACE branch on a {model_type} model (VACE is T2V)")
    return DiTConfig(
        vace_in_dim=vace_in_dim,
        vace_layers=vace_layers,
        sla_topk=sla_topk,
        model_type=model_type,
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=heads,
        num_layers=layers,
        in_dim=in_dim,
        out_dim=out_dim,
        text_dim=text_dim,
        freq_dim=freq_dim,
        patch_size=patch,
        image_dim=image_dim,
        image_pos_len=image_pos_len,
        inject_sample_info="fps_embedding.weight" in shapes,  # SkyReels-V2 DF-1.3B
    )


def _vace_config(
    shapes: dict[str, tuple[int, ...]], where: str, config: dict[str, Any], layers: int
) -> tuple[int | None, tuple[int, ...]]:
    """A VACE model's (vace_in_dim, vace_layers), or (None, ()). The main blocks that take a hint
    come from config.json (official ``vace_layers``, diffusers too); a single file has none, and
    its VACE blocks are spread evenly from block 0, every ``layers // n``-th (ComfyUI's rule, which
    gives the released 0, 2, …, 28 of 30 and 0, 5, …, 35 of 40)."""
    vpe = _optional(shapes, "vace_patch_embedding.weight", where, 5)
    n = _count(shapes, r"vace_blocks\.(\d+)\.")
    if vpe is None and not n:
        return None, ()
    if vpe is None or not n:
        raise CheckpointError(
            f"{where}: a VACE model needs vace_patch_embedding and vace_blocks; the file is "
            "incomplete"
        )
    listed = config.get("vace_layers")
    if listed is None:
        if n > layers:
            raise CheckpointError(f"{where}: {n} VACE blocks for {layers} blocks")
        vace_layers = tuple(range(0, layers, layers // n))[:n]
    elif isinstance(listed, list) and all(_is_whole(v) for v in listed):
        vace_layers = tuple(int(v) for v in listed)
    else:
        raise _bad_value(_config_json(where), "vace_layers", "a list of block indices", listed)
    ok = (
        len(vace_layers) == n
        and vace_layers[0] == 0
        and list(vace_layers) == sorted(set(vace_layers))
        and vace_layers[-1] < layers
    )
    if not ok:
        raise _bad_value(
            _config_json(where),
            "vace_layers",
            f"{n} increasing block indices from 0 below {layers} (one per VACE block)",
            listed if listed is not None else list(vace_layers),
        )
    return vpe[1], vace_layers


def vae_config(
    shapes: dict[str, tuple[int, ...]], where: str, config: dict[str, Any] | None = None
) -> VaeConfig:
    """The VAE's architecture from its tensors; the latent normalisation (per-channel mean / std)
    from its config.json when it has one (diffusers ``latents_mean`` / ``latents_std``), else the
    release's constants."""
    from ..variants import VAE21, VAE22

    z = _need(shapes, "conv2.weight", where, 5)[0]
    base = _need(shapes, "encoder.conv1.weight", where, 5)[0]
    dec_base = _need(shapes, "decoder.head.2.weight", where, 5)[1]
    if z == 16:
        cfg = replace(VAE21, base_dim=base, decoder_base_dim=dec_base)
    elif z == 48:
        cfg = replace(VAE22, base_dim=base, decoder_base_dim=dec_base)
    else:
        raise CheckpointError(f"{where}: unknown VAE with {z} latent channels (Wan uses 16 or 48)")
    config = config or {}
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is None and std is None:
        return cfg
    rule = f"a list of {z} finite numbers"
    if not (isinstance(mean, list) and len(mean) == z and all(_is_number(v) for v in mean)):
        raise _bad_value(_config_json(where), "latents_mean", rule, mean)
    if not (isinstance(std, list) and len(std) == z and all(_is_number(v) and v > 0 for v in std)):
        raise _bad_value(_config_json(where), "latents_std", rule + " > 0", std)
    return replace(
        cfg, latents_mean=tuple(float(v) for v in mean), latents_std=tuple(float(v) for v in std)
    )


def t5_config(shapes: dict[str, tuple[int, ...]], where: str) -> T5Config:
    vocab, dim = _need(shapes, "token_embedding.weight", where, 2)
    buckets, heads = _need(shapes, "blocks.0.pos_embedding.embedding.weight", where, 2)
    return T5Config(
        vocab_size=vocab,
        dim=dim,
        dim_attn=_need(shapes, "blocks.0.attn.q.weight", where, 2)[0],
        dim_ffn=_need(shapes, "blocks.0.ffn.fc1.weight", where, 2)[0],
        num_heads=heads,
        num_layers=_count(shapes, r"blocks\.(\d+)\."),
        num_buckets=buckets,
    )


def clip_config(
    shapes: dict[str, tuple[int, ...]], where: str, config: dict[str, Any]
) -> ClipConfig:
    pe = _need(shapes, "visual.patch_embedding.weight", where, 4)  # [dim, 3, p, p]
    dim, patch = pe[0], pe[2]
    tokens = _need(shapes, "visual.pos_embedding", where, 3)[1]  # [1, 1 + grid², dim]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise CheckpointError(
            f"{where}: CLIP position table of {tokens} tokens is not a class "
            "token plus a square grid of patches"
        )
    layers = _count(shapes, r"visual\.transformer\.(\d+)\.")
    mlp = _need(shapes, "visual.transformer.0.mlp.0.weight", where, 2)[0]  # [mlp_dim, dim]
    heads = _config_int(config, ("num_attention_heads",), where)
    if heads is None:  # ViT-H/14: 16 heads of 80
        if dim % 80:
            raise CheckpointError(
                f"{where}: a {dim}-wide CLIP image encoder without a config.json: its number of "
                "attention heads cannot be told (ViT-H/14 has 80-wide heads)",
                remedy="Use the CLIP ViT-H/14 image encoder of the Wan release.",
            )
        heads = dim // 80
    head = _optional(shapes, "visual.head", where, 2)  # [dim, out_dim]
    out_dim = head[1] if head else ClipConfig().out_dim
    # dim · mlp_ratio is spelt None, as in the presets: released models' configs equal them
    mlp_dim = None if mlp == dim * ClipConfig.mlp_ratio else mlp
    return ClipConfig(
        image_size=grid * patch,
        patch_size=patch,
        dim=dim,
        num_heads=heads,
        num_layers=layers,
        out_dim=out_dim,
        tap_layers=layers - 1,
        mlp_dim=mlp_dim,
    )


def identify_variant(
    dit: DiTConfig, experts: int, where: str, hints: SkyReelsHints | None = None
) -> Variant:
    """The released variant with this structure (its defaults and tasks), carrying the real configs.
    ``hints``: what the files' names and classes say of SkyReels-V2 (checkpoints/skyreels.py)."""
    from ..variants import SKYREELS_VARIANTS

    if (sky := skyreels_variant(dit, experts, hints or SkyReelsHints())) is not None:
        return replace(SKYREELS_VARIANTS[sky], dit=dit)
    if dit.is_vace:  # Wan2.1-VACE-1.3B / -14B, Wan2.2-VACE-Fun-A14B
        name = "vace-A14B" if experts == 2 else "vace-1.3B" if dit.dim <= 1536 else "vace-14B"
    elif dit.model_type == "ti2v":
        name = "ti2v-5B"
    elif experts == 2:
        name = {"t2v": "t2v-A14B", "i2v": "i2v-A14B"}.get(dit.model_type, "")
        if dit.has_image_embedding:
            name = ""
    elif dit.model_type == "t2v":
        name = "t2v-1.3B" if dit.dim <= 1536 else "t2v-14B"
    elif dit.model_type == "i2v" and dit.has_image_embedding:
        name = "i2v-14B"
    elif dit.model_type == "flf2v":
        name = "flf2v-14B"
    else:
        name = ""
    if not name:
        what = "two experts" if experts == 2 else "one model"
        raise CheckpointError(f"{where}: unknown Wan variant ({dit.model_type} with {what})")
    return replace(VARIANTS[name], dit=dit)


# ----------------------------------------------------------------------------- layouts


def _component(
    files: list[Path], kind: str, config: dict[str, Any] | None = None, prefix: str = ""
) -> ComponentFiles:
    reader = StateReader(files)
    keys = [k for k in reader if not is_side_tensor(k)]
    if prefix:
        keys = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
    try:
        naming = {"dit": dit_naming, "vae": vae_naming, "t5": t5_naming, "clip": clip_naming}[kind](
            keys
        )
    except CheckpointError as e:  # name the file that is not what it was given as
        raise CheckpointError(f"{files[0]}: {e.message}") from None
    config = dict(config or {})
    if kind == "vae":
        z = config.get("z_dim")
        if z is not None and not _is_whole(z):
            raise _bad_value(str(files[0].parent / "config.json"), "z_dim", "16 or 48", z)
        if z is None:
            z_keys = ("conv2.weight", "post_quant_conv.weight")
            z = next((reader.info(k).shape[0] for k in z_keys if k in reader), 16)
        config["_version"] = "2.2" if z == 48 else "2.1"
    return ComponentFiles(files=tuple(files), naming=naming, config=config, prefix=prefix)


def _official(root: Path) -> tuple[list[ComponentFiles], dict[str, Path | None]]:
    expert_dirs = [root / "high_noise_model", root / "low_noise_model"]
    if all(d.is_dir() for d in expert_dirs):
        dirs = expert_dirs
    elif (root / "config.json").is_file() or safetensors_shards(root) or official_dit_shards(root):
        dirs = [root]
    else:
        raise CheckpointError(
            f"{root}: not a Wan model folder (no model_index.json, config.json or "
            "diffusion_pytorch_model*.safetensors)"
        )
    experts = []
    for d in dirs:
        shards = safetensors_shards(d) or official_dit_shards(d)  # SkyReels: model*.safetensors
        if not shards:
            raise CheckpointError(f"{d}: no diffusion_pytorch_model*.safetensors")
        cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else {}
        experts.append(_component(shards, "dit", cfg))
    found: dict[str, Path | None] = {
        "vae": next((root / n for n in OFFICIAL_VAE if (root / n).is_file()), None),
        "t5": root / OFFICIAL_T5 if (root / OFFICIAL_T5).is_file() else None,
        "tokenizer": root / "google" / "umt5-xxl"
        if (root / "google" / "umt5-xxl").is_dir()
        else None,
        "clip": root / OFFICIAL_CLIP if (root / OFFICIAL_CLIP).is_file() else None,
    }
    return experts, found


def _diffusers(root: Path) -> tuple[list[ComponentFiles], dict[str, Any]]:
    index = _read_json(root / "model_index.json")
    experts = []
    for name in ("transformer", "transformer_2"):
        d = root / name
        if not _index_lists(index, name, root) or not d.is_dir():
            continue
        shards = safetensors_shards(d)
        if not shards:
            raise CheckpointError(f"{d}: no diffusion_pytorch_model*.safetensors")
        cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else {}
        experts.append(_component(shards, "dit", cfg))
    if not experts:
        raise CheckpointError(f"{root}: diffusers folder without a transformer/")
    parts: dict[str, Any] = {"index": index}
    for name, stem in (
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
        ("image_encoder", "model"),
    ):
        d = root / name
        if _index_lists(index, name, root) and d.is_dir():
            shards = safetensors_shards(d, stem)
            if not shards:
                raise CheckpointError(f"{d}: no {stem}*.safetensors")
            cfg = _read_json(d / "config.json") if (d / "config.json").is_file() else {}
            parts[name] = (shards, cfg)
    parts["tokenizer"] = root / "tokenizer" if (root / "tokenizer").is_dir() else None
    return experts, parts


def _index_lists(index: dict[str, Any], name: str, root: Path) -> bool:
    """Whether diffusers' model_index.json lists component ``name``: ``[library, class]``; ``null``
    or ``[null, null]`` when the pipeline has none. Anything else is a CheckpointError."""
    entry = index.get(name)
    if entry is None or entry == [None, None]:
        return False
    if not (
        isinstance(entry, list)
        and len(entry) == 2
        and all(isinstance(v, str) or v is None for v in entry)
    ):
        raise _bad_value(
            str(root / "model_index.json"), f'"{name}"', "[library, class] or null", entry
        )
    return True


def boundary_ratio(index: dict[str, Any], root: Path) -> float | None:
    """Wan2.2's expert boundary from model_index.json (None: not given)."""
    value = index.get("boundary_ratio")
    if value is None:
        return None
    if not _is_number(value) or not 0 < value < 1:
        raise _bad_value(
            str(root / "model_index.json"), "boundary_ratio", "a number between 0 and 1", value
        )
    return float(value)


def _expert_pair(file: Path) -> list[Path]:
    """A Wan2.2 A14B ComfyUI file and its sibling expert, ordered (high_noise, low_noise)."""
    name = file.name
    # TurboDiffusion: TurboWan2.2-I2V-A14B-high-720P.pth / …-low-720P.pth; QuantStack's GGUFs:
    # HighNoise/Wan2.2-T2V-A14B-HighNoise-Q4_K_M.gguf / LowNoise/…-LowNoise-… (a folder each)
    for mine, other in (
        ("high_noise", "low_noise"),
        ("low_noise", "high_noise"),
        ("-high-", "-low-"),
        ("-low-", "-high-"),
        ("HighNoise", "LowNoise"),
        ("LowNoise", "HighNoise"),
    ):
        if mine in name:
            sibling = file.with_name(name.replace(mine, other))
            folder = {"HighNoise": "LowNoise", "LowNoise": "HighNoise"}.get(file.parent.name)
            if not sibling.is_file() and folder is not None:
                sibling = file.parent.parent / folder / sibling.name
            if not sibling.is_file():
                raise CheckpointError(
                    f"{file}: Wan2.2 A14B needs both experts, but {sibling.name} is not beside it"
                )
            return [file, sibling] if "high" in mine.lower() else [sibling, file]
    return [file]


def _comfy_sibling(file: Path, folder: str, patterns: tuple[str, ...]) -> Path | None:
    """ComfyUI's models/<folder>/ beside models/diffusion_models/ (or the file's own folder)."""
    for d in (file.parent.parent / folder, file.parent):
        for pat in patterns:
            hits = sorted(d.glob(pat)) if d.is_dir() else []
            if hits:
                return hits[0]
    return None


def detect_model(
    path: str | Path,
    *,
    vae: str | Path | None = None,
    text_encoder: str | Path | None = None,
    tokenizer: str | Path | None = None,
    clip: str | Path | None = None,
) -> ModelFiles:
    """Identify layout, variant and component files of ``path`` (folder or ComfyUI file)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise CheckpointError(f"{root}: no such file or folder")
    notes: list[str] = []
    boundary: float | None = None
    tok: Path | None = None
    vae_c = t5_c = clip_c = None
    if root.is_dir() and (root / "model_index.json").is_file():
        fmt = "diffusers"
        experts, parts = _diffusers(root)
        boundary = boundary_ratio(parts["index"], root)
        if "vae" in parts:
            vae_c = _component(parts["vae"][0], "vae", parts["vae"][1])
        if "text_encoder" in parts:
            t5_c = _component(parts["text_encoder"][0], "t5", parts["text_encoder"][1])
        if "image_encoder" in parts:
            clip_c = _component(parts["image_encoder"][0], "clip", parts["image_encoder"][1])
        tok = parts["tokenizer"]
    elif root.is_dir():
        fmt = "official"
        experts, found = _official(root)
        vae_c = _component([found["vae"]], "vae") if found["vae"] else None
        t5_c = _component([found["t5"]], "t5") if found["t5"] else None
        clip_c = _component([found["clip"]], "clip") if found["clip"] else None
        tok = found["tokenizer"]
    elif root.suffix in (".safetensors", ".pth", ".pt"):  # .pth: TurboDiffusion's rCM files
        fmt = "comfyui"
        files = _expert_pair(root)
        experts = []
        for f in files:
            prefix = strip_prefix(StateReader([f]).keys())
            experts.append(_component([f], "dit", prefix=prefix))
    elif root.suffix.lower() == ".gguf":  # city96's GGUFs: ComfyUI key names, a file per expert
        from .gguf_reader import check_architecture

        fmt = "gguf"
        experts = []
        for f in _expert_pair(root):
            check_architecture(f, "dit")
            prefix = strip_prefix(StateReader([f]).keys())
            experts.append(_component([f], "dit", prefix=prefix))
    else:
        raise CheckpointError(f"{root}: not a model folder or a .safetensors diffusion-model file")

    where = str(root)
    dits = [dit_config(official_shapes(e, "dit"), str(e.files[0]), e.config) for e in experts]
    if len({d for d in dits}) > 1:
        raise CheckpointError(f"{where}: the two experts have different architectures")
    hints = hints_for(root, experts[0].config)  # SkyReels-V2: names and diffusers classes
    variant = identify_variant(dits[0], len(experts), where, hints)
    if dits[0].sla_topk is not None:
        notes.append(
            "TurboDiffusion rCM checkpoint: sparse-linear attention (SLA, top-k "
            f"{dits[0].sla_topk}), Linear patch embedding; use --preset turbo"
        )
    if variant.experts == 2 and boundary is None:
        boundary = variant.defaults.boundary

    # explicit component files win over what the layout holds
    if vae is not None:
        vae_c = _component([Path(vae).expanduser()], "vae")
    if text_encoder is not None:
        if Path(text_encoder).suffix.lower() == ".gguf":
            from .gguf_reader import check_architecture

            check_architecture(Path(text_encoder).expanduser(), "t5")
        t5_c = _component([Path(text_encoder).expanduser()], "t5")
    if tokenizer is not None:
        tok = Path(tokenizer).expanduser()
        if not tok.is_dir():
            raise CheckpointError(f"{tok}: tokenizer folder not found")
    if clip is not None:  # a Wan2.1 I2V / FLF2V GGUF or ComfyUI file's CLIP vision (ViT-H/14)
        clip_c = _component([Path(clip).expanduser()], "clip")
    if fmt in ("comfyui", "gguf"):
        want_vae = (
            ("wan2.2_vae*.safetensors", "wan_2.2_vae*.safetensors")
            if variant.vae.version == "2.2"
            else ("wan_2.1_vae*.safetensors", "wan2.1_vae*.safetensors")
        )
        if vae_c is None and (p := _comfy_sibling(root, "vae", want_vae)):
            vae_c = _component([p], "vae")
            notes.append(f"VAE found beside the model: {p}")
        if t5_c is None and (
            p := _comfy_sibling(root, "text_encoders", ("umt5*.safetensors", "umt5*.gguf"))
        ):
            t5_c = _component([p], "t5")
            notes.append(f"text encoder found beside the model: {p}")
        if (
            clip_c is None
            and variant.clip is not None
            and (p := _comfy_sibling(root, "clip_vision", ("clip_vision_h*.safetensors",)))
        ):
            clip_c = _component([p], "clip")

    if vae_c is not None:
        vcfg = vae_config(official_shapes(vae_c, "vae"), str(vae_c.files[0]), vae_c.config)
        if vcfg.z_dim != variant.vae.z_dim:
            raise CheckpointError(
                f"{vae_c.files[0]}: a Wan{vcfg.version} VAE (z={vcfg.z_dim}), but "
                f"{variant.name} needs the Wan{variant.vae.version} VAE",
                remedy=f"Pass the Wan{variant.vae.version} VAE file with --vae.",
            )
        variant = replace(variant, vae=vcfg)
    if t5_c is not None:
        tcfg = t5_config(official_shapes(t5_c, "t5"), str(t5_c.files[0]))
        if tcfg.dim != variant.dit.text_dim:
            raise CheckpointError(
                f"{t5_c.files[0]}: text encoder width {tcfg.dim} does not match the "
                f"DiT's text_dim {variant.dit.text_dim}"
            )
        variant = replace(variant, t5=tcfg)
    if clip_c is not None and variant.clip is not None:
        ccfg = clip_config(official_shapes(clip_c, "clip"), str(clip_c.files[0]), clip_c.config)
        if variant.dit.image_dim is not None and ccfg.dim != variant.dit.image_dim:
            raise CheckpointError(
                f"{clip_c.files[0]}: CLIP width {ccfg.dim} does not match the DiT's "
                f"image_dim {variant.dit.image_dim}"
            )
        variant = replace(variant, clip=ccfg)
    elif variant.clip is None:
        clip_c = None
    if variant.dit.image_pos_len is not None and variant.clip is not None:
        expected = 2 * (variant.clip.num_patches + 1)
        if variant.dit.image_pos_len != expected:
            raise CheckpointError(
                f"{where}: FLF2V position table of {variant.dit.image_pos_len} "
                f"tokens, expected {expected}"
            )
    return ModelFiles(
        path=root,
        format=fmt,
        variant=variant,
        experts=tuple(experts),
        vae=vae_c,
        text_encoder=t5_c,
        tokenizer=tok,
        image_encoder=clip_c,
        boundary=boundary,
        notes=tuple(notes),
    )
