"""View-models: the state widgets bind to. Widgets push edits in with ``update()`` and redraw on
the change signals; the queue model is the only thing that talks to the GPU service.

Nothing here holds a widget or imports torch.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from wan_desktop.variants import NEGATIVE_PROMPT, VARIANTS, get_variant

from .library import ModelEntry
from .long_video_form import (
    LONG_FIELDS,
    LongVideo,
    for_new_model,
    fps_of,
    from_request,
    recalled_long,
    remembered_long,
    with_long_video,
)
from .media_inputs import (
    MEDIA_FIELDS,
    InputCopier,
    MediaInputs,
    app_words,
    has_inputs,
    job_inputs_folder,
    media_from_request,
    offered,
    recalled_media,
    remembered_media,
    remove_saved_inputs,
    request_fields,
)
from .settings import AppSettings
from .store import HistoryEntry, Job, JobStore, new_job_id

if TYPE_CHECKING:
    from wan_desktop.options import RunOptions
    from wan_desktop.request import GenerationRequest

    from .service import GpuService, JobResult, UserError

log = logging.getLogger(__name__)

TASKS = ("t2v", "i2v", "flf2v", "ti2v")
EXPERTS = ("high", "low")  # wan_desktop.lora.EXPERTS, without importing torch-side code here
# the form values a sampling preset sets: editing one of them makes the preset "Custom"
PRESET_FIELDS = ("steps", "guidance", "shift", "sampler")
# the form values remembered per model (Wan2GP keeps one settings file per model type); the run
# options (backend, precision, memory plan) are the app's own settings, not the model's
REMEMBERED = (
    "prompt",
    "negative_prompt",
    "task",
    "image",
    "last_image",
    "width",
    "height",
    "frames",
    "steps",
    "guidance",
    "shift",
    "sampler",
    "seed",
    "random_seed",
    "preset",
    "tiny_vae",
    "parallel",  # the GPUs a job runs on (gpu_selector.py)
)
MEMORY_LIMIT = 50  # models remembered; the least recently used is forgotten first


def frames_for_seconds(seconds: float, fps: int, temporal: int = 4) -> int:
    """The nearest valid frame count (temporal·n + 1) for a duration."""
    n = max(0, round(seconds * fps / temporal))
    return n * temporal + 1


def seconds_for_frames(frames: int, fps: int) -> float:
    return (frames - 1) / fps


def presets(entry: ModelEntry | None) -> list[tuple[str, int, int]]:
    """(label, width, height): the variant's landscape and portrait sizes, plus a square one of
    the same pixel count rounded to the variant's size multiple."""
    if entry is None or not entry.sizes:
        return []
    out = []
    m = entry.spatial_multiple
    seen = set()
    for w, h in entry.sizes:
        tier = f"{min(w, h)}p"
        shape = "landscape" if w > h else "portrait" if h > w else "square"
        out.append((f"{tier} {shape} {w}×{h}", w, h))
        seen.add(tier)
        if w > h:
            side = round((w * h) ** 0.5 / m) * m
            out.append((f"{tier} square {side}×{side}", side, side))
    # stable order: per tier landscape, portrait, square
    order = {"landscape": 0, "portrait": 1, "square": 2}
    out.sort(key=lambda t: (-int(t[0].split("p")[0]), order[t[0].split()[1]]))
    return out


@dataclass(frozen=True, kw_only=True)
class LoraChoice:
    """One LoRA in the form: a file, a strength, and the Wan2.2 A14B expert it goes to ("high":
    the high-noise expert, or the only DiT of other models; "low": the low-noise expert)."""

    path: str
    strength: float = 1.0
    expert: str = "high"


