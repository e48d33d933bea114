"""Build a module without allocating its weights, then fill it from checkpoint tensors one at a time.

Peak memory is the model in its target dtype plus one tensor: a 14B checkpoint never needs twice its
size in RAM. Every mismatch (missing / unexpected tensors, wrong shapes) is a CheckpointError naming
the file and the tensors; a model is never silently left with random weights. Every floating tensor is
checked for NaN / infinite values as it is loaded (one reduction each): a damaged file, or weights
that overflow the chosen dtype, fail here, naming the tensor, instead of making a black video.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..models.layers import in_modules

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class TensorSource:
    """Where one module tensor comes from: its stored shape/dtype and a thunk that reads it."""

    shape: tuple[int, ...]
    dtype: str
    file: Path
    load: Callable[[], Tensor]
    key: str  # the name in the file (for messages)


@contextlib.contextmanager
def weights_on_meta() -> Iterator[None]:
    """Parameters created inside go to the meta device as they are registered; buffers (RoPE tables,
    latent mean/std) are created for real, since checkpoints do not carry them.

    Layers allocate their weights with ``torch.empty`` (pages never touched, so no RAM is used) and
    initialise them only after registration, i.e. on meta, where initialisation costs nothing.
    """
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    # Patching the method is the point (as accelerate's init_empty_weights): every module class,
    # including torch's own layers, registers through it.
    nn.Module.register_parameter = register  # type: ignore[method-assign]  # deliberate patch
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]  # restore


def _where(path: Path) -> str:
    """The file with its folder: shards of two Wan2.2 experts have the same file names."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _few(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


# fp8 has no isfinite kernel: a value is NaN/Inf when its exponent bits are all ones (e4m3fn: the
# seven low bits all ones, NaN only; e5m2: the five exponent bits, Inf and NaN)
_FP8_NONFINITE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}
_FP8_CHUNK = 1 << 20  # elements per bit test, in one reused 1 MB buffer


def all_finite(t: Tensor) -> bool:
    """No NaN and no ±Inf in ``t``, in one pass that allocates nothing of ``t``'s size.

    ``torch.aminmax`` propagates NaN, and an Inf is the min or the max. (``isfinite(t).all()``
    makes one to three full-size temporaries per tensor; on the CPU the allocator kept them, and a
    bf16 DiT load took twice the model's size in private RAM — tests/checkpoints/test_load_ram.py.)
    """
    if t.numel() == 0 or not t.is_floating_point():
        return True  # integers are always finite
    mask = _FP8_NONFINITE.get(t.dtype)
    if mask is not None:  # fp8 has no aminmax either: the exponent bits, a chunk at a time
        bits = t.reshape(-1).view(torch.uint8)
        buf = torch.empty(min(bits.numel(), _FP8_CHUNK), dtype=torch.uint8, device=t.device)
        for chunk in bits.split(_FP8_CHUNK):
            exp = torch.bitwise_and(chunk, mask, out=buf[: chunk.numel()])
            if int(exp.max()) == mask:
                return False
        return True
    lo, hi = torch.aminmax(t)
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def _nonfinite_error(
    what: str, src: TensorSource, before: Tensor, loaded: Tensor
) -> CheckpointError:
    """The message for a tensor that failed :func:`all_finite`: NaN/Inf in the file (``before``:
    the values ahead of the cast to the model's dtype), or finite values that the cast to
    ``loaded``'s dtype overflowed (fp16's largest value is 65504)."""
    where = f"{what} ({_where(src.file)}): tensor {src.key}"
    if before is not loaded and all_finite(before):
        top = float(before.float().abs().max())
        return CheckpointError(
            f"{where} has values up to {top:.3g}, which overflow "
            f"{str(loaded.dtype).removeprefix('torch.')}",
            remedy="Load the model in bfloat16 or float32 (--dtype).",
        )
    n = int((~torch.isfinite(before.float())).sum())
    return CheckpointError(
        f"{where} has {n} NaN/infinite value(s) of {before.numel()}; the file is damaged"
    )


def _per_channel(scale: Tensor, weight: Tensor) -> Tensor:
    """A scalar scale as is; a per-output-channel [out] scale shaped to broadcast over the weight."""
    if scale.ndim == 1 and scale.numel() == weight.shape[0] and weight.ndim > 1:
        return scale.view(-1, *([1] * (weight.ndim - 1)))
    return scale


def materialize(
    module: M,
    sources: Mapping[str, TensorSource],
    *,
    what: str,
    dtype: torch.dtype = torch.float32,
    fp32_modules: tuple[str, ...] | None = None,
    keep_fp8: bool = True,
    scales: Mapping[str, TensorSource] | None = None,
) -> M:
    """Assign ``sources`` (official key -> tensor) to ``module``'s meta parameters/buffers.

    dtype: floating tensors are converted to it, except those under ``fp32_modules`` (default: the
    module's ``FP32_MODULES`` declaration; kept fp32)
    and fp8 Linear weights when ``keep_fp8`` (they stay fp8 in memory until their layer runs; their
    per-layer ``scales`` go to ``Linear.scale_weight``).
    """
    expected = dict(module.state_dict(keep_vars=True))
    missing = [k for k in expected if k not in sources]
    unexpected = [k for k in sources if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) ({_few(unexpected)})")
        files = sorted({_where(s.file) for s in sources.values()}) or ["(no files)"]
        hint = "; the file looks truncated or is another model" if missing else ""
        raise CheckpointError(f"{what} ({', '.join(files[:2])}): {'; '.join(parts)}{hint}")
    for name, src in sources.items():
        want = tuple(expected[name].shape)
        if tuple(src.shape) != want:
            raise CheckpointError(
                f"{what} ({_where(src.file)}): tensor {src.key} has shape "
                f"{list(src.shape)}, "
                f"expected {list(want)} — a different model size or variant"
            )
    scales = scales or {}
    if fp32_modules is None:
        fp32_modules = tuple(getattr(module, "FP32_MODULES", ()))
    for name, src in sources.items():
        tensor = before = src.load()  # before: the values ahead of the final cast (for messages)
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        keep32 = in_modules(name, fp32_modules)
        scale = scales.get(owner_name) if leaf == "weight" else None
        # fp8, or int8 with a per-channel scale (lightx2v's int8 DiTs: ``<name>.weight_scale``)
        if tensor.dtype in FP8_DTYPES or (tensor.dtype == torch.int8 and scale is not None):
            s = None if scale is None else scale.load().float()
            if scale is not None and s is not None and not all_finite(s):
                raise _nonfinite_error(what, scale, s, s)
            if keep_fp8 and not keep32 and leaf == "weight" and hasattr(owner, "scale_weight"):
                if s is not None:  # dequantized on the fly by layers.Linear
                    owner.scale_weight = _per_channel(s, tensor)
            else:
                before = tensor.float()
                if s is not None:
                    before = before * _per_channel(s, before)
                tensor = before.to(torch.float32 if keep32 else dtype)
        elif tensor.is_floating_point():
            tensor = tensor.to(torch.float32 if keep32 else dtype)
        if not all_finite(tensor):  # the tensor as the model will hold it: one reduction
            raise _nonfinite_error(what, src, before, tensor)
        if leaf in owner._parameters:
            owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        else:
            owner._buffers[leaf] = tensor
    return module.eval().requires_grad_(False)
