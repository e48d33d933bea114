"""Colour correction for videos continued through pixels (long_video.py).

A window that starts from decoded pixels (Wan I2V / FLF2V continuation, ``--extend``) re-encodes
them with the VAE, and each encode → denoise → decode round trip shifts the colours a little; over
many windows the shifts add up (the drift users report). The correction is Reinhard's colour
transfer in CIE L*a*b* (D65): each channel of a new window is moved to the mean and standard
deviation of the reference window, so a drift cannot compound. The statistics are over the whole
window, so one affine map per channel applies to all its frames (no flicker within a window).

Frames are uint8 ``[F, H, W, 3]`` sRGB; the work is done a few frames at a time in float32, so a
720p window never exists in float whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

CHUNK = 8  # frames converted to float at once

# sRGB (D65) <-> CIE XYZ, IEC 61966-2-1
_RGB2XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_WHITE = (0.95047, 1.0, 1.08883)  # D65 reference white
_EPS = 216 / 24389  # CIE ε: the linear segment of f(t)
_KAPPA = 24389 / 27  # CIE κ
MIN_STD = 1e-3  # a flat channel (std 0) is shifted, never scaled by a huge factor


@dataclass(frozen=True)
class LabStats:
    """Per-channel mean and standard deviation of some frames in L*a*b* (L* 0-100)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def distance(self, other: LabStats) -> float:
        """ΔE*76 between the two mean colours: the mean colour shift."""
        return sum((a - b) ** 2 for a, b in zip(self.mean, other.mean, strict=True)) ** 0.5


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB [..., 3] in [0, 1] -> L*a*b* [..., 3] (float32)."""
    import torch

    rgb = rgb.float()
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_RGB2XYZ, dtype=torch.float32, device=rgb.device)
    xyz = lin @ m.T / torch.tensor(_WHITE, device=rgb.device)
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """L*a*b* [..., 3] -> sRGB [..., 3], clamped to [0, 1]."""
    import torch

    lab = lab.float()
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = torch.stack([fx, fy, fz], dim=-1)
    xyz = torch.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA)
    xyz = xyz * torch.tensor(_WHITE, device=lab.device)
    m_inv = torch.linalg.inv(torch.tensor(_RGB2XYZ, dtype=torch.float64)).float().to(lab.device)
    lin = (xyz @ m_inv.T).clamp(0, 1)
    rgb = torch.where(
        lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055
    )
    return rgb.clamp(0, 1)


def lab_stats(frames: Tensor) -> LabStats:
    """Mean and std of each L*a*b* channel over all pixels of uint8 frames [F, H, W, 3]."""
    import torch

    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    n = 0
    for i in range(0, frames.shape[0], CHUNK):
        lab = rgb_to_lab(frames[i : i + CHUNK].float() / 255).reshape(-1, 3).double()
        total += lab.sum(0)
        squares += (lab * lab).sum(0)
        n += lab.shape[0]
    if n == 0:
        raise ValueError("no frames to measure")
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt()
    return LabStats(
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
    )


def match_colors(
    frames: Tensor,
    reference: LabStats,
    *,
    own: LabStats | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """uint8 frames [F, H, W, 3] with each L*a*b* channel moved to ``reference``'s mean and std:
    ``(x − μ) · σ_ref / σ + μ_ref``. ``own``: the frames' statistics if already measured;
    ``out``: where to write (``frames`` itself: in place, no second copy of a window)."""
    import torch

    own = own or lab_stats(frames)
    mu, mu_ref = torch.tensor(own.mean), torch.tensor(reference.mean)
    scale = torch.tensor(reference.std) / torch.tensor(own.std).clamp_min(MIN_STD)
    out = torch.empty_like(frames) if out is None else out
    with torch.inference_mode():  # decoded frames are inference tensors (the torch backend)
        for i in range(0, frames.shape[0], CHUNK):
            lab = rgb_to_lab(frames[i : i + CHUNK].float() / 255)
            rgb = lab_to_rgb((lab - mu) * scale + mu_ref)
            out[i : i + CHUNK] = (rgb * 255).round().to(torch.uint8)
    return out
