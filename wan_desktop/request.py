"""What to make: the request a user edits (:class:`GenerationRequest`, every field optional) and
the request a run executes (:class:`ResolvedRequest`, every field decided and typed), saved beside
every output for reproducibility."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .variants import Task, Variant

if TYPE_CHECKING:
    from .samplers import Sampler

# Guidance and shift above this are refused. No recipe comes near: Wan's defaults are guidance 3.5-5
# and shift 3-16 (FLF2V's 16 is the largest), distilled recipes use guidance 1, and 100 is the top
# of ComfyUI's own ranges (KSampler's cfg, ModelSamplingSD3's shift). Far above it a guidance
# overflows the velocity to ±Inf (1e308 does) and a shift pins every σ at 1: a black or noise video.
MAX_GUIDANCE_SHIFT = 100.0


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """Everything that decides a video. ``None`` fields take the variant's default in
    :meth:`resolve`; the resolved request is saved beside every output."""

    prompt: str
    negative_prompt: str | None = None
    task: str | None = None  # "t2v" | "i2v" | "flf2v" | "ti2v"
    image: str | None = None
    last_image: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_low: float | None = None  # Wan2.2 A14B low-noise expert
    shift: float | None = None
    sampler: str | None = None
    seed: int = 0
    batch_cfg: bool = True  # run cond and uncond as one batch of 2 (the planner may turn it off)
    # Distilled recipes (presets.py): an explicit σ grid (N values in (0, 1], decreasing; the final
    # 0 is implied) replaces the sampler's grid from steps/shift; the model is fed σ·1000.
    sigmas: tuple[float, ...] | None = None
    boundary_step: int | None = None  # Wan2.2: first step of the low-noise expert (else by time)
    # VACE (vace.py): a control video (mp4 or PNG folder: pose, depth, edges, any frames), a mask
    # video (white = generate, black = keep), reference images, and diffusers' conditioning_scale
    control_video: str | None = None
    mask_video: str | None = None
    ref_images: tuple[str, ...] = ()
    control_scale: float | None = None  # None: 1.0
    # Long videos (long_video.py): frames beyond one window run consecutive windows.
    window_frames: int | None = None  # frames per window (4n+1); None: the model's (81, TI2V 121)
    window_overlap: int | None = None  # latent frames a window carries over; None: 2
    color_match: bool = True  # continuation through pixels: match the first window's colours
    extend: str | None = None  # a video (mp4 or PNG folder) to continue
    # SkyReels-V2 Diffusion Forcing (diffusion_forcing.py); None: the model's recommended value
    base_frames: int | None = None  # frames per window (4n+1)
    overlap_history: int | None = None  # frames a window carries over (4n+1)
    ar_step: int | None = None  # 0: synchronous; > 0: asynchronous (with causal_block_size)
    causal_block_size: int | None = None  # latent frames per causal attention block
    addnoise_condition: float | None = None  # noise level (timestep) of the carried frames
    fps: int | None = None  # the fps embedding (16 or other) and the output's frame rate
    # Video-to-video (SDEdit, video_to_video.py): the input video (mp4 or PNG folder) and how much
    # of the schedule redoes it, in (0, 1]; None: 0.8 (diffusers' default)
    video: str | None = None
    strength: float | None = None
    # VACE inputs built for the user (vace_inputs.py)
    outpaint: tuple[int, int, int, int] | None = None  # pixels added left, top, right, bottom
    first_clip: str | None = None  # a video whose frames open the result (kept)
    last_clip: str | None = None  # a video whose frames close the result (kept)
    preprocess: str | None = None  # the control video as "gray" | "edges" | "none"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """From saved settings (history, sidecars of older versions): unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        if kept.get("sigmas") is not None:  # JSON gives a list
            kept["sigmas"] = tuple(float(s) for s in kept["sigmas"])
        if kept.get("ref_images") is not None:
            kept["ref_images"] = tuple(str(p) for p in kept["ref_images"])
        if kept.get("outpaint") is not None:
            kept["outpaint"] = tuple(kept["outpaint"])
        return cls(**kept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self, variant: Variant) -> ResolvedRequest:
        """Fill defaults from the variant and validate every value against it."""
        from .samplers import Sampler

        d = variant.defaults
        task = self.task or (
            "vace"  # the only task of a VACE model
            if Task.VACE in variant.tasks
            else "ti2v"
            if (variant.name == "ti2v-5B" and self.image)
            else "flf2v"
            if Task.FLF2V in variant.tasks
            else "i2v"
            if Task.I2V in variant.tasks
            else "t2v"
        )
        if self.task is None and variant.forcing is not None:  # SkyReels DF: i2v with an image
            task = "i2v" if self.image else "t2v"
        try:
            task_enum = Task(task)
        except ValueError:
            raise ConfigError(
                f"unknown task {task!r}; expected t2v, i2v, flf2v or ti2v", field="task"
            ) from None
        v2v = task_enum is Task.V2V and Task.T2V in variant.tasks  # SDEdit: any T2V model
        if task_enum not in variant.tasks and not v2v:
            can = ", ".join(t.value for t in variant.tasks)
            raise ConfigError(
                f"the {variant.name} model cannot do {task} (it can do: {can})",
                remedy="Choose a task the model supports, or another model.",
                field="task",
            )
        width = self.width if self.width is not None else d.size[0]
        height = self.height if self.height is not None else d.size[1]
        m = variant.spatial_multiple
        if width <= 0 or height <= 0:
            raise ConfigError(
                f"size {width}x{height}: width and height must be positive", field="size"
            )
        if width % m or height % m:
            raise ConfigError(
                f"size {width}x{height} is not a multiple of {m} for {variant.name}",
                remedy=f"Use a width and height divisible by {m}, e.g. {d.size[0]}x{d.size[1]}.",
                field="size",
            )
        frames = self.frames if self.frames is not None else d.frames
        tf = variant.vae.temporal_factor
        if frames < 1 or (frames - 1) % tf:
            lower = max(1, (frames - 1) // tf * tf + 1)
            raise ConfigError(
                f"frames must be {tf}n+1 (1, 5, 9, ..., 81), got {frames}",
                remedy=f"Use {lower} or {lower + tf} frames.",
                field="frames",
            )
        steps = self.steps if self.steps is not None else d.steps
        sigmas = self.sigmas
        if sigmas is not None:
            sigmas = tuple(float(s) for s in sigmas)
            if self.steps is None:
                steps = len(sigmas)
            if (
                not sigmas
                or steps != len(sigmas)
                or any(not (0 < s <= 1) for s in sigmas)
                or any(a <= b for a, b in itertools.pairwise(sigmas))
            ):
                raise ConfigError(
                    f"the σ grid must be {steps} decreasing values in (0, 1], got {list(sigmas)}",
                    field="steps",
                )
        if steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}", field="steps")
        if self.boundary_step is not None and not (0 <= self.boundary_step <= steps):
            raise ConfigError(
                f"boundary step must be between 0 and {steps}, got {self.boundary_step}",
                field="steps",
            )
        guidance = self.guidance if self.guidance is not None else d.guidance
        guidance_low = self.guidance_low
        if guidance_low is None:  # Wan2.2 A14B: the variant's own pair unless guidance is given
            own = d.guidance_low if variant.experts == 2 and self.guidance is None else None
            guidance_low = own if own is not None else guidance
        shift = self.shift if self.shift is not None else d.shift_for(width, height)
        for name, value in (
            ("guidance", guidance),
            ("guidance-low", guidance_low),
            ("shift", shift),
        ):
            field = "shift" if name == "shift" else "guidance"
            if not math.isfinite(value) or value < 0 or (name == "shift" and value <= 0):
                raise ConfigError(f"{name} must be a positive number, got {value}", field=field)
            if value > MAX_GUIDANCE_SHIFT:
                raise ConfigError(
                    f"{name} must be at most {MAX_GUIDANCE_SHIFT:g}, got {value:g}",
                    remedy=f"Use the model's default or a nearby value ({name} "
                    f"{'3 to 16' if name == 'shift' else '1 to 10'} is "
                    "usual).",
                    field=field,
                )
        sampler = Sampler.parse(self.sampler or d.sampler)
        needs_image = task_enum in (Task.I2V, Task.FLF2V, Task.TI2V)
        continues = self.extend is not None and variant.forcing is None  # long_video.py
        if continues and self.image:
            raise ConfigError("continue a video or start from an image, not both", field="extend")
        if needs_image and not self.image and not continues:  # extend: its frames condition
            raise ConfigError(f"task {task} needs an input image", field="image")
        if task_enum is Task.FLF2V and not self.last_image:
            raise ConfigError("task flf2v needs a last frame", field="last_image")
        if not needs_image and self.image:
            raise ConfigError(
                f"task {task} takes no input image; choose the task i2v or ti2v",
                field="image",
            )
        if self.last_image and task_enum is not Task.FLF2V:
            raise ConfigError("a last frame is only used by the flf2v task", field="last_image")
        if task_enum is Task.FLF2V and frames < 2:
            raise ConfigError("flf2v needs at least 5 frames", field="frames")
        if not (0 <= self.seed < 2**63):
            raise ConfigError(f"seed must be between 0 and 2^63-1, got {self.seed}", field="seed")
        window_frames, window_overlap = _window(self, d.frames, tf)
        strength = _v2v_strength(self, task_enum, steps)
        _check_vace_inputs(self, task_enum)
        control_scale = _vace_media(self, task_enum)
        neg = self.negative_prompt if self.negative_prompt else d.negative_prompt
        return ResolvedRequest(
            prompt=self.prompt,
            negative_prompt=neg,
            task=task_enum,
            image=self.image,
            last_image=self.last_image,
            width=width,
            height=height,
            frames=frames,
            steps=steps,
            guidance=float(guidance),
            guidance_low=float(guidance_low),
            shift=float(shift),
            sampler=sampler,
            seed=self.seed,
            batch_cfg=self.batch_cfg,
            sigmas=sigmas,
            boundary_step=self.boundary_step,
            control_video=self.control_video,
            mask_video=self.mask_video,
            ref_images=tuple(self.ref_images),
            control_scale=control_scale,
            window_frames=window_frames,
            window_overlap=window_overlap,
            color_match=bool(self.color_match),
            extend=self.extend,
            video=self.video,
            strength=strength,
            outpaint=self.outpaint,  # checked by _check_vace_inputs: 4 ints
            first_clip=self.first_clip,
            last_clip=self.last_clip,
            preprocess=self.preprocess,
            experts=variant.experts,
            **_forcing(self, variant),  # SkyReels DF settings (None for other models)
        )


