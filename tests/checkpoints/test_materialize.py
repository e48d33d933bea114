from pathlib import Path

import pytest
import torch
from torch import nn

from wan_desktop.checkpoints.materialize import TensorSource, materialize, weights_on_meta
from wan_desktop.errors import CheckpointError
from wan_desktop.models.layers import Linear


class Toy(nn.Module):
    FP32_MODULES = ("time_embedding",)

    def __init__(self):
        super().__init__()
        self.proj = Linear(4, 3)
        self.time_embedding = nn.Linear(2, 2)
        self.register_buffer("table", torch.arange(3.0), persistent=False)

    def forward(self, x):
        return self.proj(x)


def _sources(tensors):
    return {
        k: TensorSource(tuple(v.shape), str(v.dtype), Path("toy.safetensors"), (lambda v=v: v), k)
        for k, v in tensors.items()
    }


def _weights():
    g = torch.Generator().manual_seed(0)
    return {
        "proj.weight": torch.randn(3, 4, generator=g),
        "proj.bias": torch.randn(3, generator=g),
        "time_embedding.weight": torch.randn(2, 2, generator=g),
        "time_embedding.bias": torch.randn(2, generator=g),
    }


def test_meta_build_keeps_buffers_real_and_loads_exactly():
    with weights_on_meta():
        m = Toy()
    assert m.proj.weight.device.type == "meta" and m.table.device.type == "cpu"
    w = _weights()
    materialize(m, _sources(w), what="toy", dtype=torch.bfloat16, fp32_modules=Toy.FP32_MODULES)
    assert m.proj.weight.dtype == torch.bfloat16
    assert m.time_embedding.weight.dtype == torch.float32  # fp32 island kept
    assert torch.equal(m.time_embedding.weight, w["time_embedding.weight"])
    assert torch.equal(m.table, torch.arange(3.0))


def test_missing_unexpected_and_shape_errors_name_tensors():
    w = _weights()
    del w["proj.bias"]
    with weights_on_meta():
        m = Toy()
    with pytest.raises(
        CheckpointError, match=r"toy \(toy.safetensors\): 1 missing tensor\(s\) \(proj.bias\)"
    ):
        materialize(m, _sources(w), what="toy")
    w = _weights() | {"extra.weight": torch.ones(1)}
    with pytest.raises(CheckpointError, match=r"1 unexpected tensor\(s\) \(extra.weight\)"):
        materialize(m, _sources(w), what="toy")
    w = _weights() | {"proj.weight": torch.ones(5, 4)}
    with pytest.raises(CheckpointError, match=r"proj.weight has shape \[5, 4\], expected \[3, 4\]"):
        materialize(m, _sources(w), what="toy")


def test_fp8_weights_stay_fp8_and_compute_with_scale():
    w = _weights()
    scale = torch.tensor(0.05)
    q = (w["proj.weight"] / scale).to(torch.float8_e4m3fn)
    src = _sources(w | {"proj.weight": q})
    with weights_on_meta():
        m = Toy()
    materialize(
        m,
        src,
        what="toy",
        dtype=torch.float32,
        scales={
            "proj": TensorSource((), "float32", Path("toy"), lambda: scale, "proj.scale_weight")
        },
    )
    assert m.proj.weight.dtype == torch.float8_e4m3fn
    x = torch.randn(2, 4)
    ref = x @ (q.float() * scale).T + w["proj.bias"]
    assert torch.allclose(m(x), ref, atol=1e-6)
    # without keeping fp8 the weight is dequantized at load time: same numbers
    with weights_on_meta():
        m2 = Toy()
    materialize(
        m2,
        src,
        what="toy",
        dtype=torch.float32,
        keep_fp8=False,
        scales={
            "proj": TensorSource((), "float32", Path("toy"), lambda: scale, "proj.scale_weight")
        },
    )
    assert m2.proj.weight.dtype == torch.float32
    assert torch.allclose(m2(x), ref, atol=1e-6)


# ----------------------------------------------------------------------------- non-finite values


