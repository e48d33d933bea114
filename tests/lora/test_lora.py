"""LoRA loading and merging (wan_desktop/lora.py) on a tiny random Wan DiT, CPU fp32.

Oracles: diffusers' own Wan LoRA loading (WanLoraLoaderMixin.load_lora_weights + PEFT) on the
diffusers transformer with the same base weights, and the explicit W + s·(alpha/r)·B·A formula.
"""

from __future__ import annotations

import copy
import re
import typing

import pytest
import torch

from tests.lora_files import CFG, RANK, TARGETS, lowrank, official_layout, save
from tests.numerics import rel_err
from tests.reference_models import diffusers_transformer
from wan_desktop.checkpoints.keymap_dit import official_key
from wan_desktop.errors import CheckpointError, ConfigError
from wan_desktop.lora import (
    LoraSpec,
    load_loras,
    lora_manifest,
    lora_records,
    merge_loras,
    param_shapes,
    read_lora,
)
from wan_desktop.models.dit import WanModel


@pytest.fixture(scope="module")
def base():
    """(diffusers transformer, its official state dict)."""
    ref = diffusers_transformer(CFG, seed=21).eval()
    state = {official_key(k): v.detach().clone() for k, v in ref.state_dict().items()}
    return ref, state


def ours(state, dtype=torch.float32) -> WanModel:
    m = WanModel(CFG).eval().requires_grad_(False)
    m.load_state_dict(state, strict=True)
    return m.to(dtype) if dtype != torch.float32 else m


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, CFG.in_dim, 2, 4, 4, generator=g)
    ctx = torch.zeros(1, CFG.text_len, CFG.text_dim)
    ctx[0, :7] = torch.randn(7, CFG.text_dim, generator=g)
    return x, torch.tensor([637.0]), ctx


def peft_layout(pairs):
    return {
        f"transformer.blocks.{b}.{TARGETS[mod]}.lora_{ab}.weight": (down if ab == "A" else up)
        for (b, mod), (down, up, _) in pairs.items()
        for ab in "AB"
    }


def musubi_layout(pairs, alpha):
    t = {}
    for (b, mod), (down, up, _) in pairs.items():
        k = f"lora_unet_blocks_{b}_{mod.replace('.', '_')}"
        t[f"{k}.lora_down.weight"], t[f"{k}.lora_up.weight"] = down, up
        t[f"{k}.alpha"] = torch.tensor(float(alpha))
    return t


def diffusers_with_lora(ref_state_model, path, strength):
    from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

    class Holder(WanLoraLoaderMixin):  # the pipeline's LoRA loading, without a whole pipeline
        hf_device_map = None
        components: typing.ClassVar[dict] = {}

        def __init__(self, transformer):
            self.transformer = transformer

    model = ref_state_model
    Holder(model).load_lora_weights(str(path), adapter_name="lora")
    model.set_adapters(["lora"], weights=[strength])
    return model


@pytest.mark.parametrize("layout", ["official+alpha+diff_b", "peft", "musubi"])
def test_merged_output_equals_diffusers_lora_loading(base, tmp_path, layout):
    pytest.importorskip("peft")
    ref, state = base
    strength = 0.7
    if layout == "official+alpha+diff_b":
        tensors = official_layout(lowrank(1, bias=True), alpha=2.0)
    elif layout == "peft":
        tensors = peft_layout(lowrank(2))
    else:
        tensors = musubi_layout(lowrank(3), alpha=8.0)
    path = save(tmp_path, f"{layout}.safetensors", tensors)
    x, t, ctx = _inputs()
    with torch.no_grad():
        base_out = ref(x, t, ctx, return_dict=False)[0]
    model = ours(state)
    merge = merge_loras(model, load_loras(model, [LoraSpec(path=str(path), strength=strength)]))
    ref_l = diffusers_with_lora(copy.deepcopy(ref), path, strength)  # same base weights
    with torch.no_grad():
        want = ref_l(x, t, ctx, return_dict=False)[0]
        got = model(x, t, ctx)
    err = rel_err(got, want)
    print(
        f"LoRA {layout}: merged vs diffusers rel err {err:.2e}; LoRA effect "
        f"{rel_err(want, base_out):.2e}"
    )
    layers = CFG.num_layers * len(TARGETS)
    assert merge.merged_params == (2 * layers if layout == "official+alpha+diff_b" else layers)
    assert rel_err(want, base_out) > 1e-2  # the LoRA really changes the output
    assert err <= 1e-5


