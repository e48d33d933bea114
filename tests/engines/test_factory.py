"""engines/factory.py: what a build reads. A parallel run's rank > 0 (``lead=False``) reads the
DiT and the VAE's decoder half (its share of the decode tiles) and nothing else: its umT5, CLIP
and VAE encoder are ``contracts.Elsewhere``, so a text encoder file it cannot read does not
matter to it, while rank 0's build of the same files fails on it."""

from __future__ import annotations

import pytest
import torch
from wan_desktop.engines.factory import EngineFactory
from wan_desktop.engines.torch_backend import TorchVae

from tests.fixtures_models import TinyModel, build_tiny_model
from wan_desktop.contracts import Elsewhere
from wan_desktop.errors import CheckpointError
from wan_desktop.options import RunOptions


@pytest.fixture(scope="module")
def i2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("factory-i2v"), "i2v-14B")


def _detected(model: TinyModel, **options):
    factory = EngineFactory()
    opts = RunOptions(model=str(model.official), device="cpu", dtype="float32", **options)
    return factory, opts, *factory.detect(opts)  # reads the files' headers


def _build(detected, *, lead: bool):
    factory, opts, variant, files = detected
    return factory.build(opts, variant, files, plan=None, size="", warn=print, lead=lead)


def _spoil(path) -> bytes:
    """Truncate ``path`` to half (returns its bytes, to put back)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


@pytest.mark.slow
def test_rank_1_reads_neither_the_text_nor_the_image_encoder(i2v):
    t5 = next(i2v.official.glob("models_t5_*.pth"))
    clip = next(i2v.official.glob("models_clip_*.pth"))
    detected = _detected(i2v)
    kept = {t5: _spoil(t5), clip: _spoil(clip)}  # after detection: the weights are cut
    try:
        comps = _build(detected, lead=False)
        with pytest.raises(CheckpointError, match=r"models_t5_umt5-xxl-enc-bf16\.pth"):
            _build(detected, lead=True)
    finally:
        for path, data in kept.items():
            path.write_bytes(data)
    assert isinstance(comps.text_encoder, Elsewhere)
    assert isinstance(comps.image_encoder, Elsewhere)
    assert isinstance(comps.vae_encoder, Elsewhere)
    assert isinstance(comps.vae_decoder, TorchVae)  # the decode's tiles are shared
    vae = comps.vae_decoder.model
    assert vae.encoder is None and vae.conv1 is None
    with pytest.raises(RuntimeError, match="the text encoder runs on rank 0 of a parallel run"):
        comps.text_encoder.encode(["a fox"])

    # the decoder half decodes as rank 0's whole VAE does
    whole = _build(detected, lead=True)
    z = torch.randn(1, i2v.variant.vae.z_dim, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(comps.vae_decoder.decode_frames(z), whole.vae_decoder.decode_frames(z))
    decoder_bytes = sum(p.numel() * p.element_size() for p in vae.parameters())
    whole_bytes = sum(p.numel() * p.element_size() for p in whole.vae_decoder.model.parameters())
    print(f"\nrank 1's VAE: {decoder_bytes / whole_bytes:.0%} of the whole VAE's weights")
    assert decoder_bytes < whole_bytes


def test_with_a_tiny_vae_rank_1_reads_no_vae_at_all(tmp_path):
    t2v = build_tiny_model(tmp_path, "t2v-1.3B")
    comps = _build(_detected(t2v, tiny_vae=str(tmp_path / "taew2_1.safetensors")), lead=False)
    assert isinstance(comps.vae_decoder, Elsewhere) and isinstance(comps.text_encoder, Elsewhere)
    assert comps.image_encoder is None  # a T2V model has none, on any rank
