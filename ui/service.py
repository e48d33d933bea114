"""The GPU service: one QObject living on one long-lived QThread that runs every generation.

The GUI thread calls :meth:`GpuService.submit` (a queued signal hop onto the worker thread) and
:meth:`GpuService.cancel` (directly: it only sets the job's thread-safe CancelToken, because the
worker is busy inside ``generate()`` and a queued slot would run only after the job). Loaded
components stay in memory between jobs that share the same RunOptions. Signals carry ids and
frozen payloads; QImages are built here, QPixmaps only on the GUI thread. No exception leaves
:meth:`_run`: each becomes ``job_cancelled`` or ``job_failed`` with a UserError.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, OutOfVram, WanError

from .library import scan
from .paths import thumbnails_dir
from .store import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserError:
    """What an error dialog shows: a title, what happened, what to do next."""

    title: str
    message: str
    remedy: str

    @classmethod
    def from_wan(cls, e: WanError) -> UserError:
        titles = {"OutOfVram": "Out of GPU memory", "CheckpointError": "Bad model",
                  "EngineError": "Engine not usable", "ConfigError": "Invalid setting",
                  "DownloadError": "Download failed", "IntegrityError": "Corrupt download"}
        return cls(titles.get(type(e).__name__, "Error"), e.message, e.remedy)

    def text(self) -> str:
        return f"{self.message}\n\nWhat to do: {self.remedy}" if self.remedy else self.message


@dataclass(frozen=True)
class PreviewFrames:
    step: int
    total: int
    # linear map: one per latent frame at latent resolution; tiny VAE: the video's frames and size
    frames: tuple[QImage, ...]
    decoder: str = "linear"  # "linear" | "tiny-vae"
    fps: int = 4  # how fast the preview player cycles them


@dataclass(frozen=True)
class JobResult:
    out: Path
    seconds: float
    peak_vram_gb: float | None
    thumbnail: Path | None
    fps: int
    request: dict[str, Any]  # resolved: every default filled in
    frames: tuple[QImage, ...]  # the decoded video, for the player


def qimage_from_rgb(arr: Any) -> QImage:
    """uint8 [H, W, 3] numpy -> an owning QImage (the copy detaches it from the numpy buffer)."""
    import numpy as np

    a = np.ascontiguousarray(arr)
    h, w = a.shape[:2]
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class GpuService(QObject):
    job_started = Signal(str)
    stage_changed = Signal(str, str)  # job id, "encode" | "denoise" | "decode"
    step_done = Signal(str, int, int, float)  # job id, step, total, ETA seconds
    preview_ready = Signal(str, object)  # job id, PreviewFrames
    job_finished = Signal(str, object)  # job id, JobResult
    job_failed = Signal(str, object)  # job id, UserError
    job_cancelled = Signal(str)
    models_scanned = Signal(object)  # tuple[ModelEntry, ...]

    _submit = Signal(object)  # GUI thread -> worker thread hops (queued)
    _scan = Signal(object)
    _release = Signal()

    def __init__(self, *, preview_interval_s: float = 0.25, preview_decoder: str = "") -> None:
        super().__init__()
        self.preview_interval_s = preview_interval_s
        # a TAEHV file for previews ("" : the linear map); the GUI sets it, each job reads it once
        self.preview_decoder = preview_decoder
        self._tae: tuple[tuple[str, int, str], Any] | None = None  # (path, z, device), TaePreview
        self._tae_refused: set[tuple[str, int]] = set()  # warned once, linear map instead
        self._tokens: dict[str, CancelToken] = {}
        self._lock = threading.Lock()
        self._cache_key: str | None = None
        self._loras: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())  # in the cached components
        self._components: Any = None
        self._device: Any = None
        # (monotonic time, job id, step) of every finished step: lets tests and the log measure
        # how many steps ran after a cancel
        self.step_log: deque[tuple[float, str, int]] = deque(maxlen=10_000)
        self._submit.connect(self._run)
        self._scan.connect(self._do_scan)
        self._release.connect(self._drop_components)

    # ------------------------------------------------------------------ GUI-thread API

    def submit(self, job: Job) -> None:
        """Queue ``job`` on the worker thread (returns at once)."""
        with self._lock:
            self._tokens.setdefault(job.id, CancelToken())
        self._submit.emit(job)

    def cancel(self, job_id: str) -> None:
        """Thread-safe: the running loop raises Cancelled at its next check (within one step)."""
        with self._lock:
            token = self._tokens.setdefault(job_id, CancelToken())
        token.cancel("cancelled by the user")

    def cancel_all(self) -> None:
        with self._lock:
            tokens = list(self._tokens.values())
        for t in tokens:
            t.cancel("cancelled by the user")

    def set_preview_decoder(self, path: str) -> None:
        """The Settings' preview decoder; used from the next job on (a plain attribute store)."""
        self.preview_decoder = path

    def request_scan(self, folders: tuple[str, ...]) -> None:
        self._scan.emit(tuple(folders))

    def release_components(self) -> None:
        """Free loaded weights (on the worker thread, after the current job)."""
        self._release.emit()

    # ------------------------------------------------------------------ worker thread

    @Slot(object)
    def _do_scan(self, folders: tuple[str, ...]) -> None:
        try:
            entries = scan(folders)
        except Exception:  # the picker must get an answer whatever a folder holds
            log.exception("model scan failed")
            entries = ()
        self.models_scanned.emit(entries)

    @Slot()
    def _drop_components(self) -> None:
        self._unload()

    def _unload(self) -> None:
        comps, self._components, self._cache_key = self._components, None, None
        if comps is None:
            return
        for c in (comps.text_encoder, *comps.denoisers, comps.vae_decoder, comps.vae_encoder,
                  comps.image_encoder):
            unload = getattr(c, "unload", None)
            if callable(unload):
                unload()
        import gc

        gc.collect()
        torch = _torch_if_loaded()
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load(self, options: Any, variant: Any, files: Any, plan: Any,
              size: str) -> tuple[Any, Any]:
        """Components for ``options``, kept from the previous job when nothing changed. With a
        memory ``plan`` (CUDA) they stay on the CPU; the residency layer places them per run.
        ``size`` ("WxHxF") picks the TensorRT engines of that preset."""
        import json

        from wan_desktop.engines.factory import build_components, set_run_loras

        engines_size = size if options.backend == "tensorrt" else None  # engines are per size
        what = options.to_dict()
        if options.backend == "torch":  # a LoRA change re-reads the DiT, not everything
            what.pop("loras")
            what.pop("loras_low")
        key = json.dumps([what, None if plan is None else plan.describe(), engines_size],
                         sort_keys=True, default=str)
        if key == self._cache_key and self._components is not None \
                and (tuple(options.loras), tuple(options.loras_low)) != self._loras:
            log.info("LoRAs changed: re-reading the DiT with %s", options.loras + options.loras_low)
            try:
                changed = set_run_loras(self._components, options)
            except BaseException:
                self._unload()  # a half-changed model must not serve the next job
                raise
            if changed:
                self._loras = (tuple(options.loras), tuple(options.loras_low))
            else:
                self._unload()  # not torch modules: built anew below with the new LoRAs
        if key != self._cache_key:
            self._unload()
            self._components, self._device = build_components(
                options, variant, files, warn=lambda m: log.warning("%s", m), plan=plan,
                size=size)
            self._cache_key = key
            self._loras = (tuple(options.loras), tuple(options.loras_low))
            if options.tiny_vae:  # "fast final decode": the TAEHV replaces the VAE decoder
                from wan_desktop.engines.preview import TinyVaeDecoder

                comps = self._components
                comps.vae_decoder = TinyVaeDecoder(options.tiny_vae, z_dim=variant.vae.z_dim)
                comps.vae_decoder.load(self._device)
                comps.info["tiny_vae"] = Path(options.tiny_vae).name
        return self._components, self._device

    @Slot(object)
    def _run(self, job: Job) -> None:
        with self._lock:
            token = self._tokens.setdefault(job.id, CancelToken())
        try:
            if token.cancelled:
                raise Cancelled(token.reason)
            self.job_started.emit(job.id)
            result = self._generate(job, token)
        except Cancelled:
            log.info("job %s cancelled", job.id)
            self.job_cancelled.emit(job.id)
        except WanError as e:
            log.warning("job %s failed: %s", job.id, e.one_line())
            self.job_failed.emit(job.id, UserError.from_wan(e))
        except Exception as e:
            torch = _torch_if_loaded()
            if torch is not None and isinstance(e, torch.cuda.OutOfMemoryError):
                self._unload()  # give the memory back before the next job
                first = (str(e).strip().splitlines() or ["CUDA out of memory"])[0]
                err = OutOfVram(f"out of GPU memory: {first}")
                log.warning("job %s: %s", job.id, err.one_line())
                self.job_failed.emit(job.id, UserError.from_wan(err))
            else:
                log.exception("job %s: internal error", job.id)
                self.job_failed.emit(job.id, UserError(
                    "Internal error", f"{type(e).__name__}: {e}",
                    "This is a bug. The log (Help → Open log folder) has the details."))
        else:
            self.job_finished.emit(job.id, result)
        finally:
            with self._lock:
                self._tokens.pop(job.id, None)

    def _generate(self, job: Job, token: CancelToken) -> JobResult:
        from wan_desktop.engines.factory import detect_for_options

        from wan_desktop.options import RunOptions
        from wan_desktop.pipeline import (
            GenerationRequest,
            StageStarted,
            StepDone,
            begin_run,
            check_images,
            generate_to_file,
        )

        from .preview import latent_to_rgb

        t0 = time.perf_counter()
        options = RunOptions.from_dict(job.options)
        # cheap checks first: a bad value or image is reported before any weights load
        variant, files = detect_for_options(options)
        request = GenerationRequest.from_dict(job.request)
        if options.preset:  # before resolve, as the CLI: the distilled σ grid, guidance_low
            from wan_desktop.presets import get_preset

            request = get_preset(options.preset).apply(request, variant)
        request = request.resolve(variant)
        check_images(request)
        if options.tiny_vae and not Path(options.tiny_vae).is_file():
            from wan_desktop.errors import CheckpointError

            raise CheckpointError(f"tiny VAE file not found: {options.tiny_vae}",
                                  remedy="Choose the preview decoder file again in Settings.")
        token.check()
        self.stage_changed.emit(job.id, "load")
        plans = _memory_plans(options, variant, request)
        components, device = self._load(options, variant, files, plans[0] if plans else None,
                                        f"{request.width}x{request.height}x{request.frames}")
        torch = _torch_if_loaded()
        cuda = torch is not None and getattr(device, "type", "") == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        last_preview = [0.0]
        tae = [self._preview_decoder(variant.vae.z_dim, device)]  # [None] after a failure
        fps = variant.defaults.fps

        def emit(event: Any) -> None:
            if isinstance(event, StageStarted):
                self.stage_changed.emit(job.id, event.stage)
            elif isinstance(event, StepDone):
                self.step_log.append((time.monotonic(), job.id, event.step))
                self.step_done.emit(job.id, event.step, event.total, float(event.eta))
                now = time.monotonic()
                due = now - last_preview[0] >= self.preview_interval_s or event.step == event.total
                if event.preview is not None and due:
                    last_preview[0] = now
                    rgb = None
                    if tae[0] is not None:
                        try:  # [F, H, W, 3]: the video's frames, roughly
                            rgb = tae[0](event.preview).numpy()
                        except RuntimeError as e:  # a preview must never fail the job (OOM)
                            log.warning("tiny-VAE preview failed, the linear preview for the rest "
                                        "of this job: %s", str(e).strip().splitlines()[:1])
                            tae[0] = None
                    if rgb is not None:
                        self.preview_ready.emit(job.id, PreviewFrames(
                            event.step, event.total, tuple(qimage_from_rgb(f) for f in rgb),
                            decoder="tiny-vae", fps=fps))
                    else:
                        rgb = latent_to_rgb(event.preview.numpy())  # [T, h, w, 3]
                        self.preview_ready.emit(job.id, PreviewFrames(
                            event.step, event.total, tuple(qimage_from_rgb(f) for f in rgb)))

        if plans:  # a CUDA GPU: placed by the memory plan, the next plan after an OOM (as the CLI)
            from wan_desktop.engines.residency import generate_with_plans

            out, plan = generate_with_plans(components, plans, request, job.out, device=device,
                                            warn=lambda m: log.warning("%s", m), options=options,
                                            cancel=token, emit=emit)
            log.info("job %s ran with the plan: %s", job.id, plan.describe())
        else:
            begin_run(components, request)
            out = generate_to_file(components, request, job.out, options=options, cancel=token,
                                   emit=emit, device=device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        frames = _read_video(out)
        thumb = _save_thumbnail(job.id, frames)
        return JobResult(out=out, seconds=time.perf_counter() - t0,
                         peak_vram_gb=None if peak is None else round(peak, 2), thumbnail=thumb,
                         fps=components.variant.defaults.fps, request=request.to_dict(),
                         frames=frames)

    def _preview_decoder(self, z_dim: int, device: Any) -> Any:
        """The TaePreview for this job's latents (kept between jobs), or None for the linear map:
        no file set, or a file that does not fit (one warning per file and latent size)."""
        path = self.preview_decoder
        if not path or (path, z_dim) in self._tae_refused:
            return None
        key = (path, z_dim, str(device))
        if self._tae is not None and self._tae[0] == key:
            return self._tae[1]
        from wan_desktop.engines.preview import TaePreview

        try:
            tae = TaePreview(path, z_dim=z_dim, device=device)
            # 4 latent frames (16 video frames) per pass, as the final tiny-VAE decode: the same
            # frames (causal memory carried over), a fifth of the activations of an 81-frame clip
            tae.decoder.chunk = 4
        except (WanError, OSError) as e:
            self._tae_refused.add((path, z_dim))
            msg = e.one_line() if isinstance(e, WanError) else str(e)
            log.warning("preview decoder not used, the linear preview instead: %s", msg)
            return None
        self._tae = (key, tae)
        return tae


def _torch_if_loaded() -> Any:
    import sys

    return sys.modules.get("torch")


def _memory_plans(options: Any, variant: Any, request: Any) -> list[Any]:
    """The memory-plan ladder of a PyTorch run on a CUDA GPU (the VRAM plan picked in the window,
    or "auto": the GPU's free memory); empty on the CPU and for engine backends."""
    from wan_desktop.engines.factory import resolve_device

    if options.backend != "torch":
        return []
    device, _dtype = resolve_device(options)
    if device.type != "cuda":
        return []
    from wan_desktop.engines.residency import plans_for_run

    return plans_for_run(variant, request, device=device, budget_gib=options.vram_budget_gb,
                         precision=options.precision)


def _read_video(path: Path) -> tuple[QImage, ...]:
    """The written mp4 decoded back for the player (what the user will get, codec included)."""
    import imageio.v3 as iio

    return tuple(qimage_from_rgb(f) for f in iio.imread(path))


def _save_thumbnail(job_id: str, frames: tuple[QImage, ...]) -> Path | None:
    if not frames:
        return None
    img = frames[len(frames) // 2]
    if img.width() > 160:
        from PySide6.QtCore import Qt

        img = img.scaledToWidth(160, Qt.TransformationMode.SmoothTransformation)
    path = thumbnails_dir() / f"{job_id}.png"
    return path if img.save(str(path)) else None