def _fp8_with(dtype, bits):
    """An fp8 tensor of 0.5s with one element's bits replaced."""
    q = torch.full((3, 4), 0.5).to(dtype)
    q.view(torch.uint8)[1, 2] = bits
    return q


@pytest.mark.parametrize(
    "key,value,count",
    [
        ("proj.weight", float("nan"), 1),
        ("proj.bias", float("inf"), 1),
        ("time_embedding.weight", float("-inf"), 1),  # an fp32 island too
    ],
)
def test_a_nan_or_inf_tensor_is_refused_naming_the_file_and_the_tensor(key, value, count):
    w = _weights()
    w[key].view(-1)[0] = value
    with weights_on_meta():
        m = Toy()
    with pytest.raises(
        CheckpointError,
        match=rf"toy \(toy.safetensors\): tensor {key} has "
        rf"{count} NaN/infinite value\(s\) of "
        rf"{w[key].numel()}; the file is damaged",
    ):
        materialize(m, _sources(w), what="toy", dtype=torch.bfloat16)


def test_finite_values_that_overflow_float16_are_refused_with_the_dtype_remedy():
    """65504 is fp16's largest value: 1e5 loads in bfloat16 (the same numbers up to rounding) but
    would become Inf in float16."""
    w = _weights()
    w["proj.weight"][2, 3] = 1e5
    with weights_on_meta():
        m = Toy()
    materialize(m, _sources(w), what="toy", dtype=torch.bfloat16)
    assert float(m.proj.weight[2, 3]) == pytest.approx(1e5, rel=1e-2)
    with weights_on_meta():
        m = Toy()
    with pytest.raises(
        CheckpointError,
        match=r"tensor proj.weight has values up to 1e\+05, which "
        r"overflow float16",
    ) as e:
        materialize(m, _sources(w), what="toy", dtype=torch.float16)
    assert "bfloat16 or float32" in e.value.remedy


@pytest.mark.parametrize("keep_fp8", [True, False])
@pytest.mark.parametrize(
    "dtype,bits",
    [
        (torch.float8_e4m3fn, 0x7F),  # NaN (e4m3fn has no Inf)
        (torch.float8_e4m3fn, 0xFF),  # -NaN
        (torch.float8_e5m2, 0x7C),  # +Inf
        (torch.float8_e5m2, 0xFE),  # NaN
    ],
)
def test_fp8_nan_weights_and_nan_scales_are_refused(keep_fp8, dtype, bits):
    """fp8 has no isfinite kernel: its NaN/Inf bit patterns are found both when the weight stays
    fp8 and when it is dequantized at load time; a NaN scale as well. Finite fp8 loads."""
    w = _weights()
    fine = TensorSource(
        (), "float32", Path("toy.safetensors"), lambda: torch.tensor(0.05), "proj.scale_weight"
    )
    with weights_on_meta():
        m = Toy()
    materialize(
        m,
        _sources(w | {"proj.weight": _fp8_with(dtype, 0x38)}),
        what="toy",
        keep_fp8=keep_fp8,
        scales={"proj": fine},
    )  # 0x38: 1.0 (e4m3fn) / 0.5 (e5m2)
    with weights_on_meta():
        m = Toy()
    with pytest.raises(CheckpointError, match=r"tensor proj.weight has 1 NaN/infinite value\(s\)"):
        materialize(
            m,
            _sources(w | {"proj.weight": _fp8_with(dtype, bits)}),
            what="toy",
            keep_fp8=keep_fp8,
            scales={"proj": fine},
        )
    bad = TensorSource(
        (),
        "float32",
        Path("toy.safetensors"),
        lambda: torch.tensor(float("nan")),
        "proj.scale_weight",
    )
    q = (w["proj.weight"] / 0.05).to(dtype)
    with weights_on_meta():
        m = Toy()
    with pytest.raises(CheckpointError, match=r"tensor proj.scale_weight has 1 NaN"):
        materialize(
            m, _sources(w | {"proj.weight": q}), what="toy", keep_fp8=keep_fp8, scales={"proj": bad}
        )
