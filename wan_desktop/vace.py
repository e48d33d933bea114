"""The VACE conditioning of a run (task ``vace``): control frames, mask and reference images become
the VACE context the VACE DiT (models/vace.py) reads beside the latents.

As the official ``WanVace.vace_encode_frames`` / ``vace_encode_masks`` (Wan-Video/Wan2.1@9737cba
wan/vace.py) and diffusers' ``WanVACEPipeline`` build it:

* the mask (white = generate, black = keep; its first channel) is thresholded at 0.5 and splits the
  control frames into the *inactive* part ``frames·(1 − m)`` (what is kept) and the
  *reactive* part ``frames·m``; each is VAE-encoded: 16 + 16 latent channels;
* each reference image (fitted into a white frame of the video's size) is encoded alone, given 16
  zero channels, and put *before* the video's latent frames (in the order given; diffusers
  reverses several references);
* the mask (not thresholded) is packed into 64 channels, one per pixel of an 8×8 VAE cell, then
  resampled to the latent frames (nearest-exact); the reference frames get zero mask;
* context = [inactive ; reactive ; mask] = 96 channels × (references + latent frames).

The pixels (control frames, masks, references, outpainting, clips, preprocessors) come from
vace_inputs.py; no control video: gray frames, all generated. The noise covers the reference frames
too, which are dropped before the decode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .request import GenerationRequest, ResolvedRequest

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .contracts import Components, VaeEncoder
    from .vace_inputs import VaceInputs


def check_inputs(r: GenerationRequest | ResolvedRequest) -> None:
    """Cheap checks before any weights load (vace_inputs.check: files, frame counts and sizes,
    margins; no pixel decoded). A resolved request only: the checks need its size."""
    from .vace_inputs import VaceSources, check

    if isinstance(r, ResolvedRequest):
        check(VaceSources.from_request(r))


def load_inputs(r: ResolvedRequest) -> VaceInputs:
    """The request's VACE pixels at its size (vace_inputs.build)."""
    from .vace_inputs import VaceSources, build

    return build(VaceSources.from_request(r))


def pack_mask(mask: Tensor, t_lat: int, *, spatial: int = 8, refs: int = 0) -> Tensor:
    """mask [F, H, W] in [0, 1] -> [spatial², refs + t_lat, H/spatial, W/spatial]: channel
    ``i·spatial + j`` holds pixel (i, j) of each spatial×spatial cell; frames resampled
    nearest-exact to the latent frames; ``refs`` zero frames in front."""
    import torch
    import torch.nn.functional as F

    f, h, w = mask.shape
    hl, wl = h // spatial, w // spatial
    m = mask.view(f, hl, spatial, wl, spatial).permute(2, 4, 0, 1, 3).flatten(0, 1)
    m = F.interpolate(m[None], size=(t_lat, hl, wl), mode="nearest-exact")[0]
    if refs:
        m = torch.cat([m.new_zeros(m.shape[0], refs, hl, wl), m], dim=1)
    return m


def encode_context(
    vae: VaeEncoder,
    inputs: VaceInputs,
    *,
    spatial: int = 8,
    temporal: int = 4,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The VACE context [1, 96, refs + T_lat, h, w] (see the module docstring) on ``device``.

    The inputs stay uint8 on the host: each part's float frames are made on ``device`` just before
    it is encoded, one float video at a time."""
    import torch

    m = inputs.binary_mask(device)[None]  # [1, 1, F, H, W] in {0, 1}
    inactive = vae.encode(inputs.pixels(device)[None].mul_(1 - m)).float()
    reactive = vae.encode(inputs.pixels(device)[None].mul_(m)).float()
    del m
    latents = torch.cat([inactive, reactive], dim=1)  # [1, 32, T_lat, h, w]
    if inputs.refs:
        ref_lat = [vae.encode(ref[None].to(device)).float() for ref in inputs.refs]
        ref_lat = [torch.cat([r, torch.zeros_like(r)], dim=1) for r in ref_lat]  # [1, 32, 1, h, w]
        latents = torch.cat([*ref_lat, latents], dim=2)
    t_lat = (inputs.num_frames - 1) // temporal + 1
    packed = inputs.packed(device)[0]  # the mask before its threshold, [F, H, W]
    mask = pack_mask(packed, t_lat, spatial=spatial, refs=len(inputs.refs))
    return torch.cat([latents, mask[None].to(latents)], dim=1)


def condition(components: Components, r: ResolvedRequest, device: torch.device) -> dict[str, Any]:
    """The VACE part of a run's ``pipeline.Conditioning``: the context, its scale and how many
    latent frames the references add (dropped before the decode)."""
    variant = components.variant
    if not variant.dit.is_vace:
        raise ConfigError(
            f"the task vace needs a VACE model; {variant.name} is not one",
            remedy="Choose a Wan2.1-VACE or Wan2.2-VACE-Fun model.",
            field="task",
        )
    if components.vae_encoder is None:
        raise ConfigError(
            "the task vace needs the VAE encoder, which this engine folder lacks",
            remedy="Export it too (wan-desktop export --components t5,dit,vae,vae_encoder).",
        )
    inputs = load_inputs(r)
    ctx = encode_context(
        components.vae_encoder,
        inputs,
        spatial=variant.vae.spatial_factor,
        temporal=variant.vae.temporal_factor,
        device=device,
    )
    return {"vace": ctx, "vace_scale": r.control_scale, "ref_frames": len(inputs.refs)}
