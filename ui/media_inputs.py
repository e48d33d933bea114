"""The video inputs of a job, as the form holds them: VACE (control video, mask video, reference
images, outpaint margins, clips to extend, preprocessor, control scale) and video-to-video (the
source video and the strength). Plain data and file handling, no widget and no torch:

* :func:`task_choices` / :func:`offered` say which entries the task list offers for a model (the
  five VACE uses for a VACE model; V2V for every model that does T2V);
* :func:`request_fields` turns the form's inputs into GenerationRequest fields (only those the
  chosen use takes), :func:`media_from_request` reads them back ("Reuse settings");
* :func:`copy_inputs` copies a job's input files (videos, PNG frame folders, images) into the job's
  own folder when it is added, so the job and its history entry never depend on the originals;
* :class:`ControlPreviewer` reads a few frames of the control video through the preprocessor on
  Qt's thread pool, for the strip beside the live preview.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QThreadPool, Signal

if TYPE_CHECKING:
    import numpy as np

    from wan_desktop.request import GenerationRequest

    from .library import ModelEntry

log = logging.getLogger(__name__)

# the VACE uses: what the user gives decides the use (issue #18); the task list names them
USES = {
    "control": "VACE · control → video",
    "inpaint": "VACE · inpaint",
    "outpaint": "VACE · outpaint",
    "extend": "VACE · extend a clip",
    "reference": "VACE · reference → video",
}
V2V_LABEL = "V2V · video → video"
PREPROCESSORS = ("none", "gray", "edges")  # wan_desktop.vace_inputs.PREPROCESSORS
# the inputs each use takes (the panel shows these, the request gets these)
USE_FIELDS: dict[str, tuple[str, ...]] = {
    "control": ("control_video", "preprocess", "ref_images", "control_scale"),
    "inpaint": ("control_video", "mask_video", "ref_images", "control_scale"),
    "outpaint": ("control_video", "outpaint", "control_scale"),
    "extend": ("first_clip", "last_clip", "control_scale"),
    "reference": ("ref_images", "control_scale"),
    "v2v": ("video", "strength"),
}
# every request field these inputs fill (the form fields a refused job can point at)
MEDIA_FIELDS = (
    "control_video",
    "mask_video",
    "ref_images",
    "control_scale",
    "outpaint",
    "first_clip",
    "last_clip",
    "preprocess",
    "video",
    "strength",
)
INPUTS_FOLDER = "inputs"  # <outputs>/inputs/<job id>/: the job's own copies of its inputs


@dataclass(frozen=True, kw_only=True)
class MediaInputs:
    """The form's video inputs ("" / () / zeros: not given)."""

    use: str = "control"  # a USES key, for the vace task
    control_video: str = ""
    mask_video: str = ""
    ref_images: tuple[str, ...] = ()
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, top, right, bottom pixels
    first_clip: str = ""
    last_clip: str = ""
    preprocess: str = "none"
    control_scale: float = 1.0
    video: str = ""  # v2v: the source video
    strength: float = 0.8  # v2v: diffusers' default

    def fields_for(self, task: str) -> tuple[str, ...]:
        """The inputs the task (and, for vace, the use) takes."""
        if task == "vace":
            return USE_FIELDS.get(self.use, ())
        return USE_FIELDS["v2v"] if task == "v2v" else ()


def offered(entry: ModelEntry | None) -> tuple[str, ...]:
    """The tasks a model can run in the app: its own, plus v2v (SDEdit) for any T2V model."""
    if entry is None or not entry.tasks:
        return ()
    tasks = tuple(entry.tasks)
    return (*tasks, "v2v") if "t2v" in tasks and "v2v" not in tasks else tasks


def task_choices() -> tuple[tuple[str, str], ...]:
    """(label, key) of the task list entries these inputs add: "v2v" and "vace:<use>"."""
    return ((V2V_LABEL, "v2v"), *((label, f"vace:{use}") for use, label in USES.items()))


def task_key(task: str, media: MediaInputs) -> str:
    """The task list entry of a form state: "vace:<use>" for the vace task, else the task."""
    return f"vace:{media.use}" if task == "vace" else task


