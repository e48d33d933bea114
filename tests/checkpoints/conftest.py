"""Tiny models in the three layouts, built once per session, plus ComfyUI diffusion-model files in
other precisions written beside the fp16 ones (``comfy_file(model, "fp32")``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.fixtures_models import TinyModel, build_tiny_model, comfy_dit_state, official_dit_state

VARIANT_NAMES = ("t2v-1.3B", "t2v-14B", "i2v-14B", "flf2v-14B", "t2v-A14B", "i2v-A14B", "ti2v-5B")
PREFIX = "model.diffusion_model."


def reference_dit_states(model: TinyModel) -> list[dict]:
    """The official-named fp32 weights of each expert, straight from the diffusers reference modules
    (high-noise first), independent of any file we wrote."""
    refs = [model.refs["transformer"]] + (
        [model.refs["transformer_2"]] if "transformer_2" in model.refs else []
    )
    return [official_dit_state(r) for r in refs]


def write_comfy_file(model: TinyModel, precision: str, prefix: str = PREFIX) -> Path:
    """ComfyUI diffusion-model file(s) of ``model`` in ``precision`` (fp32 / fp16 / bf16 / fp8 /
    fp8_scaled) beside the fp16 release; returns the (high-noise) file. Written once."""
    folder = model.comfy_dit.parent
    tag = precision + ("" if prefix == PREFIX else "_noprefix" if not prefix else "_" + prefix[:-1])
    if model.variant.experts == 2:
        names = [f"wan2.2_tiny_{e}_14B_{tag}.safetensors" for e in ("high_noise", "low_noise")]
    else:
        names = [f"wan_tiny_{model.name}_{tag}.safetensors"]
    for name, state in zip(names, reference_dit_states(model), strict=True):
        if not (folder / name).is_file():
            save_file(comfy_dit_state(state, precision, prefix), folder / name)
    return folder / names[0]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Callable[[str], TinyModel]:
    """tiny(name) -> the TinyModel of that variant (built on first use, ~0.2 s each)."""
    cache: dict[str, TinyModel] = {}

    def get(name: str) -> TinyModel:
        if name not in cache:
            cache[name] = build_tiny_model(tmp_path_factory.mktemp(name.replace(".", "_")), name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def comfy_file() -> Callable[..., Path]:
    return write_comfy_file
