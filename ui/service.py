"""The GPU service: one QObject living on one long-lived QThread that runs every generation.

The GUI thread calls :meth:`GpuService.submit` (a queued signal hop onto the worker thread) and
:meth:`GpuService.cancel` (directly: it only sets the job's thread-safe CancelToken, because the
worker is busy inside ``generate()`` and a queued slot would run only after the job). Loaded
components stay in memory between jobs that share the same RunOptions. Signals carry ids and
frozen payloads; QImages are built here, QPixmaps only on the GUI thread. No exception leaves
:meth:`_run`: each becomes ``job_cancelled``, ``job_discarded`` or ``job_failed`` (a UserError).

Review before decode (``Job.review``): after denoising, the worker emits ``review_ready`` with
the last preview and waits, holding the latents, until :meth:`GpuService.decide` (Decode /
Discard) or :meth:`GpuService.cancel`, both direct thread-safe calls like ``cancel``; jobs
submitted meanwhile wait behind it in the worker's queue. The GUI thread never waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QImage

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, WanError
from wan_desktop.pipeline import Discarded, TimedReview

from .library import scan
from .paths import thumbnails_dir
from .store import Job

if TYPE_CHECKING:
    from wan_desktop.run import ComponentFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserError:
    """What an error dialog shows: a title, what happened, what to do next."""

    title: str
    message: str
    remedy: str

    @classmethod
    def from_wan(cls, e: WanError) -> UserError:
        titles = {
            "OutOfVram": "Out of GPU memory",
            "CheckpointError": "Bad model",
            "EngineError": "Engine not usable",
            "ConfigError": "Invalid setting",
            "DownloadError": "Download failed",
            "IntegrityError": "Corrupt download",
        }
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
    window: int = 1  # a long video's window (1-based) of ``windows``: the preview is its x0
    windows: int = 1


@dataclass(frozen=True)
class JobResult:
    out: Path
    seconds: float
    peak_vram_gb: float | None
    thumbnail: Path | None
    fps: int
    request: dict[str, Any]  # resolved: every default filled in
    frames: tuple[QImage, ...]  # the decoded video, for the player

    @classmethod
    def of(cls, job_id: str, result: Any, *, seconds: float) -> JobResult:
        """What the window shows of a finished run (run.RunResult): the written video read back
        (codec included), a thumbnail, the resolved settings."""
        frames = _read_video(result.out)
        return cls(
            out=result.out,
            seconds=seconds,
            peak_vram_gb=result.peak_vram_gib,
            thumbnail=_save_thumbnail(job_id, frames),
            fps=result.fps,
            request=result.request.to_dict(),
            frames=frames,
        )


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
    window_changed = Signal(str, int, int)  # job id, window (1-based), windows: before its steps
    preview_ready = Signal(str, object)  # job id, PreviewFrames
    job_finished = Signal(str, object)  # job id, JobResult
    job_failed = Signal(str, object)  # job id, UserError
    job_cancelled = Signal(str)
    # review before decode: the job waits for decide(); the last preview of its denoised latents
    review_ready = Signal(str, object)  # job id, PreviewFrames
    job_discarded = Signal(str)  # discarded at review: nothing was decoded or written
    models_scanned = Signal(object)  # tuple[ModelEntry, ...]
    scan_progress = Signal(int, str)  # folders scanned so far, the folder being scanned
    # engine exports/builds (submit_export): the same thread and queue as the generation jobs
    export_started = Signal(str)  # export id
    export_progress = Signal(str, str, float)  # export id, stage, fraction 0..1
    export_log = Signal(str, str)  # export id, line
    export_finished = Signal(str, str)  # export id, the engine folder
    export_failed = Signal(str, object)  # export id, UserError
    export_cancelled = Signal(str)  # export id
    _submit_export = Signal(object)  # (export id, ExportJob): queued like _submit, in one FIFO

    # a job or a build ended: what it let go of is collected on the GUI thread (the desktop's
    # gui_thread_gc.GuiThreadGc; cyclic garbage may hold Qt objects, deleted only there)
    garbage = Signal()
    _submit = Signal(object)  # GUI thread -> worker thread hops (queued)
    _scan = Signal(object)
    _release = Signal()

    def __init__(
        self,
        *,
        preview_interval_s: float = 0.25,
        preview_decoder: str = "",
        factory: ComponentFactory | None = None,
    ) -> None:
        super().__init__()
        from wan_desktop.run import ComponentCache

        if factory is None:  # the app's composition: the real backends
            from wan_desktop.engines.factory import EngineFactory

            factory = EngineFactory()
        # the components of the last job, kept for the next one (run.ComponentCache decides)
        self._cache = ComponentCache(factory)
        self.preview_interval_s = preview_interval_s
        # a TAEHV file for previews ("" : the linear map); the GUI sets it, each job reads it once
        self.preview_decoder = preview_decoder
        self._tae: tuple[tuple[str, int, str], Any] | None = None  # (path, z, device), TaePreview
        self._tae_refused: set[tuple[str, int]] = set()  # warned once, linear map instead
        self._tokens: dict[str, CancelToken] = {}
        self._reviews: dict[str, _Review] = {}  # jobs waiting for decide(), by id
        self._lock = threading.Lock()
        # (monotonic time, job id, step) of every finished step: lets tests and the log measure
        # how many steps ran after a cancel
        self.step_log: deque[tuple[float, str, int]] = deque(maxlen=10_000)
        self._submit.connect(self._run)
        self._scan.connect(self._do_scan)
        self._release.connect(self._drop_components)
        self._submit_export.connect(self._run_export)

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
            review = self._reviews.get(job_id)
        token.cancel("cancelled by the user")
        if review is not None:
            review.answered.set()  # wakes the waiting worker, which sees the cancel

    def cancel_all(self) -> None:
        with self._lock:
            tokens = list(self._tokens.values())
            reviews = list(self._reviews.values())
        for t in tokens:
            t.cancel("cancelled by the user")
        for r in reviews:
            r.answered.set()

    def decide(self, job_id: str, *, decode: bool) -> bool:
        """Thread-safe: the answer to a job waiting at review (``review_ready``): decode it with
        the full VAE, or discard it (nothing is written). False when that job is not waiting."""
        with self._lock:
            review = self._reviews.get(job_id)
        if review is None:
            return False
        review.decode = decode
        review.answered.set()
        return True

    def set_preview_decoder(self, path: str) -> None:
        """The Settings' preview decoder; used from the next job on (a plain attribute store)."""
        self.preview_decoder = path

    def request_scan(self, folders: tuple[str, ...]) -> None:
        self._scan.emit(tuple(folders))

    def release_components(self) -> None:
        """Free loaded weights (on the worker thread, after the current job)."""
        self._release.emit()

    def submit_export(self, export_id: str, job: Any) -> None:
        """Queue an engine export/build (a ``wan_desktop.export.job.ExportJob``) on the worker
        thread, behind whatever is already queued there and before whatever comes next: ONNX
        export, FP8/INT8 calibration (real generations) and TensorRT builds use the GPU, which
        has one thread (STYLE rule 8). ``cancel(export_id)`` stops it at its next check; the
        ``export_*`` signals report it."""
        with self._lock:
            self._tokens.setdefault(export_id, CancelToken())
        self._submit_export.emit((export_id, job))

    # ------------------------------------------------------------------ worker thread

    @Slot(object)
    def _do_scan(self, folders: tuple[str, ...]) -> None:
        try:
            entries = scan(folders, progress=self.scan_progress.emit)
        except Exception:  # the picker must get an answer whatever a folder holds
            log.exception("model scan failed")
            entries = ()
        self.models_scanned.emit(entries)

    @Slot()
    def _drop_components(self) -> None:
        self._unload()

    def _unload(self) -> None:
        """Drop the kept components (their VRAM and RAM) until the next job needs them."""
        self._cache.release()

    @Slot(object)
    def _run(self, job: Job) -> None:
        with self._lock:
            token = self._tokens.setdefault(job.id, CancelToken())
        try:
            if token.cancelled:
                raise Cancelled(token.reason)
            self.job_started.emit(job.id)
            result = self._generate(job, token)
        except Discarded:
            log.info("job %s discarded at review", job.id)
            self.job_discarded.emit(job.id)
        except Cancelled:
            log.info("job %s cancelled", job.id)
            self.job_cancelled.emit(job.id)
        except WanError as e:
            log.warning("job %s failed: %s", job.id, e.one_line())
            self.job_failed.emit(job.id, UserError.from_wan(e))
        except Exception as e:  # run.execute already made a CUDA OOM an OutOfVram
            log.exception("job %s: internal error", job.id)
            self.job_failed.emit(
                job.id,
                UserError(
                    "Internal error",
                    f"{type(e).__name__}: {e}",
                    "This is a bug. The log (Help → Open log folder) has the details.",
                ),
            )
        else:
            self.job_finished.emit(job.id, result)
        finally:
            with self._lock:
                self._tokens.pop(job.id, None)
            self.garbage.emit()

    def _generate(self, job: Job, token: CancelToken) -> JobResult:
        from wan_desktop import run
        from wan_desktop.options import RunOptions
        from wan_desktop.request import GenerationRequest

        t0 = time.perf_counter()
        # cheap checks first: a bad value or image is reported before any weights load
        prepared = run.prepare(
            GenerationRequest.from_dict(job.request),
            RunOptions.from_dict(job.options),
            out=job.out,
            factory=self._cache.factory,
            review=job.review,  # refused for sliding windows, never skipped
        )
        for note in prepared.notes:
            log.warning("job %s: %s", job.id, note)
        previews = _Previews(
            self._preview_decoder(prepared.variant.vae.z_dim, prepared.device),
            fps=prepared.variant.defaults.fps,
        )
        review = None
        if job.review:
            review = TimedReview(self._review_hook(job.id, previews, prepared, token))
        result = run.execute(
            prepared,
            components=self._cache,
            cancel=token,
            emit=self._job_events(job.id, previews),
            warn=lambda m: log.warning("%s", m),
            review=review,
        )
        waited = review.waited if review is not None else 0.0  # the user's time, not the run's
        return JobResult.of(job.id, result, seconds=time.perf_counter() - t0 - waited)

    def _review_hook(self, job_id: str, previews: _Previews, prepared: Any, token: Any) -> Any:
        """The run's review hook for one job: the denoised latents' preview goes to the GUI
        (``review_ready``), then this (GPU) thread waits for :meth:`decide` or a cancel."""
        from wan_desktop.pipeline import Verdict

        steps = prepared.request.steps

        def review(latents: Any) -> Verdict:
            waiting = _Review()
            with self._lock:
                self._reviews[job_id] = waiting
            try:
                token.check()  # cancelled as the denoise ended: no need to ask
                self.review_ready.emit(job_id, previews(latents, steps, steps))
                while not waiting.answered.wait(0.5):  # cancel() wakes it; the timeout is a
                    token.check()  # safety net for a token cancelled some other way
                token.check()
            finally:
                with self._lock:
                    self._reviews.pop(job_id, None)
            return Verdict.DECODE if waiting.decode else Verdict.DISCARD

        return review

    def _job_events(self, job_id: str, previews: _Previews) -> Any:
        """The pipeline's events of one job as the service's signals: stages, steps (with the ETA)
        and previews at most every ``preview_interval_s`` (the linear map, or the TAEHV)."""
        from wan_desktop.pipeline import StageStarted, StepDone

        last_preview = [0.0]
        window = [(1, 1)]

        def emit(event: Any) -> None:
            if isinstance(event, (StageStarted, StepDone)):  # long videos: the window changed
                now_in = (event.window, event.windows)
                if now_in != window[0]:
                    window[0] = now_in
                    self.window_changed.emit(job_id, *now_in)
            if isinstance(event, StageStarted):
                self.stage_changed.emit(job_id, event.stage)
            elif isinstance(event, StepDone):
                self.step_log.append((time.monotonic(), job_id, event.step))
                self.step_done.emit(job_id, event.step, event.total, float(event.eta))
                now = time.monotonic()
                due = now - last_preview[0] >= self.preview_interval_s or event.step == event.total
                if event.preview is None or not due:
                    return
                last_preview[0] = now
                frames = previews(event.preview, event.step, event.total)
                if event.windows > 1:
                    frames = replace(frames, window=event.window, windows=event.windows)
                self.preview_ready.emit(job_id, frames)

        return emit

    @Slot(object)
    def _run_export(self, item: tuple[str, Any]) -> None:
        """One export/build, between two generation jobs on this thread. The kept generation
        components are released first (their VRAM is the build's); no exception leaves here."""
        export_id, job = item
        with self._lock:
            token = self._tokens.setdefault(export_id, CancelToken())
        try:
            token.check()  # cancelled while it waited: never started
            self._unload()
            self.export_started.emit(export_id)
            from wan_desktop.export.job import run_export

            out = run_export(
                job,
                cancel=token,
                progress=lambda stage, f: self.export_progress.emit(export_id, stage, float(f)),
                log=lambda line: self.export_log.emit(export_id, line),
            )
        except Cancelled:
            log.info("engine build %s cancelled", export_id)
            self.export_cancelled.emit(export_id)
        except Exception as e:
            self.export_failed.emit(export_id, self._export_error(export_id, e))
        else:
            log.info("engine build %s: %s", export_id, out)
            self.export_finished.emit(export_id, str(out))
        finally:
            with self._lock:
                self._tokens.pop(export_id, None)
            import gc
            import sys

            if gc.isenabled():  # the build's modules and graphs; CUDA's cache for the next job
                gc.collect()
            self.garbage.emit()  # else (the desktop) on the GUI thread
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()

    @staticmethod
    def _export_error(export_id: str, e: Exception) -> UserError:
        from wan_desktop.errors import EngineError, OutOfVram, is_cuda_oom

        if isinstance(e, ImportError):  # the export extra is missing or broken
            e = EngineError(
                f"the export toolchain cannot be imported ({e.name or e})",
                remedy="Install the export extras: pip install 'wan-desktop[export]'.",
            )
        elif is_cuda_oom(e):  # FP8/INT8 calibration or a TensorRT build on a full GPU
            first = (str(e).strip().splitlines() or ["CUDA out of memory"])[0]
            e = OutOfVram(
                f"out of GPU memory while building engines: {first}",
                remedy="Close other programs that use the GPU, or build fewer "
                "components or presets at once.",
            )
        if isinstance(e, WanError):
            log.warning("engine build %s failed: %s", export_id, e.one_line())
            return UserError.from_wan(e)
        log.error("engine build %s: internal error", export_id, exc_info=e)
        return UserError(
            "Internal error",
            f"{type(e).__name__}: {e}",
            "This is a bug. The log (Help → Open log folder) has the details.",
        )

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