V2V_STRENGTH = 0.8  # diffusers' WanVideoToVideoPipeline default
PREPROCESSORS = ("gray", "edges", "none")


def _v2v_strength(r: GenerationRequest, task: Task, steps: int) -> float | None:
    """v2v: the strength (default 0.8), which must leave at least one of the ``steps`` to run
    (``int(steps · strength)`` of them run, as diffusers counts); other tasks take no video."""
    if task is not Task.V2V:
        if r.video:
            raise ConfigError(
                f"task {task.value} takes no input video; choose the task v2v", field="video"
            )
        if r.strength is not None:
            raise ConfigError("a strength is only used by the v2v task", field="strength")
        return None
    if not r.video:
        raise ConfigError("task v2v needs an input video (mp4 or PNG folder)", field="video")
    strength = V2V_STRENGTH if r.strength is None else float(r.strength)
    if not (math.isfinite(strength) and 0 < strength <= 1):
        raise ConfigError(f"strength must be in (0, 1], got {strength}", field="strength")
    if int(steps * strength) < 1:
        raise ConfigError(
            f"strength {strength:g} of {steps} steps runs no step",
            remedy=f"Raise the strength to at least {1 / steps:.2g}, or the steps.",
            field="strength",
        )
    return strength


def _check_vace_inputs(r: GenerationRequest, task: Task) -> None:
    """The VACE inputs built for the user (vace_inputs.py): outpaint margins and the
    preprocessor, used by the vace task only."""
    given = [
        name
        for name in ("outpaint", "first_clip", "last_clip", "preprocess")
        if getattr(r, name) not in (None, "")
    ]
    if given and task is not Task.VACE:
        raise ConfigError(
            f"{given[0].replace('_', ' ')} is only used by the vace task", field=given[0]
        )
    if r.outpaint is not None:
        m = tuple(r.outpaint)
        if len(m) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in m):
            raise ConfigError(
                f"outpaint must be 4 whole pixel counts ≥ 0 (left, top, right, bottom), got {m}",
                field="outpaint",
            )
        if not any(m):
            raise ConfigError("outpaint adds no pixel: give at least one margin", field="outpaint")
    if r.preprocess not in (None, *PREPROCESSORS):
        raise ConfigError(
            f"unknown preprocessor {r.preprocess!r}; expected {', '.join(PREPROCESSORS)}",
            field="preprocess",
        )


