"""FP8 (E4M3) and INT8 Q/DQ for the DiT's ONNX graph, calibrated on real denoising trajectories.

The flow, each step with its own artifact on disk (TensorRT-demo style):

1. :func:`record_calibration` runs our own ``pipeline.generate()`` on a few prompts with a recording
   wrapper around every Denoiser and keeps the DiT inputs of every step (CFG batch, all timesteps):
   a :class:`CalibrationSet`, saved as ``.npz``.
2. :func:`quantize_dit` inserts Q/DQ with NVIDIA ModelOpt's ONNX PTQ, calibrating on ONNX Runtime's
   CPU provider. Only the transformer blocks' linears are quantized (plus the attention matmuls
   where ModelOpt's TensorRT rules allow: FP8 fMHA pattern, INT8 only for seq_len ≤ 512); weights
   per output channel, activations per tensor. The result is an fp32 graph with Q/DQ nodes that ORT
   runs, so :func:`evaluate_quantization` can report its error against the unquantized graph.
3. :func:`to_engine_graph` turns an fp32 graph (quantized or not) into the bf16 graph TensorRT
   builds: TensorRT for RTX networks are strongly typed, so precision comes only from the ONNX dtypes
   and the Q/DQ nodes; the layers listed in :data:`FP32_SCOPES` stay fp32 (WanModel's dtype policy).

Kept in high precision (never quantized, :data:`UNQUANTIZED_SCOPES`): the patch, text and time
embeddings, the time projection, the modulation arithmetic, every norm, RoPE and softmax, the head
and the CLIP projection of I2V models. The choice follows WanModel.FP32_MODULES (measured there) and
the TensorRT diffusion demo's exclusions (time/text/patch embeddings, head).
"""

from __future__ import annotations

import ast
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wan_desktop.errors import Cancelled, ConfigError, EngineError
from wan_desktop.variants import Precision

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from torch import Tensor

    from wan_desktop.cancel import CancelToken
    from wan_desktop.contracts import Components
    from wan_desktop.request import GenerationRequest

log = logging.getLogger(__name__)

# DiT inputs in the order of Denoiser.__call__; graph inputs are matched by these names.
DIT_INPUTS = ("latents", "timestep", "context", "y", "clip_fea")

# The linears that get Q/DQ: every projection of the attention layers and both FFN layers of every
# block. Matched against the innermost module scope the dynamo exporter records on each node.
QUANTIZED_LINEARS = re.compile(
    r"(^|\.)blocks\.\d+\.(self_attn\.(q|k|v|o)|cross_attn\.(q|k|v|o|k_img|v_img)|ffn\.(0|2))$"
)
# Attention matmuls (Q·Kᵀ and P·V) of the same blocks; ModelOpt keeps the ones TensorRT cannot fuse.
ATTENTION_SCOPE = re.compile(r"(^|\.)blocks\.\d+\.(self_attn|cross_attn)$")
# Never quantized, listed for the report (everything outside QUANTIZED_LINEARS is left alone).
UNQUANTIZED_SCOPES = (
    "patch_embedding", "text_embedding", "time_embedding", "time_projection",
    "blocks.*.modulation (adaLN shift/scale/gate arithmetic)", "blocks.*.norm1/norm2/norm3",
    "blocks.*.*_attn.norm_q/norm_k (RMSNorm)", "RoPE", "softmax", "head", "img_emb",
)  # fmt: skip
# What runs in bf16 in the engine graph: the block internals and the text embedding, as in
# WanModel's dtype policy (its compute dtype). Everything else (embeddings of time and patches,
# modulation, LayerNorms, gated residual adds, head) stays fp32, as the torch model computes it.
_BF16_SCOPE = re.compile(
    r"(^|\.)(blocks\.\d+\.(self_attn|cross_attn|ffn)|text_embedding|img_emb\.proj\.[123])(\.|$)"
)
_FP32_INSIDE = re.compile(r"\.norm_(q|k|k_img)(\.|$)")  # RMSNorm statistics stay fp32
FP32_SCOPES = "everything outside blocks.*.{self_attn,cross_attn,ffn}, text_embedding, img_emb MLP"


# ----------------------------------------------------------------------------- calibration data


