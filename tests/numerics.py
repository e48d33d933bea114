"""Shared numeric comparisons for parity tests."""

from __future__ import annotations

import torch


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref| (the 'max relative error' the parity thresholds refer to)."""
    ours = ours.detach().double()
    ref = ref.detach().double()
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    return float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two uint8 videos/images."""
    mse = (a.double() - b.double()).pow(2).mean()
    if mse == 0:
        return float("inf")
    return float(10 * torch.log10(255.0**2 / mse))