def _forcing(r: GenerationRequest, variant: Variant) -> dict[str, Any]:
    """A SkyReels-V2 DF model's settings, each given or the model's recommended one, validated
    (the windows' geometry is checked by diffusion_forcing.check); {} for other models, which
    refuse them."""
    names = ("base_frames", "overlap_history", "ar_step", "causal_block_size", "addnoise_condition")
    f = variant.forcing
    if f is None:
        given = [n for n in names if getattr(r, n) is not None]
        if given:
            raise ConfigError(
                f"{given[0].replace('_', ' ')} is a setting of SkyReels-V2 Diffusion Forcing "
                f"models; {variant.name} is not one",
                remedy="Leave it out, or choose a SkyReels-V2 DF model.",
                field=given[0],
            )
        return {} if r.fps is None else {"fps": _fps(r.fps)}
    tf = variant.vae.temporal_factor
    out: dict[str, Any] = {n: getattr(r, n) if getattr(r, n) is not None else getattr(f, n)
                           for n in names}  # fmt: skip
    out["fps"] = _fps(r.fps if r.fps is not None else variant.defaults.fps)
    base, overlap = out["base_frames"], out["overlap_history"]
    for name, value, low in (("base_frames", base, tf + 1), ("overlap_history", overlap, 1)):
        if not isinstance(value, int) or value < low or (value - 1) % tf:
            raise ConfigError(
                f"{name.replace('_', ' ')} must be {tf}n+1 and at least {low}, got {value}",
                remedy=f"Use {getattr(f, name)} (the model's recommended value).",
                field=name,
            )
    if overlap >= base:
        raise ConfigError(
            f"overlap history ({overlap} frames) must be shorter than a window ({base} frames)",
            remedy=f"Use {f.overlap_history} and {f.base_frames}.",
            field="overlap_history",
        )
    if not isinstance(out["ar_step"], int) or out["ar_step"] < 0:
        raise ConfigError(f"ar step must be 0 or more, got {out['ar_step']}", field="ar_step")
    if not isinstance(out["causal_block_size"], int) or out["causal_block_size"] < 1:
        raise ConfigError(
            f"causal block size must be 1 or more, got {out['causal_block_size']}",
            field="causal_block_size",
        )
    noise = out["addnoise_condition"]
    if not isinstance(noise, (int, float)) or not math.isfinite(noise) or not 0 <= noise < 1000:
        raise ConfigError(
            f"addnoise condition must be a timestep from 0 to 999, got {noise}",
            remedy="Use 20 (recommended; at most about 50).",
            field="addnoise_condition",
        )
    out["addnoise_condition"] = float(noise)
    return out


