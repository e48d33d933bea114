"""The tiled VAE decode spread over gloo ranks (engines/vae_tiles_parallel.py): rank 0's uint8
frames equal the single-process tiled decode bit for bit (both Wan VAEs, bands of rows and of
columns, a last round with fewer tiles than ranks, an untiled decode); the other ranks get None."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from wan_desktop.engines.vae_tiles_parallel import decode_frames_parallel, tile_order
from wan_desktop.engines.vae_tiling import Tiling, decode_tiled_frames, torch_decode_step

from tests.spawn_gloo import run_gloo
from tests.tiny import tiny_variant

# (VAE of variant, latents [1, z, T, h, w], tiling): 96×128-pixel videos of 5 frames
CASES: dict[str, tuple[str, tuple[int, ...], Tiling | None]] = {
    "2.1 3x3 tiles": ("t2v-1.3B", (1, 16, 2, 12, 16), Tiling(tile=(6, 8), overlap=2)),
    "2.1 one row of 3": ("t2v-1.3B", (1, 16, 2, 12, 16), Tiling(tile=(12, 7), overlap=2)),
    "2.2 2x2 tiles": ("ti2v-5B", (1, 48, 2, 6, 8), Tiling(tile=(4, 5), overlap=1)),
    "2.1 untiled": ("t2v-1.3B", (1, 16, 2, 12, 16), None),
}


def _vae(name: str, state: dict[str, torch.Tensor] | None = None):
    from wan_desktop.engines.torch_backend import _vae_class, randomize

    from wan_desktop.checkpoints.materialize import weights_on_meta

    v = tiny_variant(name)
    if state is None:
        with weights_on_meta():
            vae = _vae_class(v)(v.vae)
        return v, randomize(vae, dtype=torch.float32, device="cpu", seed=1)
    vae = _vae_class(v)(v.vae)
    vae.load_state_dict(state)
    return v, vae.eval()


def _worker(rank: int, world: int, cases: dict[str, Any]) -> dict[str, Any]:
    """Per case: this rank's parallel decode (None off rank 0) and, on rank 0, the
    single-process decode made in the same process."""
    out: dict[str, Any] = {}
    for key, (name, state, z, tiling) in cases.items():
        v, vae = _vae(name, state)
        with torch.inference_mode():
            got = decode_frames_parallel(vae, z, tiling=tiling)  # the default group
            out[key] = "None" if got is None else got
            if rank == 0:
                out[f"{key}.single"] = decode_tiled_frames(
                    torch_decode_step(vae), z, spatial_factor=v.vae.spatial_factor, tiling=tiling
                )
    return out


@pytest.fixture(scope="module")
def ranks():
    cases = {}
    for key, (name, shape, tiling) in CASES.items():
        _, vae = _vae(name)
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        cases[key] = (name, vae.state_dict(), z, tiling)
    return run_gloo(2, _worker, cases)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CASES))
def test_two_ranks_decode_the_single_process_frames_bit_for_bit(ranks, key):
    zero, one = ranks
    want = zero[f"{key}.single"]
    assert want.dtype == torch.uint8 and want.shape == (5, 96, 128, 3)
    assert torch.equal(zero[key], want)
    assert one[key] == "None"  # frames on rank 0 only
    name, shape, tiling = CASES[key]
    n = (
        1
        if tiling is None
        else len(tile_order(*shape[3:], tiny_variant(name).vae.spatial_factor, tiling)[0])
    )
    print(f"{key}: {n} tiles on 2 ranks, rank 0's frames equal the single-process decode")


def test_tile_order_is_the_decode_order_with_band_edges():
    tiles, axis, band = tile_order(12, 16, 8, Tiling(tile=(6, 8), overlap=2))
    assert axis == 0 and band == 6 * 8
    assert [t.rows for t in tiles] == [(0, 6)] * 3 + [(4, 10)] * 3 + [(6, 12)] * 3
    assert [t.cols for t in tiles[:3]] == [(0, 8), (6, 14), (8, 16)]
    assert [t.band_edge for t in tiles] == [None, None, 32, None, None, 48, None, None, 96]
    total = torch.zeros(96, 128)
    for t in tiles:
        total[t.rows[0] * 8 : t.rows[1] * 8, t.cols[0] * 8 : t.cols[1] * 8] += t.weight
    assert torch.allclose(total, torch.ones(96, 128), atol=1e-6)  # the weights tile the frame
    tiles, axis, band = tile_order(12, 16, 8, Tiling(tile=(12, 7), overlap=2))
    assert axis == 1 and band == 7 * 8 and len(tiles) == 3  # one row: bands of columns
