"""GGUF files (city96's Wan and umT5 releases, ComfyUI-GGUF's format), read with the ``gguf`` package.

The ``gguf`` package is only the container: it parses the header (metadata fields, tensor names,
GGML types, dims) and memory-maps the data. Values come from our own kernels
(models/gguf_quants.py), so a quantized weight can also stay quantized in memory
(checkpoints/gguf_load.py, models/quant_linear.py).

What the files hold:
- Wan diffusion models: ``general.architecture = "wan"``, the official/ComfyUI key names
  (``blocks.0.self_attn.q.weight``, optionally under ``model.diffusion_model.``); small and
  non-2D tensors F32/F16, linear weights quantized. GGUF stores dims in reverse order (``ne[0]`` is
  the row length), so the torch shape is the reversed ``dims``; tensors of more than 4 dims (the
  Conv3d ``patch_embedding.weight``) are stored flattened with their real shape in the metadata
  field ``comfy.gguf.orig_shape.<name>`` (ComfyUI-GGUF's ``tools/convert.py``).
- umT5-XXL encoders: ``general.architecture = "t5encoder"`` (or ``"t5"``), llama.cpp tensor names
  (``enc.blk.N.attn_q.weight``, ``token_embd.weight``, ``enc.output_norm.weight``) that are renamed
  here to the transformers names (``encoder.block.N.layer.0.SelfAttention.q.weight`` …), which
  keymap_t5 maps to ours. Their tokenizer is the umT5 sentencepiece model: give ``--tokenizer``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor

    from .reader import TensorInfo

DIT_ARCHS = ("wan",)
T5_ARCHS = ("t5encoder", "t5")
ORIG_SHAPE = "comfy.gguf.orig_shape."

# llama.cpp's T5 tensor names -> transformers' (applied in this order, as ComfyUI-GGUF does)
_T5_NAMES = (
    ("enc.", "encoder."),
    (".blk.", ".block."),
    ("token_embd", "shared"),
    ("output_norm", "final_layer_norm"),
    ("attn_q", "layer.0.SelfAttention.q"),
    ("attn_k", "layer.0.SelfAttention.k"),
    ("attn_v", "layer.0.SelfAttention.v"),
    ("attn_o", "layer.0.SelfAttention.o"),
    ("attn_norm", "layer.0.layer_norm"),
    ("attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"),
    ("ffn_up", "layer.1.DenseReluDense.wi_1"),
    ("ffn_down", "layer.1.DenseReluDense.wo"),
    ("ffn_gate", "layer.1.DenseReluDense.wi_0"),
    ("ffn_norm", "layer.1.layer_norm"),
)
_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def t5_name(name: str) -> str:
    for old, new in _T5_NAMES:
        name = name.replace(old, new)
    return name


@dataclass(frozen=True)
class GgufTensor:
    """One tensor of a GGUF file: its GGML type, its torch-order shape, where its bytes are."""

    name: str  # the name in the file
    qtype: str  # "F32", "F16", "BF16", "Q8_0", "Q4_K", …
    shape: tuple[int, ...]  # torch order (the file's dims reversed, or its orig_shape)
    nbytes: int

    @property
    def quantized(self) -> bool:
        return self.qtype not in _TORCH_DTYPES

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class GgufFile:
    """The header of one GGUF file and lazy access to its tensors (by the names we use)."""

    def __init__(self, path: Path) -> None:
        from ..models.gguf_quants import BLOCK_SIZES

        self.path = path
        try:
            import gguf
        except ImportError:  # a dependency; only a broken install lacks it
            raise CheckpointError(
                f"{path}: reading GGUF files needs the 'gguf' package",
                remedy="pip install gguf (it needs only numpy)",
            ) from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader = gguf.GGUFReader(path, "r")
        except Exception as e:  # the gguf package raises ValueError / struct errors / OSError
            raise CheckpointError(
                f"{path}: not a valid GGUF file ({str(e).splitlines()[0] if str(e) else e!r}); "
                "it may be truncated or corrupt"
            ) from None
        self._reader = reader
        self.metadata: dict[str, Any] = {}
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or len(field.types) != 1:
                continue  # header counters; arrays (tokenizer vocabularies, orig_shape)
            try:
                self.metadata[name] = field.contents()
            except Exception:  # a field gguf cannot decode is not one we need
                continue
        arch = self.metadata.get("general.architecture")
        self.arch: str | None = arch if isinstance(arch, str) else None
        rename = t5_name if self.arch in T5_ARCHS else (lambda n: n)
        self.tensors: dict[str, GgufTensor] = {}
        self._data: dict[str, Any] = {}
        for t in reader.tensors:
            qtype = t.tensor_type.name
            if qtype not in BLOCK_SIZES:
                raise CheckpointError(
                    f"{path}: tensor {t.name} is of GGML type {qtype}, which Wan Desktop cannot "
                    "read (supported: " + ", ".join(BLOCK_SIZES) + ")",
                    remedy="Use a Q2_K … Q8_0, F16 or BF16 release of the model.",
                )
            shape = self._orig_shape(t.name) or tuple(int(d) for d in reversed(t.shape.tolist()))
            key = rename(t.name)
            if key in self.tensors:
                raise CheckpointError(f"{path}: tensor {key!r} appears twice")
            info = GgufTensor(name=t.name, qtype=qtype, shape=shape, nbytes=int(t.n_bytes))
            if info.numel != int(t.n_elements):
                raise CheckpointError(
                    f"{path}: tensor {t.name} has {t.n_elements} values but its original shape "
                    f"{list(shape)} holds {info.numel} (corrupt metadata)"
                )
            self.tensors[key] = info
            self._data[key] = t.data

    def _orig_shape(self, name: str) -> tuple[int, ...] | None:
        field = self._reader.get_field(ORIG_SHAPE + name)
        if field is None:
            return None
        try:
            return tuple(int(v) for v in field.contents())
        except Exception:
            raise CheckpointError(
                f"{self.path}: metadata {ORIG_SHAPE}{name} is not a list of dims"
            ) from None

    def info(self, key: str) -> TensorInfo:
        """The tensor as ``get`` returns it: its shape and torch dtype."""
        from .reader import TensorInfo

        t = self.tensors[key]
        return TensorInfo(
            shape=t.shape, dtype=_TORCH_DTYPES.get(t.qtype, "float32"), file=self.path
        )

    def raw(self, key: str) -> Tensor:
        """The stored bytes, copied out of the memory map: uint8 [rows, bytes per row]
        (one row for a 1-D tensor)."""
        import numpy as np
        import torch

        t = self.tensors[key]
        data = np.ascontiguousarray(self._data[key]).view(np.uint8)
        if data.size != t.nbytes:
            raise CheckpointError(f"{self.path}: tensor {t.name} is truncated")
        rows = t.numel // t.shape[-1] if t.shape else 1
        return torch.from_numpy(data.copy()).reshape(rows, -1)

    def get(self, key: str) -> Tensor:
        """The values: F32/F16/BF16 as stored, quantized types dequantized to float32."""
        import torch

        from ..models.gguf_quants import dequantize

        t = self.tensors[key]
        raw = self.raw(key)
        if t.quantized:
            return dequantize(raw, t.qtype, t.shape)
        return raw.reshape(-1).view(getattr(torch, _TORCH_DTYPES[t.qtype])).reshape(t.shape)

    def quant_summary(self) -> dict[str, dict[str, int]]:
        """{GGML type: {"tensors": n, "parameters": n, "bytes": n}}, largest first."""
        out: dict[str, dict[str, int]] = {}
        for t in self.tensors.values():
            s = out.setdefault(t.qtype, {"tensors": 0, "parameters": 0, "bytes": 0})
            s["tensors"] += 1
            s["parameters"] += t.numel
            s["bytes"] += t.nbytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))


@functools.lru_cache(maxsize=8)
def _open(path: Path, _version: tuple[int, int]) -> GgufFile:
    return GgufFile(path)


def open_gguf(path: str | Path) -> GgufFile:
    """The parsed GGUF file (parsed once per file version: detection reads it several times)."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    return _open(p, (st.st_size, st.st_mtime_ns))


