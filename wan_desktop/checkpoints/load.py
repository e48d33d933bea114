"""Load detected components into our modules: rename foreign keys to official ones, stream tensors
in one at a time, keep fp8 weights fp8, validate everything.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError
from .detect import (
    IGNORED_KEYS,
    IGNORED_SUFFIXES,
    INT8_SUFFIX,
    SCALE_SUFFIXES,
    ComponentFiles,
    ModelFiles,
    official_renamer,
    turbo_int8_dequant,
    turbo_int8_scale,
    turbo_patch_shape,
)
from .materialize import TensorSource, materialize, weights_on_meta

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import torch
    from torch import Tensor, nn

    from ..models.layers import Ops


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def component_sources(
    comp: ComponentFiles, kind: str
) -> tuple[dict[str, TensorSource], dict[str, TensorSource]]:
    """(official key -> source, owner module path -> per-layer fp8 scale source)."""
    reader = comp.reader()
    rename = official_renamer(comp, kind)
    sources: dict[str, TensorSource] = {}
    scales: dict[str, TensorSource] = {}
    unknown: list[str] = []

    def src(key: str) -> TensorSource:
        info = reader.info(key)
        return TensorSource(
            info.shape, info.dtype, info.file, functools.partial(reader.get, key), key
        )

    def dequantized(key: str, scale_key: str) -> Callable[[], Tensor]:
        return lambda: turbo_int8_dequant(reader.get(key), reader.get(scale_key))

    def reshaped(load: Callable[[], Tensor], shape: tuple[int, ...]) -> Callable[[], Tensor]:
        return lambda: load().reshape(shape)

    for key in reader:
        if key.rpartition(".")[2] in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES):
            continue
        if kind == "dit" and turbo_int8_scale(key, reader):
            continue  # read with its int8 weight below
        if kind == "dit" and key.endswith(INT8_SUFFIX):
            try:
                new = rename(key.removesuffix(INT8_SUFFIX) + ".weight")
            except KeyError:
                unknown.append(key)
                continue
            if new is not None:  # TurboDiffusion -quant file: dequantized to float at load
                scale_key = key.removesuffix(INT8_SUFFIX) + ".scale"
                if scale_key not in reader:
                    raise CheckpointError(f"{reader.info(key).file}: {key} has no {scale_key}")
                info = reader.info(key)
                sources[new] = TensorSource(
                    info.shape, "float32", info.file, dequantized(key, scale_key), key
                )
            continue
        scale_suffix = next((s for s in SCALE_SUFFIXES if key.endswith(s)), None)
        try:
            if scale_suffix is not None:
                owner = rename(key[: -len(scale_suffix)] + ".weight")
                if owner is not None:
                    scales[owner.removesuffix(".weight")] = src(key)
                continue
            new = rename(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is None:
            continue
        if new in sources:
            raise CheckpointError(
                f"{reader.info(key).file}: tensors {sources[new].key} and {key} both map to {new}"
            )
        sources[new] = src(key)
        if kind == "dit" and (conv := turbo_patch_shape(new, tuple(sources[new].shape))):
            s = sources[new]  # TurboDiffusion's Linear patch embedding, viewed as our Conv3d
            sources[new] = TensorSource(conv, s.dtype, s.file, reshaped(s.load, conv), s.key)
    if unknown:
        raise CheckpointError(
            f"{comp.files[0]}: {len(unknown)} tensor(s) this {kind} does not have "
            f"({_few(unknown)}); is it another model?"
        )
    return sources, scales


def check_float_weights(
    model: nn.Module,
    sources: Mapping[str, TensorSource],
    scales: Mapping[str, TensorSource],
    what: str,
) -> None:
    """Refuse, before anything is read, a file that stores an integer (or bool, complex) tensor
    where the module has a float weight: torch would load it and fail deep inside a convolution.
    Quantized int8 weights with their per-channel scale are dequantized by ``materialize``."""
    import torch

    expected = dict(model.state_dict(keep_vars=True))  # what materialize fills
    for name, src in sources.items():
        stored = getattr(torch, src.dtype, None)
        target = expected.get(name)
        if isinstance(stored, torch.dtype) and stored.is_floating_point:
            continue
        if target is None or not target.is_floating_point():
            continue
        owner, _, leaf = name.rpartition(".")
        if src.dtype == "int8" and leaf == "weight" and owner in scales:
            continue
        raise CheckpointError(
            f"{what} ({src.file.name}): tensor {src.key} is stored as "
            f"{src.dtype}, but {name} is a float weight; the file is corrupt or "
            "not a Wan model"
        )


def load_dit(
    files: ModelFiles,
    expert: int = 0,
    *,
    dtype: torch.dtype | None = None,
    ops: type[Ops] | None = None,
    keep_fp8: bool = True,
) -> nn.Module:
    """The DiT (or Wan2.2 expert ``expert``: 0 high-noise, 1 low-noise) on the CPU."""
    import torch

    from ..models.layers import Ops as DefaultOps
    from ..models.vace import make_dit

    comp = files.experts[expert]
    with weights_on_meta():
        model = make_dit(files.variant.dit, ops or DefaultOps)  # WanModel, or VaceWanModel
    sources, scales = component_sources(comp, "dit")
    if any(f.suffix.lower() == ".gguf" for f in comp.files):  # linears stay quantized
        from .gguf_load import keep_quantized

        sources = keep_quantized(model, sources, dtype)
    check_float_weights(model, sources, scales, "diffusion model")
    return materialize(
        model,
        sources,
        what=f"diffusion model {comp.files[0].name}",
        dtype=dtype or torch.float32,
        keep_fp8=keep_fp8,
        scales=scales,
    )


def require(files: ModelFiles, part: str) -> ComponentFiles:
    comp = getattr(files, part)
    if comp is None:
        flag = {
            "vae": "--vae FILE",
            "text_encoder": "--text-encoder FILE",
            "image_encoder": "--clip FILE (the CLIP vision file, clip_vision_h.safetensors)",
        }[part]
        raise CheckpointError(
            f"{files.path}: no {part.replace('_', ' ')} found",
            remedy=f"Give {flag}, or use a complete model folder.",
        )
    return comp


def load_t5(
    files: ModelFiles, *, dtype: torch.dtype | None = None, ops: type[Ops] | None = None
) -> nn.Module:
    """The umT5 encoder on the CPU."""
    import torch

    from ..models.layers import Ops as DefaultOps
    from ..models.t5 import T5Encoder

    comp = require(files, "text_encoder")
    with weights_on_meta():
        model = T5Encoder(files.variant.t5, ops or DefaultOps)
    sources, scales = component_sources(comp, "t5")
    if any(f.suffix.lower() == ".gguf" for f in comp.files):  # linears stay quantized
        from .gguf_load import keep_quantized

        sources = keep_quantized(model, sources, dtype)
    check_float_weights(model, sources, scales, "text encoder")
    return materialize(
        model,
        sources,
        what=f"text encoder {comp.files[0].name}",
        dtype=dtype or torch.float32,
        scales=scales,
    )


def load_clip(
    files: ModelFiles, *, dtype: torch.dtype | None = None, ops: type[Ops] | None = None
) -> nn.Module:
    """The CLIP image encoder (Wan2.1 I2V / FLF2V) on the CPU."""
    from .keymap_clip import load_clip_visual

    comp = require(files, "image_encoder")
    assert files.variant.clip is not None
    return load_clip_visual(comp.files, files.variant.clip, dtype=dtype, ops=ops)


def load_tokenizer(files: ModelFiles):
    """The umT5 tokenizer: the model's tokenizer folder, or the sentencepiece model ComfyUI embeds
    in its umT5 file (``spiece_model``)."""
    from ..text import Tokenizer

    if files.tokenizer is not None:
        return Tokenizer.from_folder(files.tokenizer)
    if files.text_encoder is not None:
        reader = files.text_encoder.reader()
        if "spiece_model" in reader:
            data = bytes(reader.get("spiece_model").numpy().tobytes())
            return Tokenizer.from_spiece_bytes(
                data, f"{files.text_encoder.files[0].name}:spiece_model"
            )
    raise CheckpointError(
        f"{files.path}: no tokenizer found",
        remedy="Give --tokenizer DIR (a folder with tokenizer.json or spiece.model, "
        "e.g. google/umt5-xxl).",
    )


def load_vae(files: ModelFiles, *, dtype: torch.dtype | None = None) -> nn.Module:
    """The Wan2.1 or Wan2.2 VAE on the CPU (fp32 unless ``dtype``)."""
    import torch

    comp = require(files, "vae")
    cfg = files.variant.vae
    from ..models.vae21 import WanVAE21
    from ..models.vae22 import WanVAE22

    vae: type[WanVAE21 | WanVAE22] = WanVAE22 if cfg.version == "2.2" else WanVAE21
    with weights_on_meta():
        model = vae(cfg)
    sources, scales = component_sources(comp, "vae")
    check_float_weights(model, sources, scales, "VAE")
    return materialize(
        model,
        sources,
        what=f"VAE {comp.files[0].name}",
        dtype=dtype or torch.float32,
        scales=scales,
    )


def load_taehv(path: str | Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """A TAEHV tiny VAE file (madebyollin/taehv ``taew2_1`` / ``taew2_2``, .safetensors or .pth; a
    decoder-only file too) on the CPU, its architecture read from the tensor shapes."""
    import torch

    from ..models.taehv import TAEHV, TaeConfig, fit_state_dict
    from .reader import StateReader

    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"tiny VAE file not found: {p}",
            remedy="Give the path of taew2_1.safetensors or taew2_2.safetensors.",
        )
    reader = StateReader([p])
    shapes = {k: tuple(reader.info(k).shape) for k in reader}
    cfg = TaeConfig.from_shapes(shapes, p.name)
    model = TAEHV(cfg)
    state = fit_state_dict(model, {k: reader.get(k) for k in reader})
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"{p.name}: not a TAEHV file we can load "
            f"({len(missing)} missing: {_few(missing)}; {len(unexpected)} "
            f"unexpected: {_few(unexpected)}; {len(bad)} of another shape: "
            f"{_few(bad)})"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(dtype or torch.float32).eval().requires_grad_(False)
