"""``wan-desktop inspect``: JSON from file headers — format, variant, experts, component files,
dtypes, parameter counts (equal to the loaded modules'), missing components, scaled fp8."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.checkpoints.conftest import PREFIX
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.inspect import inspect_model
from wan_desktop.checkpoints.load import load_clip, load_dit, load_t5, load_vae


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _module_params(path, **kw) -> dict[str, object]:
    mf = detect_model(path, **kw)
    out: dict[str, object] = {"dit": [_params(load_dit(mf, e)) for e in range(len(mf.experts))]}
    if mf.vae is not None:
        out["vae"] = _params(load_vae(mf))
    if mf.text_encoder is not None:
        out["text_encoder"] = _params(load_t5(mf))
    if mf.image_encoder is not None:
        out["image_encoder"] = _params(load_clip(mf))
    return out


@pytest.mark.parametrize("name", ["i2v-14B", "t2v-A14B", "ti2v-5B"])
def test_inspect_every_layout(tiny, name):
    m = tiny(name)
    v = m.variant
    two = v.experts == 2
    comfy_dir = m.comfy_dit.parent.parent
    high = m.comfy_dit
    cases = {
        "official": (
            m.official,
            {
                "dit": [
                    d / "diffusion_pytorch_model.safetensors"
                    for d in (
                        [m.official / "high_noise_model", m.official / "low_noise_model"]
                        if two
                        else [m.official]
                    )
                ],
                "vae": m.official / f"Wan{v.vae.version}_VAE.pth",
                "text_encoder": m.official / "models_t5_umt5-xxl-enc-bf16.pth",
                "image_encoder": m.official
                / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
                "tokenizer": str(m.official / "google" / "umt5-xxl"),
            },
        ),
        "diffusers": (
            m.diffusers,
            {
                "dit": [
                    m.diffusers / t / "diffusion_pytorch_model.safetensors"
                    for t in (["transformer", "transformer_2"] if two else ["transformer"])
                ],
                "vae": m.diffusers / "vae" / "diffusion_pytorch_model.safetensors",
                "text_encoder": m.diffusers / "text_encoder" / "model.safetensors",
                "image_encoder": m.diffusers / "image_encoder" / "model.safetensors",
                "tokenizer": str(m.diffusers / "tokenizer"),
            },
        ),
        "comfyui": (
            m.comfy_dit,
            {
                "dit": [high]
                + ([high.with_name(high.name.replace("high_noise", "low_noise"))] if two else []),
                "vae": comfy_dir / "vae" / m.comfy_vae.name,
                "text_encoder": comfy_dir / "text_encoders" / "umt5_xxl_fp16.safetensors",
                "image_encoder": comfy_dir / "clip_vision" / "clip_vision_h.safetensors",
                "tokenizer": "embedded in umt5_xxl_fp16.safetensors",
            },
        ),
    }
    for fmt, (path, files) in cases.items():
        info = json.loads(json.dumps(inspect_model(path)))  # plain JSON all the way down
        assert info["format"] == fmt
        assert info["variant"] == v.name and info["family"] == v.family
        assert info["experts"] == v.experts
        assert info["boundary"] == (v.defaults.boundary if two else None)
        assert info["missing"] == []
        assert info["dit_config"]["dim"] == v.dit.dim
        assert info["dit_config"]["in_dim"] == v.dit.in_dim
        comps = info["components"]
        assert set(comps) == {"dit", "vae", "text_encoder", "tokenizer"} | (
            {"image_encoder"} if v.clip else set()
        )
        assert [c["files"] for c in comps["dit"]] == [[str(f)] for f in files["dit"]]
        if two:
            assert [c["expert"] for c in comps["dit"]] == ["high_noise", "low_noise"]
        for part in ("vae", "text_encoder") + (("image_encoder",) if v.clip else ()):
            assert comps[part]["files"] == [str(files[part])], (fmt, part)
        assert comps["tokenizer"] == files["tokenizer"]
        # parameter counts from the headers == what the loaded modules hold
        modules = _module_params(path)
        assert [c["parameters"] for c in comps["dit"]] == modules["dit"], fmt
        for part in ("vae", "text_encoder") + (("image_encoder",) if v.clip else ()):
            assert comps[part]["parameters"] == modules[part], (fmt, part)
        for part, c in [
            *(("dit", d) for d in comps["dit"]),
            ("vae", comps["vae"]),
            ("text_encoder", comps["text_encoder"]),
        ]:
            assert sum(c["dtypes"].values()) == c["parameters"], (fmt, part)
            assert c["scaled_fp8"] is False
            assert c["size_bytes"] == sum(Path(f).stat().st_size for f in c["files"])
        want_dit_dtype = "float16" if fmt == "comfyui" else "float32"
        assert all(d["dtypes"] == {want_dit_dtype: d["parameters"]} for d in comps["dit"]), fmt
        # the umT5 file's embedded tokenizer (uint8) is not counted as weights
        assert comps["text_encoder"]["dtypes"] == {"float32": modules["text_encoder"]}
        print(
            f"{name} {fmt}: dit {modules['dit']} vae {modules['vae']} "
            f"t5 {modules['text_encoder']} params match the headers"
        )


@pytest.mark.parametrize("precision", ["fp8_scaled", "fp8", "bf16"])
def test_inspect_comfy_precisions(tiny, comfy_file, precision):
    m = tiny("i2v-14B")
    path = comfy_file(m, precision)
    info = inspect_model(path)
    (dit,) = info["components"]["dit"]
    file = load_file(path)
    fp8 = sum(t.numel() for t in file.values() if t.dtype == torch.float8_e4m3fn)
    total = _params(load_dit(detect_model(path)))
    assert dit["parameters"] == total
    if precision.startswith("fp8"):
        assert dit["dtypes"] == {"float16": total - fp8, "float8_e4m3fn": fp8}
        assert fp8 == sum(
            t.numel() for k, t in file.items() if k.startswith(PREFIX + "blocks.") and t.dim() == 2
        )
    else:
        assert dit["dtypes"] == {"bfloat16": total}
    assert dit["scaled_fp8"] is (precision == "fp8_scaled")
    print(f"{precision}: {dit['dtypes']}, scaled_fp8={dit['scaled_fp8']}")


def test_inspect_lone_comfy_file_lists_what_is_missing(tiny, tmp_path):
    for name in ("t2v-1.3B", "i2v-14B"):
        m = tiny(name)
        lone = tmp_path / name / "models" / "diffusion_models" / m.comfy_dit.name
        lone.parent.mkdir(parents=True)
        shutil.copy(m.comfy_dit, lone)
        info = inspect_model(lone)
        want = ["vae", "text_encoder", "tokenizer"] + (["image_encoder"] if m.variant.clip else [])
        assert info["missing"] == want
        assert all(info["components"][k] is None for k in want)
        assert info["variant"] == name and info["format"] == "comfyui"
        # given a text encoder without an embedded tokenizer: only the tokenizer stays missing
        t5 = tmp_path / name / "models" / "text_encoders" / "umt5_plain.safetensors"
        t5.parent.mkdir()
        save_file({k: v for k, v in load_file(m.comfy_t5).items() if k != "spiece_model"}, t5)
        info = inspect_model(lone, text_encoder=t5, vae=m.comfy_vae)
        assert info["missing"] == ["tokenizer"] + (["image_encoder"] if m.variant.clip else [])


def test_cli_inspect_prints_the_json(tiny):
    m = tiny("t2v-A14B")
    tok = m.official / "google" / "umt5-xxl"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "wan_desktop.cli",
            "inspect",
            str(m.comfy_dit),
            "--vae",
            str(m.comfy_vae),
            "--text-encoder",
            str(m.comfy_t5),
            "--tokenizer",
            str(tok),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info == json.loads(
        json.dumps(
            inspect_model(m.comfy_dit, vae=m.comfy_vae, text_encoder=m.comfy_t5, tokenizer=tok)
        )
    )
    assert info["variant"] == "t2v-A14B" and info["experts"] == 2 and info["missing"] == []
    assert info["components"]["tokenizer"] == str(tok)
