"""The engine folder: ONNX graphs and/or built engines plus ``manifest.json``, which says what each
file is and why a loader must refuse it.

Layout of one folder (one model, one export job)::

    manifest.json            this file's Manifest
    t5.onnx  dit.onnx ...    graphs (dit_high.onnx / dit_low.onnx for Wan2.2 A14B experts)
    *.onnx.data              external weights of graphs over ~1.8 GB (hashed like the graphs)
    *.engine                 engines built from the graphs (export/build.py)
    tokenizer/               the umT5 tokenizer the T5 graph was exported with

Every file is an entry: component (graph name from wan_desktop/specs.py), file, runtime and its
version, precision, the graph's ComponentSpec, sha256 and size (and those of a graph's external
weights: ``data_sha256``, ``data_size``), the ONNX graph's sha256 an engine was built from, shape
profiles, target GPU compute capabilities. The folder records the variant (full architecture, so
tiny and real models alike), the checkpoint files (name, size, sha256), the merged LoRAs and their
strengths, and the command that rebuilds it. ``check_entry`` returns the reason a
loader must refuse an entry and how to rebuild; ``require_entry`` raises it as an EngineError.

Nothing in a manifest is trusted: ``read_manifest`` checks every value's type and rule (real
sha256s, sizes, profile ranges) and that every path it names (``file``, ``onnx_file``,
``tokenizer``) stays inside the folder, symlinks resolved — else an EngineError naming the file,
the entry and the rebuild command. Checkpoints are identified by sha256, graphs and engines are
verified against theirs when a run loads them; engines/file_hashes.py computes each hash once per
version of a file (the user's hash cache), so only the first load of a folder (or the export that
made it) reads the files. The app's listing (ui/engine_folders.py) reads no file: it compares names
and sizes, and hashes only where the cache already has them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from wan_desktop.errors import EngineError, WanError
from wan_desktop.variants import Task, Variant

from .file_hashes import HashCache
from .file_hashes import sha256_file as sha256_file  # the exporters' and builders' hasher

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "wan-desktop-engines"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True, kw_only=True)
class EngineEntry:
    """One file of the folder: a graph (runtime "onnxruntime") or an engine (e.g. "tensorrt_rtx")."""

    component: str  # graph name: "t5", "dit", "vae_decoder_first", ... (wan_desktop/specs.py)
    file: str  # relative to the folder
    runtime: str  # "onnxruntime" | "tensorrt_rtx" | "tensorrt"
    runtime_version: str  # the version that exported / built (and validated) it
    precision: str  # a Precision value: "fp32", "bf16", "fp16", "fp8", "int8"
    spec: dict[str, Any]  # wan_desktop.specs.spec_to_dict of the graph
    sha256: str
    size: int
    expert: int | None = None  # Wan2.2 A14B DiT: 0 high-noise, 1 low-noise
    onnx_sha256: str | None = None  # engines: the graph they were built from
    onnx_file: str | None = None  # engines: that graph's file in this folder
    # [{"name": "832x480x81", "dims": {"B": [1, 2, 2], "T": [21, 21, 21], ...}}]; () = any shape
    profiles: tuple[dict[str, Any], ...] = ()
    compute_capabilities: tuple[str, ...] = ()  # () = any GPU (ONNX graphs)
    exact_runtime: bool = False  # engines only deserialize on the runtime version that built them
    opset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # builder-specific notes (quantizer, ...)
    # ONNX graphs over ~1.8 GB: their external weights, ``data_file`` (``<file>.data``), verified
    # like the graph itself (None: no side file, or a manifest written before it was recorded)
    data_sha256: str | None = None
    data_size: int | None = None

    @property
    def data_file(self) -> str | None:
        """The side file of external weights the manifest records (its name is the one the
        graph's initializers point to: the exporters write ``<graph>.onnx.data``)."""
        return data_file_name(self.file) if self.data_sha256 is not None else None


def data_file_name(graph: str) -> str:
    """``dit.onnx`` -> ``dit.onnx.data``: where export/ writes a graph's external weights."""
    return graph + ".data"


def data_fields(graph: str | Path) -> dict[str, Any]:
    """``data_sha256`` and ``data_size`` of the external weights beside ``graph`` (both None when
    it has none): what an exporter records in the graph's EngineEntry. Reads the whole file."""
    data = Path(graph).with_name(data_file_name(Path(graph).name))
    if not data.is_file():
        return {"data_sha256": None, "data_size": None}
    return {"data_sha256": sha256_file(data), "data_size": data.stat().st_size}


@dataclass(frozen=True, kw_only=True)
class Manifest:
    variant: Variant
    entries: tuple[EngineEntry, ...]
    model: dict[
        str, Any
    ]  # {"path", "format", "random_weights", "files": [{"name","size","sha256"}]}
    loras: tuple[
        dict[str, Any], ...
    ] = ()  # lora.lora_records: file, sha256 (prefix), strength, expert
    boundary: float | None = None  # Wan2.2 A14B expert switch
    tokenizer: str | None = None  # relative folder with tokenizer.json / spiece.model, or "bytes"
    rebuild: str = ""  # the command that makes this folder again
    app_version: str = ""
    created: str = ""
    format_version: int = FORMAT_VERSION

    def entry(
        self, component: str, *, expert: int | None = None, runtime: str | None = None
    ) -> EngineEntry | None:
        for e in self.entries:
            if (
                e.component == component
                and (expert is None or e.expert == expert)
                and (runtime is None or e.runtime == runtime)
            ):
                return e
        return None

    def with_entries(self, entries: Sequence[EngineEntry]) -> Manifest:
        return dataclasses.replace(self, entries=tuple(entries))


@dataclass(frozen=True)
class Refusal:
    """Why an entry cannot be used here, and what to do about it."""

    kind: str  # "missing" | "changed" | "gpu" | "runtime" | "shape" | "loras" | "model" | "variant"
    reason: str
    remedy: str

    def error(self) -> EngineError:
        return EngineError(self.reason, remedy=self.remedy)


# ----------------------------------------------------------------------------- variant <-> JSON


def _lists(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, Task):
        return x.value
    return x


def variant_to_dict(v: Variant) -> dict[str, Any]:
    return _lists(dataclasses.asdict(v))


class _Malformed(Exception):
    """A value of the manifest that is not what the reader expects (``where``: its JSON path)."""

    def __init__(self, where: str, problem: str, *, wrong_type: bool = False) -> None:
        super().__init__(f"{where or 'the manifest'} {problem}")
        self.where = where
        self.wrong_type = wrong_type


_HEX = frozenset("0123456789abcdef")


def is_sha256(x: object) -> bool:
    """64 lower-case hex digits, not all zero (a placeholder is not a hash)."""
    return isinstance(x, str) and len(x) == 64 and set(x) <= _HEX and set(x) != {"0"}


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        type(None): "null",
    }
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "an object"
    if isinstance(tp, type) and issubclass(tp, Task):
        return "one of " + ", ".join(t.value for t in Task)
    return str(tp)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(value: Any, tp: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the Python type ``tp`` (lists become tuples, dataclasses are
    built field by field), or _Malformed naming ``where``: nothing of a wrong type gets past."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (other,) = [a for a in args if a is not type(None)]  # the manifest's unions: X | None
        try:
            return _decode(value, other, where)
        except _Malformed as e:
            if e.wrong_type and e.where == where:  # say that null would do too
                raise _Malformed(
                    where, f"should be {_type_name(tp)}, not {_shown(value)}", wrong_type=True
                ) from None
            raise
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, value, where)  # type: ignore[arg-type]
    ok = False
    if isinstance(tp, type) and issubclass(tp, Task):
        if isinstance(value, str) and value in {t.value for t in Task}:
            return Task(value)
    elif origin is tuple:
        if isinstance(value, list):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_decode(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(
                    _decode(v, a, f"{where}[{i}]")
                    for i, (v, a) in enumerate(zip(value, args, strict=True))
                )
            raise _Malformed(where, f"should have {len(args)} items, not {len(value)}")
    elif origin is dict:
        if isinstance(value, dict):
            return {k: _decode(v, args[1], f"{where}.{k}") for k, v in value.items()}
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    if ok:
        return value
    raise _Malformed(where, f"should be {_type_name(tp)}, not {_shown(value)}", wrong_type=True)


def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _Malformed(where, f"should be an object, not {_shown(data)}", wrong_type=True)
    hints = _hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        sub = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            kw[f.name] = _decode(data[f.name], hints[f.name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Malformed(sub, "is missing")
    try:
        return cls(**kw)
    except (WanError, TypeError, ValueError, ArithmeticError) as e:  # the configs' own rules
        raise _Malformed(where, f"is not valid ({getattr(e, 'message', e)})") from None


def variant_from_dict(d: Mapping[str, Any]) -> Variant:
    try:
        return typing.cast(Variant, _decode_dataclass(Variant, d, "variant"))
    except _Malformed as e:
        raise EngineError(f"engine manifest: malformed variant ({e})") from None


# ----------------------------------------------------------------------------- read / write


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": m.format_version,
        "app_version": m.app_version,
        "created": m.created,
        "variant": variant_to_dict(m.variant),
        "model": m.model,
        "loras": list(m.loras),
        "boundary": m.boundary,
        "tokenizer": m.tokenizer,
        "rebuild": m.rebuild,
        "entries": [_lists(dataclasses.asdict(e)) for e in m.entries],
    }


def _remedy(rebuild: object) -> str:
    if isinstance(rebuild, str) and rebuild.strip():
        return f"Rebuild the engines: {rebuild}"
    return "Export the engines again (wan-desktop export --model MODEL --out DIR)."


def check_relative(rel: object, where: str) -> str:
    """A path a manifest names, relative to its folder: a plain POSIX path without ``..``,
    backslashes, drive letters or a leading ``/`` (on every OS); else _Malformed."""
    if not isinstance(rel, str) or not rel.strip():
        raise _Malformed(where, f"should be a path inside the folder, not {_shown(rel)}")
    if (
        "\\" in rel
        or ":" in rel
        or "\0" in rel
        or PurePosixPath(rel).is_absolute()
        or ".." in PurePosixPath(rel).parts
    ):
        raise _Malformed(
            where,
            f"{_shown(rel)} leaves the engine folder (only plain relative "
            "paths inside it are allowed)",
        )
    return rel


def _check_values(m: Manifest) -> None:
    """The rules types cannot say: real hashes, sizes, relative paths, profile ranges."""
    if m.variant.experts not in (1, 2):
        raise _Malformed("variant.experts", f"should be 1 or 2, not {m.variant.experts}")
    for i, e in enumerate(m.entries):
        at = f"entries[{i}]"
        if not is_sha256(e.sha256):
            raise _Malformed(f"{at}.sha256", f"is not a sha256 (64 hex digits): {_shown(e.sha256)}")
        if e.onnx_sha256 is not None and not is_sha256(e.onnx_sha256):
            raise _Malformed(
                f"{at}.onnx_sha256", f"is not a sha256 (64 hex digits): {_shown(e.onnx_sha256)}"
            )
        if e.size < 0:
            raise _Malformed(f"{at}.size", f"is negative ({e.size})")
        if e.data_sha256 is not None and not is_sha256(e.data_sha256):
            raise _Malformed(
                f"{at}.data_sha256", f"is not a sha256 (64 hex digits): {_shown(e.data_sha256)}"
            )
        if (e.data_sha256 is None) != (e.data_size is None):
            raise _Malformed(f"{at}.data_size", "and data_sha256 must be given together")
        if e.data_size is not None and e.data_size < 0:
            raise _Malformed(f"{at}.data_size", f"is negative ({e.data_size})")
        check_relative(e.file, f"{at}.file")
        if e.onnx_file is not None:
            check_relative(e.onnx_file, f"{at}.onnx_file")
        for j, p in enumerate(e.profiles):
            dims = p.get("dims", {})
            if not isinstance(dims, dict) or not all(
                isinstance(r, list)
                and len(r) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                for r in dims.values()
            ):
                raise _Malformed(
                    f"{at}.profiles[{j}].dims",
                    f"should map each dim to [min, opt, max] integers, not {_shown(dims)}",
                )
    files = m.model.get("files") or []
    if not isinstance(files, list):
        raise _Malformed("model.files", f"should be a list, not {_shown(files)}")
    for i, f in enumerate(files):
        at = f"model.files[{i}]"
        if not isinstance(f, dict):
            raise _Malformed(at, f"should be an object, not {_shown(f)}")
        if not isinstance(f.get("name"), str):
            raise _Malformed(f"{at}.name", f"should be a string, not {_shown(f.get('name'))}")
        if type(f.get("size")) is not int or f["size"] < 0:
            raise _Malformed(
                f"{at}.size", f"should be a size in bytes, not {_shown(f.get('size'))}"
            )
        if "sha256" in f and not is_sha256(f["sha256"]):
            raise _Malformed(
                f"{at}.sha256", f"is not a sha256 (64 hex digits): {_shown(f['sha256'])}"
            )
    for i, r in enumerate(m.loras):
        at = f"loras[{i}]"
        for key, types_ in (
            ("file", str),
            ("sha256", str),
            ("expert", str),
            ("strength", (int, float)),
        ):
            if key in r and (not isinstance(r[key], types_) or isinstance(r[key], bool)):
                raise _Malformed(f"{at}.{key}", f"has the wrong type: {_shown(r[key])}")
        if not math.isfinite(float(r.get("strength", 1.0))):
            raise _Malformed(f"{at}.strength", f"is not a finite number: {r['strength']}")
    if m.tokenizer not in (None, "bytes"):
        check_relative(m.tokenizer, "tokenizer")


def manifest_from_dict(d: Mapping[str, Any], where: str = MANIFEST) -> Manifest:
    """The manifest in ``d`` (parsed JSON), checked value by value: EngineError naming ``where``
    (the file), the offending value and the rebuild command, never a TypeError later."""
    remedy = _remedy(d.get("rebuild"))
    if d.get("format") != FORMAT:
        raise EngineError(f"{where}: not a wan-desktop engine manifest", remedy=remedy)
    version = d.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise EngineError(
            f"{where}: manifest format {version!r} is newer than this app reads ({FORMAT_VERSION})",
            remedy="Update wan-desktop, or export the engines again with this version.",
        )
    # older writers left these null; the rest must be present and of its type
    data = {
        k: v
        for k, v in d.items()
        if not (
            v is None
            and k in ("loras", "rebuild", "app_version", "created", "tokenizer", "boundary")
        )
    }
    try:
        manifest = typing.cast(Manifest, _decode_dataclass(Manifest, data, ""))
        _check_values(manifest)
    except _Malformed as e:
        raise EngineError(f"{where}: malformed engine manifest: {e}", remedy=remedy) from None
    return manifest


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically (a reader never sees half a manifest)."""
    folder = Path(folder)
    path = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(
        json.dumps(manifest_to_dict(manifest), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path


def folder_path(folder: str | Path, rel: str, what: str) -> Path:
    """``folder / rel`` for a path a manifest names (``what``: "entries[0].file", "tokenizer"),
    with symlinks resolved; EngineError unless it stays inside the (resolved) folder."""
    base = Path(folder).expanduser().resolve()
    try:
        target = (base / check_relative(rel, what)).resolve()
    except _Malformed as e:
        raise EngineError(f"engine folder {folder}: {e}") from None
    if target != base and base not in target.parents:
        raise EngineError(
            f"engine folder {folder}: {what} {rel!r} leads outside the folder (to {target})"
        )
    return target


def _manifest_paths(m: Manifest) -> list[tuple[str, str]]:
    out = []
    for i, e in enumerate(m.entries):
        out.append((f"entries[{i}].file", e.file))
        if e.onnx_file is not None:
            out.append((f"entries[{i}].onnx_file", e.onnx_file))
        if e.data_file is not None:
            out.append((f"entries[{i}] external weights", e.data_file))
    if m.tokenizer not in (None, "bytes"):
        out.append(("tokenizer", str(m.tokenizer)))
    return out


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an engine folder; EngineError naming the folder if there is none, it is
    not readable, malformed, or names a path outside the folder."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        what = "has no manifest.json" if folder.is_dir() else "is not a folder"
        raise EngineError(
            f"engine folder {folder} {what}",
            remedy="Point --engines to a folder made by `wan-desktop export`.",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EngineError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError:  # UnicodeDecodeError too
        raise EngineError(f"{path}: not valid JSON", remedy=_remedy(None)) from None
    if not isinstance(data, dict):
        raise EngineError(f"{path}: not a wan-desktop engine manifest", remedy=_remedy(None))
    manifest = manifest_from_dict(data, str(path))
    for what, rel in _manifest_paths(manifest):
        try:
            folder_path(folder, rel, what)
        except EngineError as e:
            raise EngineError(
                f"{path}: {what} {rel!r} leads outside the engine folder",
                remedy=_remedy(manifest.rebuild),
            ) from e
    return manifest


@dataclass(frozen=True)
class EngineFolder:
    """One folder found by list_engines: its manifest, or why it could not be read."""

    path: Path
    manifest: Manifest | None
    error: str | None = None


def list_engines(root: str | Path) -> list[EngineFolder]:
    """Engine folders at ``root`` itself and one level below it, sorted by path. Unreadable
    manifests are listed with their error (the GUI shows them as broken), not skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    out = []
    for folder in candidates:
        if not (folder / MANIFEST).is_file():
            continue
        try:
            out.append(EngineFolder(folder, read_manifest(folder)))
        except EngineError as e:
            out.append(EngineFolder(folder, None, e.one_line()))
    return out


# ----------------------------------------------------------------------------- compatibility


def _version_key(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("."):
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def in_profile(profile: Mapping[str, Any], sizes: Mapping[str, int]) -> bool:
    """Whether every size the profile constrains lies within its [min, max]."""
    for name, (lo, _opt, hi) in profile.get("dims", {}).items():
        if name in sizes and not lo <= sizes[name] <= hi:
            return False
    return True


def _lora_key(r: Mapping[str, Any]) -> tuple[str, float, str]:
    return (
        str(r.get("sha256", "")),
        round(float(r.get("strength", 1.0)), 6),
        str(r.get("expert", "high")),
    )


def _describe_loras(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return "no LoRAs"
    # the expert too: the same file at the same strength in the other Wan2.2 expert is another run
    return ", ".join(
        f"{r.get('file', '?')}@{float(r.get('strength', 1.0)):g}"
        + (" (low-noise expert)" if r.get("expert") == "low" else "")
        for r in records
    )


def check_entry(
    folder: str | Path,
    manifest: Manifest,
    entry: EngineEntry,
    *,
    runtime_version: str | None = None,
    compute_capability: str | None = None,
    sizes: Mapping[str, int] | None = None,
    loras: Sequence[Mapping[str, Any]] | None = None,
    model_files: Sequence[Mapping[str, Any]] | None = None,
    verify_hash: bool = False,
    hashes: HashCache | None = None,
) -> Refusal | None:
    """Why ``entry`` must not be loaded here (None: it may). Each argument left None is not
    checked: ``runtime_version`` of the installed runtime, ``compute_capability`` of this GPU
    ("8.9"), ``sizes`` of the request (the spec's names: B, T, H, W, h, w, ...), ``loras`` the run
    asks for (lora_records), ``model_files`` the checkpoint the user pointed to
    (model_file_records: name, size and, where known, sha256 — compared with the manifest's).

    The file must lie inside the folder and have the recorded size; its sha256 (and its external
    weights' size and sha256, and an engine's source graph's sha256) is compared with the
    manifest's when ``verify_hash`` (computed once per file version: ``hashes``, the user's hash
    cache by default), else only where the cache already knows it: without ``verify_hash`` no
    file is read."""
    folder = Path(folder)
    hashes = hashes if hashes is not None else HashCache()
    remedy = (
        f"Rebuild the engines: {manifest.rebuild}"
        if manifest.rebuild
        else "Export the engines again for this model and GPU."
    )
    what = f"{entry.component} ({entry.file})"
    try:
        path = folder_path(folder, entry.file, f"the file of {entry.component}")
    except EngineError as e:
        return Refusal("path", e.message, remedy)
    if not path.is_file():
        return Refusal("missing", f"engine folder {folder}: {entry.file} is missing", remedy)
    try:
        changed = path.stat().st_size != entry.size or (
            (hashes.sha256(path) if verify_hash else hashes.cached(path))
            not in (None, entry.sha256)
        )
    except OSError as e:
        return Refusal(
            "missing",
            f"engine folder {folder}: cannot read {entry.file} ({e.strerror or e})",
            remedy,
        )
    if changed:
        return Refusal(
            "changed",
            f"{what} changed since it was made (size or sha256 differs from the manifest)",
            remedy,
        )
    refusal = _data_refusal(folder, entry, verify_hash, hashes, remedy)
    if refusal is not None:
        return refusal
    if entry.onnx_sha256 and entry.onnx_file:
        try:
            graph = folder_path(folder, entry.onnx_file, f"the source graph of {entry.component}")
        except EngineError as e:
            return Refusal("path", e.message, remedy)
        # the graph's own entry (re-exported since the build), then the file itself
        source = next((e for e in manifest.entries if e.file == entry.onnx_file), None)
        stale = source is not None and source.sha256 != entry.onnx_sha256
        if not stale and graph.is_file():
            try:
                digest = hashes.sha256(graph) if verify_hash else hashes.cached(graph)
            except OSError as e:
                return Refusal(
                    "missing",
                    f"engine folder {folder}: cannot read {entry.onnx_file} ({e.strerror or e})",
                    remedy,
                )
            stale = digest is not None and digest != entry.onnx_sha256
        if stale:
            return Refusal(
                "changed",
                f"{what} was built from another version of {entry.onnx_file} (its sha256 differs)",
                remedy,
            )
    if (
        entry.compute_capabilities
        and compute_capability is not None
        and (compute_capability not in entry.compute_capabilities)
    ):
        return Refusal(
            "gpu",
            f"{what} was built for GPUs of compute capability "
            f"{', '.join(entry.compute_capabilities)}; this GPU is {compute_capability}",
            remedy,
        )
    if (
        entry.exact_runtime
        and runtime_version is not None
        and (runtime_version != entry.runtime_version)
    ):
        return Refusal(
            "runtime",
            f"{what} was built with {entry.runtime} {entry.runtime_version}; "
            f"{runtime_version} is installed",
            remedy,
        )
    if (
        not entry.exact_runtime
        and runtime_version is not None
        and (_version_key(runtime_version) < _version_key(entry.runtime_version))
    ):
        return Refusal(
            "runtime",
            f"{what} needs {entry.runtime} {entry.runtime_version} or newer; "
            f"{runtime_version} is installed",
            f"Upgrade {entry.runtime} (pip install -U {entry.runtime}), or {remedy[0].lower()}"
            f"{remedy[1:]}",
        )
    if (
        entry.profiles
        and sizes is not None
        and not any(in_profile(p, sizes) for p in entry.profiles)
    ):
        names = ", ".join(str(p.get("name", "?")) for p in entry.profiles)
        shown = " ".join(f"{k}={v}" for k, v in sorted(sizes.items()))
        return Refusal(
            "shape",
            f"{what}: the requested shape ({shown}) is outside the profiles it "
            f"was built for ({names})",
            f"Choose one of those sizes, or rebuild with --profile for this size: "
            f"{manifest.rebuild or 'wan-desktop export ...'}",
        )
    if loras is not None and sorted(map(_lora_key, loras)) != sorted(
        map(_lora_key, manifest.loras)
    ):
        return Refusal(
            "loras",
            f"the engines in {folder} have {_describe_loras(manifest.loras)} "
            f"merged; this run asks for {_describe_loras(loras)}",
            f"Export engines with these LoRAs merged (wan-desktop export ... --lora), "
            f"or run with --backend torch. {remedy}",
        )
    if model_files is not None:
        return _model_refusal(folder, manifest, model_files, remedy)
    return None


def _data_refusal(
    folder: Path, entry: EngineEntry, verify_hash: bool, hashes: HashCache, remedy: str
) -> Refusal | None:
    """The graph's external weights (``<file>.data``) against the size and sha256 the manifest
    records: a truncated or swapped side file would otherwise load (or crash ORT) unnoticed.
    Entries without ``data_sha256`` (no side file, or an older manifest) are not checked."""
    rel = entry.data_file
    if rel is None:
        return None
    try:
        path = folder_path(folder, rel, f"the external weights of {entry.component}")
    except EngineError as e:
        return Refusal("path", e.message, remedy)
    what = f"{entry.component}'s external weights ({rel})"
    if not path.is_file():
        return Refusal("missing", f"engine folder {folder}: {what} are missing", remedy)
    try:
        size = path.stat().st_size
        digest = None
        if size == entry.data_size:
            digest = hashes.sha256(path) if verify_hash else hashes.cached(path)
    except OSError as e:
        return Refusal(
            "missing", f"engine folder {folder}: cannot read {rel} ({e.strerror or e})", remedy
        )
    if size != entry.data_size:
        return Refusal(
            "changed",
            f"{what} changed since the graph was exported: {size} bytes, the manifest "
            f"records {entry.data_size} (truncated or replaced)",
            remedy,
        )
    if digest not in (None, entry.data_sha256):
        return Refusal(
            "changed",
            f"{what} changed since the graph was exported: its sha256 differs from the manifest's "
            "(corrupted or another export's file)",
            remedy,
        )
    return None


def require_entry(
    folder: str | Path,
    manifest: Manifest,
    component: str,
    *,
    expert: int | None = None,
    runtime: str | None = None,
    **checks: Any,
) -> EngineEntry:
    """The entry for ``component``, or EngineError with the refusal's reason and remedy."""
    entry = manifest.entry(component, expert=expert, runtime=runtime)
    if entry is None:
        which = f"{component}" + (f" (expert {expert})" if expert is not None else "")
        have = ", ".join(sorted({e.component for e in manifest.entries})) or "nothing"
        raise EngineError(
            f"engine folder {folder} has no {which} for {runtime or 'any runtime'} (it has {have})",
            remedy=f"Export that component too: {manifest.rebuild}"
            if manifest.rebuild
            else "Export that component too (wan-desktop export --components ...).",
        )
    refusal = check_entry(folder, manifest, entry, **checks)
    if refusal is not None:
        log.warning("engine %s refused: %s", entry.file, refusal.reason)
        raise refusal.error()
    return entry


def _model_refusal(
    folder: Path, manifest: Manifest, given: Sequence[Mapping[str, Any]], remedy: str
) -> Refusal | None:
    """The checkpoint files a run names against those the folder was made from: the same names
    and sizes, and the same sha256 wherever ``given`` has one (a run always does: a same-size file
    of another model is refused; the app's listing only where the hash cache knows it)."""
    recorded = manifest.model.get("files")
    if not recorded:
        return None  # made from random weights: no checkpoint to compare
    made_from = manifest.model.get("path")
    have = {str(f["name"]): f for f in recorded}
    want = {str(f["name"]): f for f in given}
    if set(have) != set(want) or any(int(have[n]["size"]) != int(want[n]["size"]) for n in have):
        return Refusal(
            "model",
            f"the engines in {folder} were made from other model files ({made_from})",
            remedy,
        )
    for name, rec in sorted(want.items()):
        sha = rec.get("sha256")
        if sha is None:
            continue
        if "sha256" not in have[name]:
            return Refusal(
                "model",
                f"the manifest in {folder} records no sha256 of {name}, so "
                "the model it was made from cannot be confirmed",
                remedy,
            )
        if have[name]["sha256"] != sha:
            return Refusal(
                "model",
                f"the engines in {folder} were made from other model files "
                f"({made_from}): {name} has the same size but other contents (sha256)",
                remedy,
            )
    return None


def model_file_records(
    paths: Sequence[Path], *, hash_files: bool = True, hashes: HashCache | None = None
) -> list[dict[str, Any]]:
    """What a manifest records of checkpoint files: name, size and sha256. The hashes come from
    ``hashes`` (the user's hash cache by default: each file is read once per version); with
    ``hash_files`` False nothing is read, and a file's sha256 is given only if the cache has it."""
    hashes = hashes if hashes is not None else HashCache()
    out = []
    for p in sorted({Path(p) for p in paths}, key=str):
        try:
            # with the folder: the shards of two Wan2.2 experts have the same file names
            rec: dict[str, Any] = {"name": f"{p.parent.name}/{p.name}", "size": p.stat().st_size}
            sha = hashes.sha256(p) if hash_files else hashes.cached(p)
        except OSError as e:
            raise EngineError(
                f"cannot read the model file {p} ({e.strerror or e})",
                remedy="Check that the file exists and is readable.",
            ) from None
        if sha is not None:
            rec["sha256"] = sha
        out.append(rec)
    return out