def test_merge_is_explicit_formula_for_every_layout(base, tmp_path):
    """kohya underscored diffusers names, lora_A/B on official names with a ComfyUI prefix, full
    diffs on a linear, an RMSNorm weight, a modulation table and the head, a conv (patch
    embedding) LoRA — each equals W + s·(alpha/r)·B·A or W + s·diff."""
    _, state = base
    g = torch.Generator().manual_seed(9)
    d = CFG.dim
    a_q, b_q = torch.randn(RANK, d, generator=g), torch.randn(d, RANK, generator=g)
    a_k, b_k = torch.randn(2, d, generator=g), torch.randn(d, 2, generator=g)
    pe = state["patch_embedding.weight"]
    a_pe = torch.randn(RANK, *pe.shape[1:], generator=g)
    b_pe = torch.randn(pe.shape[0], RANK, 1, 1, 1, generator=g)
    diffs = {
        "blocks.1.ffn.2.weight": torch.randn(*state["blocks.1.ffn.2.weight"].shape, generator=g),
        "blocks.0.self_attn.norm_q.weight": torch.randn(d, generator=g),
        "blocks.1.modulation": torch.randn(1, 6, d, generator=g),
        "head.head.bias": torch.randn(state["head.head.bias"].shape[0], generator=g),
    }
    tensors = {
        "lora_unet_blocks_0_attn2_to_q.lora_down.weight": a_q,  # kohya names of diffusers modules
        "lora_unet_blocks_0_attn2_to_q.lora_up.weight": b_q,
        "lora_unet_blocks_0_attn2_to_q.alpha": torch.tensor(1.0),
        "model.diffusion_model.blocks.1.self_attn.k.lora_A.weight": a_k,
        "model.diffusion_model.blocks.1.self_attn.k.lora_B.weight": b_k,
        "diffusion_model.patch_embedding.lora_down.weight": a_pe,
        "diffusion_model.patch_embedding.lora_up.weight": b_pe,
        "diffusion_model.blocks.1.ffn.2.diff": diffs["blocks.1.ffn.2.weight"],
        "diffusion_model.blocks.0.self_attn.norm_q.diff": diffs["blocks.0.self_attn.norm_q.weight"],
        "diffusion_model.blocks.1.modulation.diff": diffs["blocks.1.modulation"],
        "diffusion_model.head.head.diff_b": diffs["head.head.bias"],
    }
    path = save(tmp_path, "mixed.safetensors", tensors)
    s = 1.5
    model = ours(state)
    merge_loras(model, load_loras(model, [LoraSpec.parse(f"{path}:{s}")]))
    got = model.state_dict()
    want = {
        "blocks.0.cross_attn.q.weight": state["blocks.0.cross_attn.q.weight"]
        + s * (1.0 / RANK) * (b_q @ a_q),
        "blocks.1.self_attn.k.weight": state["blocks.1.self_attn.k.weight"] + s * (b_k @ a_k),
        "patch_embedding.weight": pe + s * (b_pe.flatten(1) @ a_pe.flatten(1)).reshape(pe.shape),
        **{k: state[k] + s * v for k, v in diffs.items()},
    }
    for k, w in want.items():
        assert torch.allclose(got[k], w, rtol=1e-6, atol=1e-6), k
        assert not torch.equal(got[k], state[k]), k
    untouched = set(state) - set(want)
    assert all(torch.equal(got[k], state[k]) for k in untouched)


def test_strength_zero_is_bit_exact_and_unmerge_restores(base, tmp_path):
    _, state = base
    path = save(tmp_path, "l.safetensors", official_layout(lowrank(4, bias=True), alpha=4))
    for dtype in (torch.float32, torch.bfloat16):
        model = ours(state, dtype)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        files = load_loras(model, [LoraSpec(path=str(path), strength=0.0)])
        merge_loras(model, files)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        merge = merge_loras(model, [(files[0][0], 0.8)])
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert len(changed) == CFG.num_layers * len(TARGETS) * 2  # weights and biases
        merge.unmerge()
        after = model.state_dict()
        assert all(
            torch.equal(after[k], v) and after[k].dtype == v.dtype for k, v in before.items()
        )


def test_two_loras_compose_as_a_sum(base, tmp_path):
    _, state = base
    p1 = save(tmp_path, "a.safetensors", official_layout(lowrank(5), alpha=2))
    p2 = save(tmp_path, "b.safetensors", peft_layout(lowrank(6)))
    deltas = []
    for specs in (
        [LoraSpec(path=str(p1), strength=0.6)],
        [LoraSpec(path=str(p2), strength=-1.2)],
        [LoraSpec(path=str(p1), strength=0.6), LoraSpec(path=str(p2), strength=-1.2)],
    ):
        model = ours(state)
        merge_loras(model, load_loras(model, specs))
        deltas.append({k: v - state[k] for k, v in model.state_dict().items()})
    for k in state:
        assert torch.allclose(deltas[2][k], deltas[0][k] + deltas[1][k], atol=1e-6), k


