"""The VACE conditioning of a run (task ``vace``): control frames, mask and reference images become
the VACE context the VACE DiT (models/vace.py) reads beside the latents.

As the official ``WanVace.vace_encode_frames`` / ``vace_encode_masks`` (Wan-Video/Wan2.1@9737cba
wan/vace.py) and diffusers' ``WanVACEPipeline`` build it:

* the mask (white = generate, black = keep; its first channel, in [0, 1]) is thresholded at 0.5 and
  splits the control frames into the *inactive* part ``frames·(1 − m)`` (what is kept) and the
  *reactive* part ``frames·m``; each is VAE-encoded: 16 + 16 latent channels;
* each reference image is fitted into a white frame of the video's size (scaled to fit, bilinear,
  centred), encoded alone, given 16 zero channels, and put *before* the video's latent frames (in
  the order given; diffusers reverses several references);
* the mask (not thresholded) is packed into 64 channels, one per pixel of an 8×8 VAE cell, then
  resampled to the latent frames (nearest-exact); the reference frames get zero mask;
* context = [inactive ; reactive ; mask] = 96 channels × (references + latent frames).

No control video: zero frames with an all-ones mask (everything generated); no mask: all ones. The
noise then covers the reference frames too, which are dropped before the decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .request import GenerationRequest, ResolvedRequest

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .contracts import Components, VaeEncoder


@dataclass(frozen=True, kw_only=True)
class VaceInputs:
    """The pixels of a VACE run, at the run's size.

    frames: [1, 3, F, H, W] in [-1, 1] (zeros when there is no control video)
    mask:   [1, 1, F, H, W] in [0, 1] (ones when there is no mask video)
    refs:   each [1, 3, H, W] in [-1, 1], a reference image on its white canvas
    """

    frames: Tensor
    mask: Tensor
    refs: tuple[Tensor, ...] = ()


def reference_canvas(path: str | Path, width: int, height: int) -> Tensor:
    """An image file -> [1, 3, height, width] in [-1, 1]: the whole image scaled to fit (bilinear,
    as the official code and diffusers), centred on white."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"reference image not found: {p}", field="ref_images")
    try:
        with Image.open(p) as im:
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"cannot read reference image {p}: {e}", field="ref_images") from None
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    ref = arr.permute(2, 0, 1)[None] * 2 - 1  # [1, 3, h, w]
    ih, iw = ref.shape[-2:]
    if (ih, iw) == (height, width):
        return ref.contiguous()
    scale = min(height / ih, width / iw)
    nh, nw = int(ih * scale), int(iw * scale)
    ref = F.interpolate(ref, size=(nh, nw), mode="bilinear", align_corners=False)
    canvas = torch.ones(1, 3, height, width)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, :, top : top + nh, left : left + nw] = ref
    return canvas


def check_inputs(r: GenerationRequest | ResolvedRequest) -> None:
    """Cheap checks before any weights load: the control and mask videos exist (a file, or a
    folder with PNG frames) and the reference images open."""
    from .video_input import open_source

    if r.control_video:
        open_source(r.control_video, field="control_video")
    if r.mask_video:
        open_source(r.mask_video, field="mask_video")
    for ref in r.ref_images:
        reference_canvas(ref, 16, 16)
    if isinstance(r, ResolvedRequest):  # counts, sizes, outpaint, clips (vace_inputs.check)
        from .vace_inputs import check_request

        check_request(r, width=r.width, height=r.height, frames=r.frames)


def load_inputs(r: ResolvedRequest) -> VaceInputs:
    """The request's inputs at its size, built by vace_inputs.from_request (control video and its
    preprocessor, mask video, outpaint margins, first / last clips, reference images), batched."""
    from .vace_inputs import from_request

    inputs = from_request(r)
    return VaceInputs(
        frames=inputs.frames[None],
        mask=inputs.packed_mask[None],  # a mask video's levels kept: they are packed as they are
        refs=tuple(x[:, 0][None] for x in inputs.refs),
    )


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
    vae: VaeEncoder, inputs: VaceInputs, *, spatial: int = 8, temporal: int = 4
) -> Tensor:
    """The VACE context [1, 96, refs + T_lat, h, w] (see the module docstring)."""
    import torch

    m = (inputs.mask > 0.5).to(inputs.frames.dtype)
    inactive = vae.encode(inputs.frames * (1 - m)).float()
    reactive = vae.encode(inputs.frames * m).float()
    latents = torch.cat([inactive, reactive], dim=1)  # [1, 32, T_lat, h, w]
    if inputs.refs:
        ref_lat = [
            vae.encode(ref[:, :, None].to(inputs.frames.device)).float() for ref in inputs.refs
        ]
        ref_lat = [torch.cat([r, torch.zeros_like(r)], dim=1) for r in ref_lat]  # [1, 32, 1, h, w]
        latents = torch.cat([*ref_lat, latents], dim=2)
    t_lat = (inputs.frames.shape[2] - 1) // temporal + 1
    mask = pack_mask(inputs.mask[0, 0], t_lat, spatial=spatial, refs=len(inputs.refs))
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
        raise ConfigError("the task vace needs the VAE encoder, which this backend lacks")
    inputs = load_inputs(r)
    vae = components.vae_encoder
    moved = VaceInputs(
        frames=inputs.frames.to(device),
        mask=inputs.mask.to(device),
        refs=tuple(x.to(device) for x in inputs.refs),
    )
    ctx = encode_context(
        vae, moved, spatial=variant.vae.spatial_factor, temporal=variant.vae.temporal_factor
    )
    return {"vace": ctx, "vace_scale": r.control_scale, "ref_frames": len(inputs.refs)}
