"""The tiled VAE decode (engines/vae_tiling.py) spread over the ranks of a process group: the
spatial tiles are dealt out in rounds (tile k of the decode order to rank k mod N), every rank
decodes its tile through time with a cache of its own, and each decoded, weighted chunk is
gathered on rank 0, which blends the tiles in the single-process order and quantizes to uint8
frames — so the frames are bit for bit those of :func:`vae_tiling.decode_tiled_frames`. The other
ranks return None.

Memory: a rank's device holds one tile's cache and one chunk per rank in flight (the chunks are
gathered on the decoder's device for NCCL, on the CPU for gloo); rank 0 keeps a round's N tiles of
float32 chunks on the CPU until it blends them (the single-process decode's band already spans a
row of tiles). An untiled decode (or one tile) runs on rank 0 alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from wan_desktop.errors import ConfigError

from .vae_tiling import (
    DecodeStep,
    Tiling,
    _Uint8Frames,
    blend_weights,
    decode_tiled_frames,
    tile_spans,
)


@dataclass(frozen=True)
class _Tile:
    rows: tuple[int, int]  # latent pixels
    cols: tuple[int, int]
    weight: Tensor  # [rows·s, cols·s] float32 blend weight
    band_edge: int | None  # after this tile: the sink's band_done(edge) (last tile of a band)


def tile_order(h: int, w: int, spatial_factor: int, tiling: Tiling) -> tuple[list[_Tile], int, int]:
    """The tiles of a [h, w] latent frame in the order vae_tiling's decode blends them, with
    the axis of its bands (0 rows, 1 columns) and the band's size in pixels."""
    s = spatial_factor
    ys, xs = (
        tile_spans(h, tiling.tile[0], tiling.overlap),
        tile_spans(w, tiling.tile[1], tiling.overlap),
    )
    wy = blend_weights([(a * s, e * s) for a, e in ys], h * s)
    wx = blend_weights([(a * s, e * s) for a, e in xs], w * s)
    axis = 1 if len(ys) == 1 and len(xs) > 1 else 0
    outer, inner = ((ys, wy), (xs, wx)) if axis == 0 else ((xs, wx), (ys, wy))
    n_outer = h if axis == 0 else w
    tiles = []
    for k, (o_span, o_w) in enumerate(zip(*outer, strict=True)):
        edge = outer[0][k + 1][0] * s if k + 1 < len(outer[0]) else n_outer * s
        for j, (i_span, i_w) in enumerate(zip(*inner, strict=True)):
            rows, wyi, cols, wxi = (
                (o_span, o_w, i_span, i_w) if axis == 0 else (i_span, i_w, o_span, o_w)
            )
            last = j + 1 == len(inner[0])
            tiles.append(_Tile(rows, cols, wyi[:, None] * wxi[None, :], edge if last else None))
    band = max(e - a for a, e in outer[0]) * s
    return tiles, axis, band


def decode_tiled_frames_parallel(
    step: DecodeStep,
    z: Tensor,
    *,
    spatial_factor: int,
    tiling: Tiling | None,
    group: dist.ProcessGroup | None = None,
    frames_per_chunk: int = 1,
    temporal_factor: int = 4,
    guard: Callable[[], None] | None = None,
) -> Tensor | None:
    """:func:`vae_tiling.decode_tiled_frames` computed by the ranks of ``group`` (None: the
    default group) together: uint8 frames [F, H, W, 3] on rank 0's CPU, None on the others.
    Every rank passes the same latents z [1, zc, T, h, w] (on its decoder's device).
    ``guard``: called before each exchange, its buffers allocated (a parallel run's check that
    no rank ran out of memory decoding its tile)."""
    if z.shape[0] != 1:
        raise ConfigError(f"decoding to frames takes one video, got latents {tuple(z.shape)}")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    b, _, t, h, w = z.shape
    tiles, axis, band = tile_order(h, w, spatial_factor, tiling) if tiling else ([], 0, 0)
    if world == 1 or len(tiles) <= 1:  # nothing to share
        if rank != 0:
            return None
        return decode_tiled_frames(
            step,
            z,
            spatial_factor=spatial_factor,
            tiling=tiling,
            frames_per_chunk=frames_per_chunk,
            temporal_factor=temporal_factor,
        )
    s = spatial_factor
    dst = 0 if group is None else dist.get_global_rank(group, 0)
    wire = z.device if dist.get_backend(group) == "nccl" else torch.device("cpu")
    frames = 1 + temporal_factor * (t - 1)
    sink = _Uint8Frames(b, frames, h * s, w * s, False, band, axis) if rank == 0 else None
    chunks = [(0, 1)] + [(i, min(i + frames_per_chunk, t)) for i in range(1, t, frames_per_chunk)]
    for first in range(0, len(tiles), world):
        mine = tiles[first + rank] if first + rank < len(tiles) else None
        got: list[list[tuple[int, Tensor]]] = [[] for _ in range(world)]  # rank 0: per tile
        cache: Any = None
        f = 0
        for c0, c1 in chunks:
            if mine is not None:
                (y0, y1), (x0, x1) = mine.rows, mine.cols
                out, cache = step(z[:, :, c0:c1, y0:y1, x0:x1], cache)
                out = out.float() * mine.weight.to(z.device)
            else:  # past the last tile: a stand-in of the chunk's shape, dropped by rank 0
                th, tw = tiles[0].weight.shape
                n = 1 if c0 == 0 else temporal_factor * (c1 - c0)
                out = torch.zeros(b, 3, n, th, tw, device=z.device)
            out = out.to(wire).contiguous()
            parts = [torch.empty_like(out) for _ in range(world)] if rank == 0 else None
            if guard is not None:
                guard()
            dist.gather(out, parts, dst=dst, group=group)
            if parts is not None:
                for j, part in enumerate(parts):
                    got[j].append((f, part.cpu()))
            f += out.shape[2]
        del cache
        if sink is None:
            continue
        for j, tile in enumerate(tiles[first : first + world]):  # the single-process order
            for f0, part in got[j]:
                rows = (tile.rows[0] * s, tile.rows[1] * s)
                sink.put(f0, rows, (tile.cols[0] * s, tile.cols[1] * s), part, False)
            if tile.band_edge is not None:
                sink.band_done(tile.band_edge)
    return None if sink is None else sink.result()[0]


def decode_frames_parallel(
    vae: Any, latents: Tensor, *, tiling: Tiling | None, group: dist.ProcessGroup | None = None
) -> Tensor | None:
    """Our torch VAE (WanVAE21 / WanVAE22, on its device) decoding latents [1, z, T, h, w] with
    the memory plan's ``tiling`` over the ranks of ``group``: uint8 frames on rank 0, None on the
    others. Without tiles (or with one) rank 0 decodes alone: the tiles must be the ones a single
    process would use, or the frames would differ from its video by the seams."""
    from .vae_tiling import torch_decode_step

    weight = next(vae.parameters())
    return decode_tiled_frames_parallel(
        torch_decode_step(vae),
        latents.to(weight.device, weight.dtype),
        spatial_factor=vae.cfg.spatial_factor,
        temporal_factor=vae.cfg.temporal_factor,
        tiling=tiling,
        group=group,
    )
