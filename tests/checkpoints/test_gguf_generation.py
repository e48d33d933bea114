"""A whole generation from GGUF files (DiT(s) and umT5, linears kept quantized) equals the generation
from the same weights dequantized by the ``gguf`` package into safetensors files (fp32, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file
from wan_desktop.engines.factory import build_components, detect_for_options

from tests.gguf_files import dequantized_state, dit_gguf, t5_gguf
from tests.numerics import psnr_uint8
from wan_desktop.checkpoints.gguf_reader import t5_name
from wan_desktop.models.quant_linear import QuantLinear
from wan_desktop.options import RunOptions
from wan_desktop.pipeline import generate
from wan_desktop.request import GenerationRequest

pytest.importorskip("gguf")


def _generate(options: RunOptions, request: GenerationRequest):
    variant, files = detect_for_options(options)
    components, device = build_components(options, variant, files)
    frames = generate(components, request.resolve(variant), device=device)
    return frames, components


def _dequantized_files(dit: Path, t5: Path, experts: int) -> tuple[Path, Path]:
    """The GGUF weights as fp32 safetensors files (the Wan2.2 pair keeps its expert names)."""
    out = dit.parent.parent / "dequantized"
    out.mkdir(exist_ok=True)
    files = [dit] + (
        [dit.with_name(dit.name.replace("high_noise", "low_noise"))] if experts == 2 else []
    )
    for f in files:
        save_file(dequantized_state(f), out / (f.stem + ".safetensors"))
    t5_out = out / (t5.stem + ".safetensors")
    save_file({t5_name(k): v for k, v in dequantized_state(t5).items()}, t5_out)
    return out / (dit.stem + ".safetensors"), t5_out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["t2v-1.3B", "t2v-A14B"])
@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0"])
def test_generation_from_gguf_equals_the_dequantized_safetensors(tiny, name, qtype):
    m = tiny(name)
    dit, t5 = dit_gguf(m, qtype), t5_gguf(m)
    ref_dit, ref_t5 = _dequantized_files(dit, t5, m.variant.experts)
    request = GenerationRequest(
        prompt="a red fox in the snow",
        width=64,
        height=32,
        frames=9,
        steps=4,
        shift=3.0,
        guidance=5.0,
        seed=7,
    )
    common = dict(device="cpu", dtype="float32", vae=str(m.comfy_vae), tokenizer=str(m.tokenizer))
    ours, components = _generate(
        RunOptions(model=str(dit), text_encoder=str(t5), **common), request
    )
    ref, ref_components = _generate(
        RunOptions(model=str(ref_dit), text_encoder=str(ref_t5), **common), request
    )
    assert components.info["format"] == "gguf" and ref_components.info["format"] == "comfyui"
    assert len(components.denoisers) == m.variant.experts
    for den in components.denoisers:  # the runs really used quantized linears
        assert any(isinstance(mod, QuantLinear) for mod in den.model.modules())
    assert ours.shape == ref.shape == (9, 32, 64, 3)
    p = psnr_uint8(ours, ref)
    print(f"{name} {qtype}: PSNR {p:.1f} dB, GGUF vs dequantized safetensors")
    assert p >= 60.0