def _fps(fps: object) -> int:
    if not isinstance(fps, int) or not 1 <= fps <= 240:
        raise ConfigError(f"fps must be a whole number from 1 to 240, got {fps}", field="fps")
    return fps


def _window(r: GenerationRequest, default_frames: int, tf: int) -> tuple[int, int]:
    """A long video's window (frames, 4n+1 ≥ 5) and overlap (latent frames, 1 to the window's
    latent frames − 1; default 2): each window adds at least one latent frame."""
    frames = r.window_frames if r.window_frames is not None else default_frames
    if frames < tf + 1 or (frames - 1) % tf:
        raise ConfigError(
            f"window frames must be {tf}n+1 and at least {tf + 1}, got {frames}",
            field="window_frames",
        )
    t_lat = (frames - 1) // tf + 1
    overlap = r.window_overlap if r.window_overlap is not None else min(2, t_lat - 1)
    if not 1 <= overlap < t_lat:
        raise ConfigError(
            f"window overlap must be 1 to {t_lat - 1} latent frames for {frames}-frame "
            f"windows, got {overlap}",
            field="window_overlap",
        )
    return frames, overlap


MAX_CONTROL_SCALE = 10.0  # diffusers' conditioning_scale is 1; far above it the hints swamp


def _vace_media(r: GenerationRequest, task: Task) -> float:
    """The VACE inputs (vace.py): only the vace task takes them; a mask needs the control video it
    masks (as diffusers); the scale is a finite number in [0, MAX_CONTROL_SCALE]. Returns the
    scale (default 1)."""
    given = [
        (name, flag)
        for name, flag in (
            ("control_video", "control video"),
            ("mask_video", "mask video"),
            ("ref_images", "reference image"),
            ("control_scale", "control scale"),
        )
        if getattr(r, name) not in (None, "", ())
    ]
    if given and task is not Task.VACE:
        raise ConfigError(
            f"a {given[0][1]} is only used by the vace task (a VACE model)", field=given[0][0]
        )
    if r.mask_video and not r.control_video:
        raise ConfigError(
            "a mask video needs the control video it masks",
            remedy="Give the control video (the frames to keep and to change) too.",
            field="mask_video",
        )
    if isinstance(r.ref_images, str) or not all(isinstance(p, str) and p for p in r.ref_images):
        raise ConfigError(
            f"reference images must be file paths, got {r.ref_images!r}", field="ref_images"
        )
    scale = 1.0 if r.control_scale is None else r.control_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"control scale must be a number, got {scale!r}", field="control_scale")
    if not 0 <= scale <= MAX_CONTROL_SCALE:
        raise ConfigError(
            f"control scale must be between 0 and {MAX_CONTROL_SCALE:g}, got {scale:g}",
            remedy="1 is the trained strength; 0.5 to 2 are usual.",
            field="control_scale",
        )
    return float(scale)


