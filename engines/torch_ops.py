"""Fast layers for the PyTorch backend: FP8 / INT8 linears and attention kernels, as ``Ops`` classes.

Model code builds its layers through an ``Ops`` class (models/layers.py); this file supplies the
subclasses, so quantized linears and other attention kernels drop in without touching model code:

- ``Fp8Linear``: weight stored as float8 E4M3 with a per-output-channel (or per-tensor) fp32 scale in
  ``scale_weight`` — the layout of ComfyUI ``fp8_e4m3fn(_scaled)`` files, which therefore run as
  stored. On compute capability >= 8.9 it multiplies in FP8 with ``torch._scaled_mm`` (activations
  quantized per row, or per tensor, on the fly); elsewhere it dequantizes the weight on the fly.
- ``Int8Linear``: weight-only int8 with per-channel scales (``torch._weight_int8pack_mm`` where the
  device has it, dequantize-on-the-fly, or W8A8 ``torch._int_mm`` with per-row activation scales).
- attention: ``select_attention("sdpa" | "sage" | "sdpa-flash" | "sdpa-cudnn" | "sdpa-efficient" |
  "sdpa-math")``.

``quantize_linears(model, "fp8" | "int8")`` converts a loaded model in place and leaves the sensitive
layers (embeddings, time projection / modulation, head, every fp32 island) in their dtype.
torchao's float8 / int8 linears can replace ours with ``backend="torchao"`` where it is installed.
Nothing here touches a device at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wan_desktop.errors import ConfigError, EngineError
from wan_desktop.models.layers import Linear, Ops, in_modules, sdpa_attention

log = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
INT8_MAX = 127.0
_FP8_STORAGE = (torch.float8_e4m3fn, torch.float8_e5m2)
_HALF = (torch.bfloat16, torch.float16)

# Which DiT linears get quantized, and which stay as they are. Following the field (NVIDIA's
# diffusion demo excludes time embeddings, the context embedder and the output projection; TeaCache and
# ComfyUI keep modulation in high precision): only the linears inside the blocks' attention and FFN.
# Everything else is either an fp32 island (WanModel.FP32_MODULES) or an embedding whose error reaches
# every block (text_embedding, img_emb).
DIT_QUANTIZED = ("blocks.*.self_attn", "blocks.*.cross_attn", "blocks.*.ffn")
DIT_KEPT = (
    "patch_embedding",
    "text_embedding",
    "time_embedding",
    "time_projection",
    "head",
    "img_emb",
    "blocks.*.modulation",
    "blocks.*.norm_q",
    "blocks.*.norm_k",
)


# ----------------------------------------------------------------------------- capability


# Filled eagerly (``warm_capabilities``, called when a model is loaded) so that forward passes, also
# under torch.compile, only read a dict.
_FP8_OK: dict[str, bool] = {}
_INT8PACK_OK: dict[str, bool] = {}


def fp8_compute_supported(device: torch.device | str) -> bool:
    """FP8 tensor-core matmuls need compute capability 8.9 (Ada) or later."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    key = str(device)
    if key not in _FP8_OK:
        index = device.index if device.index is not None else torch.cuda.current_device()
        _FP8_OK[key] = torch.cuda.get_device_capability(index) >= (8, 9)
    return _FP8_OK[key]


def _int8pack_works(device: torch.device) -> bool:
    """Whether ``torch._weight_int8pack_mm`` runs on this device (probed once)."""
    key = str(device)
    if key not in _INT8PACK_OK:
        try:
            x = torch.ones(2, 32, dtype=torch.bfloat16, device=device)
            w = torch.ones(32, 32, dtype=torch.int8, device=device)
            torch._weight_int8pack_mm(x, w, torch.ones(32, dtype=torch.bfloat16, device=device))
            _INT8PACK_OK[key] = True
        except (RuntimeError, NotImplementedError):
            _INT8PACK_OK[key] = False
    return _INT8PACK_OK[key]