def split_key(key: str) -> tuple[str, str | None]:
    """A task list entry -> (task, VACE use or None)."""
    if key.startswith("vace:"):
        return "vace", key.split(":", 1)[1]
    return key, None


def request_fields(task: str, media: MediaInputs) -> dict[str, Any]:
    """The GenerationRequest fields of ``media`` for ``task``: only the inputs its use takes, and
    only those given (the preprocessor "none", no margins and a scale of 1 are the defaults)."""
    want = media.fields_for(task)
    out: dict[str, Any] = {}
    for name in ("control_video", "mask_video", "first_clip", "last_clip", "video"):
        if name in want and getattr(media, name):
            out[name] = getattr(media, name)
    if "ref_images" in want and media.ref_images:
        out["ref_images"] = tuple(media.ref_images)
    if "outpaint" in want:
        out["outpaint"] = tuple(media.outpaint)
    if "preprocess" in want and media.preprocess != "none":
        out["preprocess"] = media.preprocess
    if "control_scale" in want and media.control_scale != 1.0:
        out["control_scale"] = float(media.control_scale)
    if "strength" in want:
        out["strength"] = float(media.strength)
    return out


def use_of(request: dict[str, Any]) -> str:
    """Which VACE use a saved request is (the inputs it has decide)."""
    if request.get("outpaint"):
        return "outpaint"
    if request.get("first_clip") or request.get("last_clip"):
        return "extend"
    if request.get("mask_video"):
        return "inpaint"
    if request.get("control_video"):
        return "control"
    return "reference" if request.get("ref_images") else "control"


def media_from_request(request: dict[str, Any], base: MediaInputs | None = None) -> MediaInputs:
    """The form's inputs from a saved request ("Reuse settings"): what the request has, the rest
    as ``base`` (or the defaults)."""
    base = base or MediaInputs()
    margins = request.get("outpaint")
    scale = request.get("control_scale")
    strength = request.get("strength")
    return replace(
        base,
        use=use_of(request) if request.get("task") == "vace" else base.use,
        control_video=str(request.get("control_video") or ""),
        mask_video=str(request.get("mask_video") or ""),
        ref_images=tuple(str(p) for p in request.get("ref_images") or ()),
        outpaint=tuple(int(v) for v in margins) if margins else (0, 0, 0, 0),  # type: ignore[arg-type]
        first_clip=str(request.get("first_clip") or ""),
        last_clip=str(request.get("last_clip") or ""),
        preprocess=str(request.get("preprocess") or "none"),
        control_scale=1.0 if scale is None else float(scale),
        video=str(request.get("video") or ""),
        strength=base.strength if strength is None else float(strength),
    )


def remembered_media(media: MediaInputs) -> dict[str, Any]:
    """What the per-model form memory keeps of the inputs (JSON: tuples become lists)."""
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(media).items()}


def recalled_media(data: dict[str, Any]) -> MediaInputs:
    """The inputs :func:`remembered_media` saved; a value of the wrong type or out of the
    choices (a hand-edited or older settings file) is left out (the default then)."""
    from dataclasses import fields

    from .paths import field_problems

    names = {f.name for f in fields(MediaInputs)}
    plain = {k: v for k, v in data.items() if k in names}
    bad = field_problems(MediaInputs, plain)
    out = {k: v for k, v in plain.items() if k not in bad}
    if out.get("use", "control") not in USES:
        del out["use"]
    if out.get("preprocess", "none") not in PREPROCESSORS:
        del out["preprocess"]
    if "ref_images" in out:
        out["ref_images"] = tuple(out["ref_images"])
    if "outpaint" in out:
        margins = tuple(out["outpaint"])
        if len(margins) == 4:
            out["outpaint"] = margins
        else:
            del out["outpaint"]
    return MediaInputs(**out)


