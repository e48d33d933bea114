"""The form's long-video settings (issue 17 §5), as view-model data: what the "Long video" panel
edits, how many windows the form's duration makes, the progress line across windows, and the
request fields a job gets from them (the core's long_video.py / diffusion_forcing.py run them).

Nothing here holds a widget or imports torch; the core modules are imported lazily (they import
no torch at import time either)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wan_desktop.request import GenerationRequest, ResolvedRequest
    from wan_desktop.variants import ForcingDefaults, Variant

# the request fields of long videos a refused job can point at (ConfigError.field)
LONG_FIELDS = (
    "extend",
    "window_frames",
    "window_overlap",
    "color_match",
    "base_frames",
    "overlap_history",
    "ar_step",
    "causal_block_size",
    "addnoise_condition",
    "fps",
)
# SkyReels-V2's asynchronous recipe (its README: --ar_step 5 --causal_block_size 5)
ASYNC_AR_STEP = 5
ASYNC_BLOCK = 5
DF_FIELDS = ("base_frames", "overlap_history", "ar_step", "causal_block_size", "addnoise_condition")


@dataclass(frozen=True, kw_only=True)
class LongVideo:
    """The long-video part of the form. The Diffusion Forcing values are None for "the model's
    recommended one" (a model switch puts them back to None)."""

    per_window_prompts: bool = False  # the prompt box's lines are the windows' prompts
    color_match: bool = True  # continuation through pixels: match the first window's colours
    extend: str = ""  # a video to continue ("Continue this video")
    # other models' sliding windows; None: the model's window (81 frames, TI2V 121), overlap 2
    window_frames: int | None = None
    window_overlap: int | None = None  # latent frames carried over
    base_frames: int | None = None
    overlap_history: int | None = None
    ar_step: int | None = None
    causal_block_size: int | None = None
    addnoise_condition: float | None = None


def variant_of(name: str) -> Variant | None:
    """The variant named by a picker entry (SkyReels-V2 ones included), None when unknown."""
    from wan_desktop.errors import ConfigError
    from wan_desktop.variants import get_variant

    if not name:
        return None
    try:
        return get_variant(name)
    except ConfigError:
        return None


def forcing_of(name: str) -> ForcingDefaults | None:
    """A SkyReels-V2 Diffusion Forcing model's recommended settings (None for other models)."""
    v = variant_of(name)
    return v.forcing if v is not None else None


def shown(lv: LongVideo, name: str) -> LongVideo:
    """``lv`` with every Diffusion Forcing value decided (the model's where None)."""
    f = forcing_of(name)
    if f is None:
        return lv
    return replace(lv, **{n: getattr(lv, n) if getattr(lv, n) is not None else getattr(f, n)
                          for n in DF_FIELDS})  # fmt: skip


def for_new_model(lv: LongVideo) -> LongVideo:
    """A model switch: the windows and DF settings go back to the new model's own (None)."""
    return LongVideo(
        per_window_prompts=lv.per_window_prompts, color_match=lv.color_match, extend=lv.extend
    )


def prompt_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def with_long_video(
    request: GenerationRequest, lv: LongVideo, variant_name: str, *, fps: int
) -> GenerationRequest:
    """The form's request with its long-video fields: the video to continue (no input image then:
    its last frames condition; a DF model continues as t2v), the colour match, a DF model's
    settings and fps, and the prompt as the windows get it: with "one prompt per line" its lines
    (long_video.split_prompts reads them back, the last repeats; one window takes the first),
    otherwise the whole text for every window (its lines joined: whitespace is collapsed anyway)."""
    v = variant_of(variant_name)
    df = v is not None and v.forcing is not None
    changes: dict[str, Any] = {"color_match": lv.color_match}
    if lv.extend:
        changes |= {"extend": lv.extend, "image": None}
        if df:
            changes["task"] = "t2v"
    if df:
        changes |= {n: getattr(lv, n) for n in DF_FIELDS} | {"fps": fps}
    else:
        changes |= {"window_frames": lv.window_frames, "window_overlap": lv.window_overlap}
    request = replace(request, **changes)
    lines = prompt_lines(request.prompt)
    if len(lines) > 1:
        count = window_count(request, v) or 1
        if not lv.per_window_prompts or df:  # DF models take one prompt
            text = " ".join(lines) if count > 1 else request.prompt
        else:
            text = "\n".join(lines) if count > 1 else lines[0]
        request = replace(request, prompt=text)
    return request


