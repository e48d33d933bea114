"""Our Wan2.1 / Wan2.2 VAEs against diffusers' AutoencoderKLWan on the same random weights."""

import pytest
import torch

from tests.numerics import rel_err
from tests.reference_models import diffusers_vae
from tests.tiny import tiny_variant
from wan_desktop.checkpoints.keymap_vae import official_key

pytest.importorskip("diffusers")


def _ours(ref, cfg):
    from wan_desktop.models.vae21 import WanVAE21
    from wan_desktop.models.vae22 import WanVAE22

    model = (WanVAE21 if cfg.version == "2.1" else WanVAE22)(cfg).eval()
    state = {official_key(k, cfg.version): v for k, v in ref.state_dict().items()}
    model.load_state_dict(state, strict=True)
    return model


CASES = {"2.1": ("t2v-1.3B", (1, 3, 9, 32, 48)), "2.2": ("ti2v-5B", (1, 3, 9, 64, 96))}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request):
    cfg = tiny_variant(CASES[request.param][0]).vae
    ref = diffusers_vae(cfg)
    video = torch.rand(CASES[request.param][1], generator=torch.Generator().manual_seed(3)) * 2 - 1
    return cfg, ref, _ours(ref, cfg), video


@torch.no_grad()
def test_encode_matches(pair):
    cfg, ref, ours, video = pair
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    want = (ref.encode(video).latent_dist.mode() - mean) / std
    got = ours.encode(video)
    err = rel_err(got, want)
    print(f"VAE {cfg.version} encode rel err {err:.2e}")
    assert got.shape == want.shape and err <= 1e-5


@torch.no_grad()
def test_decode_whole_and_chunked_match(pair):
    cfg, ref, ours, video = pair
    z = torch.randn(
        1,
        cfg.z_dim,
        3,
        video.shape[3] // cfg.spatial_factor,
        video.shape[4] // cfg.spatial_factor,
        generator=torch.Generator().manual_seed(5),
    )
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    want = ref.decode(z * std + mean).sample  # diffusers decodes un-normalised latents, clamps
    got = ours.decode(z)
    chunked = torch.cat(list(ours.decode_chunks(z, frames_per_chunk=1)), dim=2)
    grouped = ours.decode(z, frames_per_chunk=2)
    e1, e2, e3 = rel_err(got, want), rel_err(chunked, want), rel_err(grouped, want)
    print(
        f"VAE {cfg.version} decode rel err {e1:.2e}, one frame at a time {e2:.2e}, "
        f"2 latent frames per chunk {e3:.2e}"
    )
    assert got.shape == want.shape == (1, 3, 9, *video.shape[3:])
    assert e1 <= 1e-5 and e2 <= 1e-5 and e3 <= 1e-5
