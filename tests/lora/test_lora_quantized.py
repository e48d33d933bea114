"""LoRAs on GGUF-quantized DiTs run unmerged (y = x·W + s·(x·A)·B, models/lowrank.py): equal to the
fp32 merge into the same weights dequantized, the quantized bytes untouched, a strength change
without reading anything again; the LoRA key layouts ComfyUI reads besides the usual ones."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tests.engines.helpers import tiny_dit
from tests.gguf_files import dequantized_state, write_gguf
from tests.lora_files import RANK, TARGETS, lowrank, official_layout, save
from tests.numerics import rel_err
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.load import load_dit, load_taehv
from wan_desktop.errors import CheckpointError
from wan_desktop.lora import LoraSpec, load_loras, merge_loras
from wan_desktop.models.layers import Ops
from wan_desktop.models.lowrank import has_lowrank
from wan_desktop.models.quant_linear import QuantLinear

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(a Q4_K GGUF of the tiny DiT, the same weights dequantized by gguf as safetensors)."""
    d = tmp_path_factory.mktemp("gguf_lora")
    gguf = d / "wan2.1-t2v-tiny-Q4_K.gguf"
    state = {k: v.contiguous() for k, v in tiny_dit(num_layers=2, ops=Ops).state_dict().items()}
    write_gguf(gguf, state, "Q4_K")
    ref = d / "wan_tiny_dequantized.safetensors"
    save_file(dequantized_state(gguf), ref)
    return gguf, ref


def _inputs():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    return x, torch.tensor([640.0]), torch.randn(1, 9, 32, generator=g)


def _with(model, paths_strengths):
    specs = [LoraSpec(path=str(p), strength=s) for p, s in paths_strengths]
    return merge_loras(model, load_loras(model, specs))


def _run(model):
    with torch.no_grad():
        return model(*_inputs())


def _full_lora(tmp_path):
    """Low-rank pairs with alpha on every block linear, bias deltas, and one full weight delta."""
    tensors = official_layout(lowrank(11, bias=True), alpha=2 * RANK)
    tensors["diffusion_model.blocks.1.cross_attn.o.diff"] = torch.randn(256, 256) * 0.01
    return save(tmp_path, "full.safetensors", tensors)


def test_unmerged_lora_on_gguf_equals_the_fp32_merge(files, tmp_path):
    gguf, ref_file = files
    lora = _full_lora(tmp_path)
    second = save(tmp_path, "second.safetensors", official_layout(lowrank(12), alpha=RANK))
    model, ref = load_dit(detect_model(gguf)), load_dit(detect_model(ref_file))
    bytes_before = {
        n: m.qweight.clone() for n, m in model.named_modules() if isinstance(m, QuantLinear)
    }
    base = _run(model)
    merge = _with(model, [(lora, 0.8), (second, -0.5)])
    got = _run(model)
    _with(ref, [(lora, 0.8), (second, -0.5)])  # merged into fp32 weights
    want = _run(ref)
    err = rel_err(got, want)
    print(f"GGUF Q4_K + 2 LoRAs unmerged vs fp32 merge: max rel err {err:.2e}")
    assert err <= 1e-5
    assert rel_err(got, base) > 1e-2  # the LoRAs change the output
    q = model.blocks[0].self_attn.q
    assert isinstance(q, QuantLinear) and has_lowrank(q)
    assert q.lora_down.shape == (2 * RANK, 256) and q.lora_up.shape == (256, 2 * RANK)
    for n, m in model.named_modules():
        if isinstance(m, QuantLinear):
            assert torch.equal(m.qweight, bytes_before[n])  # never requantized
    # a strength change: drop the factors, add them again (nothing read from the model file)
    merge.unmerge()
    assert torch.equal(_run(model), base)
    _with(model, [(lora, 1.5)])
    ref = load_dit(detect_model(ref_file))
    _with(ref, [(lora, 1.5)])
    assert rel_err(_run(model), _run(ref)) <= 1e-5


def _pairs():
    return {k: v for k, v in lowrank(13).items() if k[0] == 0}


def videox_fun(pairs):
    t = {}
    for (b, mod), (down, up, _) in pairs.items():
        k = f"lora_unet__blocks_{b}_{mod.replace('.', '_')}"
        t[f"{k}.lora_down.weight"], t[f"{k}.lora_up.weight"] = down, up
    return t


def underscore_lora(pairs):  # ComfyUI's "{x}_lora.up.weight" / "{x}_lora.down.weight"
    t = {}
    for (b, mod), (down, up, _) in pairs.items():
        t[f"diffusion_model.blocks.{b}.{mod}_lora.down.weight"] = down
        t[f"diffusion_model.blocks.{b}.{mod}_lora.up.weight"] = up
    return t


def peft_bare(pairs):  # PEFT factors saved without ".weight"
    t = {}
    for (b, mod), (down, up, _) in pairs.items():
        t[f"blocks.{b}.{mod}.lora_A"], t[f"blocks.{b}.{mod}.lora_B"] = down, up
    return t


def lora_linear_layer(pairs):  # diffusers' attention-processor LoRAs, on diffusers names
    t = {}
    for (b, mod), (down, up, _) in pairs.items():
        k = f"transformer.blocks.{b}.{TARGETS[mod]}.lora_linear_layer"
        t[f"{k}.down.weight"], t[f"{k}.up.weight"] = down, up
    return t


@pytest.mark.parametrize("layout", [videox_fun, underscore_lora, peft_bare, lora_linear_layer])
def test_more_key_layouts_equal_the_official_one(files, tmp_path, layout):
    _, ref_file = files
    official = save(tmp_path, "official.safetensors", official_layout(_pairs()))
    other = save(tmp_path, f"{layout.__name__}.safetensors", layout(_pairs()))
    a, b = load_dit(detect_model(ref_file)), load_dit(detect_model(ref_file))
    base = _run(a)
    _with(a, [(official, 1.0)])
    _with(b, [(other, 1.0)])
    assert torch.equal(_run(a), _run(b))
    assert rel_err(_run(b), base) > 1e-3


def test_taehv_super_files_are_refused(tmp_path):
    from tests.taehv_files import random_tae_file

    path = tmp_path / "taew2_2_super.safetensors"
    random_tae_file(path, z=48, patch=2)
    with pytest.raises(CheckpointError, match="the super variant is not supported"):
        load_taehv(path)
