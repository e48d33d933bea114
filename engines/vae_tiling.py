"""Spatially tiled, causal VAE decode that streams every decoded chunk to the CPU.

Wan's VAEs decode one latent frame at a time through an explicit causal cache (models/vae21.py).
Here the latent frame is cut into overlapping spatial tiles; each tile runs the whole causal
decode through time with a cache of its own (tile-major: only one tile's cache and activations are
on the GPU at any time), and every decoded chunk leaves the GPU at once, multiplied by its blend
weight, into a float32 video on the CPU. Neighbouring tiles share ``overlap`` latent pixels and are
blended with linear ramps (weights sum to 1 everywhere). There are no temporal tiles: overlapping
temporal windows make Wan's causal VAE blink (ComfyUI issue 7116), and the frame-by-frame cache
already bounds the time dimension.

The tiling is generic over a :data:`DecodeStep`: "decode this latent chunk of one tile, given its
cache (None for the first chunk), and return the frames and the new cache". The torch VAE provides
one (:func:`torch_decode_step`); ONNX Runtime / TensorRT chunk-step graphs, whose cache goes in and
out as tensors, provide theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wan_desktop.errors import ConfigError

DecodeStep = Callable[[Tensor, Any], tuple[Tensor, Any]]
"""(latent chunk [B, z, T, h, w] on the decoder's device, cache or None) ->
(frames [B, 3, F, h·s, w·s] in [-1, 1], the cache to pass with the next chunk)."""


@dataclass(frozen=True, kw_only=True)
class Tiling:
    """Spatial tiles in latent pixels: ``tile`` (h, w) and ``overlap`` shared with each neighbour."""

    tile: tuple[int, int]
    overlap: int

    def __post_init__(self) -> None:
        th, tw = self.tile
        if th < 1 or tw < 1 or self.overlap < 0:
            raise ConfigError(f"VAE tile {self.tile} with overlap {self.overlap}: sizes must be "
                              "positive and the overlap ≥ 0")
        if self.overlap * 2 >= min(th, tw):
            raise ConfigError(f"VAE tile {th}x{tw} is too small for an overlap of {self.overlap} "
                              "latent pixels (it must exceed twice the overlap)")


def tile_spans(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans covering 0..n with tiles of ``tile`` advancing by ``tile − overlap``; the
    last tile is moved back to end at n (its overlap grows, the tile stays full size)."""
    if tile >= n:
        return [(0, n)]
    stride = tile - overlap
    count = math.ceil((n - tile) / stride) + 1
    starts = [min(i * stride, n - tile) for i in range(count)]
    return [(s, s + tile) for s in starts]


def blend_weights(spans: list[tuple[int, int]], n: int) -> list[Tensor]:
    """Per-span 1D weights (float32, length end − start) that sum to 1 at every position: linear
    ramps across each overlap with the neighbour, flat 1 elsewhere, normalised by the sum."""
    x = torch.arange(n, dtype=torch.float64) + 0.5
    raw = []
    for i, (a, b) in enumerate(spans):
        w = torch.zeros(n, dtype=torch.float64)
        up = torch.ones(n, dtype=torch.float64)
        down = torch.ones(n, dtype=torch.float64)
        if i > 0 and spans[i - 1][1] > a:
            up = ((x - a) / (spans[i - 1][1] - a)).clamp(0, 1)
        if i + 1 < len(spans) and spans[i + 1][0] < b:
            down = ((b - x) / (b - spans[i + 1][0])).clamp(0, 1)
        w[a:b] = torch.minimum(up, down)[a:b]
        raw.append(w)
    total = torch.stack(raw).sum(0)
    if bool((total <= 0).any()):
        raise ConfigError(f"VAE tiles {spans} leave gaps in {n} pixels")
    return [(w / total)[a:b].float() for w, (a, b) in zip(raw, spans, strict=True)]


def decode_tiled(step: DecodeStep, z: Tensor, *, spatial_factor: int, tiling: Tiling | None,
                 frames_per_chunk: int = 1, temporal_factor: int = 4) -> Tensor:
    """Decode normalised latents z [B, zc, T, h, w] (on the decoder's device) to a float32 video
    [B, 3, 1 + temporal_factor·(T − 1), h·s, w·s] on the CPU, tile by tile (``tiling`` None: one
    tile of the whole frame, which equals the untiled decode exactly)."""
    b, _, t, h, w = z.shape
    s = spatial_factor
    frames = 1 + temporal_factor * (t - 1)
    th, tw, ov = (h, w, 0) if tiling is None else (*tiling.tile, tiling.overlap)
    ys, xs = tile_spans(h, th, ov), tile_spans(w, tw, ov)
    wy = blend_weights([(a * s, e * s) for a, e in ys], h * s)
    wx = blend_weights([(a * s, e * s) for a, e in xs], w * s)
    pin = z.device.type == "cuda"
    video = torch.zeros(b, 3, frames, h * s, w * s, dtype=torch.float32, pin_memory=pin)
    single = len(ys) == 1 and len(xs) == 1
    for (y0, y1), wyi in zip(ys, wy, strict=True):
        for (x0, x1), wxi in zip(xs, wx, strict=True):
            weight = None if single else (wyi[:, None] * wxi[None, :]).to(z.device)
            cache: Any = None
            f = 0
            chunks = [(0, 1)] + [(i, min(i + frames_per_chunk, t))
                                 for i in range(1, t, frames_per_chunk)]
            for c0, c1 in chunks:
                out, cache = step(z[:, :, c0:c1, y0:y1, x0:x1], cache)
                out = out.float()
                if weight is not None:
                    out = out * weight
                n = out.shape[2]
                dst = video[:, :, f:f + n, y0 * s:y1 * s, x0 * s:x1 * s]
                if single:
                    dst.copy_(out)
                else:
                    dst.add_(out.cpu())
                f += n
            del cache
    return video


def torch_decode_step(model: Any) -> DecodeStep:
    """The chunk step of our torch VAEs (WanVAE21 / WanVAE22): a fresh CausalCache per tile."""
    from wan_desktop.models.vae21 import CausalCache

    def step(z: Tensor, cache: Any) -> tuple[Tensor, Any]:
        cache = CausalCache() if cache is None else cache
        return model.decode_step(z, cache), cache

    return step


def psnr_db(a: Tensor, b: Tensor) -> float:
    """PSNR of two videos in [-1, 1] as 8-bit frames (inf when identical)."""
    qa = ((a.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).double()
    qb = ((b.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).double()
    mse = float((qa - qb).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
