"""The generation loop: a plain function over the component Protocols of contracts.py.

It knows nothing about Qt, files on disk or which backend runs the components: the CLI and the GUI's
GPU worker build ``Components`` and call :func:`generate` with a :class:`CancelToken` and an ``emit``
callback. A cancelled job raises ``Cancelled`` within one DiT call and never runs the VAE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .cancel import CancelToken
from .errors import ConfigError
from .request import GenerationRequest
from .variants import Task

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .contracts import Components
    from .options import RunOptions
    from .samplers import Schedule


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StageStarted:
    stage: str  # "encode" | "denoise" | "decode"


@dataclass(frozen=True)
class StepDone:
    step: int  # 1-based
    total: int
    elapsed: float  # seconds since the denoise stage began
    timestep: float
    expert: int  # 0 (high-noise / only model) or 1 (low-noise)
    preview: Tensor | None = field(default=None, repr=False)  # current x0 [z, T, h, w], CPU fp32

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


def check_images(request: GenerationRequest) -> None:
    """Open the request's images now (cheap), so a missing or unreadable file is reported before
    any weights are loaded."""
    for path in (request.image, request.last_image):
        if path:
            load_image(path, 16, 16)


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


def run_schedule(request: GenerationRequest) -> Schedule:
    """The sigma schedule a resolved request runs: a preset's explicit grid, else the sampler's."""
    if request.sigmas is not None:
        from .presets import explicit_schedule

        return explicit_schedule(request.sigmas)
    from .samplers import make_schedule

    assert request.sampler and request.steps and request.shift is not None, "resolve() first"
    return make_schedule(request.sampler, request.steps, request.shift)


def begin_run(components: Components, request: GenerationRequest) -> None:
    """Give denoisers with the optional ``begin(timesteps)`` hook (the torch step cache) this
    run's schedule: without it the cache cannot know the last step, which must always be
    computed. generate() leaves this to its callers (the bench drives denoisers directly)."""
    timesteps = run_schedule(request).timesteps
    for den in components.denoisers:
        begin = getattr(den, "begin", None)
        if callable(begin):
            begin(timesteps)


def generate(
    components: Components,
    request: GenerationRequest,
    *,
    cancel: CancelToken | None = None,
    emit: Emit = _no_emit,
    device: torch.device | str = "cpu",
    preview_every: int = 1,
) -> Tensor:
    """Run one generation. ``request`` must be resolved against ``components.variant``.

    Returns the video as uint8 [F, H, W, 3] on the CPU.
    """
    import torch

    from .samplers import make_sampler

    cancel = cancel or CancelToken()
    variant = components.variant
    r = request
    assert r.width and r.height and r.frames and r.steps and r.sampler and r.task, "resolve() first"
    assert r.guidance is not None and r.guidance_low is not None and r.shift is not None
    dev = torch.device(device)
    task = Task(r.task)
    t0 = time.perf_counter()
    z, t_lat, h, w = variant.latent_shape(r.width, r.height, r.frames)
    use_cfg = r.guidance != 1.0 or (variant.experts == 2 and r.guidance_low != 1.0)

    # --- text
    cancel.check()
    emit(StageStarted("encode"))
    prompts = [r.prompt, r.negative_prompt or ""] if use_cfg else [r.prompt]
    embeds = components.text_encoder.encode(prompts)
    ctx_all = pad_context([e.float() for e in embeds], variant.dit.text_len).to(dev)
    ctx, ctx_neg = ctx_all[:1], (ctx_all[1:] if use_cfg else None)
    cancel.check()

    # --- image conditioning
    y = clip_fea = cond_latent = first_mask = None
    if task in (Task.I2V, Task.FLF2V):
        assert r.image is not None
        first = load_image(r.image, r.width, r.height)
        last = load_image(r.last_image, r.width, r.height) if task is Task.FLF2V else None
        if components.image_encoder is not None and variant.dit.has_image_embedding:
            images = first if last is None else torch.cat([first, last])
            clip_fea = components.image_encoder.encode(images.to(dev)).float()
            clip_fea = clip_fea.reshape(1, -1, clip_fea.shape[-1])  # [1, 257·n, 1280]
        elif variant.dit.has_image_embedding:
            raise ConfigError(f"{variant.name} needs the CLIP image encoder, which was not found")
        parts = [first[:, :, None], first.new_zeros(1, 3, r.frames - (2 if last is not None else 1),
                                                    r.height, r.width)]
        if last is not None:
            parts.append(last[:, :, None])
        cancel.check()
        assert components.vae_encoder is not None, "I2V needs a VAE encoder"
        y_lat = components.vae_encoder.encode(torch.cat(parts, dim=2).to(dev)).float()
        y = torch.cat([i2v_mask(r.frames, t_lat, h, w, last=last is not None,
                                temporal=variant.vae.temporal_factor).to(dev), y_lat], dim=1)
    elif task is Task.TI2V:
        assert r.image is not None and components.vae_encoder is not None
        first = load_image(r.image, r.width, r.height)
        cond_latent = components.vae_encoder.encode(first[:, :, None].to(dev)).float()  # [1,z,1,h,w]
        first_mask = torch.ones(1, 1, t_lat, h, w, device=dev)
        first_mask[:, :, 0] = 0
    cancel.check()

    # --- denoise
    emit(StageStarted("denoise"))
    schedule = run_schedule(r)
    sampler = make_sampler(r.sampler, schedule, seed=r.seed)
    x = initial_noise((1, z, t_lat, h, w), r.seed).to(dev)
    if r.sigmas is not None and schedule.sigmas[0] < 1.0:
        x = x * schedule.sigmas[0]  # rCM starts at σ_0·noise (TurboDiffusion); lightx2v at σ = 1
    if cond_latent is not None:
        x = (1 - first_mask) * cond_latent + first_mask * x
    boundary = (components.boundary if components.boundary is not None
                else variant.defaults.boundary)
    _pt, ph, pw = variant.dit.patch_size
    t_start = time.perf_counter()
    for i, t in enumerate(schedule.timesteps):
        cancel.check()
        if len(components.denoisers) == 2 and r.boundary_step is not None:
            expert = 1 if i >= r.boundary_step else 0  # the distilled recipe's step boundary
        else:
            expert = 1 if (len(components.denoisers) == 2 and boundary is not None
                           and t < boundary * 1000) else 0
        g = r.guidance if expert == 0 else r.guidance_low
        model = components.denoisers[expert]
        if first_mask is not None:
            # per-token timesteps: the clean first frame gets t = 0
            tt = (first_mask[0, 0, :, ::ph, ::pw] * float(t)).flatten()[None]
        else:
            tt = torch.full((1,), float(t), device=dev)
        if use_cfg and g != 1.0:
            assert ctx_neg is not None
            if r.batch_cfg:
                v_c, v_u = model(
                    torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([ctx, ctx_neg]),
                    y=None if y is None else torch.cat([y, y]),
                    clip_fea=None if clip_fea is None else torch.cat([clip_fea, clip_fea]),
                ).float().chunk(2)
            else:
                v_c = model(x, tt, ctx, y=y, clip_fea=clip_fea).float()
                cancel.check()
                v_u = model(x, tt, ctx_neg, y=y, clip_fea=clip_fea).float()
            v = v_u + g * (v_c - v_u)
        else:
            v = model(x, tt, ctx, y=y, clip_fea=clip_fea).float()
        preview = None
        if preview_every and ((i + 1) % preview_every == 0 or i + 1 == r.steps):
            x0 = sampler.x0(i, v, x)
            if cond_latent is not None:
                x0 = (1 - first_mask) * cond_latent + first_mask * x0
            preview = x0[0].detach().float().cpu()
        x = sampler.step(i, v, x)
        if cond_latent is not None:
            x = (1 - first_mask) * cond_latent + first_mask * x
        emit(StepDone(step=i + 1, total=r.steps, elapsed=time.perf_counter() - t_start,
                      timestep=float(t), expert=expert, preview=preview))
    cancel.check()

    # --- decode
    emit(StageStarted("decode"))
    frames = components.vae_decoder.decode_frames(x)
    emit(Finished(seconds=time.perf_counter() - t0, frames=frames.shape[0]))
    return frames


def generate_to_file(
    components: Components,
    request: GenerationRequest,
    out: str | Path,
    *,
    options: RunOptions | None = None,
    cancel: CancelToken | None = None,
    emit: Emit = _no_emit,
    device: torch.device | str = "cpu",
) -> Path:
    """generate() and write the result atomically with its settings (nothing appears at ``out``
    unless the whole video was made)."""
    from . import __version__
    from .video import check_output_path, write_video

    check_output_path(Path(out))  # before the run, not after minutes of work
    t0 = time.perf_counter()
    frames = generate(components, request, cancel=cancel, emit=emit, device=device)
    fps = components.variant.defaults.fps
    meta = {
        "app": "wan-desktop",
        "version": __version__,
        "variant": components.variant.name,
        "fps": fps,
        "request": request.to_dict(),
        "options": options.to_dict() if options else None,
        "device": str(device),
        "model": {k: _json_value(v) for k, v in components.info.items()},
        "seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return write_video(out, [frames], fps=fps, metadata=meta)


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
