"""Spatially tiled, causal VAE decode that streams every decoded chunk to the CPU (and the same
tiles for the image-to-video conditioning encode: :func:`encode_tiled`).

Wan's VAEs decode one latent frame at a time through an explicit causal cache (models/vae21.py).
Here the latent frame is cut into overlapping spatial tiles; each tile runs the whole causal
decode through time with a cache of its own (tile-major: only one tile's cache and activations are
on the GPU at any time), and every decoded chunk leaves the GPU at once, multiplied by its blend
weight: into a float32 video on the CPU (:func:`decode_tiled`, for parity), or, for a generation,
as uint8 frames (:func:`decode_tiled_frames`: the float copy of a video never exists).
Neighbouring tiles share ``overlap`` latent pixels and are blended with linear ramps (weights sum
to 1 everywhere). There are no temporal tiles: overlapping temporal windows make Wan's causal VAE
blink (ComfyUI issue 7116), and the frame-by-frame cache already bounds the time dimension.

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
            raise ConfigError(
                f"VAE tile {self.tile} with overlap {self.overlap}: sizes must be "
                "positive and the overlap ≥ 0"
            )
        if self.overlap * 2 >= min(th, tw):
            raise ConfigError(
                f"VAE tile {th}x{tw} is too small for an overlap of {self.overlap} "
                "latent pixels (it must exceed twice the overlap)"
            )


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


def _quantize(video: Tensor) -> Tensor:
    """[B, 3, F, H, W] in [-1, 1] -> uint8 [B, F, H, W, 3] by video.to_uint8_frames per item (one
    truncation rule: a decode streamed as uint8 is bit for bit the float decode quantized)."""
    from wan_desktop.video import to_uint8_frames

    return torch.stack([to_uint8_frames(v) for v in video])


class _FloatVideo:
    """Accumulates blended chunks into a float32 video [B, 3, F, H, W] on the CPU."""

    def __init__(
        self, b: int, frames: int, height: int, width: int, pin: bool, band: int = 0, axis: int = 0
    ) -> None:
        self.video = torch.zeros(b, 3, frames, height, width, dtype=torch.float32, pin_memory=pin)

    def put(
        self, f: int, rows: tuple[int, int], cols: tuple[int, int], out: Tensor, whole: bool
    ) -> None:
        dst = self.video[:, :, f : f + out.shape[2], rows[0] : rows[1], cols[0] : cols[1]]
        if whole:
            dst.copy_(out)
        else:
            dst.add_(out.cpu())

    def band_done(self, edge: int) -> None:
        return None

    def result(self) -> Tensor:
        return self.video


class _Uint8Frames:
    """Streams the decode into uint8 frames [B, F, H, W, 3] on the CPU. An untiled chunk is
    quantized on the decoder's device and leaves it as uint8 (a quarter of the float bytes).
    Tiles are blended in a float32 band one tile wide across the outer axis of the tile loop
    (rows, or columns when there is one row of tiles), quantized a few frames at a time and
    dropped as soon as no later tile reaches it: the float working set is one band of tiles,
    never the video."""

    def __init__(
        self, b: int, frames: int, height: int, width: int, pin: bool, band: int = 0, axis: int = 0
    ) -> None:
        self.frames = torch.empty(b, frames, height, width, 3, dtype=torch.uint8, pin_memory=pin)
        self.axis = axis  # 0: bands of rows, 1: bands of columns
        self.lo = 0  # band index 0 is frame row (column) lo
        size = [b, 3, frames, height, width]
        size[3 + axis] = band
        self.band = torch.zeros(size, dtype=torch.float32)

    def put(
        self, f: int, rows: tuple[int, int], cols: tuple[int, int], out: Tensor, whole: bool
    ) -> None:
        n = out.shape[2]
        if whole:
            self.frames[:, f : f + n].copy_(_quantize(out))
            return
        span = [rows, cols]
        a0, a1 = span[self.axis][0] - self.lo, span[self.axis][1] - self.lo
        if a0 < 0 or a1 > self.band.shape[3 + self.axis]:
            raise AssertionError(f"tile {rows} x {cols} outside the band at {self.lo}")
        span[self.axis] = (a0, a1)
        (y0, y1), (x0, x1) = span
        self.band[:, :, f : f + n, y0:y1, x0:x1].add_(out.cpu())

    def band_done(self, edge: int) -> None:
        """Rows (columns) before ``edge`` get no more contributions: quantize and drop them."""
        d = 3 + self.axis
        k, size = edge - self.lo, self.band.shape[d]
        if k <= 0 or size == 0:
            return
        done = self.band.narrow(d, 0, k)
        dst = self.frames.narrow(2 + self.axis, self.lo, k)
        for f in range(0, self.band.shape[2], 8):  # bounded temporaries
            dst[:, f : f + 8].copy_(_quantize(done[:, :, f : f + 8]))
        keep = size - k  # what the next band of tiles shares: to the front
        if keep > 0:
            self.band.narrow(d, 0, keep).copy_(self.band.narrow(d, k, keep).clone())
        self.band.narrow(d, max(keep, 0), size - max(keep, 0)).zero_()
        self.lo = edge

    def result(self) -> Tensor:
        return self.frames


def _decode_into(
    sink_type: type,
    step: DecodeStep,
    z: Tensor,
    *,
    spatial_factor: int,
    tiling: Tiling | None,
    frames_per_chunk: int,
    temporal_factor: int,
) -> Any:
    b, _, t, h, w = z.shape
    s = spatial_factor
    frames = 1 + temporal_factor * (t - 1)
    th, tw, ov = (h, w, 0) if tiling is None else (*tiling.tile, tiling.overlap)
    ys, xs = tile_spans(h, th, ov), tile_spans(w, tw, ov)
    wy = blend_weights([(a * s, e * s) for a, e in ys], h * s)
    wx = blend_weights([(a * s, e * s) for a, e in xs], w * s)
    whole = len(ys) == 1 and len(xs) == 1
    # the outer loop runs over rows of tiles, or over columns when there is one row of tiles (so
    # a band of finished tiles is always a fraction of the frame)
    axis = 1 if len(ys) == 1 and len(xs) > 1 else 0
    outer, inner = ((ys, wy), (xs, wx)) if axis == 0 else ((xs, wx), (ys, wy))
    band = 0 if whole else max(e - a for a, e in outer[0]) * s
    sink = sink_type(b, frames, h * s, w * s, z.device.type == "cuda", band, axis)
    chunks = [(0, 1)] + [(i, min(i + frames_per_chunk, t)) for i in range(1, t, frames_per_chunk)]
    for k, (o_span, o_w) in enumerate(zip(*outer, strict=True)):
        for i_span, i_w in zip(*inner, strict=True):
            (y0, y1), wyi, (x0, x1), wxi = (
                (o_span, o_w, i_span, i_w) if axis == 0 else (i_span, i_w, o_span, o_w)
            )
            weight = None if whole else (wyi[:, None] * wxi[None, :]).to(z.device)
            cache: Any = None
            f = 0
            for c0, c1 in chunks:
                out, cache = step(z[:, :, c0:c1, y0:y1, x0:x1], cache)
                out = out.float()
                if weight is not None:
                    out = out * weight
                sink.put(f, (y0 * s, y1 * s), (x0 * s, x1 * s), out, whole)
                f += out.shape[2]
            del cache
        n_outer = h if axis == 0 else w
        sink.band_done(outer[0][k + 1][0] * s if k + 1 < len(outer[0]) else n_outer * s)
    return sink.result()


def decode_tiled(
    step: DecodeStep,
    z: Tensor,
    *,
    spatial_factor: int,
    tiling: Tiling | None,
    frames_per_chunk: int = 1,
    temporal_factor: int = 4,
) -> Tensor:
    """Decode normalised latents z [B, zc, T, h, w] (on the decoder's device) to a float32 video
    [B, 3, 1 + temporal_factor·(T − 1), h·s, w·s] on the CPU, tile by tile (``tiling`` None: one
    tile of the whole frame, which equals the untiled decode exactly)."""
    return _decode_into(
        _FloatVideo,
        step,
        z,
        spatial_factor=spatial_factor,
        tiling=tiling,
        frames_per_chunk=frames_per_chunk,
        temporal_factor=temporal_factor,
    )


def decode_tiled_frames(
    step: DecodeStep,
    z: Tensor,
    *,
    spatial_factor: int,
    tiling: Tiling | None,
    frames_per_chunk: int = 1,
    temporal_factor: int = 4,
) -> Tensor:
    """As :func:`decode_tiled`, streamed to uint8 frames [F, H, W, 3] on the CPU (batch 1): equal
    bit for bit to ``to_uint8_frames(decode_tiled(...))`` without ever holding the float video."""
    if z.shape[0] != 1:
        raise ConfigError(f"decoding to frames takes one video, got latents {tuple(z.shape)}")
    return _decode_into(
        _Uint8Frames,
        step,
        z,
        spatial_factor=spatial_factor,
        tiling=tiling,
        frames_per_chunk=frames_per_chunk,
        temporal_factor=temporal_factor,
    )[0]


EncodeStep = Callable[[Tensor, Any], tuple[Tensor, Any]]
"""(video chunk [B, 3, F, H, W] of one tile, cache or None) -> (normalised latent mean
[B, z, T, H/s, W/s], the cache to pass with the next chunk)."""


def encode_tiled(
    step: EncodeStep,
    video: Tensor,
    *,
    spatial_factor: int,
    tiling: Tiling | None,
    temporal_factor: int = 4,
) -> Tensor:
    """Encode a video [B, 3, F = 4n+1, H, W] (on the encoder's device) to its normalised latent
    mean [B, z, n+1, H/s, W/s] in float32 on that device, tile by tile: ``tiling`` is in latent
    pixels as for the decode; each tile encodes its pixel crop through time with a cache of its
    own (frame 0, then 4 frames per step), and the tiles' latents are blended with the same
    linear ramps (``tiling`` None: the untiled encode exactly). This bounds the I2V conditioning
    encode (81 frames at full size) the way the tiles bound the decode. A uint8 ``video`` (0..255,
    video-to-video's input frames) is turned into [-1, 1] floats one chunk at a time."""
    _, _, f, hp, wp = video.shape
    s = spatial_factor
    h, w = hp // s, wp // s
    th, tw, ov = (h, w, 0) if tiling is None else (*tiling.tile, tiling.overlap)
    ys, xs = tile_spans(h, th, ov), tile_spans(w, tw, ov)
    wy, wx = blend_weights(ys, h), blend_weights(xs, w)
    chunks = [(0, 1)] + [(i, i + temporal_factor) for i in range(1, f, temporal_factor)]
    out: Tensor | None = None
    for (y0, y1), wyi in zip(ys, wy, strict=True):
        for (x0, x1), wxi in zip(xs, wx, strict=True):
            crop = video[:, :, :, y0 * s : y1 * s, x0 * s : x1 * s]
            cache: Any = None
            parts = []
            for c0, c1 in chunks:
                lat, cache = step(unit_range(crop[:, :, c0:c1]), cache)
                parts.append(lat.float())
            del cache
            tile = torch.cat(parts, dim=2)
            if len(ys) == 1 and len(xs) == 1:
                return tile
            if out is None:
                out = tile.new_zeros(*tile.shape[:3], h, w)
            weight = (wyi[:, None] * wxi[None, :]).to(tile.device)
            out[:, :, :, y0:y1, x0:x1] += tile * weight
    assert out is not None
    return out


def unit_range(video: Tensor) -> Tensor:
    """uint8 frames (0..255) as float32 in [-1, 1] (the ops of video_input's reader: the same
    values bit for bit); any other tensor as it is."""
    if video.dtype != torch.uint8:
        return video
    return video.float().div_(255.0).mul_(2).sub_(1)


def torch_encode_step(model: Any) -> EncodeStep:
    """The encoder chunk step of our torch VAEs: a fresh CausalCache per tile."""
    from wan_desktop.models.vae21 import CausalCache

    dtype = next(model.parameters()).dtype

    def step(video: Tensor, cache: Any) -> tuple[Tensor, Any]:
        cache = CausalCache() if cache is None else cache
        return model.encode_step(video.to(dtype), cache), cache

    return step


def torch_decode_step(model: Any) -> DecodeStep:
    """The chunk step of our torch VAEs (WanVAE21 / WanVAE22): a fresh CausalCache per tile."""
    from wan_desktop.models.vae21 import CausalCache

    def step(z: Tensor, cache: Any) -> tuple[Tensor, Any]:
        cache = CausalCache() if cache is None else cache
        return model.decode_step(z, cache), cache

    return step


def psnr_db(a: Tensor, b: Tensor) -> float:
    """PSNR of two videos as 8-bit frames (inf when identical): both uint8 frames, or both float
    videos in [-1, 1] (quantized first)."""
    qa, qb = ((x if x.dtype == torch.uint8 else _quantize(x)).double() for x in (a, b))
    mse = float((qa - qb).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