def test_fp8_and_int8_layers_take_the_lora_unmerged(base, tmp_path):
    """A quantized weight is never requantized: the LoRA runs beside it (y = x·W + s·(x·A)·B,
    models/lowrank.py), equal to the fp32 merge into the dequantized weight; unmerging drops it."""
    _, state = base
    path = save(tmp_path, "q.safetensors", official_layout(lowrank(7), alpha=RANK))
    key = "blocks.0.self_attn.q"
    x = torch.randn(3, 5, CFG.dim, generator=torch.Generator().manual_seed(4))
    for qdtype, per_row in (
        (torch.float8_e4m3fn, False),
        (torch.float8_e4m3fn, True),
        (torch.int8, True),
    ):
        model = ours(state)
        layer = model.get_submodule(key)
        w = layer.weight.detach().float()
        amax = w.abs().amax(dim=1, keepdim=True) if per_row else w.abs().amax()
        top = 127.0 if qdtype == torch.int8 else 448.0
        scale = amax / top
        q = (
            (w / scale).round().clamp(-127, 127).to(qdtype)
            if qdtype == torch.int8
            else (w / scale).to(qdtype)
        )
        layer._parameters["weight"] = torch.nn.Parameter(q, requires_grad=False)
        layer.scale_weight = scale
        deq = q.float() * scale
        base_out = layer(x)
        files = load_loras(model, [LoraSpec(path=str(path), strength=0.7)])
        merge = merge_loras(model, files)
        down, up, _ = lowrank(7)[(0, "self_attn.q")]
        want = torch.nn.functional.linear(x, deq + 0.7 * (up @ down), layer.bias)
        got = layer(x)
        assert layer.weight.dtype == qdtype and torch.equal(layer.scale_weight, scale)
        assert torch.equal(layer.weight.float(), q.float())  # the stored weight is untouched
        err = rel_err(got, want)
        print(f"{qdtype} per_row={per_row}: unmerged LoRA vs fp32 merge rel err {err:.2e}")
        assert err <= 1e-5
        assert rel_err(got, base_out) > 1e3 * err  # the LoRA is really in there
        merge.unmerge()
        assert torch.equal(layer(x), base_out)


def test_wrong_shape_is_refused_with_the_tensor_named(base, tmp_path):
    _, state = base
    pairs = lowrank(8)
    down, up, _ = pairs[(1, "ffn.0")]
    pairs[(1, "ffn.0")] = (down, up[:-3], None)  # out dim 3 short
    path = save(tmp_path, "bad.safetensors", official_layout(pairs))
    model = ours(state)
    for header_only in (False, True):  # the CLI's header check refuses it the same way
        with pytest.raises(CheckpointError) as e:
            read_lora(path, param_shapes(model), header_only=header_only)
        msg = e.value.one_line()
        assert "bad.safetensors" in msg
        assert "diffusion_model.blocks.1.ffn.0.lora_down.weight" in msg
        assert f"[{CFG.ffn_dim}, {CFG.dim}]" in msg


def test_unknown_keys_are_refused_with_names_and_count(base, tmp_path):
    _, state = base
    t = official_layout({k: v for k, v in lowrank(9).items() if k[0] == 0})
    t["diffusion_model.blocks.7.self_attn.q.lora_down.weight"] = torch.zeros(4, CFG.dim)
    t["diffusion_model.blocks.7.self_attn.q.lora_up.weight"] = torch.zeros(CFG.dim, 4)
    t["text_encoder.layer.0.lora_A.weight"] = torch.zeros(4, 4)
    path = save(tmp_path, "foreign.safetensors", t)
    with pytest.raises(CheckpointError) as e:
        read_lora(path, param_shapes(ours(state)))
    msg = e.value.one_line()
    assert "foreign.safetensors" in msg and "3 LoRA tensor(s) match no layer" in msg
    assert "blocks.7.self_attn.q.lora_down.weight" in msg and "text_encoder.layer.0" in msg
    with pytest.raises(CheckpointError, match="LoRA file not found"):
        read_lora(tmp_path / "missing.safetensors", param_shapes(ours(state)))
    half = dict(official_layout({(0, "ffn.2"): lowrank(9)[(0, "ffn.2")]}))
    half.pop("diffusion_model.blocks.0.ffn.2.lora_up.weight")
    with pytest.raises(CheckpointError, match="no matching up"):
        read_lora(save(tmp_path, "half.safetensors", half), param_shapes(ours(state)))


