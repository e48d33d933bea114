"""Detection of layout, variant and component files; one clear error for every bad checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.checkpoints.conftest import VARIANT_NAMES
from tests.reference_models import hf_umt5
from tests.tiny import TINY_T5, tiny_variant
from wan_desktop.checkpoints.detect import detect_model, identify_variant
from wan_desktop.checkpoints.load import load_dit, load_vae
from wan_desktop.errors import CheckpointError
from wan_desktop.variants import VARIANTS

# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_every_layout_detects_the_same_variant_and_files(tiny, name):
    m = tiny(name)
    want = tiny_variant("t2v-1.3B" if name == "t2v-14B" else name)
    comfy_dir = m.comfy_dit.parent.parent
    found = {
        "official": detect_model(m.official),
        "diffusers": detect_model(m.diffusers),
        "comfyui": detect_model(m.comfy_dit),  # components found in models/vae, text_encoders, …
        "comfyui-flags": detect_model(
            m.comfy_dit,
            vae=m.comfy_vae,
            text_encoder=m.comfy_t5,
            tokenizer=m.official / "google" / "umt5-xxl",
        ),
    }
    for label, mf in found.items():
        assert mf.format == label.split("-")[0]
        assert mf.variant == want, label  # name, DiTConfig, VaeConfig, T5Config, ClipConfig
        assert mf.boundary == (want.defaults.boundary if want.experts == 2 else None), label
        assert len(mf.experts) == want.experts
        assert (mf.image_encoder is not None) == (want.clip is not None), label

    two = want.experts == 2
    off = found["official"]
    dirs = (
        [m.official / "high_noise_model", m.official / "low_noise_model"] if two else [m.official]
    )
    assert [e.files for e in off.experts] == [
        (d / "diffusion_pytorch_model.safetensors",) for d in dirs
    ]
    assert off.vae.files == (m.official / f"Wan{want.vae.version}_VAE.pth",)
    assert off.text_encoder.files == (m.official / "models_t5_umt5-xxl-enc-bf16.pth",)
    assert off.tokenizer == m.official / "google" / "umt5-xxl"
    if want.clip is not None:
        assert off.image_encoder.files == (
            m.official / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
        )
    assert {e.naming for e in off.experts} == {"official"} and off.vae.naming == "official"
    assert off.text_encoder.naming == "official"

    dif = found["diffusers"]
    names = ["transformer", "transformer_2"] if two else ["transformer"]
    assert [e.files for e in dif.experts] == [
        (m.diffusers / n / "diffusion_pytorch_model.safetensors",) for n in names
    ]
    assert dif.vae.files == (m.diffusers / "vae" / "diffusion_pytorch_model.safetensors",)
    assert dif.text_encoder.files == (m.diffusers / "text_encoder" / "model.safetensors",)
    assert dif.tokenizer == m.diffusers / "tokenizer"
    if want.clip is not None:
        assert dif.image_encoder.files == (m.diffusers / "image_encoder" / "model.safetensors",)
    assert dif.experts[0].naming == "diffusers" and dif.vae.naming == "diffusers"
    assert dif.text_encoder.naming == "hf"

    com = found["comfyui"]
    high = m.comfy_dit
    files = [high, high.with_name(high.name.replace("high_noise", "low_noise"))] if two else [high]
    assert [e.files for e in com.experts] == [(f,) for f in files]
    assert all(e.prefix == "model.diffusion_model." for e in com.experts)
    assert com.vae.files == (comfy_dir / "vae" / m.comfy_vae.name,)
    assert com.text_encoder.files == (comfy_dir / "text_encoders" / "umt5_xxl_fp16.safetensors",)
    assert com.tokenizer is None  # embedded in the umT5 file
    if want.clip is not None:
        assert com.image_encoder.files == (comfy_dir / "clip_vision" / "clip_vision_h.safetensors",)
        assert com.image_encoder.naming == "hf"
    assert any("VAE found beside the model" in n for n in com.notes)
    assert found["comfyui-flags"].tokenizer == m.official / "google" / "umt5-xxl"
    assert not found["comfyui-flags"].notes  # nothing guessed when everything is given


def test_t2v_14B_and_1_3B_are_told_apart_by_width():
    """Wan2.1 T2V 1.3B and 14B differ only in width (1536 vs 5120) and depth, so the name (which
    selects the defaults: 832×480 vs 1280×720) comes from the width; the real config is carried
    either way. A tiny '14B' (dim 256) is therefore named t2v-1.3B, which is right: nothing in the
    file says otherwise, and its architecture is exactly what the detected config says."""
    for name, v in VARIANTS.items():
        got = identify_variant(v.dit, v.experts, "x")
        assert got.name == name and got.dit == v.dit
    tiny14 = tiny_variant("t2v-14B").dit
    assert identify_variant(tiny14, 1, "x").name == "t2v-1.3B"
    assert identify_variant(replace(tiny14, dim=2048, num_heads=16), 1, "x").name == "t2v-14B"
    with pytest.raises(CheckpointError, match=r"unknown Wan variant \(i2v with two experts\)"):
        identify_variant(tiny_variant("i2v-14B").dit, 2, "x")
    with pytest.raises(CheckpointError, match=r"unknown Wan variant \(flf2v with two experts\)"):
        identify_variant(tiny_variant("flf2v-14B").dit, 2, "x")


# ----------------------------------------------------------------------------- bad checkpoints


def _edit_dit(src: Path, dst: Path, edit) -> Path:
    """A copy of model folder ``src`` at ``dst`` whose DiT file went through ``edit(state)``."""
    shutil.copytree(src, dst)
    candidates = (
        dst / "diffusion_pytorch_model.safetensors",
        dst / "transformer" / "diffusion_pytorch_model.safetensors",
    )
    f = next(p for p in candidates if p.is_file())
    state = load_file(f)
    edit(state)
    save_file(state, f)
    return f


def _error(fn) -> str:
    with pytest.raises(CheckpointError) as e:
        fn()
    text = e.value.one_line()
    assert "Traceback" not in text and "\n" not in text
    return text


def test_missing_unexpected_and_misshapen_tensors_are_named(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    _edit_dit(m.official, tmp_path / "missing", lambda s: s.pop("blocks.1.ffn.2.bias"))
    msg = _error(lambda: load_dit(detect_model(tmp_path / "missing")))
    assert "diffusion_pytorch_model.safetensors" in msg
    assert "1 missing tensor(s) (blocks.1.ffn.2.bias)" in msg

    def drop_many(s):
        for k in [k for k in s if k.startswith("blocks.1.") and k != "blocks.1.modulation"]:
            del s[k]
        s["blocks.0.self_attn.extra.weight"] = torch.ones(3)

    _edit_dit(m.official, tmp_path / "many", drop_many)
    msg = _error(lambda: load_dit(detect_model(tmp_path / "many")))
    assert "missing tensor(s) (blocks.1." in msg and " more)" in msg  # a few named, rest counted
    assert "1 unexpected tensor(s) (blocks.0.self_attn.extra.weight)" in msg

    _edit_dit(
        m.official,
        tmp_path / "extra",
        lambda s: s.__setitem__("blocks.0.self_attn.extra.weight", torch.ones(3)),
    )
    msg = _error(lambda: load_dit(detect_model(tmp_path / "extra")))
    assert "diffusion_pytorch_model.safetensors" in msg
    assert "1 unexpected tensor(s) (blocks.0.self_attn.extra.weight)" in msg

    # a diffusers name our key map does not know: already at detection, with the file's path
    f = _edit_dit(
        m.diffusers,
        tmp_path / "extra_diffusers",
        lambda s: s.__setitem__("blocks.0.attn1.extra.weight", torch.ones(3)),
    )
    msg = _error(lambda: detect_model(tmp_path / "extra_diffusers"))
    assert str(f) in msg and "1 unexpected tensor(s) (blocks.0.attn1.extra.weight)" in msg

    _edit_dit(
        m.official,
        tmp_path / "shape",
        lambda s: s.__setitem__("blocks.1.ffn.0.weight", torch.ones(300, 256)),
    )
    msg = _error(lambda: load_dit(detect_model(tmp_path / "shape")))
    assert "diffusion_pytorch_model.safetensors" in msg
    assert "tensor blocks.1.ffn.0.weight has shape [300, 256], expected [320, 256]" in msg

    # the same through the ComfyUI prefix: the file's own key is named
    comfy = tmp_path / "comfy" / "wan_shape.safetensors"
    comfy.parent.mkdir()
    state = load_file(m.comfy_dit)
    state["model.diffusion_model.blocks.1.self_attn.o.weight"] = torch.ones(256, 128)
    save_file(state, comfy)
    msg = _error(lambda: load_dit(detect_model(comfy)))
    assert "wan_shape.safetensors" in msg
    assert (
        "tensor model.diffusion_model.blocks.1.self_attn.o.weight has shape [256, 128], "
        "expected [256, 256]"
    ) in msg


def test_truncated_and_garbage_files(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    cut = tmp_path / "wan_cut.safetensors"
    data = m.comfy_dit.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    msg = _error(lambda: detect_model(cut))
    assert str(cut) in msg and "file is truncated" in msg

    folder = tmp_path / "official"
    shutil.copytree(m.official, folder)
    vae = folder / "Wan2.1_VAE.pth"
    vae.write_bytes(vae.read_bytes()[:5000])
    msg = _error(lambda: detect_model(folder))
    assert str(vae) in msg and "truncated or corrupt" in msg

    t5 = folder / "models_t5_umt5-xxl-enc-bf16.pth"
    shutil.copy(m.official / "Wan2.1_VAE.pth", vae)
    t5.write_bytes(bytes(range(256)) * 64)
    msg = _error(lambda: detect_model(folder))
    assert str(t5) in msg and "cannot be read as a weights-only PyTorch file" in msg

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(bytes(range(256)) * 64)
    msg = _error(lambda: detect_model(junk))
    assert str(junk) in msg and "not a safetensors file, or its header is corrupt" in msg

    # a valid header whose data ends early is caught before any tensor is read
    shard = folder / "diffusion_pytorch_model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    shutil.copy(m.official / "models_t5_umt5-xxl-enc-bf16.pth", t5)
    msg = _error(lambda: detect_model(folder))
    assert str(shard) in msg and "truncated" in msg


def test_unsupported_and_unknown_models(tiny, tmp_path):
    m = tiny("t2v-1.3B")

    def vace_official(s):
        s["vace_blocks.0.before_proj.weight"] = torch.ones(256, 256)
        s["vace_patch_embedding.weight"] = torch.ones(256, 96, 1, 2, 2)

    # VACE is supported (tests/checkpoints/test_vace_detect.py): a VACE branch cut short is
    # detected from the headers and refused at load, naming what is missing
    from wan_desktop.checkpoints.load import load_dit

    _edit_dit(m.official, tmp_path / "vace", vace_official)
    files = detect_model(tmp_path / "vace")
    assert files.variant.name == "vace-1.3B" and files.variant.dit.vace_layers == (0,)
    msg = _error(lambda: load_dit(files))
    assert "vace_blocks.0.after_proj.weight" in msg or "missing" in msg

    def vace_diffusers(s):
        s["vace_blocks.0.proj_in.weight"] = torch.ones(256, 256)
        s["vace_patch_embedding.weight"] = torch.ones(256, 96, 1, 2, 2)

    _edit_dit(m.diffusers, tmp_path / "vace_diffusers", vace_diffusers)
    files = detect_model(tmp_path / "vace_diffusers")
    assert files.variant.name == "vace-1.3B"
    msg = _error(lambda: load_dit(files))
    assert "vace_blocks.0.after_proj.weight" in msg or "missing" in msg

    f = _edit_dit(
        m.official,
        tmp_path / "channels",
        lambda s: s.__setitem__("patch_embedding.weight", torch.ones(256, 20, 1, 2, 2)),
    )
    msg = _error(lambda: detect_model(tmp_path / "channels"))
    assert str(f) in msg and "unknown Wan variant (in_dim=20, out_dim=16" in msg

    # Wan2.1 I2V DiTs as a Wan2.2 expert pair: no such release
    i2v = tiny("i2v-14B")
    pair = tmp_path / "pair"
    for d in ("high_noise_model", "low_noise_model"):
        shutil.copytree(i2v.official, pair / d, ignore=shutil.ignore_patterns("*.pth", "google"))
    msg = _error(lambda: detect_model(pair))
    assert str(pair) in msg and "unknown Wan variant (i2v with two experts)" in msg

    empty = tmp_path / "empty"
    (empty / "stuff").mkdir(parents=True)
    (empty / "readme.txt").write_text("hello")
    msg = _error(lambda: detect_model(empty))
    assert str(empty) in msg and "not a Wan model folder" in msg

    gguf = tmp_path / "wan2.1-t2v-14b-Q4_K_M.gguf"  # a valid GGUF without tensors
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    msg = _error(lambda: detect_model(gguf))
    assert str(gguf) in msg and "no Wan diffusion-model tensors found" in msg

    msg = _error(lambda: detect_model(tmp_path / "nope"))
    assert "nope: no such file or folder" in msg


def test_mismatched_components(tiny, tmp_path):
    ti2v, t2v = tiny("ti2v-5B"), tiny("t2v-1.3B")
    msg = _error(lambda: detect_model(ti2v.comfy_dit, vae=t2v.comfy_vae))
    assert str(t2v.comfy_vae) in msg
    assert "a Wan2.1 VAE (z=16), but ti2v-5B needs the Wan2.2 VAE" in msg
    assert "--vae" in msg  # the remedy
    # and the other way round
    msg = _error(lambda: detect_model(t2v.comfy_dit, vae=ti2v.comfy_vae))
    assert "a Wan2.2 VAE (z=48), but t2v-1.3B needs the Wan2.1 VAE" in msg

    wide = hf_umt5(replace(TINY_T5, dim=48, dim_attn=48), seed=3).state_dict()
    t5 = tmp_path / "umt5_wide.safetensors"
    save_file(
        {k: v.contiguous() for k, v in wide.items() if k != "encoder.embed_tokens.weight"}, t5
    )
    msg = _error(lambda: detect_model(t2v.comfy_dit, text_encoder=t5))
    assert str(t5) in msg and "text encoder width 48 does not match the DiT's text_dim 32" in msg

    # a VAE file given as the text encoder
    msg = _error(lambda: detect_model(t2v.comfy_dit, text_encoder=t2v.comfy_vae))
    assert str(t2v.comfy_vae) in msg and "no umT5 encoder tensors found" in msg

    # a component absent from a lone ComfyUI file is an error only when it is needed
    lone = tmp_path / "a" / "b" / t2v.comfy_dit.name
    lone.parent.mkdir(parents=True)
    shutil.copy(t2v.comfy_dit, lone)
    mf = detect_model(lone)
    msg = _error(lambda: load_vae(mf))
    assert str(lone) in msg and "no vae found" in msg and "--vae" in msg


# ----------------------------------------------------------------------------- the CLI


def test_cli_reports_bad_checkpoints_in_one_line(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(bytes(range(256)) * 64)
    cut = tmp_path / "wan_cut.safetensors"
    cut.write_bytes(m.comfy_dit.read_bytes()[:10000])
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    empty = tmp_path / "empty"
    empty.mkdir()
    vace = tmp_path / "vace"
    _edit_dit(
        m.diffusers,
        vace,
        lambda s: s.__setitem__("vace_blocks.0.proj_in.weight", torch.ones(256, 256)),
    )
    cases = {
        junk: "header is corrupt",
        cut: "truncated",
        gguf: "GGUF",
        empty: "not a Wan model",
        vace: "VACE",
        tmp_path / "missing": "no such file",
    }
    procs = {
        p: subprocess.Popen(
            [sys.executable, "-m", "wan_desktop.cli", "inspect", str(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in cases
    }
    for p, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        lines = err.splitlines()
        assert proc.returncode == 2, (p, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert str(p) in lines[0] and cases[p] in lines[0], lines[0]
        assert "Traceback" not in err and out == ""


# ----------------------------------------------------------------------------- wrong-typed files


def _linked(src: Path, dst: Path, files: dict[str, str]) -> Path:
    """A copy of folder ``src`` made of symlinks, except ``files`` (relative path -> text)."""
    for item in src.rglob("*"):
        rel = item.relative_to(src)
        if item.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif str(rel) not in files:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(item)
    for rel, text in files.items():
        (dst / rel).write_text(text)
    return dst


def _with_index(m, tmp_path: Path, name: str, **changes) -> Path:
    index = json.loads((m.diffusers / "model_index.json").read_text())
    return _linked(m.diffusers, tmp_path / name, {"model_index.json": json.dumps(index | changes)})


@pytest.mark.parametrize(
    ("changes", "want"),
    [
        ({"transformer": []}, '"transformer" must be [library, class] or null, got []'),
        ({"transformer": 5}, '"transformer" must be [library, class] or null, got 5'),
        ({"vae": ["diffusers"]}, '"vae" must be [library, class] or null, got ["diffusers"]'),
        ({"text_encoder": {"a": 1}}, '"text_encoder" must be [library, class] or null'),
        ({"boundary_ratio": "abc"}, 'boundary_ratio must be a number between 0 and 1, got "abc"'),
        ({"boundary_ratio": 5}, "boundary_ratio must be a number between 0 and 1, got 5"),
        ({"boundary_ratio": True}, "boundary_ratio must be a number between 0 and 1, got true"),
        ({"boundary_ratio": [0.9]}, "boundary_ratio must be a number between 0 and 1, got [0.9]"),
    ],
)
def test_model_index_values_of_the_wrong_type(tiny, tmp_path, changes, want):
    folder = _with_index(tiny("t2v-1.3B"), tmp_path, "bad", **changes)
    msg = _error(lambda: detect_model(folder))
    assert str(folder / "model_index.json") in msg and want in msg
    assert "Fix " in msg and "model_index.json" in msg  # the remedy names what to fix


def test_model_index_boundary_ratio_is_read(tiny, tmp_path):
    folder = _with_index(tiny("t2v-A14B"), tmp_path, "ok", boundary_ratio=0.5)
    assert detect_model(folder).boundary == 0.5


def _narrow_dit_file(folder: Path, dim: int, heads: int) -> Path:
    """A ComfyUI-style single file (no config) of a DiT ``dim`` channels wide."""
    from tests.fixtures_models import comfy_dit_state
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.dit import WanModel

    cfg = replace(tiny_variant("t2v-1.3B").dit, dim=dim, num_heads=heads, ffn_dim=dim)
    with weights_on_meta():
        shapes = {k: tuple(v.shape) for k, v in WanModel(cfg).state_dict().items()}
    f = folder / f"wan_{dim}_fp16.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(comfy_dit_state({k: torch.zeros(s) for k, s in shapes.items()}), f)
    return f


def test_a_narrow_dit_without_config_cannot_guess_its_heads(tmp_path):
    """Released Wan DiTs have 128-wide heads; a 64- or 192-wide file without config.json is
    refused with a reason instead of dividing by zero heads (or guessing 1 head of 192)."""
    for dim in (64, 192):
        f = _narrow_dit_file(tmp_path / "comfy", dim, heads=1)
        msg = _error(lambda f=f: detect_model(f))
        assert str(f) in msg and f"a {dim}-wide diffusion model without a config.json" in msg
        assert "num_heads" in msg  # the remedy says what would tell


def test_config_json_values_of_the_wrong_type(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    config = json.loads((m.official / "config.json").read_text())
    for i, (value, shown) in enumerate((("abc", '"abc"'), (0, "0"), (2.5, "2.5"), (True, "true"))):
        folder = _linked(
            m.official,
            tmp_path / f"heads_{i}",
            {"config.json": json.dumps(config | {"num_heads": value})},
        )
        msg = _error(lambda folder=folder: detect_model(folder))
        assert str(folder / "config.json") in msg
        assert f"num_heads must be a positive whole number, got {shown}" in msg

    vae_cfg = json.loads((m.diffusers / "vae" / "config.json").read_text())
    for i, (key, value) in enumerate(
        (
            ("latents_mean", [0.0] * 3),
            ("latents_mean", "0"),
            ("latents_std", [0.0] * 16),
            ("latents_std", [float("nan")] * 16),
            ("z_dim", "16"),
        )
    ):
        folder = _linked(
            m.diffusers,
            tmp_path / f"vae_{i}",
            {"vae/config.json": json.dumps(vae_cfg | {key: value})},
        )
        msg = _error(lambda folder=folder: detect_model(folder))
        assert str(folder / "vae" / "config.json") in msg and f"{key} must be" in msg


# ----------------------------------------------------------------------------- VAE normalisation


def test_diffusers_vae_latent_mean_and_std_come_from_its_config(tiny, tmp_path):
    """A diffusers VAE whose config.json gives other latents_mean / latents_std than the release's
    constants: the decode uses the config's, as diffusers does."""
    diffusers = pytest.importorskip("diffusers")
    from tests.numerics import rel_err

    m = tiny("t2v-1.3B")
    vae_cfg = json.loads((m.diffusers / "vae" / "config.json").read_text())
    z_dim = len(vae_cfg["latents_mean"])
    mean = [0.25 * (i % 5) - 0.5 for i in range(z_dim)]
    std = [0.5 + 0.125 * (i % 7) for i in range(z_dim)]
    folder = _linked(
        m.diffusers,
        tmp_path / "vae_stats",
        {"vae/config.json": json.dumps(vae_cfg | {"latents_mean": mean, "latents_std": std})},
    )
    mf = detect_model(folder)
    assert mf.variant.vae.latents_mean == tuple(mean) and mf.variant.vae.latents_std == tuple(std)
    assert detect_model(m.diffusers).variant.vae.latents_mean == m.variant.vae.latents_mean

    z = torch.randn(1, z_dim, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    ref = diffusers.AutoencoderKLWan.from_pretrained(folder / "vae").eval()
    with torch.no_grad():
        want = ref.decode(
            z * torch.tensor(std).view(1, -1, 1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1, 1)
        ).sample
        got = load_vae(mf).decode(z)
        constants = load_vae(detect_model(m.diffusers)).decode(z)
    assert rel_err(got, want) <= 1e-5
    assert rel_err(constants, want) > 1e-2  # the constants would decode another video