@dataclass(frozen=True, kw_only=True)
class ResolvedRequest:
    """A request with every value decided against one variant (``GenerationRequest.resolve``): what
    a run executes. Derive another with ``dataclasses.replace`` (the memory plan turns
    ``batch_cfg`` off)."""

    prompt: str
    negative_prompt: str
    task: Task
    image: str | None
    last_image: str | None
    width: int
    height: int
    frames: int
    steps: int
    guidance: float  # Wan2.2 A14B: the high-noise expert's
    guidance_low: float  # Wan2.2 A14B: the low-noise expert's (else equal to guidance)
    shift: float
    sampler: Sampler
    seed: int
    batch_cfg: bool  # cond and uncond as one batch of 2
    sigmas: tuple[float, ...] | None  # a distilled recipe's σ grid (see GenerationRequest)
    boundary_step: int | None  # Wan2.2: first step of the low-noise expert (else by time)
    control_video: str | None  # VACE inputs (see GenerationRequest)
    mask_video: str | None
    ref_images: tuple[str, ...]
    control_scale: float  # VACE: the scale of every hint (1.0 unless given)
    window_frames: int  # long videos: frames per window (see GenerationRequest)
    window_overlap: int  # long videos: latent frames a window carries over
    color_match: bool
    extend: str | None
    # SkyReels DF (see GenerationRequest); None for other models
    base_frames: int | None = None
    overlap_history: int | None = None
    ar_step: int | None = None
    causal_block_size: int | None = None
    addnoise_condition: float | None = None
    fps: int | None = None
    video: str | None  # v2v: the input video
    strength: float | None  # v2v: the share of the schedule that runs (else None)
    outpaint: tuple[int, int, int, int] | None  # VACE inputs (see GenerationRequest)
    first_clip: str | None
    last_clip: str | None
    preprocess: str | None
    experts: int  # the variant's diffusion models (2: Wan2.2 A14B); not saved (the variant is)

    def guidance_for(self, expert: int) -> float:
        """The CFG scale of expert 0 (high-noise, or the only model) or 1 (low-noise)."""
        return self.guidance if expert == 0 else self.guidance_low

    @property
    def use_cfg(self) -> bool:
        """Whether any step runs classifier-free guidance (so the negative prompt is encoded)."""
        return self.guidance != 1.0 or (self.experts == 2 and self.guidance_low != 1.0)

    def to_dict(self) -> dict[str, Any]:
        """The saved settings: GenerationRequest's keys with JSON values (the task and sampler as
        their names), which ``GenerationRequest.from_dict`` reads back."""
        saved = {f.name: getattr(self, f.name) for f in fields(GenerationRequest)}
        if self.task is not Task.VACE:  # the scale only a vace request takes (resolve refuses it)
            saved["control_scale"] = None
        return saved | {"task": self.task.value, "sampler": self.sampler.value}
