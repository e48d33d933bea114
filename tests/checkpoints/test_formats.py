"""The three checkpoint layouts (official / diffusers / ComfyUI) of one model give the same weights.

Every component of every variant is loaded from each layout and compared tensor by tensor with
``torch.equal`` against the reference modules the files were written from; ComfyUI precisions
(fp16, bf16, fp8_e4m3fn, fp8_e4m3fn_scaled) load to the rounded / dequantized weights; sharded
folders equal unsharded ones; Wan2.2 experts come out in (high, low) order; loading streams one
tensor at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.checkpoints.conftest import PREFIX, VARIANT_NAMES, reference_dit_states
from tests.fixtures_models import _save_sharded, comfy_dit_state
from tests.numerics import rel_err
from tests.tiny import tiny_variant
from wan_desktop.checkpoints import load as load_mod
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.keymap_clip import convert_hf_state_dict
from wan_desktop.checkpoints.keymap_t5 import hf_key, make_renamer
from wan_desktop.checkpoints.keymap_vae import official_key as vae_key
from wan_desktop.checkpoints.load import (
    load_clip,
    load_dit,
    load_t5,
    load_tokenizer,
    load_vae,
)
from wan_desktop.checkpoints.reader import StateReader
from wan_desktop.errors import CheckpointError
from wan_desktop.models.t5 import T5Encoder

PROMPTS = (
    "A cat walks on the grass, realistic style.",
    "一只猫在草地上走，阳光明媚，电影感镜头。",
    "Two anthropomorphic cats in comfy boxing gear fight intensely on a spotlighted stage.",
)


# ----------------------------------------------------------------------------- helpers


def expected_states(model) -> dict[str, dict[str, torch.Tensor]]:
    """component -> {official key: fp32 tensor}, from the reference (diffusers / transformers)
    modules the tiny files were written from."""
    refs = model.refs
    out = {f"dit{i}": s for i, s in enumerate(reference_dit_states(model))}
    out["vae"] = {
        vae_key(k, model.variant.vae.version): v for k, v in refs["vae"].state_dict().items()
    }
    t5 = refs["text_encoder"].state_dict()
    rename = make_renamer(t5)
    out["t5"] = {n: v for k, v in t5.items() if (n := rename(k)) is not None}
    if "image_encoder" in refs:
        out["clip"] = convert_hf_state_dict(refs["image_encoder"].state_dict())
    return out


def _check_real(name: str, module: torch.nn.Module) -> None:
    """Nothing left on meta: a tensor the file lacked cannot hide as random weights."""
    for k, t in [*module.named_parameters(), *module.named_buffers()]:
        assert t.device.type == "cpu", f"{name}: {k} is on {t.device}"
        assert not t.requires_grad, f"{name}: {k} requires grad"


def load_all(mf) -> dict[str, dict[str, torch.Tensor]]:
    mods = {f"dit{e}": load_dit(mf, e) for e in range(len(mf.experts))}
    mods["vae"] = load_vae(mf)
    mods["t5"] = load_t5(mf)
    if mf.variant.clip is not None:
        mods["clip"] = load_clip(mf)
    for name, m in mods.items():
        _check_real(name, m)
    return {k: m.state_dict() for k, m in mods.items()}


def _same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> int:
    assert sorted(got) == sorted(want), f"{what}: key sets differ"
    bad = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert not bad, f"{what}: {len(bad)} tensors differ, e.g. {bad[:3]}"
    return sum(t.numel() for t in got.values())


def _dit_inputs(cfg, seed: int = 0, frames: int = 2, size: int = 4):
    """Inputs for one DiT forward: x (+ y, clip_fea where the variant takes them), t, context."""
    g = torch.Generator().manual_seed(seed)
    z = cfg.out_dim
    kw = {
        "x": torch.randn(1, z, frames, size, size, generator=g),
        "t": torch.tensor([617.0]),
        "context": torch.randn(1, cfg.text_len, cfg.text_dim, generator=g),
    }
    if cfg.in_dim != z and cfg.model_type != "ti2v":
        kw["y"] = torch.randn(1, cfg.in_dim - z, frames, size, size, generator=g)
    if cfg.image_dim is not None:
        n = cfg.image_pos_len or 5  # tiny CLIP: 4 patches + class token
        kw["clip_fea"] = torch.randn(1, n, cfg.image_dim, generator=g)
    return kw


def _rms_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """||ours - ref|| / ||ref|| over all elements."""
    return float((ours.double() - ref.double()).norm() / ref.double().norm())


def _run(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


# ----------------------------------------------------------------------------- three layouts


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_three_layouts_give_bit_identical_weights(tiny, comfy_file, name):
    m = tiny(name)
    comfy32 = comfy_file(m, "fp32")
    layouts = {
        "official": detect_model(m.official),
        "diffusers": detect_model(m.diffusers),
        # a ComfyUI diffusion model is given with --vae / --text-encoder; CLIP is found beside it
        "comfyui": detect_model(comfy32, vae=m.comfy_vae, text_encoder=m.comfy_t5),
    }
    # same variant and configs everywhere; the tiny 14B is the same architecture as a tiny 1.3B
    # (they differ only in width), so it is named t2v-1.3B: see test_detect
    want_variant = tiny_variant("t2v-1.3B" if name == "t2v-14B" else name)
    for layout, mf in layouts.items():
        assert mf.format == layout
        assert mf.variant == want_variant, layout
        assert len(mf.experts) == want_variant.experts
    want = expected_states(m)
    counts = {}
    for layout, mf in layouts.items():
        got = load_all(mf)
        assert sorted(got) == sorted(want)
        counts[layout] = sum(_same(got[c], want[c], f"{name} {layout} {c}") for c in want)
    assert len(set(counts.values())) == 1
    # the tokenizer: tokenizer.json (official google/umt5-xxl, diffusers tokenizer/) and the
    # sentencepiece model embedded in the ComfyUI umT5 file give the same ids as transformers
    ids = {layout: load_tokenizer(mf)(list(PROMPTS)) for layout, mf in layouts.items()}
    ref = m.refs["tokenizer"](
        list(PROMPTS),
        padding="max_length",
        max_length=512,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    for layout, batch in ids.items():
        assert torch.equal(batch.ids, ref.input_ids), layout
        assert torch.equal(batch.mask, ref.attention_mask), layout
    print(
        f"{name}: {len(want)} components, {counts['official']} values bit-identical in "
        f"official / diffusers / ComfyUI-fp32; tokenizer ids identical "
        f"(json, spiece, transformers)"
    )


# ----------------------------------------------------------------------------- ComfyUI precisions


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_comfy_half_precision_loads_the_rounded_weights(tiny, comfy_file, precision, dtype):
    m = tiny("i2v-14B")
    mf = detect_model(comfy_file(m, precision))
    model = load_dit(mf, dtype=dtype)
    stored = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    (orig,) = reference_dit_states(m)
    state = model.state_dict()
    islands = 0
    for k, w in orig.items():
        target = torch.float32 if model.keeps_fp32(k) else dtype
        islands += target != dtype
        assert state[k].dtype == target, k
        assert torch.equal(state[k], w.to(stored).to(target)), k
    if dtype != torch.float32:
        assert islands > 0  # FP32_MODULES kept fp32, holding the rounded values


def _quantized_layers(model) -> dict[str, torch.nn.Module]:
    return {
        n.removesuffix(".weight"): model.get_submodule(n.removesuffix(".weight"))
        for n, p in model.named_parameters()
        if p.dtype == torch.float8_e4m3fn
    }


def test_comfy_fp8_weights_stay_fp8_and_compute_as_dequantized(tiny, comfy_file):
    m = tiny("i2v-14B")
    path = comfy_file(m, "fp8")
    fp8 = load_dit(detect_model(path), dtype=torch.bfloat16)
    q = _quantized_layers(fp8)
    file = load_file(path)
    linears = [k for k in file if k.startswith(PREFIX + "blocks.") and file[k].dim() == 2]
    assert len(q) == len(linears) > 0  # every block linear weight, nothing else
    assert all(layer.scale_weight is None for layer in q.values())
    # the same file dequantized at load time (keep_fp8=False): fp8 values are exact in bf16
    ref = load_dit(detect_model(path), dtype=torch.bfloat16, keep_fp8=False)
    assert all(ref.get_parameter(k + ".weight").dtype == torch.bfloat16 for k in q)
    inputs = _dit_inputs(fp8.cfg)
    out = _run(fp8, inputs)
    err = rel_err(out, _run(ref, inputs))
    out32 = _run(load_dit(detect_model(m.official)), inputs)
    err32 = rel_err(out, out32)
    print(
        f"fp8_e4m3fn DiT: {len(q)} fp8 linears; vs dequantized model {err:.2e}; "
        f"vs fp32 original max {err32:.2e} / rms {_rms_err(out, out32):.2e}"
    )
    assert err <= 1e-5
    assert err32 < 0.1


@pytest.mark.parametrize("prefix", [PREFIX, ""])
def test_comfy_fp8_scaled(tiny, comfy_file, prefix):
    m = tiny("i2v-14B")
    path = comfy_file(m, "fp8_scaled", prefix)
    mf = detect_model(path)
    assert mf.experts[0].prefix == prefix
    fp8 = load_dit(mf, dtype=torch.bfloat16)
    file = load_file(path)
    assert (prefix + "scaled_fp8") in file
    q = _quantized_layers(fp8)
    scales = {
        k.removeprefix(prefix).removesuffix(".scale_weight"): v
        for k, v in file.items()
        if k.endswith(".scale_weight")
    }
    assert sorted(q) == sorted(scales) and len(q) > 0
    for name, layer in q.items():  # the file's scale, on its own layer, exactly
        assert layer.scale_weight is not None and layer.scale_weight.dtype == torch.float32
        assert torch.equal(layer.scale_weight, scales[name]), name
        assert torch.equal(
            layer.weight.view(torch.uint8), file[prefix + name + ".weight"].view(torch.uint8)
        ), name

    # reference: a plain bf16 model whose block linears hold the dequantized weights, computed here
    # from the file as the layer does it: fp8 × scale in fp32, then the compute dtype
    ref = load_dit(mf, dtype=torch.bfloat16, keep_fp8=False)
    with torch.no_grad():
        for name in q:
            w = file[prefix + name + ".weight"].float() * scales[name].float()
            ref.get_parameter(name + ".weight").copy_(w.to(torch.bfloat16))
    inputs = _dit_inputs(fp8.cfg)
    out = _run(fp8, inputs)
    err = rel_err(out, _run(ref, inputs))
    # dequantized in fp32 at load time (keep_fp8=False): the same numbers
    err_load = rel_err(out, _run(load_dit(mf, dtype=torch.bfloat16, keep_fp8=False), inputs))
    official = detect_model(m.official)
    out32 = _run(load_dit(official), inputs)
    err32 = rel_err(out, out32)
    err_bf16 = rel_err(_run(load_dit(official, dtype=torch.bfloat16), inputs), out32)
    print(
        f"fp8_e4m3fn_scaled DiT (prefix {prefix!r}): {len(q)} fp8 linears with scale_weight; "
        f"vs dequantized model {err:.2e}; vs load-time fp32 dequantization {err_load:.2e}; "
        f"vs fp32 original max {err32:.2e} / rms {_rms_err(out, out32):.2e} "
        f"(bf16 original vs fp32: {err_bf16:.2e})"
    )
    assert err <= 1e-5
    assert err_load <= 1e-5
    assert err32 < 5e-2


def _fp8_scaled_t5_file(model, folder: Path) -> Path:
    """A umT5 file as ComfyUI's umt5_xxl_fp8_e4m3fn_scaled.safetensors stores it: transformers
    names, block linear weights fp8 with a per-tensor scale_weight, the rest bf16, the
    ``scaled_fp8`` marker and the embedded sentencepiece model."""
    out: dict[str, torch.Tensor] = {}
    for k, v in model.refs["text_encoder"].state_dict().items():
        if k == "encoder.embed_tokens.weight":
            continue
        if k.startswith("encoder.block.") and v.dim() == 2 and "relative_attention_bias" not in k:
            scale = v.abs().max().float() / 448.0
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k.removesuffix(".weight") + ".scale_weight"] = scale.reshape(())
        else:
            out[k] = v.to(torch.bfloat16).contiguous()
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    spm = (model.tokenizer / "spiece.model").read_bytes()
    out["spiece_model"] = torch.frombuffer(bytearray(spm), dtype=torch.uint8).clone()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(out, path)
    return path


def test_comfy_fp8_scaled_text_encoder_and_embedded_tokenizer(tiny, tmp_path):
    m = tiny("t2v-1.3B")
    path = _fp8_scaled_t5_file(m, tmp_path / "text_encoders")
    mf = detect_model(m.comfy_dit, text_encoder=path, vae=m.comfy_vae)
    assert mf.tokenizer is None and mf.variant.t5 == tiny_variant("t2v-1.3B").t5
    t5 = load_t5(mf, dtype=torch.bfloat16)
    file = load_file(path)
    q = _quantized_layers(t5)
    assert len(q) == 7 * mf.variant.t5.num_layers
    for name, layer in q.items():
        hf = hf_key(name + ".weight").removesuffix(".weight")
        assert torch.equal(layer.scale_weight, file[hf + ".scale_weight"]), name
    # reference: our encoder with every tensor from the file, fp8 ones dequantized the same way
    ref = T5Encoder(mf.variant.t5).to(torch.bfloat16).eval()
    state = {}
    for k in ref.state_dict():
        hf = hf_key(k)
        w = file[hf]
        if hf.removesuffix(".weight") + ".scale_weight" in file:
            w = w.float() * file[hf.removesuffix(".weight") + ".scale_weight"].float()
        state[k] = w.to(torch.bfloat16)
    ref.load_state_dict(state)
    # tokenizer from the embedded spiece_model: same ids as the tokenizer folder
    tok = load_tokenizer(mf)
    assert "spiece_model" in tok.source
    batch = tok(list(PROMPTS))
    folder_tok = load_tokenizer(detect_model(m.official))
    assert torch.equal(batch.ids, folder_tok(list(PROMPTS)).ids)
    ids, mask = batch.ids[:, :24], batch.mask[:, :24]
    official = detect_model(m.official)
    with torch.no_grad():
        out = t5(ids, mask)
        err = rel_err(out, ref(ids, mask))
        f32 = load_t5(official)(ids, mask)
        err32, rms32 = rel_err(out.float(), f32), _rms_err(out.float(), f32)
        bf16 = load_t5(official, dtype=torch.bfloat16)(ids, mask).float()
        err_bf16, rms_bf16 = rel_err(bf16, f32), _rms_err(bf16, f32)
    print(
        f"umt5 fp8_e4m3fn_scaled: {len(q)} fp8 linears; vs dequantized {err:.2e}; vs fp32 "
        f"original max {err32:.2e} / rms {rms32:.2e} (bf16 original: max {err_bf16:.2e} / "
        f"rms {rms_bf16:.2e})"
    )
    assert out.dtype == torch.bfloat16
    assert err <= 1e-5
    assert err32 < 0.25 and rms32 < 0.1


# ----------------------------------------------------------------------------- shards, experts


def _reshard(folder: Path, shards: int) -> None:
    """Rewrite folder/diffusion_pytorch_model.safetensors as ``shards`` shards with an index."""
    single = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(single)
    single.unlink()
    _save_sharded(state, folder, "diffusion_pytorch_model", shards)


def test_sharded_folders_load_like_unsharded(tiny, tmp_path):
    m = tiny("t2v-A14B")
    want = expected_states(m)
    off = tmp_path / "official"
    shutil.copytree(m.official, off)
    for d in ("high_noise_model", "low_noise_model"):
        _reshard(off / d, 3)
    diff = tmp_path / "diffusers"
    shutil.copytree(m.diffusers, diff)
    _reshard(diff / "transformer", 2)
    m.refs["transformer_2"].save_pretrained(diff / "transformer_2", max_shard_size="3MB")
    assert len(list((diff / "transformer_2").glob("*.safetensors"))) >= 2  # diffusers' own shards
    for root in (off, diff):
        mf = detect_model(root)
        assert all(len(e.files) >= 2 for e in mf.experts)
        for e in range(2):
            _same(load_dit(mf, e).state_dict(), want[f"dit{e}"], f"{root.name} expert {e}")
    (off / "low_noise_model" / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"diffusion_pytorch_model-00002-of-00003\.safetensors"
        r" named in diffusion_pytorch_model\.safetensors"
        r"\.index\.json are missing",
    ):
        detect_model(off)


@pytest.mark.parametrize("name", ["t2v-A14B", "i2v-A14B"])
def test_wan22_experts_order_and_boundary(tiny, comfy_file, tmp_path, name):
    m = tiny(name)
    high, low = reference_dit_states(m)
    assert not torch.equal(high["head.head.weight"], low["head.head.weight"])
    default = m.variant.defaults.boundary
    hi_file = comfy_file(m, "fp32")
    lo_file = hi_file.with_name(hi_file.name.replace("high_noise", "low_noise"))
    cases = {
        "official": m.official,
        "diffusers": m.diffusers,
        "comfy-high": hi_file,
        "comfy-low": lo_file,
    }
    for label, path in cases.items():
        mf = detect_model(path)
        assert len(mf.experts) == 2, label
        _same(load_dit(mf, 0).state_dict(), high, f"{label} high")
        _same(load_dit(mf, 1).state_dict(), low, f"{label} low")
        # diffusers saves boundary_ratio in model_index.json; the others use the variant's
        assert mf.boundary == default, label
    off = detect_model(m.official)
    assert [e.files[0].parent.name for e in off.experts] == ["high_noise_model", "low_noise_model"]
    dif = detect_model(m.diffusers)
    assert [e.files[0].parent.name for e in dif.experts] == ["transformer", "transformer_2"]
    assert json.loads((m.diffusers / "model_index.json").read_text())["boundary_ratio"] == default
    # boundary from model_index.json wins
    d = tmp_path / "diffusers"
    shutil.copytree(m.diffusers, d)
    index = json.loads((d / "model_index.json").read_text())
    (d / "model_index.json").write_text(json.dumps(index | {"boundary_ratio": 0.5}))
    assert detect_model(d).boundary == 0.5
    # a lone expert file: its sibling is named
    lone = tmp_path / "lone" / hi_file.name
    lone.parent.mkdir()
    shutil.copy(hi_file, lone)
    with pytest.raises(
        CheckpointError,
        match=r"needs both experts, but wan2\.2_tiny_low_noise_"
        r"14B_fp32\.safetensors is not",
    ):
        detect_model(lone)


def test_diffusers_i2v_norm_added_q_is_ignored_as_diffusers_does(tiny, tmp_path):
    """Early diffusers conversions of Wan2.1 I2V carry attn2.norm_added_q weights that the model has
    no use for (diffusers ignores them on load); they must not make the file unloadable."""
    m = tiny("i2v-14B")
    d = tmp_path / "diffusers"
    shutil.copytree(m.diffusers, d)
    f = d / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(f)
    for i in range(m.variant.dit.num_layers):
        state[f"blocks.{i}.attn2.norm_added_q.weight"] = torch.ones(m.variant.dit.dim)
    save_file(state, f)
    mf = detect_model(d)
    _same(load_dit(mf).state_dict(), expected_states(m)["dit0"], "diffusers i2v + norm_added_q")


# ----------------------------------------------------------------------------- lazy loading


def _on_meta(module: torch.nn.Module, name: str) -> bool:
    owner, _, leaf = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    t = sub._parameters.get(leaf, sub._buffers.get(leaf))
    return t is None or t.device.type == "meta"


def test_loading_streams_one_tensor_at_a_time(tiny, comfy_file, monkeypatch):
    """Detection reads headers only; a load reads each tensor once and assigns it to the module
    before reading the next one, so at most one loaded tensor waits at any time."""
    m = tiny("i2v-14B")
    reads: Counter[str] = Counter()
    real_get = StateReader.get

    def counting_get(self, key):
        reads[key] += 1
        return real_get(self, key)

    monkeypatch.setattr(StateReader, "get", counting_get)
    peaks: list[int] = []
    real_materialize = load_mod.materialize

    def spying_materialize(module, sources, **kw):
        waiting: list[str] = []
        peak = [0]

        def wrap(name, src):
            def thunk():
                waiting[:] = [n for n in waiting if _on_meta(module, n)]  # not yet assigned
                waiting.append(name)
                peak[0] = max(peak[0], len(waiting))
                return src.load()

            return dataclasses.replace(src, load=thunk)

        out = real_materialize(module, {n: wrap(n, s) for n, s in sources.items()}, **kw)
        assert not [n for n in sources if _on_meta(module, n)]
        peaks.append(peak[0])
        return out

    monkeypatch.setattr(load_mod, "materialize", spying_materialize)
    for path in (m.official, m.diffusers, comfy_file(m, "fp8_scaled")):
        mf = detect_model(path)
        assert not reads, f"detection read tensor data: {list(reads)[:3]}"
        model = load_dit(mf, dtype=torch.bfloat16)
        reader = mf.experts[0].reader()
        data_keys = [k for k in reader if reader.info(k).numel > 0 and not k.endswith("scaled_fp8")]
        assert sorted(reads) == sorted(data_keys), path.name  # each tensor (and scale) read
        assert set(reads.values()) == {1}, path.name  # once
        assert len(reads) >= sum(1 for _ in model.parameters())
        reads.clear()
    assert peaks == [1, 1, 1]


_RSS_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from wan_desktop.checkpoints import reader
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    def anon():  # private (anonymous) resident memory, bytes; mmapped file pages are not in it
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

    base = anon()
    peak = [base]
    real_get = reader.StateReader.get

    def get(self, key):
        peak[0] = max(peak[0], anon())
        return real_get(self, key)

    reader.StateReader.get = get
    model = load_dit(detect_model(sys.argv[1]), dtype=torch.bfloat16)
    peak[0] = max(peak[0], anon())
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    big = max(t.numel() for t in model.state_dict().values()) * 4
    print(json.dumps({"growth": peak[0] - base, "model": size, "largest_fp32": big}))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_private_memory_is_the_model_not_the_file(tmp_path):
    """An fp32 ComfyUI-style file (~80 MB) loaded into a bf16 model: private memory grows by the
    model (~half the file) plus at most a tensor, not by the file (which a whole-state-dict load
    would add)."""
    from wan_desktop.models.dit import WanModel
    from wan_desktop.variants import DiTConfig

    cfg = DiTConfig(
        model_type="t2v",
        dim=512,
        ffn_dim=2048,
        num_heads=4,
        num_layers=4,
        in_dim=16,
        out_dim=16,
        text_dim=32,
        freq_dim=16,
    )
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in WanModel(cfg).state_dict().items()}
    path = tmp_path / "diffusion_models" / "wan_mem_fp32.safetensors"
    path.parent.mkdir()
    save_file(comfy_dit_state(state, "fp32"), path)
    file_size = path.stat().st_size
    del state
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.strip().splitlines()[-1])
    mb = 2**20
    print(
        f"peak private memory growth {r['growth'] / mb:.1f} MiB for a {file_size / mb:.1f} MiB "
        f"file -> {r['model'] / mb:.1f} MiB model ({r['growth'] / file_size:.2f}x file)"
    )
    slack = 24 * mb  # allocator / interpreter noise
    assert r["growth"] <= r["model"] + 2 * r["largest_fp32"] + slack
    assert r["growth"] < r["model"] + file_size - slack  # a second copy of the file would not fit
