"""``wan-desktop inspect``: what a model folder or file holds, from file headers only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .detect import ComponentFiles, ModelFiles, detect_model, is_side_tensor, official_renamer


def _used(comp: ComponentFiles, kind: str) -> Callable[[str], bool]:
    """Whether a file key becomes a model tensor (not an embedded tokenizer, a tied copy, the text
    tower of the official CLIP file, or another part of an all-in-one file)."""
    if kind == "clip":
        if comp.naming == "hf":
            from .keymap_clip import is_ignored_hf_key

            return lambda k: not is_ignored_hf_key(k)
        return lambda k: k.startswith("visual.")
    rename = official_renamer(comp, kind)

    def used(key: str) -> bool:
        try:
            return rename(key) is not None
        except KeyError:  # unknown to the key map: counted (loading reports it)
            return True

    return used


def describe_component(comp: ComponentFiles, kind: str) -> dict[str, Any]:
    """kind: "dit" | "vae" | "t5" | "clip"."""
    reader = comp.reader()
    used = _used(comp, kind)
    dtypes: Counter[str] = Counter()
    params = 0
    size = 0
    for key in reader:
        info = reader.info(key)
        if is_side_tensor(key) or not used(key):
            continue
        dtypes[info.dtype] += info.numel
        params += info.numel
    for f in comp.files:
        size += f.stat().st_size
    quantized = any(k.endswith((".scale_weight", ".weight_scale")) for k in reader)
    out = {
        "files": [str(f) for f in comp.files],
        "naming": comp.naming,
        "parameters": params,
        "dtypes": {k: v for k, v in dtypes.most_common()},
        "scaled_fp8": quantized,
        "size_bytes": size,
    }
    if any(f.suffix.lower() == ".gguf" for f in comp.files):  # the stored GGML types
        from .gguf_reader import gguf_types

        out["gguf_types"] = gguf_types(comp.files)  # "dtypes": as loaded (dequantized)
    return out


def inspect_files(m: ModelFiles) -> dict[str, Any]:
    comps: dict[str, Any] = {
        "dit": [describe_component(e, "dit") for e in m.experts],
        "vae": describe_component(m.vae, "vae") if m.vae else None,
        "text_encoder": describe_component(m.text_encoder, "t5") if m.text_encoder else None,
        "tokenizer": str(m.tokenizer) if m.tokenizer else None,
    }
    if m.variant.clip is not None:
        comps["image_encoder"] = (
            describe_component(m.image_encoder, "clip") if m.image_encoder else None
        )
    if len(m.experts) == 2:
        comps["dit"][0]["expert"] = "high_noise"
        comps["dit"][1]["expert"] = "low_noise"
    missing = [k for k, v in comps.items() if v is None]
    if (
        comps["tokenizer"] is None
        and m.text_encoder is not None
        and "spiece_model" in m.text_encoder.reader()
    ):
        comps["tokenizer"] = f"embedded in {m.text_encoder.files[0].name}"
        missing.remove("tokenizer")
    v = m.variant
    return {
        "path": str(m.path),
        "format": m.format,
        "variant": v.name,
        "family": v.family,
        "tasks": [t.value for t in v.tasks],
        "experts": len(m.experts),
        "boundary": m.boundary,
        "dit_config": {k: val for k, val in asdict(v.dit).items()},
        # VACE models: the VACE blocks and the main blocks their hints enter (vace_layers)
        "vace": {
            "blocks": len(v.dit.vace_layers),
            "layers": list(v.dit.vace_layers),
            "in_dim": v.dit.vace_in_dim,
        }
        if v.dit.is_vace
        else None,
        # SkyReels-V2 DF models: the recommended long-video settings (base_frames, overlap, ...)
        "diffusion_forcing": asdict(v.forcing) if v.forcing is not None else None,
        "components": comps,
        "missing": missing,
        "notes": list(m.notes),
    }


def inspect_model(path: str | Path, **overrides: Any) -> dict[str, Any]:
    return inspect_files(detect_model(path, **overrides))