@dataclass
class _Review:
    """A job waiting at review: set ``decode``, then ``answered`` (from the GUI thread)."""

    answered: threading.Event = field(default_factory=threading.Event)
    decode: bool = False


class _Previews:
    """One job's preview pictures of x0 latents [z, T, h, w]: the TAEHV's frames while it works
    (a failure, e.g. out of VRAM, falls back to the linear map for the rest of the job), else the
    linear latent→RGB map. Runs on the GPU thread."""

    def __init__(self, tae: Any, *, fps: int) -> None:
        self.tae = tae
        self.fps = fps

    def __call__(self, latents: Any, step: int, total: int) -> PreviewFrames:
        from .preview import latent_to_rgb

        if self.tae is not None:
            try:  # [F, H, W, 3]: the video's frames, roughly
                rgb = self.tae(latents).numpy()
            except RuntimeError as e:  # a preview must never fail the job (OOM)
                log.warning(
                    "tiny-VAE preview failed, the linear preview for the rest of this job: %s",
                    str(e).strip().splitlines()[:1],
                )
                self.tae = None
            else:
                frames = tuple(qimage_from_rgb(f) for f in rgb)
                return PreviewFrames(step, total, frames, decoder="tiny-vae", fps=self.fps)
        rgb = latent_to_rgb(latents.numpy())  # [T, h, w, 3]
        return PreviewFrames(step, total, tuple(qimage_from_rgb(f) for f in rgb))


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