def windows_for(
    variant_name: str,
    *,
    task: str,
    frames: int,
    fps: int,
    lv: LongVideo,
    image: str = "",
    last_image: str = "",
) -> int | None:
    """The windows of the form's values (what "Add to queue" would run), None when refused."""
    from wan_desktop.request import GenerationRequest

    v = variant_of(variant_name)
    if v is None:
        return None
    plain = GenerationRequest(
        prompt="-",
        task=task,
        frames=frames,
        image=(image or None) if task in ("i2v", "flf2v", "ti2v") else None,
        last_image=(last_image or None) if task == "flf2v" else None,
    )
    return window_count(with_long_video(plain, lv, variant_name, fps=fps), v)


def resolved(request: GenerationRequest, variant: Variant) -> ResolvedRequest | None:
    """``request`` resolved for its window geometry only: a missing input image does not matter
    (a stand-in is named; nothing is read). None when a value is refused."""
    from wan_desktop.errors import ConfigError

    task = request.task
    changes: dict[str, Any] = {}
    if task in ("i2v", "flf2v", "ti2v") and not request.image and not request.extend:
        changes["image"] = "first.png"
    if task == "flf2v" and not request.last_image:
        changes["last_image"] = "last.png"
    try:
        return replace(request, **changes).resolve(variant)
    except ConfigError:
        return None


def window_count(request: GenerationRequest, variant: Variant | None) -> int | None:
    """How many windows the request runs (None: a value is refused, or no model)."""
    if variant is None:
        return None
    r = resolved(request, variant)
    if r is None:
        return None
    from wan_desktop import diffusion_forcing, long_video

    tf = variant.vae.temporal_factor
    if variant.forcing is not None:
        return diffusion_forcing.plan(r, temporal=tf).count
    if not long_video.is_long(r):
        return 1
    from wan_desktop.errors import ConfigError

    try:
        return long_video.plan_windows(r, temporal=tf).count
    except ConfigError:
        return None


def duration_text(frames: int, fps: int, windows: int | None) -> str:
    """ "12.0 s · 3 windows" beside the duration ("—" windows when the settings are refused)."""
    seconds = (frames - 1) / fps if fps else 0.0
    if windows is None:
        return f"{seconds:.1f} s · — windows"
    return f"{seconds:.1f} s · {windows} window{'s' if windows != 1 else ''}"


def prompt_note(prompt: str, per_window: bool, windows: int | None) -> str:
    """What the panel says about the windows' prompts ("" when there is nothing to say)."""
    n = len(prompt_lines(prompt))
    if not per_window or n == 0 or windows is None:
        return ""
    if windows == 1:
        return "1 window: the first line is its prompt"
    if n < windows:
        return f"{n} line(s) for {windows} windows: the last line repeats"
    if n > windows:
        return f"{n} lines for {windows} windows: lines after the {windows}th are not used"
    return f"{n} lines, one per window"


def continues_note(request: dict[str, Any]) -> str:
    """ " · continues clip.mp4" for the queue / history line of a job that continues a video."""
    extend = request.get("extend")
    return f" · continues {Path(str(extend)).name}" if extend else ""


def progress_text(window: int, windows: int, step: int, total: int) -> str:
    """ "window 3/8 · step 12/30" (one window: "step 12/30")."""
    steps = f"step {step}/{total}"
    return f"window {window}/{windows} · {steps}" if windows > 1 else steps


