"""SkyReels-V2 models are detected from all three layouts, named by ``inspect``, and loaded with
their fps embedding; Wan releases with the same structure stay Wan releases."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.skyreels_models import build_tiny_skyreels
from wan_desktop.checkpoints.detect import detect_model, identify_variant
from wan_desktop.checkpoints.skyreels import SkyReelsHints, hints_for
from wan_desktop.variants import SKYREELS_VARIANTS, VARIANTS

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def df13(tmp_path_factory):
    return build_tiny_skyreels(tmp_path_factory.mktemp("df13"), "skyreels-v2-df-1.3B-540P")


@pytest.fixture(scope="module")
def df14_720(tmp_path_factory):
    return build_tiny_skyreels(tmp_path_factory.mktemp("df14"), "skyreels-v2-df-14B-720P")


def _layouts(m) -> dict[str, dict[str, Path]]:
    return {
        "diffusers": {"path": m.diffusers},
        "official": {"path": m.official},
        "comfyui": {"path": m.comfy_dit, "vae": m.comfy_vae, "text_encoder": m.comfy_t5},
    }


def test_df_1_3B_is_detected_in_every_layout_with_its_fps_embedding(df13):
    for layout, kw in _layouts(df13).items():
        found = detect_model(**kw)
        assert found.format == layout
        assert found.variant.name == "skyreels-v2-df-1.3B-540P", layout
        assert found.variant.dit.inject_sample_info
        assert found.variant.forcing is not None and found.variant.forcing.base_frames == 97
        assert found.variant.defaults.steps == 30 and found.variant.defaults.shift == 8.0


def test_df_14B_720P_is_told_by_its_names_and_classes(df14_720):
    """DF-14B has the Wan2.1 T2V-14B structure: the diffusers classes (SkyReelsV2*) and the
    release names (SkyReels-V2-DF-14B-720P) tell it; 720P brings 121-frame windows at 1280×720."""
    for layout, kw in _layouts(df14_720).items():
        v = detect_model(**kw).variant
        assert v.name == "skyreels-v2-df-14B-720P", layout
        assert not v.dit.inject_sample_info
        assert v.forcing is not None and v.forcing.base_frames == 121
        assert v.defaults.size == (1280, 720)


def test_the_same_weights_without_skyreels_names_are_wan(df14_720, tmp_path):
    """A renamed copy (no 'SkyReels' anywhere, official Wan file names) is what its structure
    says: a Wan2.1 T2V model, never a guessed DF one."""
    plain = tmp_path / "Wan2.1-T2V"
    plain.mkdir()
    for f in df14_720.official.iterdir():
        if f.is_file():
            target = (
                "diffusion_pytorch_model.safetensors" if f.name == "model.safetensors" else f.name
            )
            (plain / target).write_bytes(f.read_bytes())
    assert detect_model(plain).variant.name == "t2v-1.3B"  # tiny width: the 1.3B defaults


def test_an_official_folder_without_config_json(df13, tmp_path):
    """SkyReels' own folder names its DiT model.safetensors; without a config.json it is still a
    model folder (the heads come from the 128-wide rule)."""
    bare = tmp_path / "SkyReels-V2-DF-1.3B-540P"
    bare.mkdir()
    for f in df13.official.iterdir():
        if f.is_file() and f.name != "config.json":
            (bare / f.name).write_bytes(f.read_bytes())
    found = detect_model(bare)
    assert found.variant.name == "skyreels-v2-df-1.3B-540P"
    assert [p.name for p in found.experts[0].files] == ["model.safetensors"]


def test_inspect_names_the_model(df13):
    from wan_desktop.checkpoints.inspect import inspect_model

    info = inspect_model(df13.official)
    assert info["variant"] == "skyreels-v2-df-1.3B-540P" and info["family"] == "skyreels-v2"
    assert info["dit_config"]["inject_sample_info"] is True
    assert info["diffusion_forcing"] == {
        "base_frames": 97,
        "overlap_history": 17,
        "ar_step": 0,
        "causal_block_size": 1,
        "addnoise_condition": 20.0,
    }
    json.dumps(info)  # printable as JSON


def test_hints_and_names():
    assert hints_for(Path("SkyReels-V2-DF-14B-540P"), {}) == SkyReelsHints(True, True, False)
    assert hints_for(Path("Wan2_1-SkyReels-V2-DF-14B-720P_fp8_e4m3fn.safetensors"), {}) == (
        SkyReelsHints(True, True, True)
    )
    assert hints_for(Path("SkyReels-V2-T2V-14B-720P"), {}) == SkyReelsHints(True, False, True)
    assert hints_for(Path("x"), {"_class_name": "SkyReelsV2Transformer3DModel"}).skyreels
    assert hints_for(Path("wan2.1_t2v_14B_fp16.safetensors"), {}) == SkyReelsHints()
    # a 'df' inside a word is no DF marker
    assert not hints_for(Path("skyreels-v2-pdf-t2v"), {}).diffusion_forcing
    wan14 = VARIANTS["t2v-14B"].dit
    for name, v in SKYREELS_VARIANTS.items():
        hints = SkyReelsHints(True, "-df-" in name, "720P" in name)
        assert identify_variant(v.dit, 1, "x", hints).name == name
    assert identify_variant(wan14, 1, "x").name == "t2v-14B"
    df13 = SKYREELS_VARIANTS["skyreels-v2-df-1.3B-540P"].dit
    assert identify_variant(df13, 1, "x").name == "skyreels-v2-df-1.3B-540P"  # by its fps table
    assert identify_variant(replace(df13, inject_sample_info=False), 1, "x").name == "t2v-1.3B"
