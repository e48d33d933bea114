"""SkyReels-V2 Diffusion Forcing: videos of any length from a model trained with a noise level per
frame (T2V, I2V from a first frame, and continuing a video on disk).

What diffusers 0.42.1's SkyReelsV2DiffusionForcingPipeline / ...ImageToVideoPipeline /
...VideoToVideoPipeline do (read for the facts, written anew), stepping our UniPC on Wan's
official σ grid:

* **Windows.** A video of T latent frames runs in windows of ``base_frames`` (B latent frames);
  each window after the first starts with the last ``overlap_history`` (O latent frames) of what
  is made so far as clean latents (cut to a multiple of ``causal_block_size``), and adds what
  follows them. The latents of all windows are decoded once at the end.
* **Per-frame schedule** (``timestep_matrix``). Each row of the matrix is one model call with a
  timestep per latent frame; frames are grouped in causal blocks. Synchronous (``ar_step`` 0):
  every block steps together. Asynchronous (``ar_step`` > 0): each block lags ``ar_step`` steps
  behind the one before, a denoising wave, with block-causal attention (the DiT's
  ``causal_block_size``). Carried frames count as finished (t = 0).
* **addnoise_condition** X > 0: the carried frames enter each model call as
  ``0.999·(1 − X/1000)``-mixed with fresh noise and timestep X (they are never updated).
* **fps**: the fps embedding's row (models/diffusion_forcing.fps_index) and the output's rate.
* Each latent frame has its own solver (diffusers deep-copies its scheduler per frame).

Deviations: the carried frames' noise comes from a generator seeded with ``seed + 1`` (diffusers
draws it from torch's global generator); a continued video (``--extend``) is written once, then
the new frames (diffusers appends the re-decoded overlap again); every window's latent frame count
must be a multiple of ``causal_block_size`` (diffusers leaves the remainder undenoised or fails).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import pipeline
from .cancel import CancelToken
from .errors import ConfigError
from .variants import Task

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .contracts import Components
    from .options import RunOptions
    from .request import ResolvedRequest
    from .variants import Variant

# diffusers' generate_timestep_matrix marks a not-yet-started frame with timestep 999
NOT_STARTED = 999


def is_forcing(variant: Variant) -> bool:
    """Whether a variant runs Diffusion Forcing (a SkyReels-V2 DF model)."""
    return variant.forcing is not None


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ForcingPlan:
    """The windows of a DF run, in latent frames: ``sizes[i]`` frames each (the first ``carried``
    of every window after the first, and of every window when continuing a video, are carried
    over clean)."""

    total: int  # latent frames made (with --extend: the carried ones included)
    base: int  # B: latent frames per window
    overlap: int  # O: latent frames carried over
    sizes: tuple[int, ...]
    extend: bool

    @property
    def count(self) -> int:
        return len(self.sizes)

    def describe(self) -> str:
        return f"{self.count} window(s) of {self.base} latent frames, {self.overlap} carried over"


def latent_frames(frames: int, temporal: int = 4) -> int:
    return (frames - 1) // temporal + 1


def plan(request: ResolvedRequest, *, temporal: int = 4) -> ForcingPlan:
    """The windows diffusers runs for a request (its n_iter and prepare_latents arithmetic)."""
    r = request
    assert r.base_frames is not None and r.overlap_history is not None
    total = latent_frames(r.frames, temporal)
    base = latent_frames(r.base_frames, temporal)
    overlap = latent_frames(r.overlap_history, temporal)
    extend = r.extend is not None
    long = extend or r.frames > r.base_frames
    if not long:
        return ForcingPlan(total=total, base=total, overlap=overlap, sizes=(total,), extend=False)
    n_iter = 1 + (total - base - 1) // (base - overlap) + 1
    sizes = []
    for i in range(n_iter):
        if i == 0 and not extend:
            sizes.append(base)
        else:
            finished = i * (base - overlap) + overlap
            sizes.append(min(total - finished + overlap, base))
    return ForcingPlan(total=total, base=base, overlap=overlap, sizes=tuple(sizes), extend=extend)


def one_window(request: ResolvedRequest) -> ResolvedRequest:
    """The request of one window (what the memory planner plans for: a DF run never holds more
    than ``base_frames`` frames' latents in the DiT)."""
    from dataclasses import replace

    if request.base_frames is None or request.frames <= request.base_frames:
        return request
    return replace(request, frames=request.base_frames)


def check(
    request: ResolvedRequest, variant: Variant, *, step_cache: float | None = None
) -> ForcingPlan:
    """prepare()'s check of a DF run: its task, its windows (each a multiple of the causal block,
    each adding frames), the video to continue (opened, not decoded), no step cache (it skips
    steps of one timestep for all frames; a DF call has one per frame)."""
    r = request
    tf = variant.vae.temporal_factor
    if step_cache:
        raise ConfigError(
            "the step cache (--step-cache) is not available for Diffusion Forcing models",
            remedy="Leave --step-cache out (or set 0).",
        )
    if r.task not in (Task.T2V, Task.I2V):
        raise ConfigError(
            f"{variant.name} does t2v, i2v (a first frame) and continuing a video (extend)",
            field="task",
        )
    if r.extend is not None and r.task is not Task.T2V:
        raise ConfigError("continue a video or start from an image, not both", field="extend")
    assert r.overlap_history is not None and r.causal_block_size is not None
    if r.extend is not None:
        from .video_input import count_frames, open_source, too_short

        if r.frames <= r.overlap_history:
            raise ConfigError(
                f"continuing a video makes frames after the {r.overlap_history} it carries "
                f"over: frames must be more than that, got {r.frames}",
                remedy=f"Give --frames {r.overlap_history + tf} or more.",
                field="frames",
            )
        src = open_source(r.extend, field="extend")
        have = count_frames(src, limit=r.overlap_history)
        if have < r.overlap_history:
            raise too_short(src, have, r.overlap_history, temporal=tf)
    p = plan(r, temporal=tf)
    block = r.causal_block_size
    bad = [n for n in p.sizes if n % block] + ([p.base] if p.base % block else [])
    if bad or not p.sizes or any(n <= 0 for n in p.sizes):
        raise ConfigError(
            f"{r.frames} frames in windows of {r.base_frames} (overlap {r.overlap_history}) give "
            f"windows of {list(p.sizes)} latent frames; with a causal block of {block} each must "
            f"be a multiple of {block}",
            remedy=_frames_remedy(r, tf),
            field="frames",
        )
    return p


def _frames_remedy(r: ResolvedRequest, tf: int) -> str:
    from dataclasses import replace

    assert r.causal_block_size is not None
    ok = []
    for frames in range(r.frames - 40 * tf, r.frames + 40 * tf + 1, tf):
        if frames <= (r.overlap_history or 0) or frames < 1:
            continue
        p = plan(replace(r, frames=frames), temporal=tf)
        if all(n > 0 and n % r.causal_block_size == 0 for n in (*p.sizes, p.base)):
            ok.append(frames)
    near = sorted(ok, key=lambda f: abs(f - r.frames))[:2]
    if not near:
        return "Use causal block size 1, or base frames whose latent count it divides."
    return f"Use --frames {' or '.join(str(f) for f in sorted(near))}."


# ----------------------------------------------------------------------------- schedule


def timestep_matrix(
    frames: int, timesteps: Sequence[int], *, ar_step: int, ready: int, block: int
) -> tuple[list[list[int]], list[list[int]], list[list[bool]]]:
    """diffusers' ``generate_timestep_matrix`` for one window: per model call (row) and latent
    frame, (the timestep, the step index: 0 not started, k ≥ 1 at ``timesteps[k-1]``, N+1 done,
    whether that frame's solver steps). ``ready``: carried frames (done from the start, as whole
    blocks); ``block``: causal_block_size (frames per block)."""
    n = len(timesteps)
    done = n + 1
    blocks = frames // block
    template = [NOT_STARTED, *timesteps, 0]
    pre = [0] * blocks
    for i in range(min(ready // block, blocks)):
        pre[i] = done
    rows_t: list[list[int]] = []
    rows_i: list[list[int]] = []
    rows_u: list[list[bool]] = []
    while not all(p >= done - 1 for p in pre):
        new = [0] * blocks
        for i in range(blocks):
            if i == 0 or pre[i - 1] >= done - 1:  # the first block, or the one before is done
                new[i] = pre[i] + 1
            else:  # asynchronous: ar_step steps behind the block before
                new[i] = new[i - 1] - ar_step
        new = [min(max(v, 0), done) for v in new]
        update = [v != p and v != done for v, p in zip(new, pre, strict=True)]
        rows_i.append([v for v in new for _ in range(block)])
        rows_t.append([int(template[v]) for v in new for _ in range(block)])
        rows_u.append([u for u in update for _ in range(block)])
        pre = new
    return rows_t, rows_i, rows_u


# ----------------------------------------------------------------------------- sampling


ForcingVelocity = Callable[..., "Tensor"]


def _velocity(
    model: ForcingVelocity,
    x: Tensor,
    t: Tensor,
    cond: pipeline.Conditioning,
    r: ResolvedRequest,
    fps: int | None,
    cancel: CancelToken,
) -> Tensor:
    """The guided velocity of one call: the prompt's, and with CFG the negative prompt's, mixed
    by samplers.cfg; as one batch of 2 (``batch_cfg``, the memory plan's choice) or as two calls
    with a cancel check between (diffusers' way)."""
    import torch

    from .samplers import cfg

    kw = {"fps": fps, "causal_block_size": r.causal_block_size}
    if r.guidance == 1.0 or cond.context_neg is None:
        return model(x, t, cond.context, **kw).float()
    if r.batch_cfg:
        both = model(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond.context, cond.context_neg]), **kw
        )
        v_c, v_u = both.float().chunk(2)
        return cfg(v_u, v_c, r.guidance)
    v_c = model(x, t, cond.context, **kw).float()
    cancel.check()
    v_u = model(x, t, cond.context_neg, **kw).float()
    return cfg(v_u, v_c, r.guidance)


def sample(
    components: Components,
    request: ResolvedRequest,
    *,
    prefix: Tensor | None = None,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit = pipeline._no_emit,
    device: torch.device | str = "cpu",
    preview_every: int = 1,
) -> Tensor:
    """Every window of a DF run: the clean latents [1, z, T, h, w] of the whole video (with
    ``prefix``, the first window starts from those clean latents: the encoded first frame for
    I2V, the encoded end of the video to continue). Each model call emits a StepDone; every
    ``preview_every`` calls and at a window's last it carries the window's current x0 (0: never)."""
    import torch

    from .samplers import make_sampler

    cancel = cancel or CancelToken()
    r = request
    variant = components.variant
    tf = variant.vae.temporal_factor
    p = plan(r, temporal=tf)
    z, _t, h, w = variant.latent_shape(r.width, r.height, r.frames)
    dev = torch.device(device)
    schedule = pipeline.run_schedule(r)
    timesteps = [int(t) for t in schedule.timesteps]
    block = r.causal_block_size or 1
    ar_step = r.ar_step or 0
    noise_level = r.addnoise_condition or 0.0
    fps = r.fps if variant.dit.inject_sample_info else None
    model = components.denoisers[0]
    cond = pipeline.condition(components, _text_only(r), device=dev, cancel=cancel)
    gen = torch.Generator(device="cpu").manual_seed(r.seed)
    carried_noise = torch.Generator(device="cpu").manual_seed(r.seed + 1)
    made: Tensor | None = None
    t0 = time.perf_counter()
    for wi, size in enumerate(p.sizes):
        carry: Tensor | None
        if wi == 0:
            carry = prefix
            if carry is not None and p.extend:  # V2V: the carried latents as whole blocks
                carry = carry[:, :, : carry.shape[2] - carry.shape[2] % block]
        else:
            assert made is not None
            carry = made[:, :, -p.overlap :]
            carry = carry[:, :, : carry.shape[2] - carry.shape[2] % block]
        x = torch.randn((1, z, size, h, w), generator=gen, dtype=torch.float32).to(dev)
        ready = 0 if carry is None else carry.shape[2]
        if carry is not None:
            x[:, :, :ready] = carry.to(dev)
        rows_t, rows_i, rows_u = timestep_matrix(
            size, timesteps, ar_step=ar_step, ready=ready, block=block
        )
        solvers = [make_sampler(r.sampler, schedule, seed=r.seed) for _ in range(size)]
        emit(pipeline.StageStarted("denoise", window=wi + 1, windows=p.count))
        for k, (t_row, i_row, u_row) in enumerate(zip(rows_t, rows_i, rows_u, strict=True)):
            cancel.check()
            n = len(t_row)  # = size (every window is a multiple of the block)
            x_in = x[:, :, :n].clone()
            t = torch.tensor([t_row], dtype=torch.long, device=dev)
            if noise_level > 0 and ready > 0:  # the carried frames, re-noised a little each call
                eps = torch.randn(x_in[:, :, :ready].shape, generator=carried_noise).to(dev)
                a = 0.001 * noise_level
                x_in[:, :, :ready] = x_in[:, :, :ready] * (1.0 - a) + eps * a
                t[:, :ready] = int(noise_level)
            v = _velocity(model, x_in, t, cond, r, fps, cancel)
            last = k + 1 == len(rows_t)
            preview = None
            if preview_every and ((k + 1) % preview_every == 0 or last):
                preview = x.clone()  # frames done or not started: as they are
            for f in range(n):
                if u_row[f]:
                    if preview is not None:  # the frame's current data prediction x − σ·v
                        preview[:, :, f] = solvers[f].x0(i_row[f] - 1, v[:, :, f], x[:, :, f])
                    x[:, :, f] = solvers[f].step(i_row[f] - 1, v[:, :, f], x[:, :, f])
            if not bool(torch.isfinite(x).all()):
                raise pipeline._nonfinite(k + 1, len(rows_t), 0, 1, r.guidance)
            emit(
                pipeline.StepDone(
                    step=k + 1,
                    total=len(rows_t),
                    elapsed=time.perf_counter() - t0,
                    timestep=float(max(t_row)),
                    expert=0,
                    window=wi + 1,
                    windows=p.count,
                    preview=None if preview is None else preview[0].float().cpu(),
                )
            )
        made = x if made is None else torch.cat([made, x[:, :, p.overlap :]], dim=2)
    cancel.check()
    assert made is not None
    return made


def _text_only(r: ResolvedRequest) -> ResolvedRequest:
    """The request as pipeline.condition sees it: text only (the first frame is a DF prefix, not
    Wan's I2V conditioning)."""
    from dataclasses import replace

    return replace(r, task=Task.T2V, image=None)


def first_frame_latent(
    components: Components, r: ResolvedRequest, device: torch.device | str
) -> Tensor:
    """I2V: the input image as one clean latent frame [1, z, 1, h, w] (the encoder's mean)."""
    assert r.image is not None and components.vae_encoder is not None
    image = pipeline.load_image(r.image, r.width, r.height)
    return components.vae_encoder.encode(image[:, :, None].to(device)).float()


def generate(
    components: Components,
    request: ResolvedRequest,
    *,
    sink: Callable[[Tensor], None] | None = None,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit = pipeline._no_emit,
    device: torch.device | str = "cpu",
    review: pipeline.Review | None = None,
) -> Tensor:
    """A whole DF run: T2V, I2V (``request.image``) or continuing ``request.extend``. Returns the
    new frames uint8 [F, H, W, 3] (CPU). With ``extend``, the video's own frames go to ``sink``
    first (each [1, H, W, 3]), and the frames returned are those after it. ``review``: asked with
    all the latents before the decode (DISCARD raises pipeline.Discarded)."""
    import numpy as np
    import torch

    cancel = cancel or CancelToken()
    r = request
    t0 = time.perf_counter()
    emit(pipeline.StageStarted("encode"))
    prefix = None
    drop = 0  # decoded frames of the carried latents that the output already has
    if r.extend is not None:
        from .video_input import iter_frames

        assert r.overlap_history is not None and components.vae_encoder is not None
        tail: deque[np.ndarray] = deque(maxlen=r.overlap_history)
        for frame in iter_frames(r.extend, r.width, r.height, field="extend"):
            if sink is not None:
                sink(torch.from_numpy(frame.copy())[None])  # PIL's arrays are read-only
            tail.append(frame)
            cancel.check()
        clip = torch.from_numpy(np.stack(tail)).permute(3, 0, 1, 2)[None].float()
        clip = clip.div_(255.0).mul_(2).sub_(1)  # [1, 3, overlap, H, W] in [-1, 1]
        prefix = components.vae_encoder.encode(clip.to(device)).float()
        block = r.causal_block_size or 1
        kept = prefix.shape[2] - prefix.shape[2] % block
        drop = (kept - 1) * components.variant.vae.temporal_factor + 1 if kept else 0
    elif r.task is Task.I2V:
        prefix = first_frame_latent(components, r, device)
    cancel.check()
    latents = sample(components, r, prefix=prefix, cancel=cancel, emit=emit, device=device)
    if review is not None:  # the app's "review before decode", as pipeline.generate asks it
        emit(pipeline.StageStarted("review"))
        if review(latents[0].detach().float().cpu()) is pipeline.Verdict.DISCARD:
            raise pipeline.Discarded("discarded at review: nothing was decoded or written")
        cancel.check()
    emit(pipeline.StageStarted("decode"))
    frames = pipeline.decode(components, latents)[drop:]
    emit(pipeline.Finished(seconds=time.perf_counter() - t0, frames=frames.shape[0]))
    return frames


def generate_to_file(
    components: Components,
    request: ResolvedRequest,
    out: str | Path,
    *,
    options: RunOptions | None = None,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit = pipeline._no_emit,
    device: torch.device | str = "cpu",
    review: pipeline.Review | None = None,
) -> Path:
    """A DF run written atomically with its settings (nothing at ``out`` unless complete)."""
    from .video import VideoWriter, check_output_path

    check_output_path(Path(out))
    t0 = time.perf_counter()
    fps = request.fps or components.variant.defaults.fps
    p = plan(request, temporal=components.variant.vae.temporal_factor)
    meta = pipeline.output_metadata(
        components,
        request,
        fps=fps,
        options=options,
        device=device,
        windows=p.count,
        window_plan=p.describe(),
    )
    with VideoWriter(out, fps=fps, metadata=meta) as writer:
        frames = generate(
            components,
            request,
            sink=writer.add,
            cancel=cancel,
            emit=emit,
            device=device,
            review=review,
        )
        writer.add(frames)
        seconds = round(time.perf_counter() - t0, 3)
        return writer.finish({"seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
