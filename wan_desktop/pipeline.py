"""The generation loop: a plain function over the component Protocols of contracts.py.

It knows nothing about Qt, files on disk or which backend runs the components: the CLI and the GUI's
GPU worker build ``Components`` and call :func:`generate` with a :class:`CancelToken` and an ``emit``
callback. A cancelled job raises ``Cancelled`` within one DiT call and never runs the VAE.

A run is three stages, each usable alone (flux's sampling reads the same way):
:func:`condition` (the text, and the image conditioning of I2V / FLF2V / TI2V) → :func:`denoise`
(the sampling loop over any velocity callable, CFG through ``samplers.cfg``) → :func:`decode`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cancel import CancelToken
from .errors import Cancelled, ConfigError, NumericError
from .request import GenerationRequest, ResolvedRequest
from .variants import Task

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .contracts import Components, Velocity
    from .options import RunOptions
    from .samplers import Schedule


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StageStarted:
    stage: str  # "encode" | "denoise" | "decode"
    window: int = 1  # long videos (long_video.py): this window, 1-based, of ``windows``
    windows: int = 1


@dataclass(frozen=True)
class StepDone:
    step: int  # 1-based
    total: int
    elapsed: float  # seconds since the denoise stage began
    timestep: float
    expert: int  # 0 (high-noise / only model) or 1 (low-noise)
    preview: Tensor | None = field(default=None, repr=False)  # current x0 [z, T, h, w], CPU fp32
    window: int = 1  # long videos (long_video.py): this window, 1-based, of ``windows``
    windows: int = 1

    @property
    def eta(self) -> float:
        return self.elapsed / self.step * (self.total - self.step)


@dataclass(frozen=True)
class Finished:
    seconds: float
    frames: int


Event = StageStarted | StepDone | Finished
Emit = Callable[[Event], None]


def _no_emit(event: Event) -> None:
    return None


class Verdict(enum.Enum):
    """The user's word on denoised latents, before the VAE runs (``generate(review=...)``)."""

    DECODE = "decode"
    DISCARD = "discard"


# the review hook: the denoised latents [z, T, h, w] (a CPU fp32 copy) -> the verdict; it may
# wait for the user (generate() keeps the latents meanwhile)
Review = Callable[["Tensor"], Verdict]


class Discarded(Cancelled):
    """The user discarded the job at review: nothing was decoded or written."""


class TimedReview:
    """A review hook that adds up the time the user took (``waited``, seconds): a run's own time
    leaves it out."""

    def __init__(self, review: Review) -> None:
        self.review = review
        self.waited = 0.0

    def __call__(self, latents: Tensor) -> Verdict:
        t = time.perf_counter()
        try:
            return self.review(latents)
        finally:
            self.waited += time.perf_counter() - t


# ----------------------------------------------------------------------------- helpers


