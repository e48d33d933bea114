"""Tiled causal VAE decode (engines/vae_tiling.py): blend weights, exactness of one tile and of
regions a single tile covers, the seam cost against the untiled decode, both Wan VAEs."""

from __future__ import annotations

import itertools

import pytest
import torch
from wan_desktop.engines.vae_tiling import (
    Tiling,
    blend_weights,
    decode_tiled,
    decode_tiled_frames,
    encode_tiled,
    psnr_db,
    tile_spans,
    torch_decode_step,
    torch_encode_step,
)

from tests.tiny import tiny_variant
from wan_desktop.errors import ConfigError
from wan_desktop.video import to_uint8_frames


def _vae(name: str):
    from wan_desktop.engines.torch_backend import _vae_class, randomize

    from wan_desktop.checkpoints.materialize import weights_on_meta

    v = tiny_variant(name)
    with weights_on_meta():
        vae = _vae_class(v)(v.vae)
    return v, randomize(vae, dtype=torch.float32, device="cpu", seed=1)


@pytest.fixture(scope="module")
def vaes():
    out = {}
    # Wan2.1 (z16, ×8) and Wan2.2 (z48, ×16): both 96×128-pixel videos of 5 frames
    for name, shape in (("t2v-1.3B", (1, 16, 2, 12, 16)), ("ti2v-5B", (1, 48, 2, 6, 8))):
        v, vae = _vae(name)
        z = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            ref = vae.decode(z)
        out[name] = (v, vae, z, ref)
    return out