@dataclass(frozen=True)
class CalibrationSet:
    """DiT inputs recorded from real denoising runs: one dict per DiT call (name -> float32 array).

    ``meta`` records where they came from (prompts, steps, size) for the report.
    """

    samples: tuple[dict[str, np.ndarray], ...]
    meta: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.samples:
            raise ConfigError("a calibration set needs at least one recorded DiT call")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.samples[0])

    def split(self, every: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(calibration, held out): every ``every``-th sample is held out for evaluation."""
        if every < 2 or len(self) < every:
            raise ConfigError(f"cannot hold out every {every}th of {len(self)} samples")
        held = tuple(s for i, s in enumerate(self.samples) if i % every == every - 1)
        kept = tuple(s for i, s in enumerate(self.samples) if i % every != every - 1)
        return CalibrationSet(kept, self.meta), CalibrationSet(held, self.meta)

    def save(self, path: str | Path) -> Path:
        import numpy as np

        path = Path(path)
        arrays = {f"{i}/{k}": v for i, s in enumerate(self.samples) for k, v in s.items()}
        arrays.update({f"meta/{k}": np.array(v) for k, v in self.meta})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationSet:
        import numpy as np

        try:
            data = np.load(Path(path))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read calibration data {path}: {e}") from None
        samples: dict[int, dict[str, np.ndarray]] = {}
        meta = []
        for key in data.files:
            head, _, name = key.partition("/")
            if head == "meta":
                meta.append((name, str(data[key])))
            else:
                samples.setdefault(int(head), {})[name] = data[key]
        return cls(tuple(samples[i] for i in sorted(samples)), tuple(meta))


class _RecordingDenoiser:
    """Wraps a Denoiser and keeps a CPU copy of every call's inputs (nothing else changes)."""

    def __init__(
        self,
        inner: Any,
        sink: list[dict[str, np.ndarray]],
        rope: Callable[[tuple[int, ...]], dict[str, np.ndarray]] | None = None,
    ) -> None:
        self.inner = inner
        self.sink = sink
        self.rope = rope

    def load(self, device: Any) -> None:
        self.inner.load(device)

    def unload(self) -> None:
        self.inner.unload()

    def begin(self, timesteps: Sequence[float]) -> None:
        self.inner.begin(timesteps)

    def __call__(
        self,
        latents: Tensor,
        timestep: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
    ) -> Tensor:
        values = dict(zip(DIT_INPUTS, (latents, timestep, context, y, clip_fea), strict=True))
        sample = {k: v.detach().float().cpu().numpy() for k, v in values.items() if v is not None}
        if self.rope is not None:
            sample.update(self.rope(tuple(latents.shape)))
        self.sink.append(sample)
        return self.inner(latents, timestep, context, y=y, clip_fea=clip_fea)


def record_calibration(
    components: Components,
    requests: Sequence[GenerationRequest],
    *,
    expert: int = 0,
    device: str = "cpu",
    cancel: CancelToken | None = None,
    progress: Callable[[str], None] | None = None,
) -> CalibrationSet:
    """Run ``generate()`` for each request and keep the inputs of every call of one DiT expert.

    The requests are resolved against the components' variant. Wan2.2 A14B: ``expert`` 0 is the
    high-noise model, 1 the low-noise one (each engine is calibrated on its own timesteps).
    """
    from wan_desktop.pipeline import generate

    if not requests:
        raise ConfigError("calibration needs at least one prompt")
    if not 0 <= expert < len(components.denoisers):
        raise ConfigError(f"no DiT expert {expert}: the model has {len(components.denoisers)}")
    sink: list[dict[str, np.ndarray]] = []
    original = components.denoisers
    wrapped = list(original)
    variant = components.variant
    wrapped[expert] = _RecordingDenoiser(original[expert], sink, _rope_tables(variant))
    components.denoisers = tuple(wrapped)
    try:
        for i, request in enumerate(requests):
            r = request.resolve(variant)
            if progress:
                progress(
                    f"calibration run {i + 1}/{len(requests)}: {r.prompt[:40]!r}, {r.steps} steps"
                )
            generate(components, r, cancel=cancel, device=device, preview_every=0)
    finally:
        components.denoisers = original
    meta = (
        ("variant", variant.name),
        ("runs", str(len(requests))),
        ("prompts", " | ".join(r.prompt for r in requests)),
        ("expert", str(expert)),
    )
    return CalibrationSet(tuple(sink), meta)


def _rope_tables(variant: Any) -> Callable[[tuple[int, ...]], dict[str, np.ndarray]]:
    """latents shape -> the RoPE inputs of the DiT graph (specs.dit_spec: rope_cos, rope_sin of
    the patch grid), cached per shape."""
    from wan_desktop.models.rope import rope_cos_sin

    cache: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
    pt, ph, pw = variant.dit.patch_size

    def tables(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        if shape not in cache:
            t, h, w = shape[2:]
            cos, sin = rope_cos_sin((t // pt, h // ph, w // pw), variant.dit.head_dim)
            cache[shape] = {"rope_cos": cos.float().numpy(), "rope_sin": sin.float().numpy()}
        return cache[shape]

    return tables


class _Reader:
    """ORT CalibrationDataReader over a CalibrationSet, checking the cancel token on every sample.
    (ModelOpt also calls ``get_first`` to probe shapes.)"""

    def __init__(
        self,
        samples: Sequence[dict[str, np.ndarray]],
        cancel: CancelToken | None,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.samples = list(samples)
        self.cancel = cancel
        self.progress = progress
        self.rewind()

    def get_first(self) -> dict[str, np.ndarray]:
        return self.samples[0]

    def rewind(self) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(self.samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.cancel is not None:
            self.cancel.check()
        return next(self._it, None)

    def set_range(self, start_index: int, end_index: int) -> None:  # ORT's optional batching API
        self._it = iter(self.samples[start_index:end_index])


# ----------------------------------------------------------------------------- graph selection


def node_scopes(node: onnx.NodeProto) -> tuple[str, ...]:
    """The module scopes torch.onnx (dynamo) records on a node, outermost first; the last entry is
    the op's own name (``linear_5``, ``scaled_dot_product_attention``)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ()
            return tuple(str(v) for v in value)
    return ()


def select_dit_nodes(model: onnx.ModelProto, *, attention: bool = True) -> list[str]:
    """Names of the MatMul/Gemm nodes to quantize: the block linears (and attention matmuls)."""
    chosen: list[str] = []
    seen_scopes = False
    for node in model.graph.node:
        scopes = node_scopes(node)
        seen_scopes = seen_scopes or bool(scopes)
        if node.op_type not in ("MatMul", "Gemm") or len(scopes) < 2:
            continue
        module, op = scopes[-2], scopes[-1]
        if QUANTIZED_LINEARS.search(module) or (
            attention
            and ATTENTION_SCOPE.search(module)
            and op.startswith("scaled_dot_product_attention")
        ):
            chosen.append(node.name)
    if not seen_scopes:  # onnxslim and older exporters drop them
        raise EngineError(
            "the DiT graph carries no module names (pkg.torch.onnx.name_scopes), "
            "so its block linears cannot be told from the embeddings",
            remedy="Export the DiT to quantize unslimmed: export_dit(..., slim=False).",
        )
    if not chosen:
        raise EngineError(
            "no transformer-block linears found in the DiT graph",
            remedy="Quantize the DiT graph written by export_dit.",
        )
    return chosen


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that stay fp32 in the engine graph (everything outside the bf16 scopes)."""
    keep = []
    for node in model.graph.node:
        scopes = node_scopes(node)
        inner = scopes[-2] if len(scopes) >= 2 else ""
        if not _BF16_SCOPE.search(inner) or _FP32_INSIDE.search(inner):
            keep.append(node.name)
    return keep


def _quantized_node_names(model: onnx.ModelProto) -> list[str]:
    """Compute nodes that consume a DequantizeLinear output (what actually got quantized)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm", "Conv") and any(i in dq_out for i in n.input)
    ]


# ----------------------------------------------------------------------------- quantization


@dataclass(frozen=True, kw_only=True)
class QuantizedGraph:
    path: Path
    precision: Precision
    method: str
    quantized_nodes: tuple[str, ...]  # compute nodes fed by Q/DQ
    attention_nodes: tuple[str, ...]  # of which attention matmuls
    calibration_samples: int
    seconds: float
    # nodes of the input graph that stay fp32 in the engine graph (Q/DQ graphs lose the scopes)
    keep_fp32: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        return _graph_bytes(self.path)


def _graph_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _require_modelopt() -> Any:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as e:
        raise EngineError(
            f"FP8/INT8 quantization needs NVIDIA ModelOpt ({e})",
            remedy='Install the export extra: pip install -e ".[export]".',
        ) from None
    return quantize


def _save(model: onnx.ModelProto, out: Path) -> Path:
    """Write a graph atomically; external data beside it once protobuf's 2 GB limit is near."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if _has_external(model) or model.ByteSize() > 1_500_000_000:
        onnx.save(
            model,
            str(tmp),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=out.name + ".data",
        )
    else:
        onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


def _has_external(model: onnx.ModelProto) -> bool:
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def quantize_dit(
    onnx_path: str | Path,
    out_path: str | Path,
    precision: Precision,
    calibration: CalibrationSet,
    *,
    method: str = "max",
    attention: bool | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizedGraph:
    """Insert FP8 E4M3 or INT8 Q/DQ into an fp32 DiT graph, calibrated on ``calibration``.

    method: "max" (absolute max of the calibration activations) or "entropy" (KL-optimal clip);
      on the tiny DiT both gave the same error (0.68 % INT8 / 1.9 % FP8), max is ~30 % faster.
    attention: also quantize the attention matmuls (Q·Kᵀ, P·V) where TensorRT can run them
      quantized. None: FP8 yes, INT8 no. Measured on the tiny DiT (velocity error vs fp32): FP8
      1.90 % without, 1.95 % with; INT8 0.68 % without, 13 % with (an int8 softmax output is too
      coarse), so INT8 keeps attention in bf16.
    The output is an fp32 Q/DQ graph; :func:`to_engine_graph` makes the bf16 engine graph.
    """
    import onnx

    if attention is None:
        attention = precision is Precision.FP8
    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes = select_dit_nodes(model, attention=attention)
    # graphsurgeon drops the scope metadata: tell attention matmuls apart on the input graph
    attention_names = {n.name for n in model.graph.node if _is_attention(n)}
    q = quantize_graph(
        onnx_path,
        out_path,
        precision,
        calibration,
        nodes=nodes,
        method=method,
        attention=attention,
        cancel=cancel,
        progress=progress,
    )
    return QuantizedGraph(
        path=q.path,
        precision=q.precision,
        method=q.method,
        quantized_nodes=q.quantized_nodes,
        attention_nodes=tuple(n for n in q.quantized_nodes if n in attention_names),
        calibration_samples=q.calibration_samples,
        seconds=q.seconds,
        keep_fp32=tuple(fp32_nodes(model)),
    )


def quantize_graph(
    onnx_path: str | Path,
    out_path: str | Path,
    precision: Precision,
    calibration: CalibrationSet,
    *,
    nodes: Sequence[str] | None = None,
    op_types: Sequence[str] = ("MatMul", "Gemm"),
    method: str = "max",
    attention: bool = False,
    cancel: CancelToken | None = None,
    progress: Callable[[str], None] | None = None,
) -> QuantizedGraph:
    """Q/DQ for any fp32 graph (T5, CLIP, VAE chunks; the DiT through :func:`quantize_dit`):
    ``nodes`` by name, or every node of ``op_types`` ModelOpt finds quantizable. Calibration
    samples are matched to the graph's inputs by name."""
    import onnx

    if precision not in (Precision.FP8, Precision.INT8):
        raise ConfigError(f"quantization makes fp8 or int8 graphs, not {precision.value}")
    if method not in ("max", "entropy"):
        raise ConfigError(f"unknown calibration method {method!r}; expected max or entropy")
    quantize = _require_modelopt()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX graph not found: {onnx_path}")
    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in init]
    missing = [n for n in graph_inputs if n not in calibration.names]
    if missing:
        raise ConfigError(
            f"calibration data lacks the graph inputs {missing} "
            f"(recorded: {list(calibration.names)})"
        )
    samples = [{n: s[n] for n in graph_inputs} for s in calibration.samples]
    if cancel is not None:
        cancel.check()
    what = f"{len(nodes)} nodes" if nodes is not None else "/".join(op_types)
    if progress:
        progress(
            f"{precision.value}: calibrating {what} of {onnx_path.name} on {len(samples)} samples"
        )
    t0 = time.perf_counter()
    tmp = out_path.with_name(out_path.name + ".partial.onnx")
    big = _has_external(model)
    try:
        quantize(
            str(onnx_path),
            quantize_mode=precision.value,
            calibration_data_reader=_Reader(samples, cancel, progress),
            calibration_method=method,
            calibration_eps=["cpu"],
            op_types_to_quantize=list(op_types),
            nodes_to_quantize=None if nodes is None else [re.escape(n) + "$" for n in nodes],
            disable_mha_qdq=not attention,
            high_precision_dtype="fp32",
            use_external_data_format=big,
            output_path=str(tmp),
            log_level="WARNING",
        )
        qmodel = onnx.load(str(tmp))
    except Cancelled:
        raise
    except Exception as e:  # ModelOpt/ORT raise plain exceptions: one typed error for the user
        raise EngineError(
            f"{precision.value} quantization of {onnx_path.name} failed: {e}",
            remedy="Re-export the graph (fp32, opset 18-21) and retry.",
        ) from e
    finally:
        for p in (tmp, tmp.with_name(tmp.name + ".data")):
            p.unlink(missing_ok=True)
    _save(qmodel, out_path)
    quantized = _quantized_node_names(qmodel)
    if not quantized:
        raise EngineError(f"{precision.value} quantization of {onnx_path.name} inserted no Q/DQ")
    return QuantizedGraph(
        path=out_path,
        precision=precision,
        method=method,
        quantized_nodes=tuple(quantized),
        attention_nodes=(),
        calibration_samples=len(samples),
        seconds=time.perf_counter() - t0,
    )


def _is_attention(node: onnx.NodeProto) -> bool:
    scopes = node_scopes(node)
    return (
        node.op_type == "MatMul"
        and bool(scopes)
        and scopes[-1].startswith("scaled_dot_product_attention")
    )


# Op types that stay fp32 in the engine graph of a graph without module scopes (T5, CLIP, VAE):
# normalisation statistics, as every model file here computes them.
FP32_OP_TYPES = (
    "LayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Reciprocal",
)


def to_engine_graph(
    onnx_path: str | Path, out_path: str | Path, *, keep_fp32: Sequence[str] | None = None
) -> Path:
    """fp32 graph (with or without Q/DQ) -> the bf16 graph a strongly-typed TensorRT network
    builds. Nodes named in ``keep_fp32`` stay fp32 (default: :func:`fp32_nodes` for a DiT graph
    with module scopes, else the :data:`FP32_OP_TYPES` nodes); graph inputs and outputs keep their
    fp32 type, so the runtime feeds the same tensors as to the fp32 graph. Shape-free: no reference
    run (dynamic graphs convert without example inputs)."""
    import onnx

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    model = onnx.load(str(onnx_path))
    if keep_fp32 is None:
        has_scopes = any(node_scopes(n) for n in model.graph.node)
        is_dit = has_scopes and any(
            QUANTIZED_LINEARS.search(node_scopes(n)[-2])
            for n in model.graph.node
            if len(node_scopes(n)) >= 2
        )
        keep_fp32 = (
            fp32_nodes(model)
            if is_dit
            else [n.name for n in model.graph.node if n.op_type in FP32_OP_TYPES]
        )
    return _save(_to_bf16(model, set(keep_fp32)), out_path)


def _to_bf16(model: onnx.ModelProto, keep: set[str]) -> onnx.ModelProto:
    """ModelOpt's precision converter with an explicit node split (its convert_to_f16 takes op
    types only; convert_to_mixed_precision needs a reference run with concrete shapes)."""
    from copy import deepcopy

    try:
        from modelopt.onnx import utils as onnx_utils
        from modelopt.onnx.autocast import utils as autocast_utils
        from modelopt.onnx.autocast.graphsanitizer import GraphSanitizer
        from modelopt.onnx.autocast.precisionconverter import PrecisionConverter
    except ImportError as e:
        raise EngineError(
            f"bf16 conversion needs NVIDIA ModelOpt ({e})",
            remedy='Install the export extra: pip install -e ".[export]".',
        ) from None
    logging.getLogger("modelopt").setLevel(logging.ERROR)
    # Graph outputs that are constants (a VAE cache slot of the first chunk that is all zeros)
    # are dropped by the converter: take them out and put them back, fp32, afterwards.
    order = [o.name for o in model.graph.output]
    produced = {o for n in model.graph.node for o in n.output}
    const_out = {
        i.name: deepcopy(i)
        for i in model.graph.initializer
        if i.name in order and i.name not in produced
    }
    out_info = {o.name: deepcopy(o) for o in model.graph.output}
    if const_out:
        keep_outs = [o for o in model.graph.output if o.name not in const_out]
        del model.graph.output[:]
        model.graph.output.extend(keep_outs)
    io = {
        "input": [deepcopy(i) for i in model.graph.input],
        "output": [deepcopy(o) for o in model.graph.output],
    }
    # bf16 Q/DQ scales and bf16 ops need opset 22 (FP8 Q/DQ alone would need 19)
    opset = max(22, onnx_utils.get_min_opset_for_precisions(onnx_utils.get_qdq_precisions(model)))
    sanitizer = GraphSanitizer(model, min_opset=opset, trt_plugins=[], max_ir_version=10)
    sanitizer.find_custom_nodes()
    sanitizer.convert_opset()
    sanitizer.ensure_graph_name_exists()
    sanitizer.convert_fp64_to_fp32()
    model = onnx_utils.infer_types(sanitizer.model, False, strict_mode=True)
    value_info, inits, node_inits = autocast_utils.setup_mappings(model)
    converter = PrecisionConverter(
        model,
        value_info,
        inits,
        node_inits,
        keep_io_types=True,
        low_precision_type="bf16",
        custom_ops=sanitizer.custom_ops,
        tensor_block_dict={},
        use_standalone_type_inference=False,
        original_network_io_metadata=io,
    )
    names = [n.name for n in model.graph.node]
    out = converter.convert([n for n in names if n in keep], [n for n in names if n not in keep])
    if const_out:
        for name, tensor in const_out.items():
            old = next((i for i in out.graph.initializer if i.name == name), None)
            if old is not None and old.data_type != tensor.data_type:
                old.name = name + "__bf16"  # still read by the converted nodes
                for node in out.graph.node:
                    node.input[:] = [old.name if x == name else x for x in node.input]
                old = None
            if old is None:
                out.graph.initializer.append(tensor)
        current = {o.name: o for o in out.graph.output}
        restored = [deepcopy(current.get(n, out_info[n])) for n in order]
        del out.graph.output[:]
        out.graph.output.extend(restored)
    return out


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, kw_only=True)
class QuantReport:
    """Error of a quantized DiT graph against the unquantized one (ORT, CPU)."""

    precision: str
    method: str
    samples: int  # held-out DiT calls compared
    velocity_rel_error: float  # mean over samples of ||v_q − v|| / ||v||
    velocity_max_rel_error: float  # worst sample
    velocity_cosine: float  # mean cosine similarity
    video_psnr_db: float | None  # decoded 8-bit video of a whole generation vs unquantized
    quantized_nodes: int
    attention_nodes: int
    graph_bytes: int
    reference_bytes: int
    kept_high_precision: tuple[str, ...] = UNQUANTIZED_SCOPES

    def as_dict(self) -> dict[str, object]:
        from dataclasses import asdict

        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's own exception types: report which graph and why
        raise EngineError(f"ONNX Runtime cannot load {path.name}: {e}") from e


def velocity_errors(
    reference: str | Path, quantized: str | Path, samples: Sequence[dict[str, np.ndarray]]
) -> tuple[float, float, float]:
    """(mean relative L2 error, worst relative error, mean cosine) of the graphs' first output."""
    import numpy as np

    ref, q = _session(Path(reference)), _session(Path(quantized))
    names = [i.name for i in ref.get_inputs()]
    rels, coss = [], []
    for s in samples:
        feed = {n: s[n] for n in names}
        a = ref.run(None, feed)[0].astype(np.float64).ravel()
        b = q.run(None, feed)[0].astype(np.float64).ravel()
        rels.append(float(np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-30)))
        coss.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return float(np.mean(rels)), float(np.max(rels)), float(np.mean(coss))


class OrtGraphDenoiser:
    """A DiT ONNX graph behind the Denoiser Protocol on ORT's CPU provider (evaluation only: the
    product's ORT backend with IO binding is engines/onnxruntime_backend.py)."""

    def __init__(self, path: str | Path, variant: Any) -> None:
        self.path = Path(path)
        self.rope = _rope_tables(variant)
        self._sess: Any = None

    def load(self, device: Any) -> None:
        if self._sess is None:
            self._sess = _session(self.path)

    def unload(self) -> None:
        self._sess = None

    def begin(self, timesteps: Sequence[float]) -> None:
        """Start of a run: nothing to reset."""

    def __call__(
        self,
        latents: Tensor,
        timestep: Tensor,
        context: Tensor,
        *,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
    ) -> Tensor:
        import torch

        self.load(None)
        values = dict(zip(DIT_INPUTS, (latents, timestep, context, y, clip_fea), strict=True))
        arrays = {k: v.detach().float().cpu().numpy() for k, v in values.items() if v is not None}
        arrays |= self.rope(tuple(latents.shape))
        feed = {i.name: arrays[i.name] for i in self._sess.get_inputs()}
        return torch.from_numpy(self._sess.run(None, feed)[0]).to(latents.device)


def psnr_uint8(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two uint8 videos (inf when identical)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def video_psnr(
    components: Components,
    reference: str | Path,
    quantized: str | Path,
    request: GenerationRequest,
    *,
    expert: int = 0,
) -> float:
    """PSNR of the video generated with the quantized DiT graph against the reference graph (same
    seed, same text encoder and VAE: the difference is the quantization alone)."""
    from wan_desktop.pipeline import generate

    original = components.denoisers
    r = request.resolve(components.variant)
    videos = []
    try:
        for path in (reference, quantized):
            ds = list(original)
            ds[expert] = OrtGraphDenoiser(path, components.variant)
            components.denoisers = tuple(ds)
            videos.append(generate(components, r, preview_every=0))
    finally:
        components.denoisers = original
    return psnr_uint8(videos[0], videos[1])


def evaluate_quantization(
    reference: str | Path,
    quantized: QuantizedGraph,
    held_out: CalibrationSet,
    *,
    components: Components | None = None,
    request: GenerationRequest | None = None,
) -> QuantReport:
    """The QuantReport of ``quantized``: velocity errors on held-out DiT inputs and, given
    components and a request, the PSNR of a whole generation."""
    rel, worst, cos = velocity_errors(reference, quantized.path, held_out.samples)
    psnr = None
    if components is not None and request is not None:
        psnr = video_psnr(components, reference, quantized.path, request)
    return QuantReport(
        precision=quantized.precision.value,
        method=quantized.method,
        samples=len(held_out),
        velocity_rel_error=rel,
        velocity_max_rel_error=worst,
        velocity_cosine=cos,
        video_psnr_db=psnr,
        quantized_nodes=len(quantized.quantized_nodes),
        attention_nodes=len(quantized.attention_nodes),
        graph_bytes=quantized.size_bytes,
        reference_bytes=_graph_bytes(Path(reference)),
    )


# ----------------------------------------------------------------------------- other graphs


def vae_conv_nodes(model: onnx.ModelProto) -> list[str]:
    """Convs of a VAE chunk graph that may take Q/DQ: those whose input is not also sliced into a
    cache output (a Q/DQ on such a tensor would quantize the cache the next chunk reads, and ORT
    cannot type the graph output it feeds)."""
    outs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    cached: set[str] = set()
    for o in outs:
        node = producer.get(o)
        while node is not None and node.op_type in ("Slice", "Identity", "Cast"):
            cached.add(node.input[0])
            node = producer.get(node.input[0])
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and not any(i in cached for i in n.input)
    ]


# ----------------------------------------------------------------------------- export folders

CALIBRATION_PROMPTS = (
    "A cat walks on the grass, realistic style.",
    "A red sports car drives along a coastal road at sunset, aerial shot.",
    "Two astronauts play chess on the moon, cinematic lighting, slow camera pan.",
)


def quantize_folder(
    folder: str | Path,
    job: Any,
    *,
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[str, float], None] = lambda stage, fraction: None,
    cancel: CancelToken | None = None,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    size: tuple[int, int, int] = (256, 256, 9),
    steps: int = 8,
    device: str | None = None,
) -> None:
    """The export job's quantize step (export/job.py): every DiT graph of the folder becomes an
    FP8/INT8 Q/DQ graph calibrated on trajectories of our own pipeline, and its manifest entry is
    rewritten (precision, file, hashes; extra: calibration, node counts, velocity error on
    held-out steps, and the nodes the engine graph keeps in fp32).

    Calibration runs ``generate()`` with the torch backend for ``prompts`` at ``size``
    (width, height, frames; small: activation ranges of a DiT barely depend on the resolution)
    with ``steps`` steps, on the GPU when there is one.
    """
    import dataclasses

    import torch
    from wan_desktop.engines import cache
    from wan_desktop.engines.torch_backend import build_torch_components

    from wan_desktop.request import GenerationRequest

    folder = Path(folder)
    precision = Precision.parse(job.precision)
    manifest = cache.read_manifest(folder)
    variant = manifest.variant
    dits = [e for e in manifest.entries if e.component == "dit" and e.runtime == "onnxruntime"]
    if not dits:
        raise ConfigError(f"{precision.value} quantizes the DiT; {folder} has no DiT graph")
    files = None
    if job.model:
        from wan_desktop.checkpoints.detect import detect_model

        files = detect_model(
            job.model, vae=job.vae, text_encoder=job.text_encoder, tokenizer=job.tokenizer
        )
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    progress("calibration", 0.0)
    comps = build_torch_components(
        variant, files, device=dev, dtype=torch.float32 if dev.type == "cpu" else torch.bfloat16
    )
    w, h, f = size
    requests = [
        GenerationRequest(prompt=p, width=w, height=h, frames=f, steps=steps, seed=i)
        for i, p in enumerate(prompts)
    ]
    entries = list(manifest.entries)
    for entry in dits:
        expert = entry.expert or 0
        cal = record_calibration(
            comps, requests, expert=expert, device=str(dev), cancel=cancel, progress=log
        )
        fit, held = cal.split(4) if len(cal) >= 8 else (cal, cal)
        src = folder / entry.file
        import onnx

        if not any(
            node_scopes(n) for n in onnx.load(str(src), load_external_data=False).graph.node
        ):
            raise EngineError(
                f"{src.name} was slimmed: its nodes lost the module names that tell "
                "the block linears from the embeddings",
                remedy="Export the DiT to quantize with export_dit(..., slim=False).",
            )
        out = src.with_name(f"{src.stem}.{precision.value}.onnx")
        q = quantize_dit(src, out, precision, fit, cancel=cancel, progress=log)
        rel, worst, cos = velocity_errors(src, out, held.samples)
        log(
            f"{out.name}: {len(q.quantized_nodes)} matmuls in {precision.value} "
            f"({len(q.attention_nodes)} attention), velocity error {rel:.2%} on held-out steps, "
            f"{q.seconds:.1f} s"
        )
        for p in (src, src.with_name(src.name + ".data")):  # the Q/DQ graph replaces it
            p.unlink(missing_ok=True)
        extra = dict(entry.extra) | {
            "quantizer": "nvidia-modelopt onnx PTQ",
            "method": q.method,
            "calibration": {
                "prompts": list(prompts),
                "size": list(size),
                "steps": steps,
                "samples": len(fit),
            },
            "quantized_nodes": len(q.quantized_nodes),
            "attention_nodes": len(q.attention_nodes),
            "velocity_rel_error": round(rel, 6),
            "velocity_max_rel_error": round(worst, 6),
            "velocity_cosine": round(cos, 6),
            "keep_fp32": list(q.keep_fp32),
            "files": [p.name for p in (out, out.with_name(out.name + ".data")) if p.exists()],
            "bytes_with_data": _graph_bytes(out),
        }
        new = dataclasses.replace(
            entry,
            file=out.name,
            precision=precision.value,
            sha256=cache.sha256_file(out),
            size=out.stat().st_size,
            extra=extra,
            **cache.data_fields(out),  # the Q/DQ graph's own external weights, if it has any
        )
        entries[entries.index(entry)] = new
    del comps
    cache.write_manifest(folder, manifest.with_entries(entries))
