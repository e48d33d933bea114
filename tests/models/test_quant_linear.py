"""QuantLinear: a GGML-quantized weight kept as bytes, dequantized per call to the activation dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wan_desktop.models.gguf_quants import dequantize
from wan_desktop.models.quant_linear import QuantLinear

gguf = pytest.importorskip("gguf")


def _layer(qtype: str = "Q8_0") -> tuple[QuantLinear, torch.Tensor]:
    w = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32) * 0.05
    raw = torch.from_numpy(gguf.quantize(w, gguf.GGMLQuantizationType[qtype]).copy())
    bias = torch.linspace(-1, 1, 48)
    return QuantLinear.from_raw(raw, qtype, (48, 256), bias), raw


def test_forward_is_a_linear_of_the_dequantized_weight():
    layer, raw = _layer()
    x = torch.randn(2, 5, 256)
    w = dequantize(raw, "Q8_0", (48, 256))
    assert torch.equal(layer(x), F.linear(x, w, layer.bias))
    assert layer.qweight.dtype == torch.uint8 and layer.weight_nbytes == 48 * 8 * 34
    assert "qweight" not in layer.state_dict() and set(layer.state_dict()) == {"bias"}
    assert "qweight" in dict(layer.named_buffers())  # what .to() and block streaming move


def test_the_model_dtype_follows_casts():
    layer, _ = _layer()
    assert layer.weight.dtype == torch.float32
    layer = layer.to(torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16 and layer.qweight.dtype == torch.uint8
    y = layer(torch.randn(3, 256, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16


def test_rows_must_be_whole_blocks():
    with pytest.raises(ValueError, match="256-value blocks"):
        QuantLinear(320, 8, "Q4_K")


@pytest.mark.slow  # torch.compile on the CPU: ~15 s
def test_compiled_forward_equals_eager():
    layer, _ = _layer("Q4_0")
    x = torch.randn(4, 256)
    assert torch.equal(torch.compile(layer)(x), layer(x))