@pytest.mark.parametrize(
    ("n", "tile", "overlap"),
    [(10, 4, 1), (24, 10, 4), (13, 6, 2), (7, 7, 2), (9, 20, 2), (100, 33, 8)],
)
def test_spans_cover_and_blend_weights_sum_to_one(n, tile, overlap):
    spans = tile_spans(n, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(b - a == min(tile, n) for a, b in spans)
    for (_a0, b0), (a1, _b1) in itertools.pairwise(spans):
        assert a1 <= b0 - overlap  # each neighbour shares at least the overlap
    s = 8
    weights = blend_weights([(a * s, b * s) for a, b in spans], n * s)
    total = torch.zeros(n * s)
    for (a, b), w in zip(spans, weights, strict=False):
        assert w.shape == ((b - a) * s,) and bool((w >= 0).all()) and bool((w <= 1).all())
        total[a * s : b * s] += w
    assert torch.allclose(total, torch.ones(n * s), atol=1e-6)


def test_blend_is_a_linear_ramp_across_the_overlap():
    spans = [(0, 80), (48, 128)]  # 32 shared pixels
    w0, w1 = blend_weights(spans, 128)
    assert bool((w0[:48] == 1).all()) and bool((w1[32:] == 1).all())
    ramp = w1[:32]
    assert torch.allclose(ramp, (torch.arange(32) + 0.5) / 32, atol=1e-6)
    assert torch.allclose(w0[48:], 1 - ramp, atol=1e-6)


@pytest.mark.parametrize("name", ["t2v-1.3B", "ti2v-5B"])
def test_one_tile_over_everything_equals_the_untiled_decode(vaes, name):
    v, vae, z, ref = vaes[name]
    s = v.vae.spatial_factor
    with torch.inference_mode():
        whole = decode_tiled(torch_decode_step(vae), z, spatial_factor=s, tiling=None)
        big = decode_tiled(
            torch_decode_step(vae), z, spatial_factor=s, tiling=Tiling(tile=z.shape[-2:], overlap=2)
        )
    assert whole.dtype == torch.float32 and whole.device.type == "cpu"
    assert torch.equal(whole, ref) and torch.equal(big, ref)


# (variant, tile, overlap, PSNR bound in dB). Random-weight tiny VAEs (real depth, 8-12 channels),
# 96×128 pixels, 5 frames, fp32 on the CPU; measured: Wan2.1 8×10/2 → 28.98 dB, 10×12/4 → 33.51 dB;
# Wan2.2 5×6/2 → 22.55 dB (its latent pixel is 16 output pixels, so 2 latent pixels of overlap
# are 32 pixels). Each tile sees zeros instead of its neighbours (3×3 convolutions at four scales,
# a whole-frame attention in the middle block), so tiles differ from the untiled decode everywhere,
# most at the seams. The bounds are the measurements minus 2 dB.
_SEAMS = [
    ("t2v-1.3B", (8, 10), 2, 27.0),
    ("t2v-1.3B", (10, 12), 4, 31.5),
    ("ti2v-5B", (5, 6), 2, 20.5),
]


@pytest.mark.parametrize(("name", "tile", "overlap", "bound"), _SEAMS)
def test_overlapping_tiles_stay_close_to_the_untiled_decode(vaes, name, tile, overlap, bound):
    v, vae, z, ref = vaes[name]
    with torch.inference_mode():
        out = decode_tiled(
            torch_decode_step(vae),
            z,
            spatial_factor=v.vae.spatial_factor,
            tiling=Tiling(tile=tile, overlap=overlap),
        )
    assert out.shape == ref.shape
    psnr = psnr_db(out, ref)
    print(
        f"{name} tiles {tile} overlap {overlap}: PSNR {psnr:.2f} dB vs untiled, "
        f"max abs {float((out - ref).abs().max()):.3f}"
    )
    assert bound < psnr < 60  # close, and really tiled (not the untiled decode by accident)


def test_each_tile_decodes_with_its_own_cache(vaes):
    """Where one tile alone covers the output, the tiled video equals the decode of that tile's
    latent crop on its own: the tile ran the whole causal decode with a fresh cache."""
    v, vae, z, _ = vaes["t2v-1.3B"]
    s = v.vae.spatial_factor
    tiling = Tiling(tile=(8, 10), overlap=2)
    with torch.inference_mode():
        out = decode_tiled(torch_decode_step(vae), z, spatial_factor=s, tiling=tiling)
        corner = vae.decode(z[:, :, :, :8, :10])
    # spans: rows (0, 8), (4, 12); cols (0, 10), (6, 16): rows < 4·s and cols < 6·s are tile 0's alone
    assert torch.equal(out[..., : 4 * s, : 6 * s], corner[..., : 4 * s, : 6 * s])
    assert not torch.equal(out[..., : 8 * s, : 10 * s], corner)  # the overlap is blended


# (variant, tiling): untiled; rows and columns tiled; columns only (one band: the whole height);
# rows only, with the last tile moved back (its overlap grows to 5 latent rows); Wan2.2's ×16.
_STREAMS = [
    ("t2v-1.3B", None),
    ("t2v-1.3B", ((8, 10), 2)),
    ("t2v-1.3B", ((12, 6), 1)),
    ("t2v-1.3B", ((7, 16), 2)),
    ("ti2v-5B", ((4, 5), 1)),
]


@pytest.mark.parametrize(("name", "tiles"), _STREAMS)
def test_frames_streamed_as_uint8_equal_the_float_decode_quantized(vaes, name, tiles):
    """The generation path never holds the float video: its uint8 frames are those of the float
    decode bit for bit, tiled or not."""
    v, vae, z, _ = vaes[name]
    tiling = None if tiles is None else Tiling(tile=tiles[0], overlap=tiles[1])
    kw = {"spatial_factor": v.vae.spatial_factor, "tiling": tiling}
    with torch.inference_mode():
        floats = decode_tiled(torch_decode_step(vae), z, **kw)
        frames = decode_tiled_frames(torch_decode_step(vae), z, **kw)
    assert frames.dtype == torch.uint8 and frames.shape == (5, 96, 128, 3)
    assert torch.equal(frames, to_uint8_frames(floats))
    assert int(frames.float().std()) > 10  # real pictures, not a constant


@pytest.mark.parametrize(
    ("shape", "tile", "band"),
    [
        ((24, 8), (6, 8), (48, 64)),  # six rows of tiles: a band of one tile's 48 rows
        ((8, 24), (8, 6), (64, 48)),  # one row of tiles, six columns: a band of 48 columns
    ],
)
def test_uint8_stream_blends_in_one_band_of_tiles(vaes, monkeypatch, shape, tile, band):
    """The float working set of a tiled uint8 decode is one band of tiles (never the frame),
    across rows, or across columns when there is one row of tiles; the frames stay exact."""
    from wan_desktop.engines import vae_tiling

    _v, vae, _, _ = vaes["t2v-1.3B"]
    z = torch.randn(1, 16, 2, *shape, generator=torch.Generator().manual_seed(3))
    bands = []
    real = vae_tiling._Uint8Frames.result

    def spy(self):
        bands.append(tuple(self.band.shape[3:]))
        return real(self)

    monkeypatch.setattr(vae_tiling._Uint8Frames, "result", spy)
    tiling = Tiling(tile=tile, overlap=2)
    with torch.inference_mode():
        frames = decode_tiled_frames(torch_decode_step(vae), z, spatial_factor=8, tiling=tiling)
        ref = to_uint8_frames(
            decode_tiled(torch_decode_step(vae), z, spatial_factor=8, tiling=tiling)
        )
    assert torch.equal(frames, ref)
    assert bands == [band], (bands, frames.shape)


def test_frames_take_one_video(vaes):
    _v, vae, z, _ = vaes["t2v-1.3B"]
    with pytest.raises(ConfigError, match="one video"):
        decode_tiled_frames(
            torch_decode_step(vae), torch.cat([z, z]), spatial_factor=8, tiling=None
        )


@pytest.mark.parametrize(("tile", "overlap"), [((4, 4), 2), ((0, 8), 1), ((8, 8), -1)])
def test_bad_tilings_are_config_errors(tile, overlap):
    with pytest.raises(ConfigError):
        Tiling(tile=tile, overlap=overlap)


def test_torch_vae_decodes_with_the_planned_tiles(vaes):
    from wan_desktop.engines.torch_backend import TorchVae

    _v, vae, z, ref = vaes["ti2v-5B"]
    comp = TorchVae(vae)
    comp.load(torch.device("cpu"))
    whole = comp.decode(z)
    assert torch.equal(whole, ref)
    comp.tiling = Tiling(tile=(4, 5), overlap=1)
    tiled = comp.decode(z)
    with torch.inference_mode():
        direct = decode_tiled(torch_decode_step(vae), z, spatial_factor=16, tiling=comp.tiling)
    assert torch.equal(tiled, direct) and not torch.equal(tiled, ref)


# ----------------------------------------------------------------------------- encode


def _video(seed: int = 5) -> torch.Tensor:
    """A smooth 96×128 video of 5 frames in [-1, 1] (random low-resolution content upsampled, so
    tiles see structure across their borders, as in a real picture)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 5, 6, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(5, 96, 128), mode="trilinear")


@pytest.mark.parametrize("name", ["t2v-1.3B", "ti2v-5B"])
def test_encode_one_tile_equals_the_untiled_encode(vaes, name):
    v, vae, _, _ = vaes[name]
    s = v.vae.spatial_factor
    video = _video()
    with torch.inference_mode():
        ref = vae.encode(video)
        whole = encode_tiled(torch_encode_step(vae), video, spatial_factor=s, tiling=None)
        big = encode_tiled(
            torch_encode_step(vae),
            video,
            spatial_factor=s,
            tiling=Tiling(tile=ref.shape[-2:], overlap=1),
        )
    assert torch.equal(whole, ref) and torch.equal(big, ref)


# (variant, tile, overlap, bound on the latent's relative error). Random-weight tiny VAEs, the
# smooth 96×128×5 video above (a 12×16 / 6×8 latent, so most of it lies near a tile border),
# fp32 CPU; measured: Wan2.1 8×10/2 → 0.285, 10×12/4 → 0.133; Wan2.2 4×5/1 → 0.326 (each
# tile's encoder sees zeros past its border; a wider overlap halves the error). Random weights
# exaggerate border effects (the decode's seams likewise); the bounds are the measurements
# × 1.2.
_ENC_SEAMS = [
    ("t2v-1.3B", (8, 10), 2, 0.34),
    ("t2v-1.3B", (10, 12), 4, 0.16),
    ("ti2v-5B", (4, 5), 1, 0.39),
]


@pytest.mark.parametrize(("name", "tile", "overlap", "bound"), _ENC_SEAMS)
def test_tiled_encode_stays_close_to_the_untiled_encode(vaes, name, tile, overlap, bound):
    from tests.numerics import rel_err

    v, vae, _, _ = vaes[name]
    video = _video()
    with torch.inference_mode():
        ref = vae.encode(video)
        out = encode_tiled(
            torch_encode_step(vae),
            video,
            spatial_factor=v.vae.spatial_factor,
            tiling=Tiling(tile=tile, overlap=overlap),
        )
    err = rel_err(out, ref)
    print(f"{name} encode tiles {tile} overlap {overlap}: latent rel. err {err:.3f}")
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert 1e-4 < err < bound  # close, and really tiled


def test_torch_vae_encodes_with_the_planned_tiles(vaes):
    from wan_desktop.engines.torch_backend import TorchVae

    _v, vae, _, _ = vaes["t2v-1.3B"]
    comp = TorchVae(vae)
    comp.load(torch.device("cpu"))
    video = _video()
    whole = comp.encode(video)
    comp.encode_tiling = Tiling(tile=(8, 10), overlap=2)
    tiled = comp.encode(video)
    with torch.inference_mode():
        direct = encode_tiled(
            torch_encode_step(vae), video, spatial_factor=8, tiling=comp.encode_tiling
        )
        assert torch.equal(whole, vae.encode(video))
    assert torch.equal(tiled, direct) and not torch.equal(tiled, whole)
