"""A VACE DiT behind the torch backend: the hints reach every block runner (resident, streamed
blocks, the step cache's full steps) and a quantized (fp8) model keeps its VACE branch working."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from wan_desktop.engines.torch_backend import TorchDenoiser, randomize
from wan_desktop.engines.torch_ops import quantize_linears

from tests.vace_models import tiny_vace_variant
from wan_desktop.models.vace import VaceWanModel

# 5 main blocks, VACE hints after blocks 0, 2 and 4: streamed blocks receive hints too
CFG = replace(tiny_vace_variant().dit, num_layers=5, vace_layers=(0, 2, 4))


@pytest.fixture(scope="module")
def model():
    return randomize(VaceWanModel(CFG), dtype=torch.float32, device="cpu", seed=3).eval()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    ctx = torch.randn(1, 12, CFG.text_dim, generator=g)
    vace = torch.randn(1, 96, 2, 4, 6, generator=g)
    return x, torch.tensor([700.0]), ctx, vace


@pytest.mark.parametrize("swap", [0, 2, 5])
def test_denoiser_resident_and_streamed_equal_the_model(model, swap):
    x, t, ctx, vace = _inputs()
    with torch.inference_mode():
        want = model(x, t, ctx, vace=vace, vace_scale=0.8)
        without = model(x, t, ctx, vace=vace, vace_scale=0.0)
    den = TorchDenoiser(copy.deepcopy(model), swap_blocks=swap)
    den.load(torch.device("cpu"))
    got = den(x, t, ctx, vace=vace, vace_scale=0.8)
    assert torch.equal(got, want), swap
    assert not torch.allclose(got, without, atol=1e-3)  # the hints did arrive
    den.unload()


def test_fp8_blocks_keep_the_vace_branch(model):
    m = copy.deepcopy(model).cast_weights(torch.bfloat16)
    quantize_linears(m, "fp8")
    x, t, ctx, vace = _inputs(1)
    with torch.inference_mode():
        ref = model(x, t, ctx, vace=vace, vace_scale=1.0)
        got = m(x, t, ctx, vace=vace, vace_scale=1.0)
    err = float((got - ref).abs().max() / ref.abs().max())
    print(f"VACE DiT fp8 blocks vs fp32: rel err {err:.3f}")
    assert torch.isfinite(got).all() and err < 0.15