# the CLI flags the core's VACE / V2V messages name, in the form's words
_APP_WORDS = (
    (re.compile(r"--frames (\d+)"), r"\1 frames"),
    (re.compile(r"more --frames"), "more frames"),
    (re.compile(r"a larger --size"), "a larger size"),
    (re.compile(r"Give --control-video too"), "Give a control video too"),
)


def app_words(text: str) -> str:
    """A core message or remedy with its CLI flags said as the form says them."""
    for pattern, words in _APP_WORDS:
        text = pattern.sub(words, text)
    return text


# ----------------------------------------------------------------------------- the job's copies

# the request fields that name input files: videos (files or PNG frame folders) and the I2V /
# FLF2V / TI2V first and last frames (the reference images are copied too, one by one)
_FILE_FIELDS = (
    "control_video",
    "mask_video",
    "first_clip",
    "last_clip",
    "video",
    "image",
    "last_image",
)


def has_inputs(request: dict[str, Any]) -> bool:
    """Whether a saved request names input files that :func:`copy_inputs` copies."""
    return any(request.get(k) for k in _FILE_FIELDS) or bool(request.get("ref_images"))


def copy_inputs(request: GenerationRequest, folder: Path) -> GenerationRequest:
    """``request`` with every input video (a file or a PNG frame folder), input image and
    reference image copied into ``folder`` (created) and named there, so "Reuse settings" and a
    restart keep working after the originals are moved or deleted. Call it after the job's checks
    passed (off the GUI thread: :class:`InputCopier`).
    Raises ConfigError (naming the field) when a copy cannot be written."""
    from wan_desktop.errors import ConfigError

    changes: dict[str, Any] = {}
    jobs: list[tuple[str, str, str]] = []  # (field, source, name in the folder)
    for name in _FILE_FIELDS:
        src = getattr(request, name, None)
        if src:
            jobs.append((name, str(src), name))
    for i, src in enumerate(request.ref_images):
        jobs.append(("ref_images", str(src), f"ref_images_{i}"))
    if not jobs:
        return request
    copied: dict[str, str] = {}
    refs: list[str] = []
    for field, src, stem in jobs:
        try:
            dest = _copy_one(Path(src).expanduser(), folder, stem)
        except OSError as e:
            raise ConfigError(
                f"cannot copy {Path(src).name} into the job's folder {folder}: {e.strerror or e}",
                remedy="Free some disk space, or choose another output folder in Settings.",
                field=field,
            ) from None
        if field == "ref_images":
            refs.append(str(dest))
        else:
            copied[field] = str(dest)
    changes.update(copied)
    if refs:
        changes["ref_images"] = tuple(refs)
    return replace(request, **changes)


