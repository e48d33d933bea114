"""Long videos for every model without Diffusion Forcing (Wan2.1 / 2.2 T2V, I2V, FLF2V, TI2V-5B):
frames beyond one window run consecutive windows, each continuing the previous one through the
pipeline's own stages (``pipeline.condition`` → ``denoise`` → ``decode``).

Geometry, in latent frames (the VAE's time stride is 4: latent 0 is one frame, each other four):
a video of F = 4n+1 frames is T = n+1 latent frames; windows of ``window_frames`` (T_w latents)
start every T_w − K latents, where K (``window_overlap``) latent frames are carried over, so the
next window's first P = 4(K−1)+1 frames are the previous window's last P. Those P frames are
blended once (a linear crossfade) and written once: a video is exactly F frames long.

How a window continues the one before it:
- T2V (Wan2.1 / Wan2.2): the K carried latents are held while the rest denoises (masked latents:
  put back re-noised to each step's σ, since these models take one timestep for all frames).
- TI2V-5B (either task): its first-frame latent conditioning, over the K carried latents (clean,
  their tokens at t = 0, as the model does for an input image).
- I2V / FLF2V: the image conditioning, with the previous window's last P decoded frames (FLF2V's
  end frame only in the last window). These windows re-encode pixels, which shifts colours a
  little each time: the colours of each window are matched to the first's (color_match.py).
Pixels are never re-encoded where the carried latents exist. ``--extend VIDEO`` continues a video
on disk: its last P frames are encoded (they have no latents) and it is copied into the output.

Memory: decoded frames go to the writer window by window; the host holds one window's frames and
the P held back for the next blend (see :func:`generate_long`), whatever the length. The memory
planner plans one window (:func:`one_window`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import pipeline
from .cancel import CancelToken
from .errors import ConfigError
from .request import ResolvedRequest
from .variants import Task

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .color_match import LabStats
    from .contracts import Components
    from .options import RunOptions
    from .variants import Variant

Sink = Callable[["Tensor"], None]  # uint8 frames [n, H, W, 3], in order
PROMPT_SEPARATOR = " | "
TASKS = (Task.T2V, Task.I2V, Task.FLF2V, Task.TI2V)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True, kw_only=True)
class Window:
    """One window of a long video. ``start``: its first latent frame in the whole video's latent
    sequence (the generated part; an extended video's own frames come before it)."""

    index: int  # 0-based
    start: int
    latent_frames: int  # T of this window
    held: int  # latent frames carried over from the window (or video) before; 0: none
    prompt: str
    last: bool
    temporal: int = 4

    @property
    def frames(self) -> int:
        """Its decoded frames, the carried ones included."""
        return self.temporal * (self.latent_frames - 1) + 1

    @property
    def overlap_frames(self) -> int:
        """Its first frames that re-make the previous window's last ones (P = 4(K−1)+1)."""
        return self.temporal * (self.held - 1) + 1 if self.held else 0


@dataclass(frozen=True, kw_only=True)
class WindowPlan:
    windows: tuple[Window, ...]
    frames: int  # frames generated (an extended video's own frames not counted)
    window_frames: int
    overlap: int  # latent frames carried from window to window

    @property
    def count(self) -> int:
        return len(self.windows)

    @property
    def overlap_frames(self) -> int:
        return self.windows[0].temporal * (self.overlap - 1) + 1

    def describe(self) -> str:
        return (
            f"{self.count} windows of up to {self.window_frames} frames, {self.overlap_frames} "
            f"frame(s) of overlap ({self.overlap} latent), {self.frames} frames"
        )


def split_prompts(text: str) -> tuple[str, ...]:
    """Per-window prompts: lines (``--prompt-file``) or parts separated by `` | ``; the last one
    repeats for the remaining windows."""
    parts = [p.strip() for line in text.splitlines() for p in line.split(PROMPT_SEPARATOR)]
    return tuple(p for p in parts if p) or (text,)


def is_long(request: ResolvedRequest) -> bool:
    """Whether a request runs windows: more frames than one window, or a video to continue."""
    return request.extend is not None or request.frames > request.window_frames


def plan_windows(request: ResolvedRequest, *, temporal: int = 4) -> WindowPlan:
    """The windows of a request (see the module's docstring for the geometry)."""
    total = (request.frames - 1) // temporal + 1
    t_w = (request.window_frames - 1) // temporal + 1
    k = request.window_overlap
    extend = request.extend is not None
    if extend and total <= k:
        p = temporal * (k - 1) + 1
        raise ConfigError(
            f"continuing a video needs more frames than the {p} it carries over, got "
            f"{request.frames}",
            remedy=f"Give --frames {p + temporal} or more.",
            field="frames",
        )
    prompts = split_prompts(request.prompt)
    starts = [0]
    while starts[-1] + t_w < total:
        starts.append(starts[-1] + t_w - k)
    if len(starts) > 1:  # the last window is a whole one too (engines are built for one
        starts[-1] = total - t_w  # size), carrying more of the one before: ≥ k, < t_w latents
    windows: list[Window] = []
    for i, start in enumerate(starts):
        end = min(start + t_w, total)
        held = (starts[i - 1] + t_w - start) if i else (k if extend else 0)
        windows.append(
            Window(
                index=i,
                start=start,
                latent_frames=end - start,
                held=held,
                prompt=prompts[min(i, len(prompts) - 1)],
                last=end == total,
                temporal=temporal,
            )
        )
    return WindowPlan(
        windows=tuple(windows),
        frames=request.frames,
        window_frames=request.window_frames,
        overlap=k,
    )


def one_window(request: ResolvedRequest) -> ResolvedRequest:
    """The request of one window (what the memory planner and engine sizes plan for)."""
    if not is_long(request):
        return request
    return replace(request, frames=min(request.frames, request.window_frames))


def check(request: ResolvedRequest, variant: Variant) -> WindowPlan | None:
    """prepare()'s check of a long video (None: one window, nothing to check): the task, the
    prompts, the video to extend (opened, not decoded)."""
    if not is_long(request):
        return None
    if request.task not in TASKS or variant.dit.model_type not in ("t2v", "i2v", "flf2v", "ti2v"):
        raise ConfigError(
            f"long videos (windows) are not available for the {request.task.value} task",
            remedy=f"Use at most {request.window_frames} frames.",
            field="frames",
        )
    if request.extend is not None:
        from .video_input import open_source

        open_source(request.extend, field="extend")
    return plan_windows(request, temporal=variant.vae.temporal_factor)


def refuse_review(windows: int) -> NoReturn:
    """Review before decode needs every latent before any decode; sliding windows decode each
    window before the next one starts (it continues from its frames), so it is refused, never
    skipped. (SkyReels-V2 DF runs decode once at the end: they take a review.)"""
    raise ConfigError(
        f"review before decode is for single-window videos; this one runs {windows} windows, "
        "each decoded before the next one starts",
        remedy="Turn off Review before decode, or shorten the video to one window.",
        field="review",
    )


# ----------------------------------------------------------------------------- run


def generate_to_file(
    components: Components,
    request: ResolvedRequest,
    out: str | Path,
    *,
    options: RunOptions | None = None,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit = pipeline._no_emit,
    device: torch.device | str = "cpu",
) -> Path:
    """A long video written as it is made (video.VideoWriter: a temporary file renamed when
    complete, so a cancel or failure leaves nothing at ``out``), with its settings."""
    from .video import VideoWriter, check_output_path

    check_output_path(Path(out))
    t0 = time.perf_counter()
    fps = request.fps or components.variant.defaults.fps  # --fps, else the model's
    plan = plan_windows(request, temporal=components.variant.vae.temporal_factor)
    meta = pipeline.output_metadata(
        components,
        request,
        fps=fps,
        options=options,
        device=device,
        windows=plan.count,
        window_plan=plan.describe(),
    )
    with VideoWriter(out, fps=fps, metadata=meta) as writer:
        generate_long(components, request, writer.add, cancel=cancel, emit=emit, device=device)
        seconds = round(time.perf_counter() - t0, 3)
        return writer.finish({"seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def generate_long(
    components: Components,
    request: ResolvedRequest,
    sink: Sink,
    *,
    cancel: CancelToken | None = None,
    emit: pipeline.Emit = pipeline._no_emit,
    device: torch.device | str = "cpu",
    preview_every: int = 1,
) -> int:
    """Run every window of ``request`` and hand the frames to ``sink`` in order, each once;
    returns how many. Events carry the window (``window``/``windows``); a cancel raises
    ``Cancelled`` within one step.

    Held in host memory at any time: the current window's decoded frames, the P frames held back
    for the next window's blend (and, with ``--extend`` and colour matching, the source's last
    window of frames for its colour statistics)."""

    cancel = cancel or CancelToken()
    variant = components.variant
    tf = variant.vae.temporal_factor
    plan = plan_windows(request, temporal=tf)
    latent_mode = variant.dit.model_type in ("t2v", "ti2v")
    correct = request.color_match and (not latent_mode or request.extend is not None)
    boundary = components.boundary if components.boundary is not None else variant.defaults.boundary
    t0 = time.perf_counter()
    written = 0

    def put(frames: Tensor) -> None:
        nonlocal written
        if frames.shape[0]:
            sink(frames)
            written += frames.shape[0]

    # Frame positions below count from the first window's first frame (--extend: from the
    # video's last P frames, which the first window re-makes).
    pending: Tensor | None = None  # made, not yet written: blended with the next window
    pending_at = 0  # its position
    carry: Tensor | None = None  # I2V / FLF2V: the frames the next window starts from
    held: Tensor | None = None  # [1, z, K, h, w] T2V / TI2V: the latents the next one starts from
    reference: LabStats | None = None  # the first window's colours
    if request.extend is not None:
        cancel.check()
        emit(pipeline.StageStarted("extend", window=1, windows=plan.count))
        pending, reference = _copy_source(request, plan, put, cancel, want_stats=correct)
        carry = pending
        if latent_mode:
            held = _encode(components, pending, device)
    for w in plan.windows:
        nxt = None if w.last else plan.windows[w.index + 1]
        cancel.check()

        def wemit(event: pipeline.Event, w: Window = w) -> None:
            if isinstance(event, (pipeline.StageStarted, pipeline.StepDone)):
                event = replace(event, window=w.index + 1, windows=plan.count)
            emit(event)

        wemit(pipeline.StageStarted("encode"))
        r = replace(
            request, prompt=w.prompt, frames=w.frames, seed=(request.seed + w.index) % 2**63
        )
        noise = pipeline.initial_noise(
            (1, *variant.latent_shape(r.width, r.height, w.frames)), r.seed
        )
        if latent_mode:
            cond = _latent_condition(components, r, w, held, noise, device, cancel)
        else:
            cond = _pixel_condition(components, r, w, carry, device, cancel)
        wemit(pipeline.StageStarted("denoise"))
        pipeline.begin_run(components, r)  # each window is a run of the schedule
        latents = pipeline.denoise(
            components.denoisers,
            noise,
            cond,
            r,
            boundary=boundary,
            cancel=cancel,
            emit=wemit,
            device=device,
            preview_every=preview_every,
        )
        del cond, noise
        wemit(pipeline.StageStarted("decode"))
        if latent_mode and nxt is not None:
            held = latents[:, :, -nxt.held :].clone()
        frames = pipeline.decode(components, latents)  # uint8 [F_w, H, W, 3] on the CPU
        del latents
        trim_heap()  # the decode's float copies are gone
        if correct:
            from .color_match import lab_stats, match_colors

            if reference is None:
                reference = lab_stats(frames)
            else:
                frames = match_colors(frames, reference, out=frames)
        start = tf * w.start  # this window's frames are at [start, end)
        end = start + frames.shape[0]
        done = start  # written up to here
        if pending is not None:  # this window re-made them: blend, write
            n = pending.shape[0]
            put(crossfade(pending, frames[pending_at - start : pending_at - start + n]))
            done = pending_at + n
        keep = 0 if nxt is None else min(plan.overlap_frames, end - done)
        put(frames[done - start : end - start - keep])
        pending = frames[end - start - keep :].clone() if keep else None
        pending_at = end - keep
        if nxt is not None and not latent_mode:
            carry = frames[frames.shape[0] - nxt.overlap_frames :].clone()
        del frames
        trim_heap()
    cancel.check()
    emit(pipeline.Finished(seconds=time.perf_counter() - t0, frames=written))
    return written


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; elsewhere
    nothing). A window's frames and their float copies are freed when it is written, but glibc
    serves blocks under its adaptive mmap threshold (≤ 32 MB) from heaps it keeps: without a
    trim, resident memory crept up by about 20 MB a window at 1024×512 (tests/pipeline/
    test_long_video.py), with it a 10-window video peaks where a 3-window one does."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return


def crossfade(before: Tensor, after: Tensor) -> Tensor:
    """The overlap frames made twice (the end of one window, the start of the next), blended
    once: weights (j+1)/(P+1) on the new window's frame j, uint8 [P, H, W, 3]."""
    import torch

    n = before.shape[0]
    wgt = torch.arange(1, n + 1, dtype=torch.float32).div_(n + 1).view(n, 1, 1, 1)
    mixed = before.float() * (1 - wgt) + after.float() * wgt
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- conditioning


def _text_only(r: ResolvedRequest) -> ResolvedRequest:
    return replace(r, task=Task.T2V, image=None, last_image=None)


def _latent_condition(
    components: Components,
    r: ResolvedRequest,
    w: Window,
    held: Tensor | None,
    noise: Tensor,
    device: torch.device | str,
    cancel: CancelToken,
) -> pipeline.Conditioning:
    """T2V / TI2V windows: the text (and window 0's input image, TI2V) plus the carried latents:
    TI2V keeps them clean with t = 0 on their tokens; Wan T2V holds them re-noised (masked)."""
    import torch

    if held is None:  # the first window of a new video: exactly a one-window run
        return pipeline.condition(components, r, device=device, cancel=cancel)
    cond = pipeline.condition(components, _text_only(r), device=device, cancel=cancel)
    dev = cond.context.device
    _z, t, h, wd = components.variant.latent_shape(r.width, r.height, w.frames)
    k = held.shape[2]
    known = torch.zeros(1, held.shape[1], t, h, wd, device=dev)
    known[:, :, :k] = held.to(dev)
    mask = torch.zeros(1, 1, t, h, wd, device=dev)
    mask[:, :, :k] = 1
    if components.variant.dit.model_type == "ti2v":  # per-token timesteps: the carried are clean
        _pt, ph, pw = components.variant.dit.patch_size
        first_mask = 1 - mask
        token_mask = first_mask[0, 0, :, ::ph, ::pw].flatten()[None]
        return replace(cond, cond_latent=known, first_mask=first_mask, token_mask=token_mask)
    return replace(cond, held=known, held_mask=mask, held_noise=noise.to(dev))


def _pixel_condition(
    components: Components,
    r: ResolvedRequest,
    w: Window,
    carry: Tensor | None,
    device: torch.device | str,
    cancel: CancelToken,
) -> pipeline.Conditioning:
    """I2V / FLF2V windows: the image conditioning with the carried frames (window 0: the input
    image), FLF2V's end frame only in the last window."""
    import torch

    last_image = r.last_image if (r.task is Task.FLF2V and w.last) else None
    if carry is None and (r.task is Task.I2V or last_image is not None):
        return pipeline.condition(components, r, device=device, cancel=cancel)  # a plain window
    cond = pipeline.condition(components, _text_only(r), device=device, cancel=cancel)
    dev = cond.context.device
    if carry is None:
        assert r.image is not None  # resolve() requires it for I2V / FLF2V
        first = pipeline.load_image(r.image, r.width, r.height)[:, :, None]  # [1, 3, 1, H, W]
    else:
        first = _to_video(carry)
    last = None if last_image is None else pipeline.load_image(last_image, r.width, r.height)
    variant = components.variant
    clip_fea = None
    if components.image_encoder is not None and variant.dit.has_image_embedding:
        start = first[0, :, 0][None]  # [1, 3, H, W]: the frame the window starts from
        second = last if last is not None else start  # FLF2V's model always takes two images
        images = start if variant.dit.image_pos_len is None else torch.cat([start, second])
        fea = components.image_encoder.encode(images.to(dev)).float()
        clip_fea = fea.reshape(1, -1, fea.shape[-1])
    elif variant.dit.has_image_embedding:
        raise ConfigError(f"{variant.name} needs the CLIP image encoder, which was not found")
    n = first.shape[2]
    parts = [first, first.new_zeros(1, 3, w.frames - n - (last is not None), r.height, r.width)]
    if last is not None:
        parts.append(last[:, :, None])
    cancel.check()
    if components.vae_encoder is None:
        raise ConfigError("continuing a window through its frames needs the VAE encoder")
    y_lat = components.vae_encoder.encode(torch.cat(parts, dim=2).to(dev)).float()
    _z, t, h, wd = variant.latent_shape(r.width, r.height, w.frames)
    mask = frames_mask(w.frames, n, t, h, wd, last=last is not None, temporal=w.temporal)
    return replace(cond, y=torch.cat([mask.to(dev), y_lat], dim=1), clip_fea=clip_fea)


def frames_mask(
    frames: int, given: int, t_lat: int, h: int, w: int, *, last: bool, temporal: int = 4
) -> Tensor:
    """Wan I2V's 4-channel mask [1, 4, T_lat, h, w] with ones on the first ``given`` frames (and
    the last): ``pipeline.i2v_mask`` for more than one given frame."""
    import torch

    m = torch.zeros(1, frames, h, w)
    m[:, :given] = 1
    if last:
        m[:, -1] = 1
    m = torch.cat([m[:, :1].repeat(1, temporal, 1, 1), m[:, 1:]], dim=1)  # [1, 4·T_lat, h, w]
    return m.view(1, t_lat, temporal, h, w).transpose(1, 2).contiguous()


def _to_video(frames: Tensor) -> Tensor:
    """uint8 [n, H, W, 3] -> [1, 3, n, H, W] in [-1, 1]."""
    return (frames.float() / 255 * 2 - 1).permute(3, 0, 1, 2)[None].contiguous()


def _encode(components: Components, frames: Tensor, device: torch.device | str) -> Tensor:
    """--extend in a latent mode: the source's last P frames -> their K latents (a video on disk
    has no latents)."""
    if components.vae_encoder is None:
        raise ConfigError("continuing a video needs the VAE encoder")
    return components.vae_encoder.encode(_to_video(frames).to(device)).float()


def _copy_source(
    request: ResolvedRequest, plan: WindowPlan, put: Sink, cancel: CancelToken, *, want_stats: bool
) -> tuple[Tensor, LabStats | None]:
    """Stream the video to extend into the output, holding back its last P frames (returned, to
    be blended with the first window) and, for the colour reference, its last window of frames."""
    import numpy as np
    import torch

    from .video_input import iter_frames, open_source

    src = open_source(request.extend or "", field="extend")
    p = plan.overlap_frames
    tail: deque[np.ndarray] = deque(maxlen=p)
    recent: deque[np.ndarray] = deque(maxlen=plan.window_frames if want_stats else p)
    count = 0
    for frame in iter_frames(src, request.width, request.height, field="extend"):
        cancel.check()  # a long video to copy: a cancel still lands within one frame
        if len(tail) == p:
            put(torch.from_numpy(tail[0].copy())[None])
        tail.append(frame)
        recent.append(frame)
        count += 1
    if count < p:
        raise ConfigError(
            f"the video to extend has {count} frame(s); continuing it takes its last {p}",
            remedy="Give a longer video, or a smaller window overlap.",
            field="extend",
        )
    stats = None
    if want_stats:
        from .color_match import lab_stats

        stats = lab_stats(torch.from_numpy(np.stack(list(recent))))
    return torch.from_numpy(np.stack(list(tail))), stats
