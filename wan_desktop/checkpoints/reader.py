"""Lazy, validated reading of checkpoint files: safetensors (single or sharded) and ``.pth``.

Headers are parsed without touching tensor data, so detection and ``inspect`` are instant even for a
14B model, and a truncated file is caught before anything is loaded. Tensors are read one at a time
(safetensors memory-maps the file); ``.pth`` files are opened with ``weights_only=True`` and ``mmap``.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError

if TYPE_CHECKING:
    from safetensors import safe_open
    from torch import Tensor

    from .gguf_reader import GgufFile

log = logging.getLogger(__name__)

# safetensors dtype names -> torch dtype attribute names
_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
_ST_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
                "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # torch dtype name, e.g. "bfloat16", "float8_e4m3fn"
    file: Path

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse a safetensors header: {name: TensorInfo} and the free-form ``__metadata__``.

    Raises CheckpointError for a file that is not safetensors, has a corrupt header, or is shorter
    than its header says (an interrupted download).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: file is empty or truncated ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or n + 8 > size:
                raise CheckpointError(f"{path}: not a safetensors file, or its header is corrupt")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    header = _parse_header_json(path, raw)
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(
            f"{path}: safetensors __metadata__ is not an object of strings (corrupt header)"
        )
    infos: dict[str, TensorInfo] = {}
    ranges: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        st_dtype, shape, start, stop = _header_entry(path, name, entry)
        numel = 1
        for d in shape:
            numel *= d
        if stop - start != numel * _ST_ITEMSIZE[st_dtype]:
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent size in the header")
        ranges.append((start, stop, name))
        infos[name] = TensorInfo(shape=shape, dtype=_ST_DTYPES[st_dtype], file=path)
    # As the safetensors library requires: the tensors' bytes tile the data section exactly, in
    # the order of their offsets (no overlap, no gap), and the file ends where the last one does.
    end = 0
    for start, stop, name in sorted(ranges):
        if start != end:
            raise CheckpointError(
                f"{path}: tensor {name!r} "
                f"{'overlaps another' if start < end else 'leaves a gap'} "
                "in the data section (corrupt header)"
            )
        end = stop
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: file is truncated ({size} bytes, header describes {8 + n + end}); "
            "the download was probably interrupted"
        )
    if 8 + n + end < size:
        raise CheckpointError(
            f"{path}: {size - 8 - n - end} stray bytes after the last tensor (corrupt file)"
        )
    return infos, dict(meta)


def _parse_header_json(path: Path, raw: bytes) -> dict[str, Any]:
    """The header's JSON object (CheckpointError for anything else)."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(
            f"{path}: safetensors header is not valid JSON (corrupt file)"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: safetensors header is a JSON {type(header).__name__}, not "
            "an object (corrupt file)"
        )
    return header


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _header_entry(path: Path, name: str, entry: object) -> tuple[str, tuple[int, ...], int, int]:
    """(safetensors dtype, shape, start, stop) of one header entry, strictly typed as the
    safetensors library reads it (a float, a string or a negative number is not a size)."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}")
    st_dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not (
        isinstance(shape, list)
        and all(_is_count(d) for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_count(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}")
    if not isinstance(st_dtype, str) or st_dtype not in _ST_DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st_dtype}")
    return st_dtype, tuple(shape), offsets[0], offsets[1]


class StateReader:
    """A read-only, lazy view of one checkpoint's tensors spread over one or more files."""

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise CheckpointError("no checkpoint files given")
        self.files = tuple(Path(f) for f in files)
        self.metadata: dict[str, str] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._pth: dict[Path, dict[str, Tensor]] = {}
        self._handles: dict[Path, safe_open] = {}
        self._gguf: dict[Path, GgufFile] = {}
        for f in self.files:
            if not f.is_file():
                raise CheckpointError(f"{f}: file not found")
            if f.suffix.lower() == ".gguf":  # checkpoints/gguf_reader.py: values dequantized
                from .gguf_reader import open_gguf

                g = open_gguf(f)
                self._gguf[g.path] = g  # the resolved path, as in its TensorInfo
                for k in g.tensors:
                    self._add(k, g.info(k))
            elif f.suffix in (".pth", ".pt", ".bin", ".ckpt"):
                state = _load_pth(f)
                self._pth[f] = state
                for k, t in state.items():
                    self._add(k, TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch."), f))
            else:
                infos, meta = read_safetensors_header(f)
                self.metadata.update(meta)
                for k, info in infos.items():
                    self._add(k, info)

    def _add(self, key: str, info: TensorInfo) -> None:
        if key in self._infos:
            raise CheckpointError(
                f"tensor {key!r} appears in both {self._infos[key].file.name} and {info.file.name}"
            )
        self._infos[key] = info

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, key: object) -> bool:
        return key in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    def get(self, key: str) -> Tensor:
        """Read one tensor into CPU memory (in its stored dtype)."""
        info = self._infos[key]
        if info.file in self._pth:
            return self._pth[info.file][key]
        if info.file in self._gguf:
            return self._gguf[info.file].get(key)
        handle = self._handles.get(info.file)
        if handle is None:
            from safetensors import safe_open

            try:
                handle = safe_open(str(info.file), framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types
                raise CheckpointError(f"{info.file}: cannot open ({e})") from None
            self._handles[info.file] = handle
        try:
            return handle.get_tensor(key)
        except Exception as e:
            raise CheckpointError(f"{info.file}: cannot read tensor {key!r} ({e})") from None

    def close(self) -> None:
        self._handles.clear()
        self._pth.clear()


def _load_pth(path: Path) -> dict[str, Tensor]:
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # legacy (non-zip) serialization cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler stopped. Its message tells the user to retry with
        # weights_only=False, i.e. to run the file's code: we only say what the file holds.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds Python objects besides tensors ({found.group(1)}); "
                "loading it would run code from the file",
                remedy="Use the .safetensors release of this model, or a .pth file of tensors only.",
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
        reason = detail.group(1).strip() if detail else _first_sentence(e)
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only PyTorch file ({reason}); "
            "it may be truncated or corrupt"
        ) from None
    except Exception as e:  # zip / storage errors: a truncated or corrupt file
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only PyTorch file "
            f"({_first_sentence(e)}); it may be truncated or corrupt"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return obj


def _first_sentence(e: Exception) -> str:
    """The first sentence of an exception's message, without terminal escapes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].strip() if text else ""
    return first or type(e).__name__


def safetensors_shards(folder: Path, stem: str = "diffusion_pytorch_model") -> list[Path]:
    """The shards of ``stem`` in ``folder``: via ``<stem>.safetensors.index.json`` when present
    (every shard it names must exist), else ``<stem>*.safetensors``."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise CheckpointError(f"{index}: not a valid safetensors index") from None
        names = list(weight_map.values()) if isinstance(weight_map, dict) else None
        if not names or not all(
            isinstance(n, str) and n and Path(n).name == n and n != ".." and "\\" not in n
            for n in names
        ):
            raise CheckpointError(
                f"{index}: not a valid safetensors index (weight_map must map "
                "tensor names to shard file names in this folder)"
            )
        shards = sorted({folder / name for name in names})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(
                f"{folder}: shard(s) {', '.join(missing[:3])} named in {index.name} are missing"
            )
        return shards
    return sorted(folder.glob(f"{stem}*.safetensors"))