def lora_options(loras: tuple[LoraChoice, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """RunOptions.loras / loras_low: the CLI's "FILE:STRENGTH" strings, split by expert."""

    def text(c: LoraChoice) -> str:
        return f"{c.path}:{float(c.strength)!r}"

    return (
        tuple(text(c) for c in loras if c.expert != "low"),
        tuple(text(c) for c in loras if c.expert == "low"),
    )


def loras_from_options(options: dict[str, Any]) -> tuple[LoraChoice, ...]:
    """The form's LoRA list back from saved RunOptions (jobs saved before LoRAs existed: none)."""
    from wan_desktop.lora import LoraSpec

    out: list[LoraChoice] = []
    for key, expert in (("loras", "high"), ("loras_low", "low")):
        for text in options.get(key) or ():
            spec = LoraSpec.parse(str(text), expert=expert)
            out.append(LoraChoice(path=spec.path, strength=spec.strength, expert=expert))
    return tuple(out)


# the form fields a refused job can point at (ConfigError.field, plus the form's own checks)
FIELDS = (
    "model",
    "prompt",
    "task",
    "image",
    "last_image",
    "size",
    "frames",
    "steps",
    "guidance",
    "shift",
    "seed",
    "review",  # review before decode: single-window videos only
    *MEDIA_FIELDS,  # the video inputs (media_inputs.py)
    *LONG_FIELDS,  # long videos (long_video_form.py)
)


def error_field(error: Exception, request: GenerationRequest | None = None) -> str | None:
    """The form field ``error`` is about (one of FIELDS), or None: the ConfigError's own
    ``field``, else an input image named in the message (an unreadable or missing file)."""
    field = getattr(error, "field", None)
    if field in FIELDS:
        return str(field)
    message = str(getattr(error, "message", error))
    if request is not None:
        for name, path in (("last_image", request.last_image), ("image", request.image)):
            if path and str(path) in message:
                return name
    return None


def check_job(
    request: GenerationRequest, options: RunOptions, out: Path, *, review: bool = False
) -> tuple[str, ...]:
    """Every check the run owner does before loading weights (``run.prepare``: the model files,
    the output path, each request value against the variant, the input images, the LoRAs against
    the checkpoint's headers, the preset, the tiny-VAE file), now rather than when the job's turn
    comes. No memory plans: they need the GPU's free memory at run time, read on the GPU thread.
    Raises the typed error; returns the notes worth showing."""
    from wan_desktop.engines.factory import EngineFactory

    from wan_desktop import run

    prepared = run.prepare(
        request,
        options,
        out=out,
        factory=EngineFactory(),
        planning=run.Planning.NEVER,
        review=review,
    )
    return prepared.notes


def preset_warning(model: str, preset: str, loras: tuple[LoraChoice, ...]) -> str | None:
    """Why a few-step preset will likely give a blurry video (a base model, no distill LoRA)."""
    from wan_desktop.presets import few_step_warning

    return few_step_warning(preset, model, has_loras=bool(loras))


@dataclass(frozen=True, kw_only=True)
class FormState:
    model: str = ""
    prompt: str = ""
    negative_prompt: str = NEGATIVE_PROMPT  # Wan's; a model's own default replaces it
    task: str = "t2v"
    image: str = ""
    last_image: str = ""
    width: int = 832
    height: int = 480
    frames: int = 81
    fps: int = 16
    steps: int = 50
    guidance: float = 5.0
    shift: float = 5.0
    sampler: str = "unipc"
    seed: int = 0
    random_seed: bool = True
    backend: str = "torch"
    engines: str = ""  # the engine folder of an onnxruntime/tensorrt backend
    precision: str = "bf16"
    vram_plan: str = "auto"
    parallel: int = 1  # processes, one per GPU (the GPUs selector, gpu_selector.py)
    parallel_mode: str = "auto"  # wan_desktop.options.ParallelMode value
    preset: str = ""  # a wan_desktop.presets.PRESETS name, "" for none
    loras: tuple[LoraChoice, ...] = ()
    tiny_vae: bool = False  # decode the final video with the Settings' tiny VAE (TAEHV)
    review: bool = False  # wait after denoising for Decode / Discard ("Review before decode")
    media: MediaInputs = field(default_factory=MediaInputs)  # VACE / V2V (media_inputs.py)
    long_video: LongVideo = field(default_factory=LongVideo)  # windows, DF (long_video_form.py)


def remembered(state: FormState) -> dict[str, Any]:
    """What the settings keep for ``state.model`` (JSON): the REMEMBERED values and the LoRAs."""
    out: dict[str, Any] = {k: getattr(state, k) for k in REMEMBERED}
    out["loras"] = [
        {"path": c.path, "strength": c.strength, "expert": c.expert} for c in state.loras
    ]
    out["long_video"] = remembered_long(state.long_video)
    out["media"] = remembered_media(state.media)  # VACE / V2V inputs (media_inputs.py)
    return out


def recalled(memory: Any) -> dict[str, Any]:
    """FormState changes from what :func:`remembered` saved. A value of the wrong type or an
    unknown preset (a hand-edited or older settings file) is left out, never trusted."""
    from wan_desktop.presets import PRESETS

    from .paths import field_problems

    if not isinstance(memory, dict):
        return {}
    plain = {k: v for k, v in memory.items() if k in REMEMBERED}
    bad = field_problems(FormState, plain)
    out = {k: v for k, v in plain.items() if k not in bad}
    if out.get("preset", "") not in ("", *PRESETS):
        del out["preset"]
    loras = memory.get("loras")
    if isinstance(loras, list) and all(
        isinstance(c, dict)
        and isinstance(c.get("path"), str)
        and isinstance(c.get("strength"), (int, float))
        and not isinstance(c.get("strength"), bool)
        and c.get("expert") in EXPERTS
        for c in loras
    ):
        out["loras"] = tuple(
            LoraChoice(path=c["path"], strength=float(c["strength"]), expert=c["expert"])
            for c in loras
        )
    if isinstance(memory.get("long_video"), dict):  # windows and DF values (long_video_form.py)
        out["long_video"] = recalled_long(memory["long_video"])
    if isinstance(memory.get("media"), dict):
        out["media"] = recalled_media(memory["media"])
    return out


class FormModel(QObject):
    """The settings of the next job."""

    changed = Signal(object)  # FormState
    # a refused job: the field at fault (one of FIELDS, "" for none) and the message;
    # ("", "") when a job was accepted (the marks go)
    invalid = Signal(str, str)

    def __init__(
        self,
        state: FormState | None = None,
        *,
        memory: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.state = state or FormState()
        self.entry: ModelEntry | None = None
        self.notes: tuple[str, ...] = ()  # what the last accepted job's checks noted
        # model path -> its remembered values (remembered()), the most recently used last
        self.memory: dict[str, dict[str, Any]] = dict(memory or {})
        # the paths the model picker lists (None: not scanned yet, nothing to compare with)
        self.models: tuple[str, ...] | None = None

    def update(self, **changes: Any) -> None:
        """Edit the state. Editing a value a sampling preset set (steps, CFG, shift, sampler)
        makes the preset "Custom", unless the same change names the preset itself."""
        new = replace(self.state, **changes)
        if (
            new.preset
            and "preset" not in changes
            and any(getattr(new, k) != getattr(self.state, k) for k in PRESET_FIELDS)
        ):
            new = replace(new, preset="")
        if new != self.state:
            self.state = new
            self.changed.emit(new)

    def set_models(self, paths: Sequence[str]) -> None:
        """The models the picker lists (a rescan): a form model not among them is missing."""
        self.models = tuple(paths)

    @property
    def missing_model(self) -> str:
        """The form's model when the picker does not list it (a folder removed from the
        settings, a reused job of a model gone): "" when it is listed or nothing is scanned yet."""
        m = self.state.model
        return m if m and self.models is not None and m not in self.models else ""

    def remember(self) -> None:
        """Keep the form's values for its model (MEMORY_LIMIT models, least recent forgotten)."""
        s = self.state
        if not s.model or self.missing_model:
            return
        self.memory.pop(s.model, None)
        self.memory[s.model] = remembered(s)
        while len(self.memory) > MEMORY_LIMIT:
            self.memory.pop(next(iter(self.memory)))

    def set_model(self, entry: ModelEntry | None) -> None:
        """Pick a model: the values last used with it come back (remembered per model, as
        Wan2GP does); a model never used gets its variant's defaults for size, frames, sampling
        and the task. The prompts being written are kept; empty ones (at start) get the model's
        remembered prompts. The model being left is remembered first."""
        if self.state.model and (entry is None or entry.path != self.state.model):
            self.remember()
        if self.entry is None and self.state.model and entry is not None and entry.variant:
            # the form's model was not found (a reused job's): this one is picked in its place,
            # or it is found again (its folder added back); the reused values stay (the task one
            # this model does), and "model not found" is answered
            self.entry = entry
            task = self.state.task if self.state.task in offered(entry) else entry.tasks[0]
            self.update(model=entry.path, task=task, fps=get_variant(entry.variant).defaults.fps)
            self.invalid.emit("", "")
            return
        self._set_model(entry)

    def _set_model(self, entry: ModelEntry | None) -> None:
        self.entry = entry
        if entry is None or not entry.variant:
            self.update(model=entry.path if entry else "")
            return
        d = get_variant(entry.variant).defaults  # SkyReels-V2 ones too
        defaults_neg = {v.defaults.negative_prompt for v in VARIANTS.values()}
        neg = self.state.negative_prompt
        if not neg or neg in defaults_neg:  # keep a negative prompt the user wrote
            neg = d.negative_prompt
        task = self.state.task if self.state.task in offered(entry) else entry.tasks[0]
        loras, preset = self.state.loras, self.state.preset
        if get_variant(entry.variant).experts != 2:  # one DiT: every LoRA goes to it
            loras = tuple(replace(c, expert="high") for c in loras)
        self.update(
            model=entry.path,
            task=task,
            width=d.size[0],
            height=d.size[1],
            frames=d.frames,
            fps=d.fps,
            steps=d.steps,
            guidance=d.guidance,
            shift=d.shift_for(*d.size),
            sampler=d.sampler,
            negative_prompt=neg,
            loras=loras,
            preset="",
            long_video=for_new_model(self.state.long_video),  # the model's windows, DF values
        )
        if preset:  # a chosen preset stays chosen: its values over the new model's defaults
            self.apply_preset(preset)
        memory = recalled(self.memory.get(entry.path))
        if not memory:
            return
        if self.state.prompt.strip():  # the prompt being written stays
            memory.pop("prompt", None)
            memory.pop("negative_prompt", None)
        if memory.get("task", entry.tasks[0]) not in offered(entry):
            memory.pop("task")
        if "loras" in memory and get_variant(entry.variant).experts != 2:
            memory["loras"] = tuple(replace(c, expert="high") for c in memory["loras"])
        memory.setdefault("preset", "")  # named: the recalled values are the preset's own
        self.update(**memory)

    def set_size(self, width: int, height: int) -> None:
        """A size from the size menu: the shift follows the variant's rule for it, unless the
        sampling preset fixes the shift (the preset stays chosen either way)."""
        from wan_desktop.presets import PRESETS

        s, e = self.state, self.entry
        p = PRESETS.get(s.preset)
        shift = s.shift
        if (p is None or p.shift is None) and e is not None and e.variant in VARIANTS:
            shift = VARIANTS[e.variant].defaults.shift_for(width, height)
        self.update(width=width, height=height, shift=shift, preset=s.preset)

    @property
    def experts(self) -> int:
        """Diffusion models of the selected variant (2: Wan2.2 A14B, LoRAs pick an expert)."""
        e = self.entry
        return VARIANTS[e.variant].experts if e is not None and e.variant in VARIANTS else 1

    def apply_preset(self, name: str) -> None:
        """Pick a sampling preset: its steps / guidance / shift / sampler go into the form (the
        user may still change them; the job records the preset, which builds the distilled σ grid
        at run time). "Quality" is the variant's own values; "" keeps the values, no preset."""
        if not name:
            self.update(preset="")
            return
        from wan_desktop.presets import get_preset

        p = get_preset(name)
        s = self.state
        e = self.entry
        d = VARIANTS[e.variant].defaults if e is not None and e.variant in VARIANTS else None
        self.update(
            preset=name,
            steps=p.steps if p.steps is not None else (d.steps if d else s.steps),
            guidance=p.guidance if p.guidance is not None else (d.guidance if d else s.guidance),
            shift=p.shift
            if p.shift is not None
            else (d.shift_for(s.width, s.height) if d else s.shift),
            sampler=p.sampler if p.sampler is not None else (d.sampler if d else s.sampler),
        )

    def add_lora(self, path: str, strength: float = 1.0) -> None:
        self.update(loras=(*self.state.loras, LoraChoice(path=path, strength=strength)))

    def set_lora(self, index: int, **changes: Any) -> None:
        """Change one LoRA's ``strength`` or ``expert``."""
        loras = list(self.state.loras)
        if 0 <= index < len(loras):
            if changes.get("expert", "high") not in EXPERTS:
                raise ValueError(f"expert must be high or low, got {changes['expert']!r}")
            loras[index] = replace(loras[index], **changes)
            self.update(loras=tuple(loras))

    def remove_lora(self, index: int) -> None:
        self.update(loras=tuple(c for i, c in enumerate(self.state.loras) if i != index))

    def reuse(
        self,
        request: dict[str, Any],
        options: dict[str, Any],
        entries: Sequence[ModelEntry],
        *,
        review: bool = False,
    ) -> None:
        """ "Reuse settings" with the model that made the entry, so the form shows exactly what
        the next job runs. A model the picker no longer lists stays named (nothing else runs in
        its place) and is flagged: ``invalid("model", "model not found: <path>")``, and
        make_job refuses until a model is picked."""
        path = str(options.get("model") or "")
        if path and path != self.state.model:
            self.remember()
            self.entry = next((e for e in entries if e.path == path), None)
        self.load_settings(request, options, review=review)
        if self.missing_model:
            self.invalid.emit("model", f"model not found: {self.missing_model}")

    def load_settings(
        self, request: dict[str, Any], options: dict[str, Any], *, review: bool = False
    ) -> None:
        """ "Reuse settings" from a history entry: the same request, fixed seed, and whether it
        was reviewed before decode."""
        s = self.state
        self.update(
            model=options.get("model") or s.model,
            prompt=request.get("prompt", ""),
            negative_prompt=request.get("negative_prompt") or "",
            task=request.get("task") or s.task,
            image=request.get("image") or "",
            last_image=request.get("last_image") or "",
            width=request.get("width") or s.width,
            height=request.get("height") or s.height,
            frames=request.get("frames") or s.frames,
            steps=request.get("steps") or s.steps,
            guidance=s.guidance if request.get("guidance") is None else request["guidance"],
            shift=request.get("shift") or s.shift,
            sampler=request.get("sampler") or s.sampler,
            seed=int(request.get("seed", 0)),
            random_seed=False,
            backend=options.get("backend") or s.backend,
            engines=options.get("engines") or "",
            precision=options.get("precision") or s.precision,
            vram_plan=_plan_name(options.get("vram_budget_gb")),
            parallel=int(options.get("parallel") or 1),
            parallel_mode=options.get("parallel_mode") or "auto",
            preset=options.get("preset") or "",
            loras=loras_from_options(options),
            tiny_vae=bool(options.get("tiny_vae")),
            review=review,
            media=media_from_request(request, s.media),
            long_video=from_request(request),
            fps=fps_of(request, self.entry.variant if self.entry else "", s.fps),
        )

    def make_job(self, settings: AppSettings) -> Job:
        """A Job from the current state, checked as the run will check it (``check_job``): a
        refused one raises the typed error and ``invalid`` names the field at fault. A random seed
        is drawn now (saved, so it reproduces)."""
        from wan_desktop.errors import WanError

        try:
            job = self._make_job(settings)
        except WanError as e:
            e.message, e.remedy = app_words(e.message), app_words(e.remedy)  # no CLI flags
            field = error_field(e, self._request_for_marks())
            self.invalid.emit(field or "", e.one_line())
            raise
        self.invalid.emit("", "")
        return job

    def _request_for_marks(self) -> GenerationRequest:
        from wan_desktop.request import GenerationRequest

        s = self.state
        return GenerationRequest(
            prompt=s.prompt, image=s.image or None, last_image=s.last_image or None
        )

    def _make_job(self, settings: AppSettings) -> Job:
        from wan_desktop.errors import ConfigError
        from wan_desktop.options import RunOptions
        from wan_desktop.request import GenerationRequest

        s = self.state
        if not s.model:
            raise ConfigError(
                "no model selected",
                remedy="Pick a model, or add a folder of models.",
                field="model",
            )
        if self.missing_model:
            raise ConfigError(
                f"model not found: {s.model}",
                remedy="Pick a model in the list, or add its folder with Add folder….",
                field="model",
            )
        if not s.prompt.strip():
            raise ConfigError(
                "the prompt is empty", remedy="Describe the video you want.", field="prompt"
            )
        seed = secrets.randbelow(2**31) if s.random_seed else s.seed
        if s.random_seed:
            self.update(seed=seed)  # the field shows the seed this job got
        needs_image = s.task in ("i2v", "flf2v", "ti2v")
        request = GenerationRequest(
            prompt=s.prompt,
            negative_prompt=s.negative_prompt or None,
            task=s.task,
            image=(s.image or None) if needs_image else None,
            last_image=(s.last_image or None) if s.task == "flf2v" else None,
            width=s.width,
            height=s.height,
            frames=s.frames,
            steps=s.steps,
            guidance=s.guidance,
            shift=s.shift,
            sampler=s.sampler,
            seed=seed,
            **request_fields(s.task, s.media),
        )
        variant = self.entry.variant if self.entry is not None else ""
        request = with_long_video(request, s.long_video, variant, fps=s.fps)
        if s.tiny_vae and not settings.preview_decoder:
            raise ConfigError(
                "fast final decode needs a tiny VAE file",
                remedy="Set the Preview decoder (taew2_1 / taew2_2) in Settings, "
                "or untick the fast decode.",
            )
        loras, loras_low = lora_options(s.loras)
        e = self.entry
        options = RunOptions(
            model=s.model,
            **(e.parts if e is not None and e.path == s.model else {}),  # VAE, umT5, CLIP files
            device=settings.device,
            dtype=settings.dtype,
            backend=s.backend,
            engines=(s.engines or str(settings.engines)) if s.backend != "torch" else None,
            precision=s.precision,
            vram_budget_gb=None if s.vram_plan == "auto" else float(s.vram_plan),
            parallel=s.parallel,
            parallel_mode=s.parallel_mode,
            loras=loras,
            loras_low=loras_low,
            preset=s.preset or None,
            tiny_vae=settings.preview_decoder if s.tiny_vae else None,
        )
        job_id = new_job_id()
        out = settings.outputs / f"{time.strftime('%Y%m%d-%H%M%S')}-{job_id}.mp4"
        self.notes = check_job(request, options, out, review=s.review)  # refused now, not later
        # the job's own copies of its input files (Reuse works after the originals move) are
        # made on Qt's thread pool once the queue takes it (QueueModel.add: "copying inputs…")
        data = request.to_dict()
        return Job(
            id=job_id,
            request=data,
            options=options.to_dict(),
            out=str(out),
            review=s.review,
            state="copying" if has_inputs(data) else "queued",
        )


def failure_text(error: UserError) -> str:
    """A failed job's history line detail: what happened and what to do next."""
    text = f"{error.title}: {error.message}"
    return f"{text}\nWhat to do: {error.remedy}" if error.remedy else text


def _plan_name(budget: Any) -> str:
    if budget is None:
        return "auto"
    return str(int(budget)) if float(budget).is_integer() else "auto"


def queue_summary(*, running: bool, waiting: int, paused: bool) -> str:
    """The queue's state in a few words, for the queue header and the status bar ("" for an
    empty queue that is not paused): "⏸ paused · ▶ running · 2 waiting"."""
    parts = ["⏸ paused"] if paused else []
    if running:
        parts.append("▶ running")
    if waiting:
        parts.append(f"{waiting} waiting")
    return " · ".join(parts)


def resumed_text(n: int) -> str:
    """What the status bar says when a start finds jobs left from the last session."""
    return f"resumed {n} queued job{'s' if n != 1 else ''}" if n else ""


@dataclass(frozen=True)
class Progress:
    job_id: str
    stage: str
    step: int = 0
    total: int = 0
    eta: float = 0.0
    window: int = 1  # a long video's window (1-based) of ``windows``
    windows: int = 1


class QueueModel(QObject):
    """The job queue and history, persisted; runs one job at a time on the GPU service."""

    queue_changed = Signal()
    history_changed = Signal()
    progress = Signal(object)  # Progress
    preview = Signal(str, object)  # job id, PreviewFrames
    finished = Signal(str, object)  # job id, JobResult
    failed = Signal(str, object)  # job id, UserError
    cancelled = Signal(str)
    review = Signal(str, object)  # job id, PreviewFrames: it waits for decode() or discard()
    discarded = Signal(str)  # job id: discarded at review, nothing written
    idle = Signal()  # nothing running and nothing queued

    def __init__(self, service: GpuService, store: JobStore) -> None:
        super().__init__()
        self.service = service
        self.store = store
        self.jobs: list[Job] = store.load_queue()
        self.history: list[HistoryEntry] = store.load_history()
        self.running: str | None = None
        self.paused = False
        self.closing = False  # the app is closing: an interrupted job stays queued
        self.resumed = len(self.jobs)  # jobs left by the last session: they run again
        service.job_started.connect(self._on_started)
        service.stage_changed.connect(self._on_stage)
        service.step_done.connect(self._on_step)
        self.windows: dict[str, tuple[int, int]] = {}  # running job -> (window, windows)
        service.window_changed.connect(self._on_window)
        service.preview_ready.connect(self.preview)
        service.job_finished.connect(self._on_finished)
        service.job_failed.connect(self._on_failed)
        service.job_cancelled.connect(self._on_cancelled)
        self._reviewing: str | None = None
        service.review_ready.connect(self._on_review)
        self.copier = InputCopier()  # a job's input files, copied off the GUI thread
        self.copier.copied.connect(self._on_copied)
        service.job_discarded.connect(self._on_discarded)
        if any(j.recovered for j in self.jobs):
            log.info(
                "%d job(s) were running when the app stopped: back in the queue",
                sum(j.recovered for j in self.jobs),
            )
        self._save_queue()  # the recovered states are written back at once

    # ------------------------------------------------------------------ editing

    def add(self, job: Job) -> None:
        """Queue a job; one in state "copying" runs once its input files are copied."""
        self.jobs.append(job)
        if job.state == "copying":
            folder = job_inputs_folder(Path(job.out).parent, job.id)
            self.copier.start(job.id, job.request, folder)
        self._save_queue()
        self.queue_changed.emit()
        self.pump()

    def job(self, job_id: str) -> Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def move(self, job_id: str, delta: int) -> None:
        """Move a queued job up (delta < 0) or down; the running job stays first."""
        i = next((k for k, j in enumerate(self.jobs) if j.id == job_id), None)
        if i is None or self.jobs[i].state == "running":
            return
        first = 1 if self.running and self.jobs and self.jobs[0].id == self.running else 0
        k = max(first, min(len(self.jobs) - 1, i + delta))
        if k != i:
            self.jobs.insert(k, self.jobs.pop(i))
            self._save_queue()
            self.queue_changed.emit()

    def cancel(self, job_id: str) -> None:
        """Cancel one job: the running one stops within one step; a queued one is removed."""
        if job_id == self.running:
            self.service.cancel(job_id)
            return
        job = self.job(job_id)
        if job is not None:
            self.jobs.remove(job)
            self._add_history(
                HistoryEntry(
                    id=job.id,
                    status="cancelled",
                    request=job.request,
                    options=job.options,
                    review=job.review,
                )
            )
            self._save_queue()
            self.queue_changed.emit()

    def cancel_all(self) -> None:
        for j in [j for j in self.jobs if j.id != self.running]:
            self.cancel(j.id)
        if self.running:
            self.service.cancel(self.running)

    @property
    def waiting(self) -> int:
        """Jobs in the queue that are not running."""
        return sum(1 for j in self.jobs if j.id != self.running)

    def summary(self) -> str:
        return queue_summary(
            running=self.running is not None, waiting=self.waiting, paused=self.paused
        )

    def idle_note(self) -> str:
        """What the progress line says while jobs wait on a pause with nothing running (instead
        of the last job's "Done in …"); "" otherwise."""
        if self.running is None and self.paused and self.waiting:
            return f"⏸ Paused · {self.waiting} waiting (Resume to go on)"
        return ""

    def set_paused(self, paused: bool) -> None:
        """A paused queue finishes the running job and starts no other until resumed."""
        if paused != self.paused:
            self.paused = paused
            self.queue_changed.emit()
        if not paused:
            self.pump()

    def shutdown(self, *, cancel_running: bool = False) -> None:
        """App closing: stop the running job. It stays queued (a clean exit, not a crash: the next
        start runs it again, from its first step), or with ``cancel_running`` it goes to the
        history as cancelled. The queue file keeps everything not done."""
        self.paused = True
        self.closing = True
        job = self.job(self.running) if self.running else None
        if self.running:
            self.service.cancel(self.running)
        if job is not None and cancel_running:
            self.jobs.remove(job)
            self.running = None
            self._add_history(
                HistoryEntry(
                    id=job.id,
                    status="cancelled",
                    request=job.request,
                    options=job.options,
                    review=job.review,
                )
            )
        elif job is not None:
            self.jobs[self.jobs.index(job)] = replace(job, state="queued")
        if job is not None:
            self._save_queue()
            self.queue_changed.emit()

    # ------------------------------------------------------------------ running

    def pump(self) -> None:
        """Start the next queued job when nothing runs."""
        if self.running or self.paused:
            return
        nxt = next((j for j in self.jobs if j.state == "queued"), None)
        if nxt is None:
            self.idle.emit()
            return
        running = replace(nxt, state="running")
        self.jobs[self.jobs.index(nxt)] = running
        self.running = running.id
        self._save_queue()  # "running" on disk: a crash now puts it back in the queue
        self.queue_changed.emit()
        self.service.submit(running)

    def _on_started(self, job_id: str) -> None:
        self.progress.emit(Progress(job_id, "start"))

    def _on_stage(self, job_id: str, stage: str) -> None:
        self.progress.emit(Progress(job_id, stage, 0, 0, 0.0, *self.windows.get(job_id, (1, 1))))

    def _on_step(self, job_id: str, step: int, total: int, eta: float) -> None:
        w = self.windows.get(job_id, (1, 1))
        self.progress.emit(Progress(job_id, "denoise", step, total, eta, *w))

    def _on_window(self, job_id: str, window: int, windows: int) -> None:
        self.windows[job_id] = (window, windows)

    def _finish(self, job_id: str, entry: HistoryEntry) -> None:
        self.windows.pop(job_id, None)
        job = self.job(job_id)
        if job is not None:
            self.jobs.remove(job)
            entry = replace(entry, review=job.review)  # Reuse settings restores it
        if self.running == job_id:
            self.running = None
        self._add_history(entry)
        self._save_queue()
        self.queue_changed.emit()

    def _on_finished(self, job_id: str, result: JobResult) -> None:
        job = self.job(job_id)
        options = job.options if job else {}
        self._finish(
            job_id,
            HistoryEntry(
                id=job_id,
                status="done",
                request=result.request,
                options=options,
                out=str(result.out),
                thumbnail=str(result.thumbnail) if result.thumbnail else None,
                seconds=round(result.seconds, 2),
                peak_vram_gb=result.peak_vram_gb,
            ),
        )
        self.finished.emit(job_id, result)
        self.pump()

    def _on_failed(self, job_id: str, error: UserError) -> None:
        job = self.job(job_id)
        self._finish(
            job_id,
            HistoryEntry(
                id=job_id,
                status="failed",
                request=job.request if job else {},
                options=job.options if job else {},
                error=failure_text(error),
            ),
        )
        self.failed.emit(job_id, error)
        self.pump()

    def _on_cancelled(self, job_id: str) -> None:
        job = self.job(job_id)
        if self.closing:
            # closing the app: the interrupted job stays queued for the next start (or shutdown
            # has already put it in the history as cancelled)
            if job is not None:
                self.jobs[self.jobs.index(job)] = replace(job, state="queued")
                self._save_queue()
            if self.running == job_id:
                self.running = None
            self.cancelled.emit(job_id)
            return
        self._finish(
            job_id,
            HistoryEntry(
                id=job_id,
                status="cancelled",
                request=job.request if job else {},
                options=job.options if job else {},
            ),
        )
        self.cancelled.emit(job_id)
        self.pump()

    # ------------------------------------------------------------------ review before decode

    @property
    def reviewing(self) -> str | None:
        """The running job while it waits at review for decode() or discard(), else None."""
        return self._reviewing if self._reviewing == self.running else None

    def decode(self, job_id: str) -> None:
        """The job waiting at review goes on: the full VAE decodes it and it is written."""
        self._answer(job_id, decode=True)

    def discard(self, job_id: str) -> None:
        """The job waiting at review ends as "discarded": nothing is decoded or written."""
        self._answer(job_id, decode=False)

    def _answer(self, job_id: str, *, decode: bool) -> None:
        if job_id == self.reviewing:
            self._reviewing = None
            self.service.decide(job_id, decode=decode)

    def _on_review(self, job_id: str, preview: object) -> None:
        self._reviewing = job_id
        self.review.emit(job_id, preview)

    def _on_discarded(self, job_id: str) -> None:
        job = self.job(job_id)
        self._finish(
            job_id,
            HistoryEntry(
                id=job_id,
                status="discarded",
                request=job.request if job else {},
                options=job.options if job else {},
            ),
        )
        self.discarded.emit(job_id)
        self.pump()

    # ------------------------------------------------------------------ persistence

    def _add_history(self, entry: HistoryEntry) -> None:
        # one entry per job: a job cancelled at closing whose video was written meanwhile is done
        self.history = [e for e in self.history if e.id != entry.id]
        self.history.append(entry)
        self.store.save_history(self.history)
        self.history_changed.emit()

    def _save_queue(self) -> None:
        # a job still copying its inputs is saved as queued, naming the originals
        self.store.save_queue(
            [replace(j, state="queued") if j.state == "copying" else j for j in self.jobs]
        )

    def _on_copied(self, job_id: str, request: dict[str, Any] | None, error: Any) -> None:
        """A job's inputs are copied: it names the copies and waits its turn; a copy that could
        not be written fails the job with the reason."""
        job = self.job(job_id)
        if job is None:  # cancelled while copying: its copies go too
            if request is not None:
                remove_saved_inputs(request, job_id)
            return
        if request is None:
            from .service import UserError

            user = UserError.from_wan(error)
            entry = HistoryEntry(
                id=job_id,
                status="failed",
                request=job.request,
                options=job.options,
                error=failure_text(user),
            )
            self._finish(job_id, entry)
            self.failed.emit(job_id, user)
            return
        self.jobs[self.jobs.index(job)] = replace(job, request=request, state="queued")
        self._save_queue()
        self.queue_changed.emit()
        self.pump()

    def history_entry(self, job_id: str) -> HistoryEntry | None:
        return next((e for e in self.history if e.id == job_id), None)

    def remove_history(self, job_id: str) -> HistoryEntry | None:
        """Take an entry out of the history (saved at once); its files are the caller's."""
        entry = self.history_entry(job_id)
        if entry is not None:
            self.history.remove(entry)
            self.store.save_history(self.history)
            self.history_changed.emit()
        return entry