def fps_of(request: dict[str, Any], variant_name: str, current: int) -> int:
    """The frame rate of a saved request: its own (a DF model's), else its model's."""
    fps = request.get("fps")
    if isinstance(fps, int) and not isinstance(fps, bool) and fps > 0:
        return fps
    v = variant_of(variant_name)
    return v.defaults.fps if v is not None else current


class WindowsEta:
    """The whole video's ETA while one window denoises: its own steps left (the pipeline's ETA
    of that window), every later window's steps at this window's pace per step, and the VAE work
    still to come: this window's decode, then each later window's encode (text and conditioning
    frames) and decode. Those take the mean of the encodes and decodes timed so far (:meth:`stage`
    gets every stage's start; an encode ends when its window's denoise starts, a decode when the
    next window's encode does), so before any window is done, the first window's encode alone.
    Only stages inside the windows count: a SkyReels-V2 DF run encodes once before its windows and
    decodes once after them. One window: the pipeline's ETA as it is."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.pace: dict[str, float] = {}  # job id -> seconds per step, last measured
        self.encodes: dict[str, list[float]] = {}  # job id -> seconds of each window's encode
        self.decodes: dict[str, list[float]] = {}  # job id -> seconds of each window's decode
        self._began: dict[str, tuple[str, float]] = {}  # job id -> the timed stage going on, since

    def stage(self, job_id: str, stage: str, *, window: int, windows: int) -> None:
        """A stage of ``job_id`` starts now ("start": a job starts, the last one's times go)."""
        now = self.clock()
        if stage == "start":
            for times in (self.pace, self.encodes, self.decodes, self._began):
                times.clear()
        began = self._began.pop(job_id, None)
        if began is not None:
            timed = self.encodes if began[0] == "encode" else self.decodes
            timed.setdefault(job_id, []).append(now - began[1])
        if windows > 1 and stage in ("encode", "decode"):
            self._began[job_id] = (stage, now)

    def __call__(
        self, job_id: str, *, window: int, windows: int, step: int, total: int, eta: float
    ) -> float:
        if step < total and eta > 0:
            self.pace[job_id] = eta / (total - step)
        later = max(0, windows - window)
        eta += later * total * self.pace.get(job_id, 0.0)
        if windows <= 1:
            return eta
        encode = _mean(self.encodes.get(job_id))
        decode = _mean(self.decodes.get(job_id))
        return eta + decode + later * (encode + decode)


def _mean(values: list[float] | None) -> float:
    return sum(values) / len(values) if values else 0.0


def remembered_long(lv: LongVideo) -> dict[str, Any]:
    """What the per-model form memory keeps (JSON): all but the video being continued."""
    out = asdict(lv)
    del out["extend"]
    return out


def recalled_long(data: dict[str, Any]) -> LongVideo:
    """The values :func:`remembered_long` saved; one of the wrong type (a hand-edited settings
    file) is left out (the model's own value then)."""
    from .paths import field_problems

    names = {f.name for f in fields(LongVideo)} - {"extend"}
    plain = {k: v for k, v in data.items() if k in names}
    bad = field_problems(LongVideo, plain)
    return LongVideo(**{k: v for k, v in plain.items() if k not in bad})


def from_request(request: dict[str, Any]) -> LongVideo:
    """The panel's values back from a saved (resolved) request ("Reuse settings")."""

    def num(name: str, kind: type) -> Any:
        value = request.get(name)
        return (
            kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        )

    prompt = str(request.get("prompt") or "")
    return LongVideo(
        per_window_prompts=len(prompt_lines(prompt)) > 1,
        color_match=bool(request.get("color_match", True)),
        window_frames=num("window_frames", int),
        window_overlap=num("window_overlap", int),
        base_frames=num("base_frames", int),
        overlap_history=num("overlap_history", int),
        ar_step=num("ar_step", int),
        causal_block_size=num("causal_block_size", int),
        addnoise_condition=num("addnoise_condition", float),
    )