def _copy_one(src: Path, folder: Path, stem: str) -> Path:
    """A file as ``<folder>/<stem><suffix>``; a frames folder as ``<folder>/<stem>/`` with its
    PNG frames (nothing else in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        dest = folder / stem
        dest.mkdir(exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file() and f.suffix.lower() == ".png":
                shutil.copy2(f, dest / f.name)
        return dest
    dest = folder / f"{stem}{src.suffix.lower()}"
    shutil.copy2(src, dest)
    return dest


def job_inputs_folder(outputs: Path, job_id: str) -> Path:
    return outputs / INPUTS_FOLDER / job_id


def saved_inputs_folder(request: dict[str, Any], job_id: str) -> Path | None:
    """The folder :func:`copy_inputs` made for job ``job_id``, found from its saved request (the
    outputs folder may have changed since), or None when it has none."""
    paths = [request.get(k) for k in _FILE_FIELDS] + list(request.get("ref_images") or ())
    for p in paths:
        if isinstance(p, str) and p:
            for parent in Path(p).parents:
                if parent.name == job_id and parent.parent.name == INPUTS_FOLDER:
                    return parent
    return None


def remove_saved_inputs(request: dict[str, Any], job_id: str) -> None:
    """Delete job ``job_id``'s copies of its inputs (its history entry goes; nothing else needs
    them). A folder that cannot be deleted is logged and left."""
    folder = saved_inputs_folder(request, job_id)
    if folder is not None and folder.is_dir():
        try:
            shutil.rmtree(folder)
        except OSError as e:
            log.warning("cannot delete %s: %s", folder, e)


# ----------------------------------------------------------------------------- control preview


@dataclass(frozen=True)
class ControlFrames:
    """A few frames of an input video, as the run will see them (cropped, resized, through the
    preprocessor): ``frames`` [H, W, 3] uint8 arrays; ``error`` when the file cannot be read."""

    key: tuple[Any, ...]
    frames: tuple[np.ndarray, ...] = ()
    error: str = ""


def read_control_frames(
    path: str, *, preprocess: str, width: int, height: int, frames: int, count: int = 4
) -> tuple[np.ndarray, ...]:
    """``count`` frames spread over the first ``frames`` of ``path`` at ``width``×``height``, each
    through ``preprocess`` (vace_inputs' own gray / edges: the pixels the run conditions on)."""
    from wan_desktop.vace_inputs import apply_preprocessor
    from wan_desktop.video_input import iter_frames

    step = max(1, frames // count)
    wanted = {i * step for i in range(count)}
    out = []
    field = "video" if preprocess == "" else "control_video"
    limit = min(frames, max(wanted) + 1)
    for i, frame in enumerate(iter_frames(path, width, height, limit=limit, field=field)):
        if i in wanted:
            out.append(
                apply_preprocessor(frame, None if preprocess in ("", "none") else preprocess)
            )
    return tuple(out)


class ControlPreviewer(QObject):
    """Reads control frames on Qt's thread pool; ``ready`` (a ControlFrames) arrives on the GUI
    thread. Only the latest request's result is sent: an older one finishing late is dropped."""

    ready = Signal(object)  # ControlFrames
    _done = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.key: tuple[Any, ...] | None = None
        self._done.connect(self._deliver)  # queued: the pool thread emits, the GUI thread sends

    def request(self, path: str, *, preprocess: str, width: int, height: int, frames: int) -> None:
        """Show ``path`` (a control video, or a v2v source with ``preprocess`` "")."""
        key = (path, preprocess, width, height, frames)
        if key == self.key:
            return
        self.key = key
        if not path:
            self.ready.emit(ControlFrames(key))
            return
        QThreadPool.globalInstance().start(lambda: self._read(key))

    def _read(self, key: tuple[Any, ...]) -> None:
        path, preprocess, width, height, frames = key
        try:
            shown = read_control_frames(
                path, preprocess=preprocess, width=width, height=height, frames=frames
            )
            result = ControlFrames(key, shown)
        except Exception as e:  # a damaged or missing file: the strip says so
            message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            result = ControlFrames(key, error=str(message))
        self._done.emit(result)

    def _deliver(self, result: ControlFrames) -> None:
        if result.key == self.key:
            self.ready.emit(result)


class InputCopier(QObject):
    """Copies a job's input files (:func:`copy_inputs`) on Qt's thread pool, so a large video
    never freezes the window; ``copied`` (job id, the request dict naming the copies, or None and
    the ``WanError`` that stopped it) arrives on the GUI thread."""

    copied = Signal(str, object, object)  # job id, request dict | None, WanError | None
    _done = Signal(str, object, object)

    def __init__(self) -> None:
        super().__init__()
        self._done.connect(self.copied)  # queued: the pool thread emits, the GUI thread sends

    def start(self, job_id: str, request: dict[str, Any], folder: Path) -> None:
        QThreadPool.globalInstance().start(lambda: self._copy(job_id, request, folder))

    def _copy(self, job_id: str, request: dict[str, Any], folder: Path) -> None:
        from wan_desktop.errors import WanError
        from wan_desktop.request import GenerationRequest

        try:
            done = copy_inputs(GenerationRequest.from_dict(request), folder).to_dict()
        except WanError as e:
            self._done.emit(job_id, None, e)
            return
        except Exception as e:  # never lost silently: the job fails with the reason
            from wan_desktop.errors import ConfigError

            self._done.emit(job_id, None, ConfigError(f"cannot copy the job's inputs: {e}"))
            return
        self._done.emit(job_id, done, None)
