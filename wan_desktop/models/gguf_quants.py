"""Dequantization of GGML blocks (the tensor types of GGUF files) in torch.

One function per block type turns raw block bytes ``uint8 [n_blocks, type_size]`` into float32 values
``[n_blocks, block_size]``; :func:`dequantize` applies one to a whole tensor. Everything is vectorised
torch (bit fields unpacked with broadcast shifts), so the same code runs on the CPU and, per linear
layer as it runs, on the GPU (models/quant_linear.py).

Written from the block layouts of ggml (``ggml-common.h``: ``block_q4_0`` … ``block_q6_K``) as the
``gguf`` package's numpy reference (``gguf/quants.py``) reads them. The arithmetic is done in the
same order and precision (fp16 scales widened to fp32, one rounding per product or sum), so each
function equals ``gguf.quants.dequantize`` bit for bit in fp32 (tests/models/test_gguf_quants.py).

Block layouts (bytes, in order; d/dmin are fp16, QK_K = 256):
  Q4_0  d, qs[16]                      x = d·(q − 8), q 4-bit: low nibbles are values 0–15,
                                       high nibbles 16–31
  Q4_1  d, m, qs[16]                   x = d·q + m
  Q5_0  d, qh[4], qs[16]               x = d·(q − 16), the fifth bit of value j is bit j of qh
  Q5_1  d, m, qh[4], qs[16]            x = d·q + m
  Q8_0  d, qs[32] (int8)               x = q·d
  Q2_K  scales[16], qs[64], d, dmin    16 groups of 16: x = d·(sc & 15)·q − dmin·(sc >> 4)
  Q3_K  hmask[32], qs[64], scales[12], d     16 groups of 16, 6-bit signed scales, q ∈ [−4, 3]
  Q4_K  d, dmin, scales[12], qs[128]   8 groups of 32, 6-bit scales and mins packed in 12 bytes
  Q5_K  d, dmin, scales[12], qh[32], qs[128]
  Q6_K  ql[128], qh[64], scales[16] (int8), d    16 groups of 16, q ∈ [−32, 31]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

QK_K = 256

# type name -> (values per block, bytes per block), as GGML_QUANT_SIZES
BLOCK_SIZES: dict[str, tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 2 + 16),
    "Q4_1": (32, 2 + 2 + 16),
    "Q5_0": (32, 2 + 4 + 16),
    "Q5_1": (32, 2 + 2 + 4 + 16),
    "Q8_0": (32, 2 + 32),
    "Q2_K": (QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    "Q3_K": (QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    "Q4_K": (QK_K, 2 + 2 + 12 + QK_K // 2),
    "Q5_K": (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    "Q6_K": (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
}
FLOAT_TYPES = ("F32", "F16", "BF16")  # stored as plain floats: no blocks to unpack


def _f16(blocks: Tensor, start: int) -> Tensor:
    """The fp16 at byte ``start`` of each block, as float32 [n, 1]."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _shifts(values: list[int], shape: tuple[int, ...], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.uint8, device=like.device).view(shape)


def _nibbles(qs: Tensor, groups: int, width: int) -> Tensor:
    """4-bit values of ``qs`` [n, groups·width]: per group, the low nibbles of its ``width`` bytes,
    then their high nibbles -> uint8 [n, groups·2·width]."""
    n = qs.shape[0]
    q = qs.reshape(n, groups, 1, width) >> _shifts([0, 4], (1, 1, 2, 1), qs)
    return (q & 0x0F).reshape(n, groups * 2 * width)


def _bits(packed: Tensor) -> Tensor:
    """The bits of ``packed`` [n, k] little-endian (bit j of byte i is value 8·i + j) -> [n, 8·k]."""
    n, k = packed.shape
    b = packed.reshape(n, k, 1) >> _shifts(list(range(8)), (1, 1, 8), packed)
    return (b & 1).reshape(n, 8 * k)


# ----------------------------------------------------------------------------- plain floats


def dequantize_f32(blocks: Tensor) -> Tensor:
    return blocks.contiguous().view(torch.float32).reshape(blocks.shape[0], 1)


def dequantize_f16(blocks: Tensor) -> Tensor:
    return blocks.contiguous().view(torch.float16).float().reshape(blocks.shape[0], 1)


def dequantize_bf16(blocks: Tensor) -> Tensor:
    # bf16 is the top half of an fp32: widening is exact
    return blocks.contiguous().view(torch.bfloat16).float().reshape(blocks.shape[0], 1)


# ----------------------------------------------------------------------------- 32-value blocks


def dequantize_q4_0(blocks: Tensor) -> Tensor:
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 2:], 1, 16).to(torch.int16) - 8
    return d * q.float()


def dequantize_q4_1(blocks: Tensor) -> Tensor:
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 4:], 1, 16).float()
    return d * q + m


def dequantize_q5_0(blocks: Tensor) -> Tensor:
    d = _f16(blocks, 0)
    high = _bits(blocks[:, 2:6])
    q = (_nibbles(blocks[:, 6:], 1, 16) | (high << 4)).to(torch.int16) - 16
    return d * q.float()


def dequantize_q5_1(blocks: Tensor) -> Tensor:
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    high = _bits(blocks[:, 4:8])
    q = (_nibbles(blocks[:, 8:], 1, 16) | (high << 4)).float()
    return d * q + m


def dequantize_q8_0(blocks: Tensor) -> Tensor:
    d = _f16(blocks, 0)
    q = blocks[:, 2:].contiguous().view(torch.int8).float()
    return q * d


