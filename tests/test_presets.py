"""Distilled recipes (wan_desktop/presets.py) through the real generation loop: lightx2v's 4-step
grid without an uncond pass, the Wan2.2 expert switch at the distilled step boundary, rCM's grid,
and the CLI's --preset / --lora / --tiny-vae on tiny ComfyUI files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.fakes import fake_components
from wan_desktop.errors import ConfigError
from wan_desktop.pipeline import generate
from wan_desktop.presets import PRESETS, get_preset, lightx2v_sigmas, rcm_sigmas
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import Sampler


def _run(name: str, preset: str = "fast", **kw):
    comps, parts = fake_components(name)
    req = get_preset(preset).apply(
        GenerationRequest(prompt="a cat", width=32, height=32, frames=5, **kw), comps.variant
    )
    req = req.resolve(comps.variant)
    generate(comps, req)
    return req, parts


def test_lightx2v_grid_is_their_step_list_on_the_shifted_1000_grid():
    # independent float64 formula: σ = shift·s / (1 + (shift − 1)·s) at s = t/1000
    want = [5 * s / (1 + 4 * s) for s in (1.0, 0.75, 0.5, 0.25)]
    got = lightx2v_sigmas((1000, 750, 500, 250), 5.0)
    assert np.allclose(got, want, rtol=1e-6, atol=0)
    assert [round(s * 1000, 2) for s in got] == [1000.0, 937.5, 833.33, 625.0]
    with pytest.raises(ConfigError):
        lightx2v_sigmas((250, 500), 5.0)


def test_fast_preset_is_4_dit_calls_without_uncond():
    req, parts = _run("t2v-1.3B")
    (den,) = parts["denoisers"]
    assert (req.steps, req.guidance, req.sampler) == (4, 1.0, Sampler.EULER)
    assert len(den.calls) == 4  # 4 DiT calls, not 2·4 (CFG) or 2·50
    assert all(c["shape"][0] == 1 for c in den.calls)  # batch 1: no uncond half
    fed = [float(c["timestep"].reshape(-1)[0]) for c in den.calls]
    assert fed == pytest.approx([1000.0, 937.5, 833.333, 625.0], abs=1e-3)
    assert parts["text"].calls[0]["prompts"] == ["a cat"]  # the negative prompt is never encoded
    # each step is lightx2v's x ← (x − σ·v) + σ_next·v on the fake's own velocity
    sig = [*req.sigmas, 0.0]
    for i in range(3):
        x, v_in = den.calls[i]["latents"], den.calls[i]
        v = 0.5 * x + v_in["context"].float().mean()
        nxt = (x - sig[i] * v) + sig[i + 1] * v
        assert torch.allclose(den.calls[i + 1]["latents"], nxt, atol=1e-5)


def test_user_values_override_the_preset():
    req, parts = _run("t2v-1.3B", steps=6, guidance=1.0)
    assert req.steps == 6 and len(parts["denoisers"][0].calls) == 6
    assert req.sigmas[0] == 1.0 and len(req.sigmas) == 6
    with pytest.raises(ConfigError, match="σ grid"):
        GenerationRequest(prompt="x", steps=3, sigmas=(1.0, 0.5)).resolve(
            fake_components()[0].variant
        )


@pytest.mark.parametrize("name", ["t2v-A14B", "i2v-A14B"])
def test_wan22_fast_switches_expert_at_the_distilled_step_boundary(name, tmp_path):
    kw = {}
    if name == "i2v-A14B":
        from PIL import Image

        img = tmp_path / "in.png"
        Image.new("RGB", (32, 32), (200, 30, 90)).save(img)
        kw["image"] = str(img)
    # shift 2 moves the timesteps (1000, 857, 667, 400): the variant's time boundary (875 / 900)
    # would switch after one step, lightx2v's boundary_step_index after two
    req, parts = _run(name, shift=2.0, **kw)
    high, low = parts["denoisers"]
    assert req.boundary_step == 2
    assert [round(float(c["timestep"].reshape(-1).max())) for c in high.calls] == [1000, 857]
    assert len(high.calls) == 2 and len(low.calls) == 2
    assert all(c["shape"][0] == 1 for c in high.calls + low.calls)


def test_rcm_grid_and_start_latent():
    want = [math.sin(t) / (math.sin(t) + math.cos(t)) for t in (math.atan(80), 1.5, 1.4, 1.0)]
    assert rcm_sigmas(4, 80.0) == pytest.approx(want, rel=1e-12)
    assert rcm_sigmas(1, 80.0) == pytest.approx(want[:1])
    req, parts = _run("t2v-1.3B", preset="turbo", seed=3)
    (den,) = parts["denoisers"]
    assert len(den.calls) == 4 and req.guidance == 1.0
    from wan_desktop.pipeline import initial_noise

    x0 = initial_noise(den.calls[0]["latents"].shape, 3) * float(np.float32(want[0]))
    assert torch.allclose(den.calls[0]["latents"], x0)  # TurboDiffusion starts at σ_0·noise
    assert float(den.calls[0]["timestep"][0]) == pytest.approx(want[0] * 1000, rel=1e-6)


def test_presets_are_data_with_labels():
    assert (
        PRESETS["fast"].label == "Fast (4 steps)" and PRESETS["quality"].label == "Quality (full)"
    )
    comps, _ = fake_components()
    base = GenerationRequest(prompt="x")
    assert get_preset("quality").apply(base, comps.variant) == base
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("ultra")


# ----------------------------------------------------------------------------- CLI, real tiny DiT


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.fixtures_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("distill"), "t2v-1.3B")


def _lora_file(path, seed=0):
    from safetensors.torch import save_file

    from tests.tiny import tiny_variant

    cfg = tiny_variant("t2v-1.3B").dit
    g = torch.Generator().manual_seed(seed)
    t = {}
    for b in range(cfg.num_layers):
        for m in ("self_attn.q", "cross_attn.o", "ffn.2"):
            i = cfg.ffn_dim if m == "ffn.2" else cfg.dim
            t[f"diffusion_model.blocks.{b}.{m}.lora_down.weight"] = torch.randn(4, i, generator=g)
            t[f"diffusion_model.blocks.{b}.{m}.lora_up.weight"] = (
                torch.randn(cfg.dim, 4, generator=g) * 0.05
            )
            t[f"diffusion_model.blocks.{b}.{m}.alpha"] = torch.tensor(4.0)
    save_file(t, str(path))
    return path


def _cli(args):
    import contextlib
    import io

    from wan_desktop.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def test_cli_fast_preset_with_lora_and_tiny_vae(tiny, tmp_path):
    from tests.taehv_files import random_tae_file

    lora = _lora_file(tmp_path / "lightx2v_4step_lora.safetensors")
    tae = tmp_path / "taew2_1.safetensors"
    random_tae_file(tae, z=16, patch=1)
    common = [
        "generate",
        "--model",
        tiny.comfy_dit,
        "--vae",
        tiny.comfy_vae,
        "--text-encoder",
        tiny.comfy_t5,
        "--prompt",
        "a red fox",
        "--size",
        "32x32",
        "--frames",
        "5",
        "--seed",
        "1",
        "--no-progress",
        "--preset",
        "fast",
    ]
    out = tmp_path / "frames"
    code, err = _cli([*common, "--lora", f"{lora}:0.5", "--tiny-vae", tae, "--out", out])
    assert code == 0, err
    meta = json.loads((out / "settings.json").read_text())
    assert meta["request"]["steps"] == 4 and meta["request"]["guidance"] == 1.0
    assert meta["request"]["sigmas"][:2] == pytest.approx([1.0, 0.9375])
    assert meta["options"]["preset"] == "fast" and meta["options"]["loras"] == [f"{lora}:0.5"]
    import hashlib

    sha = hashlib.sha256(lora.read_bytes()).hexdigest()[:12]
    assert meta["model"]["loras"] == [
        {"file": lora.name, "sha256": sha, "strength": 0.5, "expert": "high"}
    ]
    assert meta["model"]["tiny_vae"] == "taew2_1.safetensors"
    assert len(sorted(out.glob("*.png"))) == 5
    # strength 0 is the base model bit for bit, end to end; 0.5 changes the video
    base, zero = tmp_path / "base", tmp_path / "zero"
    assert _cli([*common, "--tiny-vae", tae, "--out", base])[0] == 0
    assert _cli([*common, "--lora", f"{lora}:0", "--tiny-vae", tae, "--out", zero])[0] == 0
    frames = {d: [f.read_bytes() for f in sorted(d.glob("*.png"))] for d in (base, zero, out)}
    assert frames[zero] == frames[base] and frames[out] != frames[base]
    # bad LoRA inputs: one line, exit 2, nothing written
    from safetensors.torch import save_file

    wrong = tmp_path / "wan14b_lora.safetensors"  # a LoRA for a wider model
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 5120),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(5120, 4),
        },
        str(wrong),
    )
    for extra, needle in (
        (["--lora", tmp_path / "missing.safetensors"], "LoRA file not found"),
        (["--lora", wrong], "blocks.0.self_attn.q.lora_down.weight gives a"),
        (["--lora", f"{lora}:loud"], "not a number"),
        (["--lora-low", lora], "low-noise expert (--lora-low) needs Wan2.2"),
    ):
        bad_out = tmp_path / "bad.mp4"
        code, err = _cli([*common, *extra, "--out", bad_out])
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
        assert not bad_out.exists()


# ----------------------------------------------------------------------------- distilled files


def _lightx2v_file(tiny, flavour: str):
    """A lightx2v distilled DiT as their converter writes it (ModelTC/LightX2V@f8aee98
    tools/convert/converter.py): official names, no prefix; "bf16"; "scaled_fp8_e4m3" / "int8":
    the self_attn / cross_attn / ffn weights quantized per output channel with an fp32
    ``<name>.weight_scale`` of shape [out, 1] beside them; "comfyui_fp8" / "comfyui_int8" (their
    --comfyui_mode): one scale per tensor as ``<module>.scale_weight`` plus the ``scaled_fp8``
    marker."""
    from safetensors.torch import save_file

    from tests.fixtures_models import official_dit_state

    state = official_dit_state(tiny.refs["transformer"])
    out, deq = {}, {}
    for k, v in state.items():
        parts = k.split(".")
        quant = (
            flavour != "bf16"
            and k.endswith(".weight")
            and v.dim() == 2
            and len(parts) > 2
            and parts[2] in ("self_attn", "cross_attn", "ffn")
        )
        if not quant:
            out[k] = v.to(torch.bfloat16)
            deq[k] = out[k].float()
            continue
        w = v.float()
        comfy = flavour.startswith("comfyui")
        amax = w.abs().max() if comfy else w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5)
        if flavour.endswith("int8"):
            scale = amax / 127
            q = torch.clamp(torch.round(w / scale), -128, 127).to(torch.int8)
        else:
            scale = amax / 448.0
            q = (w / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        out[k] = q
        out[k.removesuffix(".weight") + ".scale_weight" if comfy else k + "_scale"] = scale.float()
        deq[k] = q.float() * scale
    if flavour.startswith("comfyui"):
        out["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    path = tiny.comfy_dit.parent / f"wan2.1_t2v_tiny_{flavour}_lightx2v_4step.safetensors"
    save_file(out, str(path))
    return path, deq


@pytest.mark.parametrize(
    "flavour", ["bf16", "scaled_fp8_e4m3", "int8", "comfyui_fp8", "comfyui_int8"]
)
def test_lightx2v_distilled_files_load(tiny, flavour):
    from tests.numerics import rel_err
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    path, deq = _lightx2v_file(tiny, flavour)
    files = detect_model(path)
    assert files.format == "comfyui" and files.vae is not None  # components found beside it
    flat = load_dit(files, dtype=torch.float32, keep_fp8=False)
    for k, v in flat.state_dict().items():
        assert torch.equal(v, deq[k].to(v.dtype)), k
    # fp8 / int8 stay stored and are dequantized per call, computing in bf16 (models/dit.py's
    # rule for quantized storage): the same numbers as bf16 weights dequantized at load
    kept = load_dit(files, dtype=torch.bfloat16)
    flat = load_dit(files, dtype=torch.bfloat16, keep_fp8=False)
    q = kept.blocks[0].self_attn.q
    if flavour != "bf16":
        assert q.weight.dtype == (torch.int8 if "int8" in flavour else torch.float8_e4m3fn)
        assert q.scale_weight.numel() == (1 if "comfyui" in flavour else q.weight.shape[0])
    x = torch.randn(1, 16, 2, 4, 4)
    ctx = torch.randn(1, tiny.variant.dit.text_len, tiny.variant.dit.text_dim)
    t = torch.tensor([625.0])
    with torch.no_grad():
        err = rel_err(kept(x, t, ctx), flat(x, t, ctx))
    print(f"lightx2v {flavour}: stored vs dequantized-at-load rel err {err:.1e}")
    assert err < 1e-5
