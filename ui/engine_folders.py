"""The engine folders under the engines directory and what the cache says of each for a model on
this machine (the engines dialog lists them; the main window offers the backends that fit), and the
export job a build asks the GPU service for. No Qt: the engines dialog binds to this.

The engine cache (``wan_desktop.engines.cache``), checkpoint detection and the export toolchain
(``wan_desktop.export.job``) are imported lazily: listing works, and says so, when the export
extra is not installed.

Listing reads no model, graph or engine file (hashing a 14B checkpoint takes minutes): its verdict
compares names and sizes, and sha256s only where the user's hash cache (engines/file_hashes.py)
already has them — after the export that made the folder, or a run that loaded it, it has. The
full check, every sha256, happens when a run loads the folder (the engine backends), on the GPU
service's thread, once per version of each file; a folder listed as fitting may still be refused
there, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wan_desktop.errors import WanError

from .library import ModelEntry

COMPONENTS = ("t5", "dit", "vae")
PRESETS = ("480p", "720p")
# manifest runtime -> GUI backend (RunOptions.backend)
BACKEND_OF_RUNTIME = {
    "onnxruntime": "onnxruntime",
    "tensorrt_rtx": "tensorrt",
    "tensorrt": "tensorrt",
}
_RUNTIME_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt_rtx": (
        "tensorrt_rtx_cu12",
        "tensorrt-rtx-cu12-bindings",
        "tensorrt_rtx_cu13",
        "tensorrt-rtx",
    ),
    "tensorrt": ("tensorrt", "tensorrt-cu12"),
}


@dataclass(frozen=True)
class EngineRow:
    """One engine folder as the dialog lists it."""

    path: str
    variant: str
    components: str  # "t5, dit, vae_decoder_first, ..."
    precision: str
    presets: str  # profile names, "any size" for plain ONNX graphs
    backends: tuple[str, ...]  # RunOptions backends the folder serves
    ok: bool
    reason: str  # why it does not fit this model / GPU / runtime ("" when ok)

    @property
    def name(self) -> str:
        return Path(self.path).name


def installed_runtime_version(runtime: str) -> str | None:
    """The installed version of an engine runtime, from package metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in _RUNTIME_DISTRIBUTIONS.get(runtime, (runtime,)):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def gpu_compute_capability() -> str | None:
    """ "8.9" for GPU 0 from nvidia-smi (the GUI thread never initialises CUDA); None: no GPU."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        return out.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _model_files(model_path: str, **parts: str) -> Any:
    """The checkpoint's ModelFiles (``parts``: a split model's VAE / umT5 / CLIP files); None: a
    model gone or unreadable since the library listed it."""
    from wan_desktop.checkpoints.detect import detect_model

    try:
        return detect_model(model_path, **parts)
    except WanError:
        return None


def _component_paths(files: Any, manifest: Any) -> list[Path]:
    """The checkpoint files of the components ``manifest`` has entries for, as the export records
    them (export/job.py ``_component_files``): a DiT-only folder records only the DiT's files."""
    paths: list[Path] = []
    for e in manifest.entries:
        if e.component == "t5":
            comp = files.text_encoder
        elif e.component == "clip":
            comp = files.image_encoder
        elif e.component == "dit":
            expert = e.expert or 0
            comp = files.experts[expert] if expert < len(files.experts) else None
        else:  # vae_decoder_*, vae_encoder_*
            comp = files.vae
        if comp is not None:
            paths.extend(comp.files)
    return paths


def _model_records(files: Any, manifest: Any, hashes: Any) -> list[dict[str, Any]] | None:
    """Name + size of the checkpoint files of the components the manifest records, with the
    sha256 where the hash cache ``hashes`` has it (nothing is hashed here)."""
    from wan_desktop.engines.cache import model_file_records

    try:
        return model_file_records(
            _component_paths(files, manifest), hash_files=False, hashes=hashes
        )
    except WanError:  # a file gone since the model was detected
        return None


def missing_components(manifest: Any, runtime: str) -> list[str]:
    """The components a run loads from an engine folder (the ONNX Runtime and TensorRT backends:
    T5, every DiT expert, the VAE decoder, and CLIP for a model with an image embedding) that the
    folder has no ``runtime`` entry for."""
    v = manifest.variant
    have = {(e.component, e.expert) for e in manifest.entries if e.runtime == runtime}
    comps = {c for c, _ in have}
    dits = (
        ["dit"]
        if v.experts == 1
        else [f"dit (expert {i})" for i in range(v.experts) if ("dit", i) not in have]
    )
    needed = ["t5", *dits, "vae_decoder_first", "vae_decoder_step"]
    if v.dit.has_image_embedding:
        needed.append("clip")
    return [c for c in needed if c.startswith("dit (") or c not in comps]


