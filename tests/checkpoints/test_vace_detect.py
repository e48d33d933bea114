"""VACE models in the three layouts: detection (variant, VACE layers), inspect, loading (the same
weights from every layout), the memory planner's count and LoRAs for the base DiT."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.lora_files import lowrank, official_layout, save
from tests.vace_models import build_tiny_vace_model
from wan_desktop import memory
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.inspect import inspect_model
from wan_desktop.checkpoints.load import load_dit
from wan_desktop.errors import CheckpointError
from wan_desktop.lora import LoraSpec, load_loras, merge_loras
from wan_desktop.models.vace import VaceWanModel
from wan_desktop.variants import VARIANTS

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return build_tiny_vace_model(tmp_path_factory.mktemp("vace"), "vace-1.3B")


def _layouts(m):
    return {
        "official": m.official,
        "diffusers": m.diffusers,
        "comfyui": m.comfy_dit,
        "comfyui-fp8": m.refs["comfy_fp8"],
    }


def test_every_layout_is_the_vace_variant_with_its_layers(vace):
    for layout, path in _layouts(vace).items():
        files = detect_model(path, vae=vace.comfy_vae, text_encoder=vace.comfy_t5)
        dit = files.variant.dit
        assert files.variant.name == "vace-1.3B", layout
        assert dit.vace_in_dim == 96 and dit.vace_layers == (0, 1), layout
        assert files.variant.defaults.shift == 16.0  # Wan2.1 generate.py's vace shift
        assert files.format == layout.removesuffix("-fp8")


def test_inspect_names_the_vace_blocks(vace):
    info = inspect_model(vace.official)
    assert info["variant"] == "vace-1.3B" and info["tasks"] == ["vace"]
    assert info["vace"] == {"blocks": 2, "layers": [0, 1], "in_dim": 96}
    # the parameter count covers the VACE branch: it equals the planner's
    assert info["components"]["dit"][0]["parameters"] == memory.dit_params(
        detect_model(vace.official).variant.dit
    )
    assert json.dumps(info)


def test_every_layout_loads_the_same_weights(vace):
    ref = load_dit(detect_model(vace.official)).state_dict()
    assert isinstance(load_dit(detect_model(vace.official)), VaceWanModel)
    assert "vace_blocks.0.before_proj.weight" in ref
    for layout, path in _layouts(vace).items():
        got = load_dit(detect_model(path), keep_fp8=False).state_dict()
        assert got.keys() == ref.keys(), layout
        tol = {"official": 0, "diffusers": 0, "comfyui": 2e-3, "comfyui-fp8": 0.13}[layout]
        worst = max(float((got[k].float() - ref[k]).abs().max()) for k in ref)
        print(f"{layout}: max |w - w_official| = {worst:.2e}")
        assert worst <= tol, layout


def test_config_vace_layers_win_and_are_checked(vace, tmp_path):
    cfg = json.loads((vace.official / "config.json").read_text())
    folder = tmp_path / "m"
    folder.mkdir()
    for f in vace.official.iterdir():
        if f.suffix == ".safetensors":
            (folder / f.name).symlink_to(f)
    (folder / "config.json").write_text(json.dumps(cfg | {"vace_layers": [0]}))
    with pytest.raises(CheckpointError, match="vace_layers must be 2 increasing"):
        detect_model(folder)
    (folder / "config.json").write_text(json.dumps(cfg | {"vace_layers": "0,1"}))
    with pytest.raises(CheckpointError, match="vace_layers must be a list"):
        detect_model(folder)


def test_a_file_without_the_vace_patch_embedding_is_refused(vace, tmp_path):
    from safetensors.torch import load_file

    state = load_file(vace.comfy_dit)
    del state["model.diffusion_model.vace_patch_embedding.weight"]
    del state["model.diffusion_model.vace_patch_embedding.bias"]
    save_file(state, tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="needs vace_patch_embedding and vace_blocks"):
        detect_model(tmp_path / "cut.safetensors")


def test_planner_counts_the_vace_branch():
    base, v = VARIANTS["t2v-14B"].dit, VARIANTS["vace-14B"].dit
    extra = memory.dit_params(v) - memory.dit_params(base)
    # 8 blocks + after_proj each + one before_proj + the 96-channel patch embedding
    d = v.dim
    assert extra == 8 * (memory.dit_block_params(v) + d * d + d) + d * d + d + 96 * d * 4 + d
    assert memory.dit_nonblock_bytes(v) - memory.dit_nonblock_bytes(base) >= 2 * extra
    print(f"VACE-14B branch: {extra / 1e9:.2f} B parameters")


def test_a_base_dit_lora_applies_to_the_vace_model_main_blocks(vace, tmp_path):
    pairs = lowrank(5)
    lora = save(tmp_path, "base.safetensors", official_layout(pairs, alpha=4))
    model = load_dit(detect_model(vace.official))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_loras(model, [LoraSpec.parse(f"{lora}:0.5")])
    merge_loras(model, loaded, keep_originals=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("blocks.") for k in changed)
    down, up, _ = pairs[(0, "self_attn.q")]
    want = before["blocks.0.self_attn.q.weight"] + 0.5 * (up @ down)  # alpha 4 / rank 4
    torch.testing.assert_close(after["blocks.0.self_attn.q.weight"], want)


def test_wan22_vace_fun_two_experts_in_every_layout(tmp_path):
    m = build_tiny_vace_model(tmp_path, "vace-A14B")
    for layout, path in _layouts(m).items():
        files = detect_model(path, vae=m.comfy_vae, text_encoder=m.comfy_t5)
        assert files.variant.name == "vace-A14B" and len(files.experts) == 2, layout
        assert files.boundary == 0.875 and files.variant.defaults.guidance_low == 3.0, layout
        assert files.variant.dit.vace_layers == (0, 1), layout
        if layout.startswith("comfyui"):  # high-noise first, whichever file was given
            assert "high_noise" in files.experts[0].files[0].name
    low = load_dit(detect_model(m.official), 1).state_dict()
    want = m.refs["transformer_2"].state_dict()["vace_blocks.1.proj_out.weight"]
    assert torch.equal(low["vace_blocks.1.after_proj.weight"], want)
