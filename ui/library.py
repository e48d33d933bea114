"""The model picker's data: scan folders for Wan models with the same detection as ``inspect``
(file headers only, no weights read) and describe each as a frozen ``ModelEntry``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wan_desktop.errors import WanError

log = logging.getLogger(__name__)

_DTYPE_NAMES = {
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}
MAX_DEPTH = 4  # models/<repo>/<sub>/... is as deep as the model manager and ComfyUI go
SCAN_TIME_LIMIT_S = 20.0  # a scan of a whole disk stops entering folders after this


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    path: str
    name: str = ""  # what the picker calls it: the folder (or file) name, with its parent if needed
    variant: str = ""  # "" when the entry could not be read (then ``error`` says why)
    format: str = ""  # "official" | "diffusers" | "comfyui"
    size_bytes: int = 0  # every component file on disk
    precision: str = ""  # storage precision of the DiT: fp32 / bf16 / fp16 / fp8 / fp8-scaled
    tasks: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()  # the variant's preset sizes (width, height)
    spatial_multiple: int = 16
    temporal_factor: int = 4
    fps: int = 16
    missing: tuple[str, ...] = ()
    error: str = ""
    # the parts of a model whose files are separate (GGUF / ComfyUI files: split_installs.py),
    # passed to the run beside ``path`` ("" where the model's own layout holds the part)
    vae: str = ""
    text_encoder: str = ""
    tokenizer: str = ""
    clip: str = ""

    @property
    def parts(self) -> dict[str, str]:
        """RunOptions' vae / text_encoder / tokenizer / clip for this model (the known ones)."""
        names = ("vae", "text_encoder", "tokenizer", "clip")
        return {k: getattr(self, k) for k in names if getattr(self, k)}

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing

    @property
    def reason(self) -> str:
        """Why the entry is not usable, in one line ("" when it is)."""
        if self.error:
            return self.error
        return f"missing {', '.join(self.missing)}" if self.missing else ""

    @property
    def label(self) -> str:
        name = self.name or Path(self.path).name
        if self.error:
            return f"{name} — unusable: {self.error}"
        gb = self.size_bytes / 1e9
        size = f"{gb:.1f} GB" if gb >= 0.1 else f"{self.size_bytes / 1e6:.1f} MB"
        extra = f", missing {', '.join(self.missing)}" if self.missing else ""
        return f"{name} — {self.variant}, {self.precision}, {size}{extra}"


def describe(path: str | Path) -> ModelEntry:
    """One folder or ComfyUI file, as the picker shows it. Never raises for a bad model: the
    error becomes part of the entry (one line, no Python exception names), so the picker can say
    what is wrong with it."""
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.inspect import inspect_files

    from .split_installs import comfy_parts, installed_parts, missing_words

    p = Path(path)
    try:
        parts = installed_parts(p) if p.is_file() or not p.exists() else None
        if parts is not None and parts.unfinished:
            return ModelEntry(path=str(p), error=parts.unfinished)
        files = detect_model(p, **(parts.overrides() if parts else {}))
        if parts is None and files.format in ("comfyui", "gguf"):
            parts = comfy_parts(p, files.variant)  # paired by what the variant needs
            files = detect_model(p, **parts.overrides())
        info = inspect_files(files)
        entry = _entry(p, files, info)
        return replace(entry, missing=missing_words(entry.missing, parts))
    except WanError as e:
        return ModelEntry(path=str(p), error=_one_line(e.message, p))
    except OSError as e:
        return ModelEntry(path=str(p), error=f"cannot read its files ({e.strerror or 'I/O error'})")
    except Exception:  # a file that is not what its name says: detail in the log, not the UI
        log.exception("reading %s failed", p)
        return ModelEntry(path=str(p), error=NOT_WAN)


NOT_WAN = "not a Wan model (its files do not match any Wan layout)"


def _one_line(message: str, root: Path) -> str:
    """A checkpoint message as one line, with the candidate's own path left out."""
    text = " ".join(message.split())
    for prefix in (f"{root}/", f"{root}: ", str(root)):
        text = text.replace(prefix, "")
    return text.strip(" :") or NOT_WAN


def _entry(p: Path, files: Any, info: dict[str, Any]) -> ModelEntry:
    comps = info["components"]
    size = 0
    for value in comps.values():
        for c in value if isinstance(value, list) else [value]:
            if isinstance(c, dict):
                size += int(c.get("size_bytes", 0))
    dit = comps["dit"][0]
    dominant = next(iter(dit["dtypes"]), "")
    precision = _DTYPE_NAMES.get(dominant, dominant)
    if dit.get("scaled_fp8"):
        precision = "fp8-scaled"
    if dit.get("gguf_types"):  # a GGUF file: the block type of most of its weights ("Q4_K")
        precision = max(dit["gguf_types"].items(), key=lambda kv: kv[1]["parameters"])[0]
    v = files.variant
    split = files.format in ("comfyui", "gguf")  # the parts are files of their own

    def part(c: Any) -> str:
        return str(c.files[0]) if split and c is not None else ""

    return ModelEntry(
        path=str(p),
        variant=v.name,
        format=info["format"],
        size_bytes=size,
        precision=precision,
        tasks=tuple(info["tasks"]),
        sizes=tuple(v.defaults.sizes),
        spatial_multiple=v.spatial_multiple,
        temporal_factor=v.vae.temporal_factor,
        fps=v.defaults.fps,
        missing=tuple(info["missing"]),
        vae=part(files.vae),
        text_encoder=part(files.text_encoder),
        tokenizer=str(files.tokenizer) if split and files.tokenizer else "",
        clip=part(files.image_encoder),
    )


