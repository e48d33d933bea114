import pytest
import torch

from tests.numerics import rel_err
from tests.reference_models import randomize_
from tests.tiny import tiny_variant
from wan_desktop.errors import ConfigError
from wan_desktop.models.vae21 import CausalCache, WanVAE21
from wan_desktop.models.vae22 import WanVAE22, patchify, unpatchify


@pytest.fixture(scope="module", params=["t2v-1.3B", "ti2v-5B"])
def vae(request):
    cfg = tiny_variant(request.param).vae
    model = (WanVAE21 if cfg.version == "2.1" else WanVAE22)(cfg)
    return randomize_(model, seed=11)


@pytest.mark.parametrize("frames,latents", [(1, 1), (5, 2), (9, 3)])
@torch.no_grad()
def test_frame_counts_round_trip(vae, frames, latents):
    s = vae.cfg.spatial_factor
    video = torch.rand(1, 3, frames, 2 * s, 3 * s) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (1, vae.cfg.z_dim, latents, 2, 3)
    out = vae.decode(z)
    assert out.shape == video.shape
    assert out.abs().max() <= 1.0


@torch.no_grad()
def test_chunk_sizes_do_not_change_results(vae):
    """One latent frame per step equals several; 4 frames per encoder step equals 8."""
    s = vae.cfg.spatial_factor
    z = torch.randn(1, vae.cfg.z_dim, 5, 2, 2, generator=torch.Generator().manual_seed(2))
    one = vae.decode(z, frames_per_chunk=1)
    four = vae.decode(z, frames_per_chunk=4)
    assert rel_err(four, one) < 1e-5
    video = torch.rand(1, 3, 17, 2 * s, 2 * s, generator=torch.Generator().manual_seed(4)) * 2 - 1
    cache = CausalCache()
    parts = [
        vae.encode_step(video[:, :, :1], cache),
        vae.encode_step(video[:, :, 1:9], cache),
        vae.encode_step(video[:, :, 9:], cache),
    ]
    assert rel_err(torch.cat(parts, 2), vae.encode(video)) < 1e-5


@torch.no_grad()
def test_cache_shapes_are_fixed_after_the_first_chunk(vae):
    """What lets one ONNX graph decode any length: every later step sees the same cache shapes."""
    z = torch.randn(1, vae.cfg.z_dim, 4, 2, 2)
    cache = CausalCache()
    vae.decode_step(z[:, :, :1], cache)
    shapes = [tuple(t.shape) for t in cache.slots]
    for i in (1, 2, 3):
        vae.decode_step(z[:, :, i : i + 1], cache)
        assert [tuple(t.shape) for t in cache.slots] == shapes


def test_bad_inputs_name_the_value(vae):
    s = vae.cfg.spatial_factor
    with pytest.raises(ConfigError, match="frames must be 4n\\+1, got 6"):
        vae.encode(torch.zeros(1, 3, 6, s, s))
    with pytest.raises(ConfigError, match=f"not a multiple of {s}"):
        vae.encode(torch.zeros(1, 3, 5, s + 2, s))
    with pytest.raises(ConfigError, match="latents must be"):
        vae.decode(torch.zeros(1, 7, 2, 2, 2))


def test_patchify_round_trip_and_channel_order():
    x = torch.arange(2 * 3 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 3, 1, 4, 4)
    p = patchify(x, 2)
    assert p.shape == (2, 12, 1, 2, 2)
    # channel c·4 + r·2 + q holds pixel (2i+q, 2j+r) of colour c
    assert p[0, 1 * 4 + 1 * 2 + 0, 0, 1, 0] == x[0, 1, 0, 2, 1]
    assert torch.equal(unpatchify(p, 2), x)