def test_spec_parsing_and_records(tmp_path):
    assert LoraSpec.parse("a.safetensors") == LoraSpec(path="a.safetensors", strength=1.0)
    assert LoraSpec.parse("/x/a.safetensors:0.5").strength == 0.5
    assert LoraSpec.parse("C:\\loras\\a.safetensors").path == "C:\\loras\\a.safetensors"
    assert LoraSpec.parse("C:\\loras\\a.safetensors:-1", expert="low") == LoraSpec(
        path="C:\\loras\\a.safetensors", strength=-1.0, expert="low"
    )
    for bad in ("a.safetensors:strong", "a.safetensors:nan", ":1"):
        with pytest.raises(ConfigError):
            LoraSpec.parse(bad)
    p = save(
        tmp_path,
        "rec.safetensors",
        {"diffusion_model.head.head.diff_b": torch.ones(CFG.out_dim * 4)},
    )
    f = read_lora(p, param_shapes(WanModel(CFG)))
    import hashlib

    assert f.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert lora_records([(f, 0.25)]) == [
        {"file": "rec.safetensors", "sha256": f.sha256[:12], "strength": 0.25, "expert": "high"}
    ]
    assert lora_manifest([LoraSpec(path=str(p), strength=0.25)]) == lora_records([(f, 0.25)])


@pytest.mark.parametrize(
    "text,shown",
    [
        ("a.safetensors:1e300", "1e+300"),
        ("a.safetensors:101", "101"),
        ("a.safetensors:-100.5", "-100.5"),
        ("a.safetensors:inf", "inf"),
        ("a.safetensors:-inf", "-inf"),
        ("a.safetensors:nan", "nan"),
    ],
)
def test_strengths_outside_plus_minus_100_are_refused_with_the_value(text, shown):
    """|strength| <= 100 (ComfyUI's LoraLoader range); 1e300 would overflow every merged weight to
    ±Inf. Checked on the spec itself, so the app's LoRA list is held to the same rule."""
    with pytest.raises(
        ConfigError,
        match=rf"LoRA strength must be a number from -100 to 100, "
        rf"got {re.escape(shown)} \(a.safetensors\)",
    ):
        LoraSpec.parse(text)
    with pytest.raises(ConfigError, match="from -100 to 100"):
        LoraSpec(path="a.safetensors", strength=float(text.rpartition(":")[2]))
    assert LoraSpec.parse("a.safetensors:100").strength == 100.0
    assert LoraSpec.parse("a.safetensors:-100", expert="low").strength == -100.0


@pytest.mark.parametrize("role", ["lora_down", "lora_up", "alpha", "diff_b"])
def test_a_lora_with_nan_or_inf_values_is_refused_naming_the_tensor(base, tmp_path, role):
    """One NaN/Inf in any LoRA tensor would spread over every merged weight (and the whole video):
    refused when read, before any weight changes, with the tensor's name and the bad count."""
    _, state = base
    tensors = official_layout(lowrank(5, bias=True), alpha=2)
    key = f"diffusion_model.blocks.1.ffn.2.{role}" + (
        "" if role in ("alpha", "diff_b") else ".weight"
    )
    bad = tensors[key].clone()
    bad.view(-1)[:2] = torch.tensor([float("nan"), float("-inf")])[: bad.numel()]
    n = min(2, bad.numel())
    path = save(tmp_path, "nan.safetensors", tensors | {key: bad})
    model = ours(state)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=rf"nan.safetensors: tensor {re.escape(key)} has {n} "
        rf"NaN/infinite value\(s\) of {bad.numel()}",
    ):
        load_loras(model, [LoraSpec(path=str(path))])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the header-only check (the CLI's instant one) reads no values, so it lets the file pass
    read_lora(path, param_shapes(model), header_only=True)


@pytest.mark.parametrize("swap_blocks", [0, 1])
def test_torch_denoiser_changes_strength_by_unmerge_and_remerge(base, tmp_path, swap_blocks):
    from wan_desktop.engines.torch_backend import TorchDenoiser

    _, state = base
    path = save(tmp_path, "s.safetensors", official_layout(lowrank(11, bias=True), alpha=2))
    model = ours(state)
    (pairs,) = [load_loras(model, [LoraSpec(path=str(path))])]
    lora = pairs[0][0]
    den = TorchDenoiser(model, swap_blocks=swap_blocks)
    den.load(torch.device("cpu"))
    x, t, ctx = _inputs()
    base_out = den(x, t, ctx)
    den.set_loras([(lora, 0.5)])
    half = den(x, t, ctx)
    den.set_loras([(lora, 1.0)])
    full = den(x, t, ctx)
    fresh = ours(state)
    merge_loras(fresh, [(lora, 1.0)])
    with torch.no_grad():
        assert torch.equal(full, fresh(x, t, ctx))  # re-merged == merged once at that strength
    assert rel_err(half, base_out) > 1e-3 and rel_err(full, half) > 1e-3
    den.set_loras([])
    assert torch.equal(den(x, t, ctx), base_out)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
