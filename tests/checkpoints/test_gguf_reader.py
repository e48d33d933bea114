"""GGUF files as users have them (city96's Wan and umT5 releases): detection from the metadata and
key names, ``inspect``'s list of GGML types, loading with the linears kept quantized."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.checkpoints.conftest import reference_dit_states
from tests.gguf_files import dequantized_state, dit_gguf, t5_gguf, write_gguf
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.gguf_load import quantized_nbytes
from wan_desktop.checkpoints.inspect import inspect_model
from wan_desktop.checkpoints.load import load_dit, load_t5
from wan_desktop.errors import CheckpointError
from wan_desktop.models.quant_linear import QuantLinear

pytest.importorskip("gguf")


def _error(fn) -> str:
    with pytest.raises(CheckpointError) as e:
        fn()
    return str(e.value)


def test_wan21_gguf_is_detected_like_its_safetensors(tiny):
    m = tiny("t2v-1.3B")
    g = dit_gguf(m, "Q4_K")
    mf = detect_model(g, vae=m.comfy_vae, text_encoder=t5_gguf(m), tokenizer=m.tokenizer)
    assert mf.format == "gguf" and mf.variant.name == "t2v-1.3B"
    assert mf.variant.dit == detect_model(m.comfy_dit).variant.dit  # head_dim 128: 2 heads
    assert mf.variant.t5 == m.variant.t5
    assert mf.experts[0].files == (g.resolve(),) or mf.experts[0].files == (g,)


def test_wan22_gguf_pair_is_two_experts(tiny):
    m = tiny("t2v-A14B")
    high = dit_gguf(m, "Q8_0")
    low = high.with_name(high.name.replace("high_noise", "low_noise"))
    for given in (high, low):  # either file names the pair, ordered high then low
        mf = detect_model(given, vae=m.comfy_vae)
        assert mf.variant.name == "t2v-A14B" and mf.boundary == 0.875
        assert [Path(e.files[0]).name for e in mf.experts] == [high.name, low.name]
    alone = m.root / "alone" / high.name
    alone.parent.mkdir(exist_ok=True)
    shutil.copy(high, alone)
    assert "needs both experts" in _error(lambda: detect_model(alone))


def test_i2v_and_ti2v_ggufs_are_told_apart(tiny):
    for name, variant in (
        ("i2v-14B", "i2v-14B"),
        ("ti2v-5B", "ti2v-5B"),
        ("flf2v-14B", "flf2v-14B"),
    ):
        m = tiny(name)
        assert detect_model(dit_gguf(m, "Q8_0")).variant.name == variant


def test_wrong_architecture_and_corrupt_files_are_refused(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    llama = tmp_path / "llama-Q8_0.gguf"
    write_gguf(llama, reference_dit_states(m)[0], "Q8_0", arch="llama")
    msg = _error(lambda: detect_model(llama))
    assert "architecture 'llama', not a Wan diffusion model" in msg
    # a Wan DiT given as the text encoder
    msg = _error(lambda: detect_model(m.comfy_dit, text_encoder=dit_gguf(m, "Q8_0")))
    assert "architecture 'wan', not a umT5 text encoder" in msg
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(dit_gguf(m, "Q8_0").read_bytes()[:5000])
    assert "not a valid GGUF file" in _error(lambda: detect_model(cut))


def test_inspect_lists_the_ggml_types_and_their_bytes(tiny):
    m = tiny("t2v-1.3B")
    g = dit_gguf(m, "Q4_K")
    dit = inspect_model(g)["components"]["dit"][0]
    types = dit["gguf_types"]
    # tiny dims: rows of 256 are Q4_K; ffn.2 (320-wide rows) and text_embedding.0 (32) Q8_0;
    # time_embedding.0 (16-wide rows) and the 5-D patch embedding F16; vectors F32
    assert set(types) == {"Q4_K", "Q8_0", "F16", "F32"}
    q4 = types["Q4_K"]
    assert q4["bytes"] == q4["parameters"] // 256 * 144  # 4.5 bits per weight
    assert types["Q8_0"]["bytes"] == types["Q8_0"]["parameters"] // 32 * 34
    assert sum(t["parameters"] for t in types.values()) == dit["parameters"]
    out = subprocess.run(
        [sys.executable, "-m", "wan_desktop.cli", "inspect", str(g)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["components"]["dit"][0]["gguf_types"] == types


@pytest.mark.parametrize("qtype", ["Q4_K", "Q8_0", "Q5_K", "Q6_K", "Q3_K", "Q2_K", "Q4_0"])
def test_dit_keeps_its_linears_quantized_and_equals_the_dequantized_file(tiny, tmp_path, qtype):
    m = tiny("t2v-1.3B")
    g = dit_gguf(m, qtype)
    dit = load_dit(detect_model(g))
    quant = [mod for mod in dit.modules() if isinstance(mod, QuantLinear)]
    # q/k/v/o of both attentions, ffn.0, (ffn.2 in Q8_0), text_embedding, time_projection, head
    assert len(quant) >= 2 * 9 + 3
    assert {q.qtype for q in quant} <= {qtype, "Q8_0"}
    assert quantized_nbytes(dit) == sum(q.qweight.numel() for q in quant)
    ref_file = tmp_path / "dequantized.safetensors"
    save_file(dequantized_state(g), ref_file)
    ref = load_dit(detect_model(ref_file))
    sd = dict(ref.named_parameters())
    for name, mod in dit.named_modules():
        if isinstance(mod, QuantLinear):
            assert torch.equal(mod.weight, sd[name + ".weight"])  # bit for bit
    g0 = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 1, 4, 4, generator=g0)
    ctx = torch.randn(1, 7, 32, generator=g0)
    t = torch.tensor([700.0])
    with torch.no_grad():
        a, b = dit(x, t, ctx), ref(x, t, ctx)
    # equal weights; BLAS may round differently on differently aligned memory
    assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_umt5_gguf_encoder_equals_its_dequantized_file(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    path = t5_gguf(m)
    mf = detect_model(m.comfy_dit, text_encoder=path, tokenizer=m.tokenizer)
    t5 = load_t5(mf)
    quant = [mod for mod in t5.modules() if isinstance(mod, QuantLinear)]
    assert len(quant) == 2 * 6  # q, k, v, o, gate, fc1 (fc2's 48-wide rows are F16)
    from wan_desktop.checkpoints.gguf_reader import t5_name

    ref_file = tmp_path / "umt5_deq.safetensors"
    save_file({t5_name(k): v for k, v in dequantized_state(path).items()}, ref_file)
    ref = load_t5(detect_model(m.comfy_dit, text_encoder=ref_file, tokenizer=m.tokenizer))
    ids = torch.tensor([[5, 17, 300, 2, 1, 0, 0]])
    mask = (ids > 0).long()
    with torch.no_grad():
        a, b = t5(ids, mask), ref(ids, mask)
    assert ((a - b).norm() / b.norm()).item() < 1e-6