def warm_capabilities(device: torch.device | str) -> None:
    """Probe what the fast linears need to know about ``device`` (call before compiling)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    fp8_compute_supported(device)
    _int8pack_works(device)


# ----------------------------------------------------------------------------- quantizers


def quantize_weight_fp8(w: Tensor, *, per_channel: bool = True) -> tuple[Tensor, Tensor]:
    """w [out, in] (any float) -> (E4M3 [out, in], fp32 scale [out, 1] or []) with w ≈ q·scale.

    The scale maps each row's (or the tensor's) absolute maximum to 448, the largest E4M3 value, so
    no weight saturates; E4M3 keeps 3 mantissa bits: a relative rounding error ≤ 2^-4 per weight.
    """
    wf = w.float()
    amax = wf.abs().amax(dim=1, keepdim=True) if per_channel else wf.abs().amax()
    scale = (amax / FP8_MAX).clamp_min(1e-12)
    q = (wf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def quantize_weight_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w [out, in] -> (int8 [out, in], fp32 scale [out, 1]), symmetric, per output channel."""
    wf = w.float()
    scale = (wf.abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp_min(1e-12)
    q = (wf / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def _quantize_rows_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [M, K] -> (E4M3 [M, K], fp32 [M, 1]): one scale per row (token)."""
    xf = x.float()
    scale = (xf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp_min(1e-12)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def _quantize_tensor_fp8(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [M, K] -> (E4M3 [M, K], fp32 []): one scale for the whole activation."""
    xf = x.float()
    scale = (xf.abs().amax() / FP8_MAX).clamp_min(1e-12)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def _quantize_rows_int8(x: Tensor) -> tuple[Tensor, Tensor]:
    xf = x.float()
    scale = (xf.abs().amax(dim=1, keepdim=True) / INT8_MAX).clamp_min(1e-12)
    return (xf / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scale


# Eager, the activation quantizer is four or five passes over the activation (abs, amax, divide,
# clamp, cast); compiled it is one kernel, which decides whether FP8 pays at all (FACTS: torchao's FP8
# FFN 12.8 ms uncompiled vs 4.9 ms compiled vs 5.4 ms bf16). Only this small function is compiled
# (seconds, once per shape), on CUDA, unless the whole block is compiled anyway.
_compiled: dict[Callable, Callable] = {}


def _maybe_compiled(fn: Callable, x: Tensor) -> Callable:
    if not (x.is_cuda and Fp8Linear.compile_quantizer) or torch.compiler.is_compiling():
        return fn
    if fn not in _compiled:
        try:
            import triton  # noqa: F401  (inductor's CUDA code generator)
        except ImportError:
            _compiled[fn] = fn
        else:
            _compiled[fn] = torch.compile(fn, fullgraph=True)
    return _compiled[fn]


# ----------------------------------------------------------------------------- linears


def _dequantized(layer: Linear, dtype: torch.dtype) -> Tensor:
    w = layer.weight.to(dtype)
    if layer.scale_weight is not None:
        w = w * layer.scale_weight.to(dtype)
    return w


class Fp8Linear(Linear):
    """A Linear whose weight may be float8 E4M3 (+ ``scale_weight``: fp32 [out, 1] or a scalar).

    ``kernel``: "auto" (``_scaled_mm`` on CUDA with compute capability >= 8.9, else dequantize),
    "scaled_mm" (force it: CPU torch implements it too, which the tests use), "dequant".
    ``act_scaling``: "row" (one scale per token: robust to outlier tokens) or "tensor" (one scale per
    call; needs a per-tensor weight scale, else rows are used). A layer whose weight is not fp8
    (an fp32 island, a kept layer) is exactly ``layers.Linear``.
    """

    kernel: str = "auto"
    act_scaling: str = "row"
    compile_quantizer: bool = True

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if w.dtype not in _FP8_STORAGE or not self._use_scaled_mm(x):
            return super().forward(x)
        return self._scaled_mm_forward(x)

    def _use_scaled_mm(self, x: Tensor) -> bool:
        if self.weight.dtype != FP8_DTYPE or self.kernel == "dequant":
            return False
        n, k = self.weight.shape
        shapes_ok = k % 16 == 0 and n % 16 == 0  # cuBLASLt FP8 alignment
        if self.kernel == "scaled_mm":
            return shapes_ok
        return shapes_ok and x.dtype in _HALF and x.is_cuda and fp8_compute_supported(x.device)

    def _scaled_mm_forward(self, x: Tensor) -> Tensor:
        out_dtype = x.dtype if x.dtype in _HALF else torch.bfloat16
        n, k = self.weight.shape
        x2 = x.reshape(-1, k)
        sw = self.scale_weight
        per_tensor_w = sw is None or sw.numel() == 1
        # row-wise scaling gives bf16 output only (cuBLASLt); fp16 activations use per-tensor scales
        rowwise = not per_tensor_w or (self.act_scaling == "row" and out_dtype == torch.bfloat16)
        if rowwise:
            xq, sx = _maybe_compiled(_quantize_rows_fp8, x2)(x2)
            if sw is None:
                sb = torch.ones(1, n, dtype=torch.float32, device=x.device)
            else:
                sb = sw.float().reshape(1, -1).expand(1, n).contiguous()
            out = torch._scaled_mm(
                xq.contiguous(), self.weight.t(), scale_a=sx, scale_b=sb, out_dtype=torch.bfloat16
            )
        else:
            xq, sx = _maybe_compiled(_quantize_tensor_fp8, x2)(x2)
            sb = torch.ones((), device=x.device) if sw is None else sw.float().reshape(())
            out = torch._scaled_mm(
                xq.contiguous(), self.weight.t(), scale_a=sx, scale_b=sb, out_dtype=out_dtype
            )
        out = out.to(out_dtype)
        if self.bias is not None:
            out = out + self.bias.to(out_dtype)
        return out.reshape(*x.shape[:-1], n).to(x.dtype)


class Int8Linear(Linear):
    """Weight-only int8 Linear: weight int8 [out, in], ``scale_weight`` fp32 [out, 1].

    ``kernel``: "auto" (``_weight_int8pack_mm`` where the device implements it, else dequantize),
    "int8pack", "dequant", or "w8a8" (activations quantized per token to int8 too, ``torch._int_mm``
    with an int32 accumulator: the accelerating path on int8 tensor cores such as RTX 30).
    """

    kernel: str = "auto"

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dtype != torch.int8:
            return super().forward(x)
        kernel = self.kernel
        if kernel == "auto":
            kernel = (
                "int8pack"
                if (x.dtype in (*_HALF, torch.float32) and _int8pack_works(x.device))
                else "dequant"
            )
        n, k = self.weight.shape
        x2 = x.reshape(-1, k)
        if kernel == "int8pack":
            out = torch._weight_int8pack_mm(
                x2, self.weight, self.scale_weight.reshape(-1).to(x.dtype)
            )
        elif kernel == "w8a8" and x2.shape[0] > 16 and k % 8 == 0 and n % 8 == 0:
            xq, sx = _quantize_rows_int8(x2)
            acc = torch._int_mm(xq, self.weight.t())  # int32 [M, N]
            out = (acc.float() * sx * self.scale_weight.float().reshape(1, -1)).to(x.dtype)
        else:
            out = F.linear(x2, _dequantized(self, x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], n)


# ----------------------------------------------------------------------------- attention


def _sdpa_with(backend_name: str) -> Callable[..., Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[backend_name]

    def attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, scale=scale)

    attention.__name__ = f"sdpa_{backend_name}"
    return attention


def _sage() -> Callable[..., Tensor]:
    try:
        from sageattention import sageattn
    except ImportError as e:
        raise EngineError(
            f"attention 'sage' needs the sageattention package ({e})",
            remedy="Install it (pip install sageattention), or use --attention sdpa.",
        ) from None

    def sage_attention(q: Tensor, k: Tensor, v: Tensor, *, scale: float | None = None) -> Tensor:
        """q: [B, H, Lq, D]; k/v: [B, H, Lk, D] (fp16/bf16, CUDA) -> [B, H, Lq, D]."""
        if not q.is_cuda or q.dtype not in _HALF:
            raise EngineError(
                f"SageAttention runs on CUDA in fp16/bf16, got {q.dtype} on {q.device.type}",
                remedy="Use --attention sdpa.",
            )
        kw = {} if scale is None else {"sm_scale": scale}
        return sageattn(q, k, v, tensor_layout="HND", is_causal=False, **kw)

    return sage_attention


ATTENTION_NAMES = ("sdpa", "sage", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math")


def select_attention(name: str) -> Callable[..., Tensor]:
    """The attention function called ``name`` (signature of ``layers.sdpa_attention``).

    "sdpa" lets torch pick its kernel (cuDNN or flash on an H100); "sdpa-<kernel>" forces one (for
    measurements); "sage" is SageAttention's quantized kernel (an ``EngineError`` when it is not
    installed).
    """
    if name == "sdpa":
        return sdpa_attention
    if name == "sage":
        return _sage()
    if name.startswith("sdpa-") and name[5:] in ("flash", "cudnn", "efficient", "math"):
        return _sdpa_with(name[5:])
    raise ConfigError(f"unknown attention {name!r}; expected one of {', '.join(ATTENTION_NAMES)}")


# ----------------------------------------------------------------------------- Ops classes


class Fp8Ops(Ops):
    """Linears that run fp8 weights in FP8 (or dequantize them); other weights as ``Ops``."""

    Linear = Fp8Linear


class Int8Ops(Ops):
    """Linears that run int8 weights (weight-only); other weights as ``Ops``."""

    Linear = Int8Linear


PRECISIONS = ("bf16", "fp16", "fp8", "int8")


def make_ops(precision: str | None = None, attention: str = "sdpa") -> type[Ops]:
    """The Ops class for a precision and an attention kernel.

    ``None``/"bf16"/"fp16" give Fp8Ops too: its linear is plain ``layers.Linear`` for 16-bit
    weights and runs the fp8 weights of an fp8 checkpoint in FP8, as stored.
    """
    if precision not in (None, *PRECISIONS):
        raise ConfigError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    base: type[Ops] = Int8Ops if precision == "int8" else Fp8Ops
    if attention == "sdpa":
        return base
    fn = select_attention(attention)
    return type(
        f"{base.__name__}_{attention.replace('-', '_')}", (base,), {"attention": staticmethod(fn)}
    )


def set_attention(model: nn.Module, name: str) -> int:
    """Switch every attention call of a built model to kernel ``name``; returns how many modules.

    Attention modules call ``self.ops.attention``: each gets a subclass of its ops class."""
    fn = select_attention(name)
    derived: dict[type, type] = {}
    n = 0
    for module in model.modules():
        ops = getattr(module, "ops", None)
        if isinstance(ops, type) and issubclass(ops, Ops):
            base = getattr(ops, "_base_ops", ops)
            if base not in derived:
                derived[base] = type(
                    f"{base.__name__}_{name.replace('-', '_')}",
                    (base,),
                    {"attention": staticmethod(fn), "_base_ops": base},
                )
            module.ops = derived[base]
            n += 1
    return n


# ----------------------------------------------------------------------------- quantize a model


def _is_dit(model: nn.Module) -> bool:
    return getattr(model, "BLOCK_TYPE", None) == "WanAttentionBlock"


def quantizable_linears(
    model: nn.Module,
    include: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] | None = None,
) -> tuple[list[str], list[str]]:
    """(names of the Linear layers to quantize, names of those kept), by the rules of
    ``quantize_linears``."""
    dit = _is_dit(model)
    if include is None:
        include = DIT_QUANTIZED if dit else ("",)
    if exclude is None:
        exclude = (
            (*DIT_KEPT, *getattr(model, "FP32_MODULES", ()))
            if dit
            else tuple(getattr(model, "FP32_MODULES", ()))
        )
    chosen, kept = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        inside = include == ("",) or in_modules(name, include)
        if inside and not in_modules(name, exclude):
            chosen.append(name)
        else:
            kept.append(name)
    return chosen, kept


def quantize_linears(
    model: nn.Module,
    mode: str,
    *,
    include: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] | None = None,
    backend: str = "ours",
    per_channel: bool = True,
) -> list[str]:
    """Quantize the weights of ``model``'s linears in place: ``mode`` "fp8" (E4M3, fp32 scales) or
    "int8" (weight-only, per-channel). Returns the quantized layer names.

    Default selection for a WanModel: the linears of every block's self-attention, cross-attention and
    FFN; kept in their dtype: ``DIT_KEPT`` and ``FP32_MODULES`` (patch/text/time embeddings, time
    projection, modulation tables, head, image projection). For other models: every Linear outside
    their ``FP32_MODULES``. A layer whose weight already is fp8 (an fp8 checkpoint) keeps its bytes and
    scale and only gains the fp8 kernel. ``backend="torchao"`` hands the same layers to torchao
    (float8 dynamic activation / per-row weight, or int8 weight-only) where it is installed.
    """
    if mode not in ("fp8", "int8"):
        raise ConfigError(f"quantize_linears: mode must be 'fp8' or 'int8', got {mode!r}")
    names, _ = quantizable_linears(model, include, exclude)
    if backend == "torchao":
        return _quantize_torchao(model, mode, names)
    if backend != "ours":
        raise ConfigError(f"quantize_linears: backend must be 'ours' or 'torchao', got {backend!r}")
    cls = Fp8Linear if mode == "fp8" else Int8Linear
    with torch.no_grad():
        for name in names:
            layer = model.get_submodule(name)
            w = layer.weight
            scale = getattr(layer, "scale_weight", None)
            if mode == "fp8" and w.dtype == FP8_DTYPE:
                q, s = w.data, scale  # as stored: keep the checkpoint's own quantization
            else:
                wf = w.float()
                if (
                    w.dtype in _FP8_STORAGE or w.dtype == torch.int8
                ):  # re-quantize: dequantize first
                    wf = wf * (scale.float() if scale is not None else 1.0)
                q, s = (
                    quantize_weight_fp8(wf, per_channel=per_channel)
                    if mode == "fp8"
                    else quantize_weight_int8(wf)
                )
            if not isinstance(layer, Linear):  # a plain nn.Linear: give it the scale buffer
                layer.register_buffer("scale_weight", None)
            layer.__class__ = cls
            layer._parameters["weight"] = nn.Parameter(q, requires_grad=False)
            layer._buffers["scale_weight"] = s
    log.info("quantized %d linears to %s", len(names), mode)
    return names


def _quantize_torchao(model: nn.Module, mode: str, names: list[str]) -> list[str]:
    try:
        from torchao.quantization import quantize_
    except ImportError as e:
        raise EngineError(
            f"torchao is not installed ({e})", remedy="pip install torchao, or use our own linears."
        ) from None
    import torchao.quantization as tq

    if mode == "fp8":
        config = tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow())
    else:
        config = tq.Int8WeightOnlyConfig()
    wanted = set(names)
    quantize_(model, config, filter_fn=lambda m, fqn: fqn in wanted)
    return names