def is_gguf(path: Path) -> bool:
    return path.suffix.lower() == ".gguf"


def check_architecture(path: Path, kind: str) -> None:
    """Refuse a GGUF file whose ``general.architecture`` is not the component it was given as
    ("dit": a Wan diffusion model, "t5": a umT5 encoder). Files without the field (older
    converters) are judged by their tensor names, as every other file is."""
    arch = open_gguf(path).arch
    want = {"dit": DIT_ARCHS, "t5": T5_ARCHS}.get(kind, ())
    if arch is None or arch in want or not want:
        return
    what = {"dit": "a Wan diffusion model", "t5": "a umT5 text encoder"}[kind]
    raise CheckpointError(
        f"{path}: a GGUF file of architecture {arch!r}, not {what}",
        remedy="Give a Wan GGUF (city96/Wan2.1-*-gguf, Wan2.2-*-gguf) as --model and a "
        "umT5-XXL GGUF or safetensors file as --text-encoder.",
    )


def gguf_types(files: tuple[Path, ...] | list[Path]) -> dict[str, dict[str, int]]:
    """``inspect``'s view of GGUF files: {GGML type: {"tensors", "parameters", "bytes"}}."""
    total: dict[str, dict[str, int]] = {}
    for f in files:
        for qtype, s in open_gguf(f).quant_summary().items():
            t = total.setdefault(qtype, {"tensors": 0, "parameters": 0, "bytes": 0})
            for k, v in s.items():
                t[k] += v
    return dict(sorted(total.items(), key=lambda kv: -kv[1]["bytes"]))


def block_bits_per_weight(path: Path) -> float:
    """Bits per weight of the DiT blocks' linear weights in a GGUF file (the memory planner's
    figure: Q4_K 4.5, Q8_0 8.5, a Q4_K_M mix in between)."""
    bits = numel = 0
    for key, t in open_gguf(path).tensors.items():
        if "blocks." in key and key.endswith(".weight") and len(t.shape) == 2:
            bits += 8 * t.nbytes
            numel += t.numel
    if not numel:
        raise CheckpointError(f"{path}: no DiT block weights in this GGUF file")
    return bits / numel
