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
    return {k: TensorSource(tuple(v.shape), str(v.dtype), Path("toy.safetensors"), (lambda v=v: v), k)
            for k, v in tensors.items()}


def _weights():
    g = torch.Generator().manual_seed(0)
    return {"proj.weight": torch.randn(3, 4, generator=g), "proj.bias": torch.randn(3, generator=g),
            "time_embedding.weight": torch.randn(2, 2, generator=g),
            "time_embedding.bias": torch.randn(2, generator=g)}


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
    with pytest.raises(CheckpointError, match=r"toy \(toy.safetensors\): 1 missing tensor\(s\) \(proj.bias\)"):
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
    materialize(m, src, what="toy", dtype=torch.float32,
                scales={"proj": TensorSource((), "float32", Path("toy"), lambda: scale, "proj.scale_weight")})
    assert m.proj.weight.dtype == torch.float8_e4m3fn
    x = torch.randn(2, 4)
    ref = x @ (q.float() * scale).T + w["proj.bias"]
    assert torch.allclose(m(x), ref, atol=1e-6)
    # without keeping fp8 the weight is dequantized at load time: same numbers
    with weights_on_meta():
        m2 = Toy()
    materialize(m2, src, what="toy", dtype=torch.float32, keep_fp8=False,
                scales={"proj": TensorSource((), "float32", Path("toy"), lambda: scale, "proj.scale_weight")})
    assert m2.proj.weight.dtype == torch.float32
    assert torch.allclose(m2(x), ref, atol=1e-6)
