"""The model picker's data: scan folders for Wan models with the same detection as ``inspect``
(file headers only, no weights read) and describe each as a frozen ``ModelEntry``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from wan_desktop.errors import WanError

log = logging.getLogger(__name__)

_DTYPE_NAMES = {
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}
_MAX_DEPTH = 4  # models/<repo>/<sub>/... is as deep as the model manager and ComfyUI go


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    path: str
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

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing

    @property
    def label(self) -> str:
        name = Path(self.path).name
        if self.error:
            return f"{name} — unusable: {self.error}"
        gb = self.size_bytes / 1e9
        size = f"{gb:.1f} GB" if gb >= 0.1 else f"{self.size_bytes / 1e6:.1f} MB"
        extra = f", missing {', '.join(self.missing)}" if self.missing else ""
        return f"{name} — {self.variant}, {self.precision}, {size}{extra}"


def describe(path: str | Path) -> ModelEntry:
    """One folder or ComfyUI file, as the picker shows it. Never raises for a bad model: the
    error becomes part of the entry, so the picker can say what is wrong with it."""
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.inspect import inspect_files

    p = Path(path)
    try:
        files = detect_model(p)
        info = inspect_files(files)
    except WanError as e:
        return ModelEntry(path=str(p), error=e.message)
    except (OSError, ValueError) as e:  # unreadable headers that escaped the checkpoint layer
        return ModelEntry(path=str(p), error=f"{type(e).__name__}: {e}")
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
    v = files.variant
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
    )


def _candidates(folder: Path, depth: int = 0) -> list[Path]:
    """Model roots under ``folder``: folders that look like an official or diffusers model, and
    ComfyUI diffusion-model files (the low-noise half of a Wan2.2 pair is found with its twin)."""
    if _looks_like_model_dir(folder):
        return [folder]
    out: list[Path] = []
    if folder.name == "diffusion_models":
        for f in sorted(folder.glob("*.safetensors")):
            twin = f.with_name(f.name.replace("low_noise", "high_noise"))
            if "low_noise" in f.name and twin.exists():
                continue
            out.append(f)
        return out
    if depth >= _MAX_DEPTH:
        return out
    try:
        children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return out
    for child in children:
        out += _candidates(child, depth + 1)
    return out


def _looks_like_model_dir(folder: Path) -> bool:
    if (folder / "model_index.json").is_file():
        return True
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
    official = (folder / "config.json").is_file() and has_weights
    experts = (folder / "high_noise_model").is_dir()
    return official or experts


def scan(folders: tuple[str, ...] | list[str]) -> tuple[ModelEntry, ...]:
    """Every model found under ``folders`` (a folder may itself be a model, or a ComfyUI file)."""
    seen: set[str] = set()
    out: list[ModelEntry] = []
    for f in folders:
        root = Path(f).expanduser()
        roots = [root] if root.is_file() else _candidates(root) if root.is_dir() else []
        if not roots and not root.exists():
            out.append(ModelEntry(path=str(root), error="folder not found"))
        for r in roots:
            key = str(r.resolve())
            if key in seen:
                continue
            seen.add(key)
            try:
                out.append(describe(r))
            except Exception as e:  # one unreadable model must not hide the others
                log.exception("reading %s failed", r)
                out.append(ModelEntry(path=str(r), error=f"{type(e).__name__}: {e}"))
    log.info("scanned %d folder(s): %d model(s)", len(folders), len(out))
    return tuple(out)