@dataclass
class _Walk:
    """One scan's bounds and counters: folders deeper than ``max_depth`` below a scanned folder
    are not entered, and nothing new is entered once ``deadline`` (monotonic) has passed."""

    max_depth: int
    time_limit_s: float
    deadline: float
    progress: Callable[[int, str], None] | None
    folders: int = 0
    too_deep: bool = False
    timed_out: bool = False

    def visit(self, folder: Path) -> bool:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return False
        self.folders += 1
        if self.progress is not None:
            self.progress(self.folders, str(folder))
        return True


def _candidates(folder: Path, walk: _Walk, depth: int = 0) -> list[Path]:
    """Model roots under ``folder``: folders that look like an official or diffusers model, and
    ComfyUI diffusion-model files (the low-noise half of a Wan2.2 pair is found with its twin)."""
    from .split_installs import DIT_SUFFIXES, is_dit_folder, managed_models

    if not walk.visit(folder):
        return []
    if _looks_like_model_dir(folder):
        return [folder]
    installs = managed_models(folder)  # the model manager's folder: one entry per install
    if installs is not None:
        return installs
    out: list[Path] = []
    if is_dit_folder(folder):
        for f in sorted(f for f in folder.iterdir() if f.suffix.lower() in DIT_SUFFIXES):
            twin = f.with_name(f.name.replace("low_noise", "high_noise"))
            if "low_noise" in f.name and twin.exists():
                continue
            out.append(f)
        return out
    try:
        children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return out
    if children and depth >= walk.max_depth:
        walk.too_deep = True
        return out
    for child in children:
        out += _candidates(child, walk, depth + 1)
    return out


def _looks_like_model_dir(folder: Path) -> bool:
    try:
        if (folder / "model_index.json").is_file():
            return True
        has_weights = any(folder.glob("*.safetensors")) or any(
            folder.glob("*.safetensors.index.json")
        )
        official = (folder / "config.json").is_file() and has_weights
        return official or (folder / "high_noise_model").is_dir()
    except OSError:
        return False


def _named(entries: list[ModelEntry]) -> list[ModelEntry]:
    """Each entry named by its folder (or ComfyUI file); where two share that name, or the name
    is only a layout word ("diffusers", "official"), the parent folder is added."""
    base = [Path(e.path).name for e in entries]
    counts = {n: base.count(n) for n in base}
    out = []
    for e, n in zip(entries, base, strict=True):
        if e.name:
            out.append(e)
            continue
        if counts[n] > 1 or n.lower() in _LAYOUT_WORDS:
            n = f"{Path(e.path).parent.name}/{n}"
        out.append(replace(e, name=n))
    return out


_LAYOUT_WORDS = {"diffusers", "official", "comfyui", "diffusion_models", "model", "models"}


def scan(
    folders: tuple[str, ...] | list[str],
    *,
    max_depth: int = MAX_DEPTH,
    time_limit_s: float = SCAN_TIME_LIMIT_S,
    progress: Callable[[int, str], None] | None = None,
) -> tuple[ModelEntry, ...]:
    """Every model candidate found under ``folders`` (a folder may itself be a model, or a
    ComfyUI file), usable ones and the rest with a one-line reason in ``error``. A scanned folder
    that holds no Wan model gives one entry whose error is "no Wan model found in <folder>".
    ``progress(folders_scanned, current_folder)`` is called for every folder entered; the walk
    goes ``max_depth`` folders deep and stops entering folders after ``time_limit_s``."""
    walk = _Walk(max_depth, time_limit_s, time.monotonic() + time_limit_s, progress)
    seen: dict[str, ModelEntry] = {}  # resolved path -> entry: a model is listed once
    out: list[ModelEntry] = []
    for f in folders:
        root = Path(f).expanduser()
        if not root.exists():
            out.append(ModelEntry(path=str(root), name=root.name, error="folder not found"))
            continue
        walk.too_deep = walk.timed_out = False
        roots = [root] if root.is_file() else _candidates(root, walk)
        found: list[ModelEntry] = []
        for r in roots:
            key = str(r.resolve())
            if key not in seen:
                seen[key] = describe(r)
                out.append(seen[key])
            found.append(seen[key])
        if root.is_dir() and not any(e.ok for e in found):
            out.append(ModelEntry(path=str(root), name=root.name, error=_nothing_found(root, walk)))
    named = tuple(_named(out))
    ok = sum(e.ok for e in named)
    log.info("scanned %d folder(s): %d usable, %d not", walk.folders, ok, len(named) - ok)
    return named


def _nothing_found(root: Path, walk: _Walk) -> str:
    text = f"no Wan model found in {root}"
    if walk.timed_out:
        return f"{text} (scan stopped after {walk.time_limit_s:g} s; add the model's own folder)"
    if walk.too_deep:
        return f"{text} (searched {walk.max_depth} folders deep; add the model's own folder)"
    return text
