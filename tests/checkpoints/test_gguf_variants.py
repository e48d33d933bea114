"""SkyReels-V2 DF and VACE GGUF files load through the same path as the Wan ones: detection from the
file (the SkyReels release name, the VACE tensors, an A14B pair by its expert names), the loader
keeps their linears quantized (the VACE branch's too), and every weight equals what the ``gguf``
package dequantizes from the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures_models import official_dit_state
from tests.gguf_files import dequantized_state, write_gguf
from tests.skyreels_models import build_tiny_skyreels
from tests.vace_models import build_tiny_vace_model
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.load import load_dit
from wan_desktop.errors import CheckpointError
from wan_desktop.models.quant_linear import QuantLinear
from wan_desktop.models.vace import VaceWanModel

pytest.importorskip("gguf")
pytest.importorskip("diffusers")


def _weights_equal_the_file(model: torch.nn.Module, gguf_file: Path) -> int:
    """Every weight of the loaded model equals gguf's numpy dequantization of the file (fp32, bit
    for bit); returns the number of linears kept quantized."""
    ref = dequantized_state(gguf_file)
    seen = set()
    for name, mod in model.named_modules():
        if isinstance(mod, QuantLinear):
            seen.add(name + ".weight")
            assert torch.equal(mod.weight_as(torch.float32), ref[name + ".weight"]), name
    state = model.state_dict()
    for key in ref.keys() - seen:  # every other tensor of the file, read as values
        assert torch.equal(state[key].float(), ref[key].float()), key
    return len(seen)


@pytest.fixture(scope="module")
def df13(tmp_path_factory):
    return build_tiny_skyreels(tmp_path_factory.mktemp("gguf_df13"), "skyreels-v2-df-1.3B-540P")


@pytest.fixture(scope="module")
def df14(tmp_path_factory):
    return build_tiny_skyreels(tmp_path_factory.mktemp("gguf_df14"), "skyreels-v2-df-14B-720P")


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_skyreels_df_1_3B_gguf_is_detected_and_loads_quantized_with_its_fps_embedding(
    df13, tmp_path, qtype
):
    f = tmp_path / f"SkyReels-V2-DF-1.3B-540P-{qtype}.gguf"
    write_gguf(f, official_dit_state(df13.refs["transformer"]), qtype)
    found = detect_model(f, vae=df13.comfy_vae, text_encoder=df13.comfy_t5)
    assert found.format == "gguf" and found.variant.name == "skyreels-v2-df-1.3B-540P"
    assert found.variant.dit.inject_sample_info and found.variant.forcing is not None
    model = load_dit(found)
    assert any(k.startswith("fps_") for k in model.state_dict())
    assert _weights_equal_the_file(model, f) > 0


def test_skyreels_df_14B_720P_gguf_is_told_by_its_name(df14, tmp_path):
    f = tmp_path / "SkyReels-V2-DF-14B-720P-Q8_0.gguf"
    write_gguf(f, official_dit_state(df14.refs["transformer"]), "Q8_0")
    found = detect_model(f, vae=df14.comfy_vae, text_encoder=df14.comfy_t5)
    assert found.variant.name == "skyreels-v2-df-14B-720P"
    assert found.variant.forcing is not None and found.variant.forcing.base_frames == 121
    assert _weights_equal_the_file(load_dit(found), f) > 0


@pytest.mark.parametrize("qtype", ["Q8_0", "Q5_K"])
def test_vace_gguf_keeps_the_vace_branch_quantized(tmp_path, qtype):
    m = build_tiny_vace_model(tmp_path / "m", "vace-1.3B")
    f = tmp_path / f"Wan2.1-VACE-1.3B-{qtype}.gguf"
    write_gguf(f, official_dit_state(m.refs["transformer"]), qtype)
    found = detect_model(f, vae=m.comfy_vae, text_encoder=m.comfy_t5)
    assert found.format == "gguf" and found.variant.name == "vace-1.3B"
    assert found.variant.dit.vace_layers == (0, 1)  # ComfyUI's even spacing, as for its files
    model = load_dit(found)
    assert isinstance(model, VaceWanModel)
    assert _weights_equal_the_file(model, f) > 0
    vace_quant = [n for n, x in model.named_modules() if isinstance(x, QuantLinear) and "vace" in n]
    assert vace_quant, "the VACE blocks' linears stay quantized too"
    print(f"VACE {qtype}: {len(vace_quant)} VACE linears quantized")


def test_wan22_vace_fun_gguf_pair_by_its_expert_names(tmp_path):
    """QuantStack names the VACE-Fun experts ...-A14B-high-noise-<q>.gguf / -low-noise-: beside
    each other (ComfyUI's models/unet), the pair is found from either file."""
    m = build_tiny_vace_model(tmp_path / "m", "vace-A14B")
    files = []
    for tag, key in (("high", "transformer"), ("low", "transformer_2")):
        f = tmp_path / f"Wan2.2-VACE-Fun-A14B-{tag}-noise-Q8_0.gguf"
        write_gguf(f, official_dit_state(m.refs[key]), "Q8_0", seed=len(files))
        files.append(f)
    for given in files:
        found = detect_model(given, vae=m.comfy_vae, text_encoder=m.comfy_t5)
        assert found.variant.name == "vace-A14B" and found.format == "gguf"
        assert [e.files[0] for e in found.experts] == files
    found = detect_model(files[0], vae=m.comfy_vae, text_encoder=m.comfy_t5)
    assert _weights_equal_the_file(load_dit(found, 1), files[1]) > 0


@pytest.mark.parametrize(
    ("variant", "names"),
    [
        ("t2v-A14B", ("Wan2.2-T2V-A14B-HighNoise-Q8_0.gguf", "Wan2.2-T2V-A14B-LowNoise-Q8_0.gguf")),
        (
            "vace-A14B",
            (
                "Wan2.2-VACE-Fun-A14B-high-noise-Q8_0.gguf",
                "Wan2.2-VACE-Fun-A14B-low-noise-Q8_0.gguf",
            ),
        ),
    ],
)
def test_quantstack_pairs_in_their_highnoise_and_lownoise_folders(tmp_path, variant, names):
    """QuantStack's repos keep each expert in its own folder (HighNoise/, LowNoise/), as a download
    of the repo lays them out: the pair is found from either file."""
    from tests.fixtures_models import build_tiny_model

    if variant.startswith("vace"):
        m = build_tiny_vace_model(tmp_path / "m", variant)
    else:
        m = build_tiny_model(tmp_path / "m", variant)
    files = []
    for folder, name, key in zip(
        ("HighNoise", "LowNoise"), names, ("transformer", "transformer_2"), strict=True
    ):
        (tmp_path / folder).mkdir()
        write_gguf(tmp_path / folder / name, official_dit_state(m.refs[key]), "Q8_0")
        files.append(tmp_path / folder / name)
    for given in files:
        found = detect_model(given, vae=m.comfy_vae, text_encoder=m.comfy_t5)
        assert found.format == "gguf" and found.variant.experts == 2
        assert [e.files[0] for e in found.experts] == files
    files[1].unlink()
    with pytest.raises(CheckpointError, match="needs both experts"):
        detect_model(files[0], vae=m.comfy_vae, text_encoder=m.comfy_t5)