def initial_noise(shape: tuple[int, ...], seed: int) -> Tensor:
    """Noise drawn on the CPU in float32, so one seed gives one video on every device/backend."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32)


def pad_context(embeds: list[Tensor], text_len: int) -> Tensor:
    """[L_i, D] per prompt -> [B, text_len, D], zero rows after the real tokens (as Wan does)."""

    out = embeds[0].new_zeros(len(embeds), text_len, embeds[0].shape[-1])
    for i, e in enumerate(embeds):
        n = min(e.shape[0], text_len)
        out[i, :n] = e[:n]
    return out


def load_image(path: str | Path, width: int, height: int) -> Tensor:
    """An image file -> [1, 3, H, W] in [-1, 1]: centre-cropped to the target aspect, LANCZOS-resized."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"cannot read image {p}: {e}") from None
    iw, ih = img.size
    target = width / height
    if abs(iw / ih - target) > 1e-3:  # crop the excess, never stretch
        if iw / ih > target:
            cw = round(ih * target)
            img = img.crop(((iw - cw) // 2, 0, (iw - cw) // 2 + cw, ih))
        else:
            ch = round(iw / target)
            img = img.crop((0, (ih - ch) // 2, iw, (ih - ch) // 2 + ch))
    if img.size != (width, height):
        img = img.resize((width, height), resample=Image.Resampling.LANCZOS)
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return (arr.permute(2, 0, 1)[None] * 2 - 1).contiguous()


def check_images(request: GenerationRequest | ResolvedRequest) -> None:
    """Open the request's images now (cheap), so a missing or unreadable file is reported before
    any weights are loaded."""
    if request.task is Task.VACE:  # the control / mask videos and reference images
        from . import vace

        vace.check_inputs(request)
    for path in (request.image, request.last_image):
        if path:
            load_image(path, 16, 16)
    if isinstance(request, ResolvedRequest) and request.task is Task.V2V:
        from .video_to_video import check_video

        check_video(request)  # opens, has the frames (counted, not kept)


def i2v_mask(frames: int, t_lat: int, h: int, w: int, *, last: bool, temporal: int = 4) -> Tensor:
    """The 4-channel mask of Wan I2V/FLF2V: [1, 4, T_lat, h, w], ones on the given frames."""
    import torch

    m = torch.zeros(1, frames, h, w)
    m[:, 0] = 1
    if last:
        m[:, -1] = 1
    m = torch.cat([m[:, :1].repeat(1, temporal, 1, 1), m[:, 1:]], dim=1)  # [1, 4·T_lat, h, w]
    return m.view(1, t_lat, temporal, h, w).transpose(1, 2).contiguous()


# ----------------------------------------------------------------------------- generation


def run_schedule(request: ResolvedRequest) -> Schedule:
    """The sigma schedule a request runs: a preset's explicit grid, else the sampler's; v2v runs
    its tail (video_to_video.tail)."""
    if request.sigmas is not None:
        from .presets import explicit_schedule

        schedule = explicit_schedule(request.sigmas)
    else:
        from .samplers import make_schedule

        schedule = make_schedule(request.sampler, request.steps, request.shift)
    if request.task is Task.V2V and request.strength is not None:
        from .video_to_video import tail

        schedule = tail(schedule, request.strength)
    return schedule


def begin_run(components: Components, request: ResolvedRequest) -> None:
    """Tell every denoiser this run's schedule (``Denoiser.begin``): the torch step cache cannot
    know the last step, which must always be computed, without it. generate() leaves this to its
    callers (the bench drives denoisers directly)."""
    timesteps = run_schedule(request).timesteps
    for den in components.denoisers:
        den.begin(timesteps)


@dataclass(frozen=True, kw_only=True)
class Conditioning:
    """Everything a run's denoiser sees besides the latents and the timestep (``condition``).

    context:     [1, text_len, text_dim] the prompt, zero-padded
    context_neg: [1, text_len, text_dim] the negative prompt; None when no step runs CFG
    y:           [1, 4 + z, T, h, w] I2V / FLF2V: mask + encoded conditioning frames
    clip_fea:    [1, 257·n, 1280] Wan2.1 I2V / FLF2V: CLIP features of n images
    cond_latent: [1, z, 1, h, w] TI2V: the encoded first frame, which the latents keep
    first_mask:  [1, 1, T, h, w] TI2V: 0 on the first latent frame, 1 elsewhere
    token_mask:  [1, L] TI2V: first_mask per patch token (the first frame's tokens get t = 0)
    held:        [1, z, T, h, w] long T2V windows (long_video.py): clean latents of the frames
                 carried from the previous window, put back re-noised to each step's σ
    held_mask:   [1, 1, T, h, w] 1 on the held latent frames, 0 elsewhere
    held_noise:  [1, z, T, h, w] the fixed noise they are re-noised with
    video_latent: [1, z, T, h, w] v2v: the encoded input video, noised to the first σ as the start
    """

    context: Tensor
    context_neg: Tensor | None
    y: Tensor | None = None
    clip_fea: Tensor | None = None
    cond_latent: Tensor | None = None
    first_mask: Tensor | None = None
    token_mask: Tensor | None = None
    # VACE (vace.py): the context [1, 96, R + T, h, w], its scale, and R, the latent frames of the
    # reference images in front of the video's (noised and denoised with it, dropped before decode)
    vace: Tensor | None = None
    vace_scale: float = 1.0
    ref_frames: int = 0
    held: Tensor | None = None
    held_mask: Tensor | None = None
    held_noise: Tensor | None = None
    video_latent: Tensor | None = None

    def timestep(self, t: float) -> Tensor:
        """The model's timestep input: [1], or per token [1, L] (TI2V)."""
        import torch

        if self.token_mask is not None:
            return self.token_mask * t
        return torch.full((1,), t, device=self.context.device)

    def extra(self, twice: bool = False) -> dict[str, Any]:
        """The denoiser's extra keyword arguments (a VACE model's context and scale; else none),
        doubled along the batch for a batched CFG call."""
        if self.vace is None:
            return {}
        return {"vace": _twice(self.vace) if twice else self.vace, "vace_scale": self.vace_scale}

    def keep_first(self, x: Tensor, sigma: float = 0.0) -> Tensor:
        """TI2V: latents with the first frame put back to the encoded image; long T2V windows:
        the held frames put back at ``sigma`` (x_σ = (1 − σ)·x0 + σ·ε); else ``x``."""
        if self.held is not None and self.held_mask is not None and self.held_noise is not None:
            known = (1 - sigma) * self.held + sigma * self.held_noise
            x = self.held_mask * known + (1 - self.held_mask) * x
        if self.cond_latent is None or self.first_mask is None:
            return x
        return (1 - self.first_mask) * self.cond_latent + self.first_mask * x


def condition(
    components: Components,
    request: ResolvedRequest,
    *,
    device: torch.device | str = "cpu",
    cancel: CancelToken | None = None,
) -> Conditioning:
    """Encode the prompt (and the negative prompt when CFG runs) and, for I2V / FLF2V / TI2V, the
    input images."""
    import torch

    cancel = cancel or CancelToken()
    r = request
    dev = torch.device(device)
    prompts = [r.prompt, r.negative_prompt] if r.use_cfg else [r.prompt]
    embeds = components.text_encoder.encode(prompts)
    ctx = pad_context([e.float() for e in embeds], components.variant.dit.text_len).to(dev)
    cancel.check()
    cond = Conditioning(context=ctx[:1], context_neg=ctx[1:] if r.use_cfg else None)
    if r.task in (Task.I2V, Task.FLF2V):
        y, clip_fea = _frames_condition(components, r, dev, cancel)
        cond = replace(cond, y=y, clip_fea=clip_fea)
    elif r.task is Task.TI2V:
        cond = replace(cond, **_first_frame_condition(components, r, dev))
    elif r.task is Task.VACE:  # control video, mask, reference images (vace.py)
        from . import vace

        cond = replace(cond, **vace.condition(components, r, dev))
    elif r.task is Task.V2V:
        from .video_to_video import encode_video

        cond = replace(cond, video_latent=encode_video(components, r, device=dev, cancel=cancel))
    cancel.check()
    return cond


def _frames_condition(
    components: Components, r: ResolvedRequest, dev: torch.device, cancel: CancelToken
) -> tuple[Tensor, Tensor | None]:
    """I2V / FLF2V: (y, clip_fea). y = the mask on the given frames + the VAE latents of the
    first image (and the last, FLF2V) with zero frames between; clip_fea: their CLIP features
    (Wan2.1; None for Wan2.2 I2V, which has no image embedding)."""
    import torch

    variant = components.variant
    _z, t_lat, h, w = variant.latent_shape(r.width, r.height, r.frames)
    assert r.image is not None
    first = load_image(r.image, r.width, r.height)
    last = None if r.last_image is None else load_image(r.last_image, r.width, r.height)  # FLF2V
    clip_fea = None
    if components.image_encoder is not None and variant.dit.has_image_embedding:
        images = first if last is None else torch.cat([first, last])
        clip_fea = components.image_encoder.encode(images.to(dev)).float()
        clip_fea = clip_fea.reshape(1, -1, clip_fea.shape[-1])  # [1, 257·n, 1280]
    elif variant.dit.has_image_embedding:
        raise ConfigError(f"{variant.name} needs the CLIP image encoder, which was not found")
    parts = [
        first[:, :, None],
        first.new_zeros(1, 3, r.frames - (2 if last is not None else 1), r.height, r.width),
    ]
    if last is not None:
        parts.append(last[:, :, None])
    cancel.check()
    assert components.vae_encoder is not None, "I2V needs a VAE encoder"
    y_lat = components.vae_encoder.encode(torch.cat(parts, dim=2).to(dev)).float()
    mask = i2v_mask(
        r.frames, t_lat, h, w, last=last is not None, temporal=variant.vae.temporal_factor
    )
    return torch.cat([mask.to(dev), y_lat], dim=1), clip_fea


def _first_frame_condition(
    components: Components, r: ResolvedRequest, dev: torch.device
) -> dict[str, Any]:  # Tensors (Any: Conditioning has non-Tensor fields for replace)
    """TI2V: the encoded first frame, which the latents keep throughout, and its masks."""
    import torch

    variant = components.variant
    _z, t_lat, h, w = variant.latent_shape(r.width, r.height, r.frames)
    _pt, ph, pw = variant.dit.patch_size
    assert r.image is not None and components.vae_encoder is not None
    first = load_image(r.image, r.width, r.height)
    cond_latent = components.vae_encoder.encode(first[:, :, None].to(dev)).float()  # [1,z,1,h,w]
    first_mask = torch.ones(1, 1, t_lat, h, w, device=dev)
    first_mask[:, :, 0] = 0
    token_mask = first_mask[0, 0, :, ::ph, ::pw].flatten()[None]  # [1, L], order f, h, w
    return {"cond_latent": cond_latent, "first_mask": first_mask, "token_mask": token_mask}


def expert_at(
    step: int, t: float, *, experts: int, boundary: float | None, boundary_step: int | None
) -> int:
    """Which model runs a step: 0 (the only model, or Wan2.2's high-noise expert) or 1 (the
    low-noise expert): from a distilled recipe's ``boundary_step`` on, else below the timestep
    ``boundary·1000``."""
    if experts < 2:
        return 0
    if boundary_step is not None:
        return 1 if step >= boundary_step else 0
    return 1 if boundary is not None and t < boundary * 1000 else 0


def denoise(
    models: Sequence[Velocity],
    noise: Tensor,
    cond: Conditioning,
    request: ResolvedRequest,
    *,
    boundary: float | None = None,
    cancel: CancelToken | None = None,
    emit: Emit = _no_emit,
    device: torch.device | str = "cpu",
    preview_every: int = 1,
) -> Tensor:
    """Integrate the flow from ``noise`` [1, z, T, h, w] to clean latents over the request's
    schedule. ``models``: one velocity model, or Wan2.2's high-noise then low-noise expert (see
    ``expert_at``; ``boundary`` as ``Components.boundary``). Emits a StepDone per step, with the
    current x0 every ``preview_every`` steps and at the last one (0: never). Latents that turn
    NaN / infinite stop the run at that step (NumericError): one reduction per step."""
    import torch

    from .samplers import make_sampler

    cancel = cancel or CancelToken()
    r = request
    schedule = run_schedule(r)
    solver = make_sampler(r.sampler, schedule, seed=r.seed)
    x = noise.to(device)
    if cond.video_latent is not None:  # v2v (SDEdit): the input video noised to the first σ
        from .video_to_video import noised

        x = noised(cond.video_latent, x, schedule.sigmas[0])
    elif r.sigmas is not None and schedule.sigmas[0] < 1.0:
        x = x * schedule.sigmas[0]  # rCM starts at σ_0·noise (TurboDiffusion); lightx2v at σ = 1
    x = cond.keep_first(x, schedule.sigmas[0])
    t_start = time.perf_counter()
    for i, t in enumerate(schedule.timesteps):
        cancel.check()
        expert = expert_at(  # (v2v: the schedule is the grid's tail, counted from its start)
            i + r.steps - schedule.steps,
            t,
            experts=len(models),
            boundary=boundary,
            boundary_step=r.boundary_step,
        )
        v = guided_velocity(
            models[expert],
            x,
            cond.timestep(float(t)),
            cond,
            r.guidance_for(expert),
            batch=r.batch_cfg,
            cancel=cancel,
        )
        preview = None
        if preview_every and ((i + 1) % preview_every == 0 or i + 1 == schedule.steps):
            preview = cond.keep_first(solver.x0(i, v, x))[0].detach().float().cpu()
        x = cond.keep_first(solver.step(i, v, x), schedule.sigmas[i + 1])
        if not bool(torch.isfinite(x).all()):
            raise _nonfinite(i + 1, schedule.steps, expert, len(models), r.guidance_for(expert))
        emit(
            StepDone(
                step=i + 1,
                total=schedule.steps,
                elapsed=time.perf_counter() - t_start,
                timestep=float(t),
                expert=expert,
                preview=preview,
            )
        )
    cancel.check()
    return x


def _nonfinite(step: int, steps: int, expert: int, experts: int, guidance: float) -> NumericError:
    model = (
        "the diffusion model"
        if experts < 2
        else ("the high-noise expert", "the low-noise expert")[expert]
    )
    return NumericError(
        f"the latents became NaN or infinite at denoising step {step} of {steps} "
        f"({model}, guidance {guidance:g}); nothing was written"
    )


def guided_velocity(
    model: Velocity,
    x: Tensor,
    t: Tensor,
    cond: Conditioning,
    guidance: float,
    *,
    batch: bool = True,
    cancel: CancelToken | None = None,
) -> Tensor:
    """The model's velocity at (x, t), float32; with CFG (guidance ≠ 1 and a negative prompt) the
    prompt's and the negative prompt's mixed by ``samplers.cfg``: as one batch of 2 (``batch``) or
    two calls with a cancel check between."""
    import torch

    from .samplers import cfg

    c = cond
    if guidance == 1.0 or c.context_neg is None:
        return model(x, t, c.context, y=c.y, clip_fea=c.clip_fea, **c.extra()).float()
    if batch:
        v_c, v_u = (
            model(
                torch.cat([x, x]),
                torch.cat([t, t]),
                torch.cat([c.context, c.context_neg]),
                y=_twice(c.y),
                clip_fea=_twice(c.clip_fea),
                **c.extra(twice=True),
            )
            .float()
            .chunk(2)
        )
    else:
        v_c = model(x, t, c.context, y=c.y, clip_fea=c.clip_fea, **c.extra()).float()
        if cancel is not None:
            cancel.check()
        v_u = model(x, t, c.context_neg, y=c.y, clip_fea=c.clip_fea, **c.extra()).float()
    return cfg(v_u, v_c, guidance)


def _twice(t: Tensor | None) -> Tensor | None:
    import torch

    return None if t is None else torch.cat([t, t])


def decode(components: Components, latents: Tensor) -> Tensor:
    """Latents [1, z, T, h, w] -> the video as uint8 frames [F, H, W, 3] on the CPU."""
    return components.vae_decoder.decode_frames(latents)


def generate(
    components: Components,
    request: ResolvedRequest,
    *,
    cancel: CancelToken | None = None,
    emit: Emit = _no_emit,
    device: torch.device | str = "cpu",
    preview_every: int = 1,
    review: Review | None = None,
) -> Tensor:
    """One generation: condition → denoise → (review) → decode. ``request`` is resolved against
    ``components.variant``. Returns the video as uint8 [F, H, W, 3] on the CPU; a cancelled run
    raises Cancelled and never decodes. ``review``: asked between denoise and decode (stage
    "review"); DISCARD raises Discarded, and the decode is the same as without a review."""
    if not isinstance(request, ResolvedRequest):
        raise TypeError("generate() takes a ResolvedRequest: call request.resolve(variant) first")
    cancel = cancel or CancelToken()
    variant = components.variant
    t0 = time.perf_counter()
    cancel.check()
    emit(StageStarted("encode"))
    cond = condition(components, request, device=device, cancel=cancel)
    emit(StageStarted("denoise"))
    shape = variant.latent_shape(request.width, request.height, request.frames)
    if cond.ref_frames:  # VACE: the reference images' latent frames come first
        shape = (shape[0], shape[1] + cond.ref_frames, *shape[2:])
    boundary = components.boundary if components.boundary is not None else variant.defaults.boundary
    latents = denoise(
        components.denoisers,
        initial_noise((1, *shape), request.seed),
        cond,
        request,
        boundary=boundary,
        cancel=cancel,
        emit=emit,
        device=device,
        preview_every=preview_every,
    )
    if review is not None:
        emit(StageStarted("review"))
        verdict = review(latents[0].detach().float().cpu())  # a copy: the latents stay as made
        cancel.check()  # a cancel while the user looked
        if verdict is not Verdict.DECODE:
            raise Discarded("discarded at review: nothing was decoded or written")
    emit(StageStarted("decode"))
    frames = decode(components, latents[:, :, cond.ref_frames :])  # VACE: without the references
    emit(Finished(seconds=time.perf_counter() - t0, frames=frames.shape[0]))
    return frames


def generate_to_file(
    components: Components,
    request: ResolvedRequest,
    out: str | Path,
    *,
    options: RunOptions | None = None,
    cancel: CancelToken | None = None,
    emit: Emit = _no_emit,
    device: torch.device | str = "cpu",
    review: Review | None = None,
) -> Path:
    """generate() and write the result atomically with its settings (nothing appears at ``out``
    unless the whole video was made; nothing at all after a discard at ``review``)."""
    from .video import check_output_path, write_video

    check_output_path(Path(out))  # before the run, not after minutes of work
    t0 = time.perf_counter()
    timed = None if review is None else TimedReview(review)
    frames = generate(components, request, cancel=cancel, emit=emit, device=device, review=timed)
    fps = request.fps or components.variant.defaults.fps  # --fps, else the model's
    meta = output_metadata(
        components,
        request,
        fps=fps,
        options=options,
        device=device,
        seconds=round(time.perf_counter() - t0 - (timed.waited if timed else 0.0), 3),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return write_video(out, [frames], fps=fps, metadata=meta)


def output_metadata(
    components: Components,
    request: ResolvedRequest,
    *,
    fps: int,
    options: RunOptions | None,
    device: torch.device | str,
    **extra: object,
) -> dict[str, object]:
    """The settings written beside a video (``<out>.json`` / ``settings.json``): the app, the
    variant, the request, the options, the device and the loaded model's info, then ``extra`` in
    the order given (a long run's window plan; a single run's ``seconds`` and ``created``)."""
    from . import __version__

    return {
        "app": "wan-desktop",
        "version": __version__,
        "variant": components.variant.name,
        "fps": fps,
        "request": request.to_dict(),
        "options": options.to_dict() if options else None,
        "device": str(device),
        "model": {k: _json_value(v) for k, v in components.info.items()},
        **extra,
    }


def _json_value(value: object) -> object:
    """JSON's own types stay as they are (``random_weights: true``, not ``"True"``); anything else
    (paths, dtypes, enums) becomes its string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):  # e.g. the LoRA records (file, sha256, strength)
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)
