"""Loading refuses integer tensors where float weights belong, naming the tensor, before any
weight is read; quantized int8 weights that carry their scale still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.checkpoints.conftest import PREFIX
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.keymap_clip import load_clip_visual
from wan_desktop.checkpoints.load import load_dit, load_vae
from wan_desktop.errors import CheckpointError


def _edited(src: Path, dst: Path, key: str, dtype: torch.dtype) -> Path:
    state = load_file(src)
    state[key] = state[key].to(dtype)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, dst)
    return dst


def _refusal(fn) -> str:
    with pytest.raises(CheckpointError) as e:
        fn()
    return e.value.one_line()


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.int8])
def test_integer_dit_weight_is_refused_naming_the_tensor(tiny, tmp_path, dtype):
    m = tiny("t2v-1.3B")
    key = PREFIX + "blocks.1.ffn.0.weight"
    f = _edited(m.comfy_dit, tmp_path / "dm" / "wan_int.safetensors", key, dtype)
    msg = _refusal(lambda: load_dit(detect_model(f)))
    name = str(dtype).removeprefix("torch.")
    assert f"diffusion model (wan_int.safetensors): tensor {key} is stored as {name}" in msg
    assert "blocks.1.ffn.0.weight is a float weight" in msg


def test_integer_vae_and_clip_weights_are_refused(tiny, tmp_path):
    m = tiny("i2v-14B")
    vae = _edited(
        m.comfy_vae,
        tmp_path / "vae" / "wan_2.1_vae.safetensors",
        "decoder.conv1.weight",
        torch.int16,
    )
    msg = _refusal(lambda: load_vae(detect_model(m.comfy_dit, vae=vae)))
    assert "VAE (wan_2.1_vae.safetensors): tensor decoder.conv1.weight is stored as int16" in msg

    assert m.comfy_clip is not None
    key = "vision_model.encoder.layers.0.mlp.fc1.weight"
    clip_file = _edited(
        m.comfy_clip, tmp_path / "clip" / "clip_vision_h.safetensors", key, torch.int32
    )
    msg = _refusal(lambda: load_clip_visual([clip_file], m.variant.clip))
    assert f"CLIP image encoder (clip_vision_h.safetensors): tensor {key} is stored as int32" in msg


def test_int8_weights_with_their_scale_still_load(tiny, tmp_path):
    """lightx2v-style int8 DiTs: ``<layer>.weight`` int8 + a per-output-channel ``weight_scale``."""
    m = tiny("t2v-1.3B")
    state = load_file(m.comfy_dit)
    key = PREFIX + "blocks.0.self_attn.q.weight"
    w = state[key].float()
    scale = w.abs().amax(dim=1) / 127.0
    state[key] = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    state[key.removesuffix(".weight") + ".weight_scale"] = scale
    f = tmp_path / "dm" / "wan_int8.safetensors"
    f.parent.mkdir()
    save_file(state, f)
    model = load_dit(detect_model(f))
    layer = model.get_submodule("blocks.0.self_attn.q")
    got = layer.weight.float() * layer.scale_weight.float()
    assert layer.weight.dtype == torch.int8
    assert (got - w).abs().max() <= scale.max() / 2 + 1e-6  # half a quantization step
