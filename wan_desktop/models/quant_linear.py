"""A linear layer whose weight stays GGML-quantized in memory (GGUF files: Q8_0 … Q2_K).

The weight is kept as its raw block bytes (uint8 [out_features, bytes per row]) with its type, and
dequantized to the activations' dtype each time the layer runs (models/gguf_quants.py), so a
Q4_K 14B DiT holds ~4.5 bits per weight on the device, not 16. The bytes are a *buffer*
(``qweight``), so ``.to(device)`` and block streaming (engines/block_swap.py, which packs every
parameter and buffer of a block) move them as they are; it is left out of the state dict
(``persistent=False``): the official key ``<name>.weight`` is filled by the GGUF loader
(checkpoints/gguf_load.py), never by ``load_state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gguf_quants import BLOCK_SIZES, dequantize


class QuantLinear(nn.Module):
    """``y = x Wᵀ + b`` with W dequantized from ``qweight`` (GGML type ``qtype``) at each call."""

    qweight: Tensor
    dtype_probe: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        qtype: str,
        *,
        bias: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        block, size = BLOCK_SIZES[qtype]
        if in_features % block:
            raise ValueError(f"{qtype} rows are {block}-value blocks; in_features={in_features}")
        self.in_features, self.out_features, self.qtype = in_features, out_features, qtype
        row = in_features // block * size
        self.register_buffer(
            "qweight", torch.zeros(out_features, row, dtype=torch.uint8), persistent=False
        )
        self.bias = nn.Parameter(torch.empty(out_features, device="meta")) if bias else None
        # the dtype of the model around it (a 0-d buffer: .to() and cast_weights keep it current)
        self.register_buffer("dtype_probe", torch.zeros((), dtype=dtype), persistent=False)

    @classmethod
    def from_raw(
        cls,
        raw: Tensor,
        qtype: str,
        shape: tuple[int, int],
        bias: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> QuantLinear:
        """The layer for weight bytes ``raw`` of a ``shape`` = (out, in) tensor of type ``qtype``."""
        layer = cls(shape[1], shape[0], qtype, bias=bias is not None, dtype=dtype)
        layer.qweight = raw.reshape(layer.qweight.shape)
        if bias is not None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        return layer

    def weight_as(self, dtype: torch.dtype) -> Tensor:
        """The dequantized weight [out, in] in ``dtype``."""
        return dequantize(self.qweight, self.qtype, (self.out_features, self.in_features), dtype)

    @property
    def weight(self) -> Tensor:
        """The dequantized weight in the model's dtype (what a model asks its linears for to
        know its compute dtype); a new tensor each time, never stored."""
        return self.weight_as(self.dtype_probe.dtype)

    @property
    def weight_nbytes(self) -> int:
        return self.qweight.numel()

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight_as(x.dtype)
        b: Tensor | None = self.bias
        if b is not None and b.dtype != x.dtype:
            b = b.to(x.dtype)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"qtype={self.qtype}, bias={self.bias is not None}"
        )
