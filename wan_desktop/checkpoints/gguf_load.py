"""Keep GGUF-quantized linear weights quantized: swap the model's Linear layers for QuantLinear.

Called by the loaders (checkpoints/load.py) between building a model on the meta device and
materializing it: every Linear whose weight a GGUF file stores in a block type (Q8_0 … Q2_K) becomes
a models/quant_linear.QuantLinear holding the raw bytes, and that weight leaves the sources
``materialize`` fills. Everything else (F32/F16/BF16 tensors, and quantized tensors of other layers:
the Conv3d patch embedding, the umT5 token embedding, RMS norm weights) is read as values, quantized
ones dequantized once at load, exactly as from a safetensors file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import nn

from ..errors import CheckpointError
from .gguf_reader import is_gguf, open_gguf
from .materialize import TensorSource

if TYPE_CHECKING:
    import torch


def keep_quantized(
    model: nn.Module, sources: Mapping[str, TensorSource], dtype: torch.dtype | None = None
) -> dict[str, TensorSource]:
    """Put QuantLinear layers into ``model`` for the quantized GGUF linear weights of ``sources``
    (official key -> source); returns the sources left for ``materialize``. ``dtype``: the model's
    (float32 unless given; the model's ``FP32_MODULES`` stay float32), as materialize uses it."""
    import torch

    from ..models.layers import in_modules
    from ..models.quant_linear import QuantLinear

    fp32_modules = tuple(getattr(model, "FP32_MODULES", ()))

    rest = dict(sources)
    for name, src in sources.items():
        owner_name, _, leaf = name.rpartition(".")
        if leaf != "weight" or not is_gguf(src.file):
            continue
        t = open_gguf(src.file).tensors.get(src.key)
        if t is None or not t.quantized:
            continue
        owner = model.get_submodule(owner_name)
        if not isinstance(owner, nn.Linear):
            continue  # not a linear: its values are read (dequantized once)
        want = (owner.out_features, owner.in_features)
        if t.shape != want:  # materialize would say the same for a float tensor
            raise CheckpointError(
                f"{src.file.name}: tensor {src.key} has shape {list(t.shape)}, expected "
                f"{list(want)} — a different model size or variant"
            )
        keep32 = dtype is None or in_modules(name, fp32_modules)
        layer = QuantLinear(
            want[1],
            want[0],
            t.qtype,
            bias=owner.bias is not None,
            dtype=torch.float32 if keep32 or dtype is None else dtype,
        )
        layer.qweight = open_gguf(src.file).raw(src.key).reshape(layer.qweight.shape)
        parent_name, _, child = owner_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
        del rest[name]
    return rest


def quantized_nbytes(model: nn.Module) -> int:
    """Bytes of the quantized weights ``model`` holds (QuantLinear layers)."""
    from ..models.quant_linear import QuantLinear

    return sum(m.weight_nbytes for m in model.modules() if isinstance(m, QuantLinear))