def list_engine_rows(
    root: Path, entry: ModelEntry | None = None, *, compute_capability: str | bool | None = True
) -> list[EngineRow]:
    """Every engine folder under ``root`` with the cache's verdict for ``entry`` on this machine.

    ``compute_capability`` True: ask nvidia-smi. A folder fits when it has every component a run
    loads, and the cache's ``check_entry`` finds no reason to refuse one (file missing or changed,
    other model files, GPU, runtime version). The model's files are compared for the components
    the manifest records only; sha256s only where the hash cache has them (the module docstring)."""
    from wan_desktop.engines import cache

    cc = gpu_compute_capability() if compute_capability is True else compute_capability or None
    hashes = cache.HashCache()
    files = _model_files(entry.path, **entry.parts) if entry is not None and entry.ok else None
    rows = []
    for folder in cache.list_engines(Path(root)):
        m = folder.manifest
        if m is None:
            rows.append(
                EngineRow(
                    str(folder.path),
                    "?",
                    "",
                    "",
                    "",
                    (),
                    False,
                    folder.error or "unreadable manifest",
                )
            )
            continue
        runtimes = sorted({e.runtime for e in m.entries})
        backends = tuple(sorted({BACKEND_OF_RUNTIME.get(r, r) for r in runtimes}))
        profiles = sorted({str(p.get("name", "?")) for e in m.entries for p in e.profiles})
        reason = ""
        if entry is not None and entry.variant and m.variant.name != entry.variant:
            reason = f"made for {m.variant.name}, the model is {entry.variant}"
        complete = [r for r in runtimes if not missing_components(m, r)]
        if not reason and not complete:
            missing = missing_components(m, runtimes[0]) if runtimes else ["every component"]
            reason = (
                f"it has no {', '.join(missing)}: a run loads T5, the DiT and the VAE decoder "
                "from the folder (build those components too)"
            )
        served = tuple(sorted({BACKEND_OF_RUNTIME.get(r, r) for r in complete}))
        records = _model_records(files, m, hashes) if files is not None else None
        for e in m.entries:
            if reason:
                break
            if e.runtime not in complete:
                continue
            if e.runtime != "onnxruntime" and cc is None:
                reason = f"{e.component}: a {e.runtime} engine needs an NVIDIA GPU (none found)"
                break
            have = installed_runtime_version(e.runtime)
            if have is None:
                reason = f"{e.runtime} is not installed"
                break
            refusal = cache.check_entry(
                folder.path,
                m,
                e,
                runtime_version=have,
                compute_capability=cc,
                model_files=records if e.component == "dit" else None,
                hashes=hashes,
            )
            if refusal is not None:
                reason = refusal.reason
        rows.append(
            EngineRow(
                path=str(folder.path),
                variant=m.variant.name,
                components=", ".join(dict.fromkeys(e.component for e in m.entries)),
                precision=", ".join(sorted({e.precision for e in m.entries})),
                presets=", ".join(profiles) or "any size",
                backends=backends if reason else served,
                ok=not reason,
                reason=reason,
            )
        )
    return rows


def usable_engines(root: Path, entry: ModelEntry) -> dict[str, str]:
    """backend -> the first engine folder that fits ``entry`` here, for each engine backend."""
    out: dict[str, str] = {}
    for row in list_engine_rows(root, entry):
        if row.ok:
            for b in row.backends:
                out.setdefault(b, row.path)
    return out


def export_available() -> bool:
    try:
        from wan_desktop.export.job import ExportJob, run_export  # noqa: F401
    except ImportError:
        return False
    return True


def make_export_job(
    engines_dir: Path,
    entry: ModelEntry,
    *,
    components: tuple[str, ...],
    presets: tuple[str, ...],
    precision: str,
    engine: str,
) -> Any:
    """The ExportJob of a build for ``entry``: ``presets`` are profile names ("480p"), each made
    the variant's sizes; the folder is named after the model, engine and precision. Raises
    ValueError (nothing chosen) or WanError (a value the export refuses)."""
    from wan_desktop.export.job import ExportJob

    from wan_desktop.specs import profile_presets
    from wan_desktop.variants import VARIANTS

    if not components:
        raise ValueError("choose at least one component")
    variant = VARIANTS[entry.variant]
    sizes = tuple(p for name in presets for p in profile_presets(variant, name))
    out = engines_dir / f"{Path(entry.path).name}-{engine}-{precision}"
    return ExportJob(
        out=str(out),
        model=entry.path,
        components=components,
        precision=precision,
        presets=sizes,
        engine=engine,
        profile=presets[0] if presets else None,
    )
