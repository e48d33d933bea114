"""Each GGML block kernel equals the gguf package's numpy ``dequantize`` bit for bit (fp32).

Blocks come from gguf's own ``quantize`` where it has one (F32, F16, BF16, Q4_0 … Q8_0); the K-quants
it cannot write are random bytes with finite fp16 scales (every bit pattern of the packed values,
scales and masks is a valid block).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_desktop.models.gguf_quants import BLOCK_SIZES, dequantize, packed_nbytes

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

QUANTIZABLE = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# byte offsets of the fp16 super-block scales (d, dmin) inside each K-quant block
K_SCALES = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
ROWS, COLS = 6, 512  # 2 K-blocks or 16 small blocks per row


def _random_k_blocks(qtype: str, rng: np.random.Generator) -> np.ndarray:
    """[ROWS, bytes per row] of random K-quant blocks whose scales are finite fp16 in ±[1e-3, 1]."""
    block, size = BLOCK_SIZES[qtype]
    raw = rng.integers(0, 256, size=(ROWS * COLS // block, size), dtype=np.uint8)
    for off in K_SCALES[qtype]:
        mag = rng.uniform(1e-3, 1.0, size=raw.shape[0]) * rng.choice([-1.0, 1.0], size=raw.shape[0])
        raw[:, off : off + 2] = mag.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.reshape(ROWS, -1)


def _blocks(qtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if qtype in QUANTIZABLE:
        data = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32)
        data[0, :32] = 0.0  # an all-zero block (scale 0)
        return gguf.quantize(data, Q[qtype])
    return _random_k_blocks(qtype, rng)


@pytest.mark.parametrize("qtype", list(BLOCK_SIZES))
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_equals_gguf_numpy_bit_for_bit(qtype: str, seed: int) -> None:
    packed = _blocks(qtype, seed)
    want = gguf.dequantize(packed, Q[qtype]).astype(np.float32).reshape(ROWS, COLS)
    raw = torch.from_numpy(np.ascontiguousarray(packed).view(np.uint8).copy())
    assert raw.numel() == packed_nbytes(qtype, (ROWS, COLS))
    got = dequantize(raw, qtype, (ROWS, COLS))
    assert got.dtype == torch.float32 and got.shape == (ROWS, COLS)
    assert np.isfinite(want).all()
    assert np.array_equal(got.numpy().view(np.int32), want.view(np.int32))


def test_quantized_values_track_the_original() -> None:
    """Not only self-consistent: Q8_0 of smooth data is within half a step of it."""
    x = torch.linspace(-1, 1, 32 * 8).reshape(2, 128)
    packed = gguf.quantize(x.numpy(), Q.Q8_0)
    y = dequantize(torch.from_numpy(packed.copy()), "Q8_0", (2, 128))
    step = x.abs().reshape(-1, 32).amax(1, keepdim=True) / 127
    assert ((y - x).reshape(-1, 32).abs() <= step / 2 * 1.01).all()


def test_output_dtype_and_wrong_sizes() -> None:
    packed = torch.from_numpy(gguf.quantize(np.ones((1, 32), np.float32), Q.Q4_0).copy())
    assert dequantize(packed, "Q4_0", (1, 32), torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected 18 uint8 bytes"):
        dequantize(packed[:, :17], "Q4_0", (1, 32))
    with pytest.raises(ValueError, match="whole 256-value blocks"):
        packed_nbytes("Q4_K", (4, 128))
