"""Video-to-video (SDEdit) with any T2V model: the input video, encoded by the VAE, is noised to a
σ inside the schedule and denoised from there (``--task v2v --video PATH --strength S``).

What diffusers 0.42.1's ``WanVideoToVideoPipeline`` does, and so what this does:
* of the ``N`` steps of the usual grid, the last ``int(N · strength)`` run (``get_timesteps``:
  ``t_start = N − min(int(N · strength), N)``); the solver starts afresh at step ``t_start``
  (UniPC at order 1, with no corrector on its first step, exactly as a scheduler entered at that
  index), so the schedule is the grid's tail;
* the start latents are ``(1 − σ) · x0 + σ · noise`` at that step's σ (UniPC's ``add_noise`` with
  flow sigmas), ``x0`` the VAE's latent mean (``sample_mode="argmax"``), normalized;
* the noise has the shape of the latents and is drawn from the seed like a T2V run's.
A strength of 1 runs every step from σ_0 (nearly pure noise: close to T2V, which starts at σ = 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .cancel import CancelToken
    from .contracts import Components
    from .request import ResolvedRequest
    from .samplers import Schedule


def start_step(steps: int, strength: float) -> int:
    """The grid index a v2v run starts at: the first ``steps − int(steps · strength)`` are
    skipped (diffusers' count)."""
    return steps - min(int(steps * strength), steps)


def tail(schedule: Schedule, strength: float) -> Schedule:
    """The part of ``schedule`` a v2v run of ``strength`` steps through."""
    from .samplers import Schedule

    k = start_step(schedule.steps, strength)
    if k >= schedule.steps:
        raise ConfigError(
            f"strength {strength:g} of {schedule.steps} steps runs no step", field="strength"
        )
    return Schedule(sigmas=schedule.sigmas[k:], timesteps=schedule.timesteps[k:])


def noised(latents: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """The start of the denoise: ``(1 − σ) · latents + σ · noise`` in float32 (σ a float32 value,
    as the scheduler holds it)."""
    import torch

    s = torch.tensor(sigma, dtype=torch.float32, device=latents.device)
    return (1 - s) * latents.float() + s * noise.to(latents.device, torch.float32)


def check_video(request: ResolvedRequest, *, temporal: int = 4) -> None:
    """Before any weights load: the input video opens and has the frames the run needs (ffmpeg
    counts them up to that many, no pixel is kept)."""
    from .video_input import count_frames, open_source, too_short

    if request.video is None:
        raise ConfigError("task v2v needs an input video (mp4 or PNG folder)", field="video")
    src = open_source(request.video, field="video")
    have = count_frames(src, limit=request.frames)
    if have < request.frames:
        raise too_short(src, have, request.frames, temporal=temporal)


def encode_video(
    components: Components,
    request: ResolvedRequest,
    *,
    device: torch.device | str,
    cancel: CancelToken | None = None,
) -> Tensor:
    """The input video's first ``request.frames`` frames, cropped and resized to the run's size,
    as normalized VAE latents [1, z, T, h, w] float32 on ``device``.

    The frames stay uint8 (0.22 GB at 1280×720×81, against 0.9 GB as float32) on the host and on
    the way to the device; the encoder turns each chunk into [-1, 1] floats as it encodes it (and
    encodes spatial tiles when the memory plan says whole frames would not fit)."""
    from .video_input import read_frames

    if request.video is None:
        raise ConfigError("task v2v needs an input video (mp4 or PNG folder)", field="video")
    if components.vae_encoder is None:
        raise ConfigError(
            "video-to-video needs the VAE encoder, which these components lack",
            remedy="Use the PyTorch backend, or export the engines again with the VAE encoder "
            "(wan-desktop export ... --components t5,dit,vae,vae_encoder).",
            field="task",
        )
    video = read_frames(request.video, request.width, request.height, request.frames)
    if cancel is not None:
        cancel.check()
    latents = components.vae_encoder.encode(video.to(device)).float()
    del video
    return latents