# ----------------------------------------------------------------------------- K-quants (256 values)


def dequantize_q2_k(blocks: Tensor) -> Tensor:
    n = blocks.shape[0]
    scales = blocks[:, :16]
    qs = blocks[:, 16:80]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    dl = (d * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    # two halves of 32 bytes; each byte holds four 2-bit values, one per 32-value quarter
    q = (qs.reshape(n, 2, 1, 32) >> _shifts([0, 2, 4, 6], (1, 1, 4, 1), qs)) & 3
    q = q.reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q3_k(blocks: Tensor) -> Tensor:
    n = blocks.shape[0]
    hmask = blocks[:, :32]
    qs = blocks[:, 32:96]
    scales = blocks[:, 96:108]
    d = _f16(blocks, 108)
    # sixteen 6-bit scales: low 4 bits in bytes 0–7 (low nibbles first), high 2 bits in bytes 8–11
    low = (scales[:, :8].reshape(n, 1, 8) >> _shifts([0, 4], (1, 2, 1), scales)).reshape(n, 16)
    high = scales[:, 8:].reshape(n, 1, 4) >> _shifts([0, 2, 4, 6], (1, 4, 1), scales)
    sc = (low & 0x0F) | ((high.reshape(n, 16) & 3) << 4)
    dl = (d * (sc.to(torch.int16) - 32).float()).reshape(n, 16, 1)
    ql = (qs.reshape(n, 2, 1, 32) >> _shifts([0, 2, 4, 6], (1, 1, 4, 1), qs)) & 3
    qh = (hmask.reshape(n, 1, 1, 32) >> _shifts(list(range(8)), (1, 1, 8, 1), hmask)) & 1
    # a set hmask bit means no offset; a clear one subtracts 4
    q = ql.reshape(n, 16, 16).to(torch.int16) - ((qh.reshape(n, 16, 16) ^ 1) << 2).to(torch.int16)
    return (dl * q.float()).reshape(n, QK_K)


def _k_scale_min(scales: Tensor) -> tuple[Tensor, Tensor]:
    """Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins packed in 12 bytes -> uint8 [n, 8] each.
    Bytes 0–3: scales 0–3 (low 6 bits), 4–7: mins 0–3; bytes 8–11: low nibble scale 4–7, high
    nibble min 4–7, whose top 2 bits are the top bits of bytes 0–3 / 4–7."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def dequantize_q4_k(blocks: Tensor) -> Tensor:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k_scale_min(blocks[:, 4:16])
    dl = (d * sc.float()).reshape(n, 8, 1)
    ml = (dmin * mn.float()).reshape(n, 8, 1)
    q = _nibbles(blocks[:, 16:], 4, 32).reshape(n, 8, 32).float()
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q5_k(blocks: Tensor) -> Tensor:
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k_scale_min(blocks[:, 4:16])
    dl = (d * sc.float()).reshape(n, 8, 1)
    ml = (dmin * mn.float()).reshape(n, 8, 1)
    qh = blocks[:, 16:48]
    ql = _nibbles(blocks[:, 48:], 4, 32).reshape(n, 8, 32)
    # the fifth bit of value j of group g is bit g of qh[j]
    high = (qh.reshape(n, 1, 32) >> _shifts(list(range(8)), (1, 8, 1), qh)) & 1
    q = (ql | (high << 4)).float()
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q6_k(blocks: Tensor) -> Tensor:
    n = blocks.shape[0]
    ql = blocks[:, :128]
    qh = blocks[:, 128:192]
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = _f16(blocks, 208)
    dl = (d * scales).reshape(n, 16, 1)
    low = _nibbles(ql, 2, 64).reshape(n, 8, 32)
    high = (qh.reshape(n, 2, 1, 32) >> _shifts([0, 2, 4, 6], (1, 1, 4, 1), qh)) & 3
    q = (low | (high.reshape(n, 8, 32) << 4)).to(torch.int16) - 32
    return (dl * q.reshape(n, 16, 16).float()).reshape(n, QK_K)


KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "F32": dequantize_f32,
    "F16": dequantize_f16,
    "BF16": dequantize_bf16,
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
    "Q8_0": dequantize_q8_0,
    "Q2_K": dequantize_q2_k,
    "Q3_K": dequantize_q3_k,
    "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k,
    "Q6_K": dequantize_q6_k,
}


def packed_nbytes(qtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of ``shape`` stored as ``qtype`` (rows are whole blocks)."""
    block, size = BLOCK_SIZES[qtype]
    numel = 1
    for s in shape:
        numel *= s
    if not shape or shape[-1] % block:
        raise ValueError(f"a {qtype} tensor's rows must be whole {block}-value blocks, got {shape}")
    return numel // block * size


def dequantize(
    raw: Tensor, qtype: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> Tensor:
    """The values of a ``qtype`` tensor of ``shape`` (torch order) from its raw bytes (uint8, any
    shape with the right number of bytes), in ``dtype`` (computed in float32, then cast)."""
    size = BLOCK_SIZES[qtype][1]
    if raw.dtype != torch.uint8 or raw.numel() != packed_nbytes(qtype, shape):
        raise ValueError(
            f"{qtype} tensor of shape {list(shape)}: expected {packed_nbytes(qtype, shape)} "
            f"uint8 bytes, got {raw.numel()} of {raw.dtype}"
        )
    values = KERNELS[qtype](raw.reshape(-1, size))
    return values.reshape(shape).to(dtype)
