"""Lazy, validated reading of checkpoint files: safetensors (single or sharded) and ``.pth``.

Headers are parsed without touching tensor data, so detection and ``inspect`` are instant even for a
14B model, and a truncated file is caught before anything is loaded. Tensors are read one at a time
(safetensors memory-maps the file); ``.pth`` files are opened with ``weights_only=True`` and ``mmap``.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError

if TYPE_CHECKING:
    from safetensors import safe_open
    from torch import Tensor

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
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: safetensors header is not valid JSON (corrupt file)") from None
    meta = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in header.items():
        try:
            st_dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            start, stop = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
        if st_dtype not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st_dtype}")
        numel = 1
        for d in shape:
            numel *= d
        if stop - start != numel * _ST_ITEMSIZE[st_dtype]:
            raise CheckpointError(f"{path}: tensor {name!r} has inconsistent size in the header")
        end = max(end, stop)
        infos[name] = TensorInfo(shape=shape, dtype=_ST_DTYPES[st_dtype], file=path)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path}: file is truncated ({size} bytes, header describes {8 + n + end}); "
            "the download was probably interrupted"
        )
    return infos, {str(k): str(v) for k, v in meta.items()}


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
        for f in self.files:
            if not f.is_file():
                raise CheckpointError(f"{f}: file not found")
            if f.suffix in (".pth", ".pt", ".bin", ".ckpt"):
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
            raise CheckpointError(f"tensor {key!r} appears in both {self._infos[key].file.name} and "
                                  f"{info.file.name}")
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
    except Exception as e:  # pickle / zip errors: truncated, corrupt or unsafe file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as a weights-only PyTorch file ({reason}); "
                              "it may be truncated or corrupt") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return obj


def safetensors_shards(folder: Path, stem: str = "diffusion_pytorch_model") -> list[Path]:
    """The shards of ``stem`` in ``folder``: via ``<stem>.safetensors.index.json`` when present
    (every shard it names must exist), else ``<stem>*.safetensors``."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{index}: not a valid safetensors index") from None
        shards = sorted({folder / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) {', '.join(missing[:3])} named in "
                                  f"{index.name} are missing")
        return shards
    return sorted(folder.glob(f"{stem}*.safetensors"))
