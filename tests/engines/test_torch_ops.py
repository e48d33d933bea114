"""FP8 / INT8 linears, quantize_linears' layer selection and attention selection.

Error bounds (relative L2 ||y−ref|| / ||ref||, and max |y−ref| / max |ref|) follow from the formats:
E4M3 keeps 3 mantissa bits, so rounding to nearest errs by ≤ 2^-4 of a value's power of two and by
≈ 2^-3/√12 ≈ 3.6 % of it (RMS); relative to values spread over the binade that is ≈ 2.4 % per
weight, which a K-long dot product of independent errors keeps as ≈ 2.4 % of the output; quantizing
the activations too adds an independent error of the same size (√2 × ≈ 3.4 %). Int8 with a
per-channel scale has a step of amax/127: ≈ 0.6 % of a Gaussian row's RMS. Bounds sit ~1.5× above
the measured figures (printed) so a wrong scale (a factor ≥ 2) or transposition (≈ 140 %) fails.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from wan_desktop.engines import torch_ops
from wan_desktop.engines.torch_ops import (
    DIT_KEPT,
    FP8_DTYPE,
    Fp8Linear,
    Fp8Ops,
    Int8Linear,
    Int8Ops,
    make_ops,
    quantizable_linears,
    quantize_linears,
    select_attention,
    set_attention,
)

from tests.engines.helpers import dit_inputs, tiny_dit
from tests.numerics import rel_err
from wan_desktop.errors import ConfigError, EngineError
from wan_desktop.models.layers import Linear


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


class _Holder(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.l = layer


def _layer(k: int = 512, n: int = 256, seed: int = 0) -> Linear:
    torch.manual_seed(seed)
    layer = Linear(k, n)
    nn.init.normal_(layer.bias, std=0.1)
    return layer.requires_grad_(False)


def _quantized(layer: Linear, mode: str, **kw) -> nn.Module:
    holder = _Holder(copy.deepcopy(layer).to(torch.bfloat16))
    quantize_linears(holder, mode, include=("l",), exclude=(), **kw)
    return holder.l


@pytest.fixture
def x_and_ref():
    layer = _layer()
    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    ref = F.linear(x.float(), layer.weight, layer.bias)  # fp32 math on the same bf16 input
    return layer, x, ref


@pytest.mark.parametrize(
    "kernel,act,per_channel,bound",
    [
        ("dequant", "row", True, 0.04),  # weight-only fp8: measured 2.5 %
        ("dequant", "row", False, 0.04),
        ("scaled_mm", "row", True, 0.055),  # weight and activation fp8: measured 3.7 %
        ("scaled_mm", "tensor", False, 0.055),
    ],
)
def test_fp8_linear_error_vs_fp32(x_and_ref, kernel, act, per_channel, bound):
    layer, x, ref = x_and_ref
    q = _quantized(layer, "fp8", per_channel=per_channel)
    assert isinstance(q, Fp8Linear) and q.weight.dtype == FP8_DTYPE
    assert q.scale_weight.shape == ((256, 1) if per_channel else ())
    q.kernel, q.act_scaling = kernel, act
    y = q(x)
    assert y.dtype == torch.bfloat16 and y.shape == (64, 256)
    e2, emax = _rel_l2(y, ref), rel_err(y, ref)
    bf16 = _rel_l2(F.linear(x, layer.weight.bfloat16(), layer.bias.bfloat16()), ref)
    print(
        f"fp8 {kernel}/{act}/{'channel' if per_channel else 'tensor'}: rel L2 {e2:.4f}, "
        f"max rel {emax:.4f} (bf16 weights: rel L2 {bf16:.4f})"
    )
    assert 0.005 < e2 < bound and emax < bound * 1.5


def test_scaled_mm_equals_its_definition(x_and_ref):
    """The _scaled_mm call gets the right operands, transposes and scales: it equals fp32 math on the
    dequantized fp8 activations and weights up to the bf16 rounding of its output (2^-8)."""
    layer, x, _ = x_and_ref
    q = _quantized(layer, "fp8")
    q.kernel = "scaled_mm"
    y = q(x)
    xq, sx = torch_ops._quantize_rows_fp8(x)
    w = q.weight.float() * q.scale_weight
    expect = (xq.float() * sx) @ w.t() + q.bias.float()
    e = rel_err(y, expect)
    print(f"_scaled_mm vs dequantized fp8 operands: max rel {e:.2e}")
    assert e < 2**-7


@pytest.mark.parametrize(
    "kernel,bound",
    [
        ("dequant", 0.009),
        ("int8pack", 0.009),
        ("w8a8", 0.013),  # measured 0.58 / 0.54 / 0.88 %
    ],
)
def test_int8_linear_error_vs_fp32(x_and_ref, kernel, bound):
    layer, x, ref = x_and_ref
    q = _quantized(layer, "int8")
    assert isinstance(q, Int8Linear) and q.weight.dtype == torch.int8
    q.kernel = kernel
    y = q(x)
    e2 = _rel_l2(y, ref)
    print(f"int8 {kernel}: rel L2 {e2:.4f}, max rel {rel_err(y, ref):.4f}")
    assert 0.001 < e2 < bound


def test_int8_kernels_agree(x_and_ref):
    layer, x, _ = x_and_ref
    q = _quantized(layer, "int8")
    q.kernel = "dequant"
    a = q(x)
    q.kernel = "int8pack"
    b = q(x)
    e = rel_err(b, a)
    print(f"int8pack vs dequant: max rel {e:.2e}")
    assert e < 1e-2  # same weights: a few bf16 roundings (2^-8 each) apart; a wrong scale is ≥ 50 %


def test_fp8_checkpoint_weights_run_as_stored():
    """A ComfyUI fp8_e4m3fn_scaled layer (fp8 weight + scalar scale_weight) keeps its bytes."""
    layer = _layer()
    q8, s = torch_ops.quantize_weight_fp8(layer.weight, per_channel=False)
    stored = Linear(512, 256).requires_grad_(False)
    stored.weight = nn.Parameter(q8, requires_grad=False)
    stored.bias = nn.Parameter(layer.bias.clone(), requires_grad=False)
    stored.scale_weight = s
    holder = _Holder(stored)
    quantize_linears(holder, "fp8", include=("l",), exclude=())
    assert isinstance(holder.l, Fp8Linear)
    assert torch.equal(holder.l.weight.view(torch.uint8), q8.view(torch.uint8))
    assert holder.l.scale_weight is s


def test_quantize_keeps_sensitive_layers():
    model = tiny_dit(name="i2v-14B")
    before = {n: p.dtype for n, p in model.named_parameters()}
    names = quantize_linears(copy.deepcopy(model).cast_weights(torch.bfloat16), "fp8")
    chosen, kept = quantizable_linears(model)
    assert names == chosen
    print("kept unquantized:", kept)
    expected_kept = {
        "text_embedding.0",
        "text_embedding.2",
        "time_embedding.0",
        "time_embedding.2",
        "time_projection.1",
        "head.head",
        "img_emb.proj.1",
        "img_emb.proj.3",
    }
    assert set(kept) == expected_kept
    per_block = {
        "self_attn.q",
        "self_attn.k",
        "self_attn.v",
        "self_attn.o",
        "cross_attn.q",
        "cross_attn.k",
        "cross_attn.v",
        "cross_attn.o",
        "cross_attn.k_img",
        "cross_attn.v_img",
        "ffn.0",
        "ffn.2",
    }
    assert set(chosen) == {f"blocks.{i}.{n}" for i in range(2) for n in per_block}
    q = copy.deepcopy(model).cast_weights(torch.bfloat16)
    quantize_linears(q, "int8")
    for name, p in q.named_parameters():
        owner = name.rsplit(".", 1)[0]
        if owner in chosen and name.endswith(".weight"):
            assert p.dtype == torch.int8, name
        elif q.keeps_fp32(name):
            assert p.dtype == torch.float32 == before[name], name
        else:
            assert p.dtype == torch.bfloat16, name
    assert "blocks.*.modulation" in DIT_KEPT


@pytest.mark.parametrize(
    "mode,kernel,bound",
    [
        ("bf16", None, 0.002),  # measured 0.09 % (rel L2)
        ("fp8", "dequant", 0.015),  # weight-only fp8: measured 0.85 %
        ("fp8", "scaled_mm", 0.02),  # fp8 weights and activations: measured 1.15 %
        ("int8", "auto", 0.005),  # measured 0.25 %
        ("int8", "w8a8", 0.0065),  # measured 0.37 %
    ],
)
def test_tiny_dit_velocity_error(mode, kernel, bound, monkeypatch):
    model = tiny_dit()
    x, t, ctx = dit_inputs()
    with torch.inference_mode():
        ref = model(x, t, ctx)
    q = copy.deepcopy(model).cast_weights(torch.bfloat16)
    if mode != "bf16":
        quantize_linears(q, mode)
        monkeypatch.setattr(Fp8Linear if mode == "fp8" else Int8Linear, "kernel", kernel)
    with torch.inference_mode():
        v = q(x, t, ctx)
    e2, emax = _rel_l2(v, ref), rel_err(v, ref)
    print(f"tiny DiT velocity, {mode} {kernel or ''}: rel L2 {e2:.4f}, max rel {emax:.4f} vs fp32")
    assert e2 < bound and emax < bound * 1.5
    if mode != "bf16":
        assert e2 > 0.001  # the linears really are quantized (bf16 alone: 0.09 %)


def test_make_ops_and_errors():
    assert make_ops() is Fp8Ops and make_ops("bf16") is Fp8Ops and make_ops("int8") is Int8Ops
    ops = make_ops("fp8", "sdpa-math")
    assert issubclass(ops, Fp8Ops) and ops.attention is not Fp8Ops.attention
    with pytest.raises(ConfigError, match="precision"):
        make_ops("fp4")
    with pytest.raises(ConfigError, match="attention"):
        select_attention("xformers")
    with pytest.raises(ConfigError, match="mode"):
        quantize_linears(nn.Linear(4, 4), "int4")


def test_sage_without_the_package_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import sageattention  # noqa: F401
    except ImportError:
        with pytest.raises(EngineError, match="sageattention"):
            select_attention("sage")
    else:
        pytest.skip("sageattention is installed")


def test_set_attention_switches_a_built_model():
    model = tiny_dit()
    x, t, ctx = dit_inputs()
    calls = []
    sdpa_math = select_attention("sdpa-math")

    with torch.inference_mode():
        ref = model(x, t, ctx)
    n = set_attention(model, "sdpa-math")
    assert n == 4  # self- and cross-attention of 2 blocks
    fn = model.blocks[0].self_attn.ops.attention
    model.blocks[0].self_attn.ops.attention = staticmethod(
        lambda *a, **k: calls.append(1) or sdpa_math(*a, **k)
    )
    with torch.inference_mode():
        out = model(x, t, ctx)
    assert calls, "the new attention function was not called"
    e = rel_err(out, ref)
    print(f"sdpa-math vs sdpa (CPU): max rel {e:.1e}")
    assert e < 1e-5
    assert fn is not None


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_scaled_mm_path_vs_dequantized():
    if not torch_ops.fp8_compute_supported("cuda"):
        pytest.skip("FP8 matmuls need compute capability >= 8.9")
    layer = _layer(1536, 8960).cuda()
    x = torch.randn(4096, 1536, device="cuda", dtype=torch.bfloat16)
    q = _quantized(layer, "fp8").cuda()
    q.kernel = "dequant"
    a = q(x)
    q.kernel = "auto"
    b = q(x)
    ref = F.linear(x.float(), layer.weight, layer.bias)
    print(
        f"CUDA fp8: dequant rel L2 {_rel_l2(a, ref):.4f}, _scaled_mm rel L2 {_rel_l2(b, ref):.4f}, "
        f"between {_rel_l2(b, a):.4f}"
    )
    assert _rel_l2(b, a) < 0.04 and _rel_l2(b, ref) < 0.055


@pytest.mark.gpu
def test_gpu_int8_kernels():
    layer = _layer(1536, 8960).cuda()
    x = torch.randn(4096, 1536, device="cuda", dtype=torch.bfloat16)
    q = _quantized(layer, "int8").cuda()
    ref = F.linear(x.float(), layer.weight, layer.bias)
    for kernel in ("dequant", "int8pack", "w8a8", "auto"):
        q.kernel = kernel
        try:
            y = q(x)
        except (RuntimeError, NotImplementedError) as e:
            print(f"CUDA int8 {kernel}: not available ({str(e)[:80]})")
            continue
        print(f"CUDA int8 {kernel}: rel L2 {_rel_l2(y, ref):.4f}")
        assert _rel_l2(y, ref) < 0.013


@pytest.mark.gpu
def test_gpu_sage_vs_sdpa():
    pytest.importorskip("sageattention")
    q, k, v = (torch.randn(2, 12, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    out = select_attention("sage")(q, k, v, scale=128**-0.5)
    print(f"SageAttention vs fp32 SDPA: rel L2 {_rel_l2(out, ref):.4f}")
    assert _rel_l2(out, ref) < 0.05


@pytest.mark.gpu
def test_gpu_tiny_dit_fp8_velocity():
    model = tiny_dit().cuda()
    x, t, ctx = (a.cuda() for a in dit_inputs())
    with torch.inference_mode():
        ref = model(x, t, ctx)
    q = copy.deepcopy(model).cast_weights(torch.bfloat16)
    quantize_linears(q, "fp8")
    torch_ops.warm_capabilities("cuda")
    with torch.inference_mode():
        v = q(x, t, ctx)
    print(f"CUDA tiny DiT fp8 velocity: rel L2 {_rel_l2(v, ref):.4f}")
    assert _rel_l2(v, ref) < 0.035
