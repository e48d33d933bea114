"""The engine folder: ONNX graphs and/or built engines plus ``manifest.json``, which says what each
file is and why a loader must refuse it.

Layout of one folder (one model, one export job)::

    manifest.json            this file's Manifest
    t5.onnx  dit.onnx ...    graphs (dit_high.onnx / dit_low.onnx for Wan2.2 A14B experts)
    *.onnx.data              external weights of graphs over ~1.8 GB
    *.engine                 engines built from the graphs (export/build.py)
    tokenizer/               the umT5 tokenizer the T5 graph was exported with

Every file is an entry: component (graph name from wan_desktop/specs.py), file, runtime and its
version, precision, the graph's ComponentSpec, sha256 and size, the ONNX graph's sha256 an engine
was built from, shape profiles, target GPU compute capabilities. The folder records the variant (full
architecture, so tiny and real models alike), the checkpoint files (name, size, sha256), the merged
LoRAs and their strengths, and the command that rebuilds it. ``check_entry`` returns the reason a
loader must refuse an entry and how to rebuild; ``require_entry`` raises it as an EngineError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wan_desktop.errors import EngineError
from wan_desktop.variants import (
    ClipConfig,
    DiTConfig,
    SamplingDefaults,
    T5Config,
    Task,
    VaeConfig,
    Variant,
)

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


@dataclass(frozen=True, kw_only=True)
class Manifest:
    variant: Variant
    entries: tuple[EngineEntry, ...]
    model: dict[str, Any]  # {"path", "format", "random_weights", "files": [{"name","size","sha256"}]}
    loras: tuple[dict[str, Any], ...] = ()  # lora.lora_records: file, sha256 (prefix), strength, expert
    boundary: float | None = None  # Wan2.2 A14B expert switch
    tokenizer: str | None = None  # relative folder with tokenizer.json / spiece.model, or "bytes"
    rebuild: str = ""  # the command that makes this folder again
    app_version: str = ""
    created: str = ""
    format_version: int = FORMAT_VERSION

    def entry(self, component: str, *, expert: int | None = None,
              runtime: str | None = None) -> EngineEntry | None:
        for e in self.entries:
            if e.component == component and (expert is None or e.expert == expert) and (
                    runtime is None or e.runtime == runtime):
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


def _tuples(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_tuples(v) for v in x)
    return x


def variant_to_dict(v: Variant) -> dict[str, Any]:
    return _lists(dataclasses.asdict(v))


def variant_from_dict(d: Mapping[str, Any]) -> Variant:
    def conf(cls: type, data: Mapping[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _tuples(v) for k, v in data.items() if k in names})

    try:
        return Variant(
            name=d["name"], family=d["family"], tasks=tuple(Task(t) for t in d["tasks"]),
            dit=conf(DiTConfig, d["dit"]), experts=int(d["experts"]), vae=conf(VaeConfig, d["vae"]),
            t5=conf(T5Config, d["t5"]), clip=conf(ClipConfig, d["clip"]) if d.get("clip") else None,
            defaults=conf(SamplingDefaults, d["defaults"]))
    except (KeyError, TypeError, ValueError) as e:
        raise EngineError(f"engine manifest: malformed variant ({e})") from None


# ----------------------------------------------------------------------------- read / write


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    return {
        "format": FORMAT, "format_version": m.format_version, "app_version": m.app_version,
        "created": m.created, "variant": variant_to_dict(m.variant), "model": m.model,
        "loras": list(m.loras), "boundary": m.boundary, "tokenizer": m.tokenizer,
        "rebuild": m.rebuild, "entries": [_lists(dataclasses.asdict(e)) for e in m.entries],
    }


def manifest_from_dict(d: Mapping[str, Any], where: str = MANIFEST) -> Manifest:
    if d.get("format") != FORMAT:
        raise EngineError(f"{where}: not a wan-desktop engine manifest")
    version = d.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise EngineError(f"{where}: manifest format {version!r} is newer than this app reads "
                          f"({FORMAT_VERSION})", remedy="Update wan-desktop, or export the engines "
                          "again with this version.")
    names = {f.name for f in dataclasses.fields(EngineEntry)}
    try:
        entries = []
        for e in d["entries"]:
            kw = {k: v for k, v in e.items() if k in names}
            kw["profiles"] = tuple(kw.get("profiles") or ())
            kw["compute_capabilities"] = tuple(str(c) for c in kw.get("compute_capabilities") or ())
            entries.append(EngineEntry(**kw))
        return Manifest(
            variant=variant_from_dict(d["variant"]), entries=tuple(entries), model=dict(d["model"]),
            loras=tuple(d.get("loras") or ()), boundary=d.get("boundary"),
            tokenizer=d.get("tokenizer"), rebuild=str(d.get("rebuild") or ""),
            app_version=str(d.get("app_version") or ""), created=str(d.get("created") or ""),
            format_version=version)
    except (KeyError, TypeError, ValueError) as e:
        raise EngineError(f"{where}: malformed engine manifest ({type(e).__name__}: {e})") from None


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically (a reader never sees half a manifest)."""
    folder = Path(folder)
    path = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest_to_dict(manifest), indent=2, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an engine folder; EngineError naming the folder if there is none or it is
    not readable."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        what = "has no manifest.json" if folder.is_dir() else "is not a folder"
        raise EngineError(f"engine folder {folder} {what}",
                          remedy="Point --engines to a folder made by `wan-desktop export`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EngineError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError:
        raise EngineError(f"{path}: not valid JSON", remedy="Export the engines again.") from None
    if not isinstance(data, dict):
        raise EngineError(f"{path}: not a wan-desktop engine manifest")
    return manifest_from_dict(data, str(path))


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
    return (str(r.get("sha256", "")), round(float(r.get("strength", 1.0)), 6),
            str(r.get("expert", "high")))


def _describe_loras(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return "no LoRAs"
    # the expert too: the same file at the same strength in the other Wan2.2 expert is another run
    return ", ".join(f"{r.get('file', '?')}@{float(r.get('strength', 1.0)):g}"
                     + (" (low-noise expert)" if r.get("expert") == "low" else "")
                     for r in records)


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
) -> Refusal | None:
    """Why ``entry`` must not be loaded here (None: it may). Each argument left None is not
    checked: ``runtime_version`` of the installed runtime, ``compute_capability`` of this GPU
    ("8.9"), ``sizes`` of the request (the spec's names: B, T, H, W, h, w, ...), ``loras`` the run
    asks for (lora_records), ``model_files`` the checkpoint the user pointed to (name + size).
    Files are always checked for presence and size; ``verify_hash`` also re-hashes them."""
    folder = Path(folder)
    remedy = (f"Rebuild the engines: {manifest.rebuild}" if manifest.rebuild
              else "Export the engines again for this model and GPU.")
    path = folder / entry.file
    what = f"{entry.component} ({entry.file})"
    if not path.is_file():
        return Refusal("missing", f"engine folder {folder}: {entry.file} is missing", remedy)
    if path.stat().st_size != entry.size or (verify_hash and sha256_file(path) != entry.sha256):
        return Refusal("changed", f"{what} changed since it was made (size or sha256 differs "
                       "from the manifest)", remedy)
    if entry.onnx_sha256 and entry.onnx_file:
        graph = folder / entry.onnx_file
        if graph.is_file() and sha256_file(graph) != entry.onnx_sha256:
            return Refusal("changed", f"{what} was built from another version of {entry.onnx_file} "
                           "(its sha256 differs)", remedy)
    if entry.compute_capabilities and compute_capability is not None and (
            compute_capability not in entry.compute_capabilities):
        return Refusal("gpu", f"{what} was built for GPUs of compute capability "
                       f"{', '.join(entry.compute_capabilities)}; this GPU is {compute_capability}",
                       remedy)
    if entry.exact_runtime and runtime_version is not None and (
            runtime_version != entry.runtime_version):
        return Refusal("runtime", f"{what} was built with {entry.runtime} {entry.runtime_version}; "
                       f"{runtime_version} is installed", remedy)
    if not entry.exact_runtime and runtime_version is not None and (
            _version_key(runtime_version) < _version_key(entry.runtime_version)):
        return Refusal("runtime", f"{what} needs {entry.runtime} {entry.runtime_version} or newer; "
                       f"{runtime_version} is installed",
                       f"Upgrade {entry.runtime} (pip install -U {entry.runtime}), or {remedy[0].lower()}"
                       f"{remedy[1:]}")
    if entry.profiles and sizes is not None and not any(in_profile(p, sizes) for p in entry.profiles):
        names = ", ".join(str(p.get("name", "?")) for p in entry.profiles)
        shown = " ".join(f"{k}={v}" for k, v in sorted(sizes.items()))
        return Refusal("shape", f"{what}: the requested shape ({shown}) is outside the profiles it "
                       f"was built for ({names})",
                       f"Choose one of those sizes, or rebuild with --profile for this size: "
                       f"{manifest.rebuild or 'wan-desktop export ...'}")
    if loras is not None and sorted(map(_lora_key, loras)) != sorted(map(_lora_key, manifest.loras)):
        return Refusal("loras", f"the engines in {folder} have {_describe_loras(manifest.loras)} "
                       f"merged; this run asks for {_describe_loras(loras)}",
                       f"Export engines with these LoRAs merged (wan-desktop export ... --lora), "
                       f"or run with --backend torch. {remedy}")
    if model_files is not None and manifest.model.get("files"):
        have = {(str(f["name"]), int(f["size"])) for f in manifest.model["files"]}
        given = {(str(f["name"]), int(f["size"])) for f in model_files}
        if have != given:
            return Refusal("model", f"the engines in {folder} were made from other model files "
                           f"({manifest.model.get('path')})", remedy)
    return None


def require_entry(folder: str | Path, manifest: Manifest, component: str, *,
                  expert: int | None = None, runtime: str | None = None,
                  **checks: Any) -> EngineEntry:
    """The entry for ``component``, or EngineError with the refusal's reason and remedy."""
    entry = manifest.entry(component, expert=expert, runtime=runtime)
    if entry is None:
        which = f"{component}" + (f" (expert {expert})" if expert is not None else "")
        have = ", ".join(sorted({e.component for e in manifest.entries})) or "nothing"
        raise EngineError(f"engine folder {folder} has no {which} for {runtime or 'any runtime'} "
                          f"(it has {have})",
                          remedy=f"Export that component too: {manifest.rebuild}" if manifest.rebuild
                          else "Export that component too (wan-desktop export --components ...).")
    refusal = check_entry(folder, manifest, entry, **checks)
    if refusal is not None:
        log.warning("engine %s refused: %s", entry.file, refusal.reason)
        raise refusal.error()
    return entry


def model_file_records(paths: Sequence[Path], *, hash_files: bool = True) -> list[dict[str, Any]]:
    """What a manifest records of checkpoint files: name, size and (optionally) sha256."""
    out = []
    for p in sorted({Path(p) for p in paths}, key=str):
        # with the folder: the shards of two Wan2.2 experts have the same file names
        rec: dict[str, Any] = {"name": f"{p.parent.name}/{p.name}", "size": p.stat().st_size}
        if hash_files:
            rec["sha256"] = sha256_file(p)
        out.append(rec)
    return out
