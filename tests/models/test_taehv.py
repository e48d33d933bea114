"""TAEHV tiny VAE (wan_desktop/models/taehv.py): the released files' key layout loads, decodes to
Wan's frame count / size / range, causal chunking is exact, previews work for z=16 and z=48."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from wan_desktop.engines.preview import TaePreview, TinyVaeDecoder

from tests.taehv_files import random_tae_file
from wan_desktop.checkpoints.load import load_taehv
from wan_desktop.errors import CheckpointError, ConfigError
from wan_desktop.models.taehv import TAEHV, TaeConfig

# The keys of madebyollin/taehv@1f14a56 taew2_1 / taew2_2 (taehv.py: nn.Sequential indices of the
# encoder and the base decoder), written out by hand so a renamed attribute fails here.
_MEM = (
    "conv.0.weight",
    "conv.0.bias",
    "conv.2.weight",
    "conv.2.bias",
    "conv.4.weight",
    "conv.4.bias",
)
OFFICIAL_KEYS = {
    "encoder.0.weight", "encoder.0.bias", "encoder.17.weight", "encoder.17.bias",
    *(f"encoder.{i}.conv.weight" for i in (2, 7, 12)),
    *(f"encoder.{i}.weight" for i in (3, 8, 13)),
    *(f"encoder.{i}.{k}" for i in (4, 5, 6, 9, 10, 11, 14, 15, 16) for k in _MEM),
    "decoder.1.weight", "decoder.1.bias", "decoder.22.weight", "decoder.22.bias",
    *(f"decoder.{i}.conv.weight" for i in (7, 13, 19)),
    *(f"decoder.{i}.weight" for i in (8, 14, 20)),
    *(f"decoder.{i}.{k}" for i in (3, 4, 5, 9, 10, 11, 15, 16, 17) for k in _MEM),
}  # fmt: skip


def sequential_reference(model: TAEHV, latents: torch.Tensor) -> torch.Tensor:
    """Frame by frame through the decoder, each MemBlock fed the previous frame's input (zeros at
    the start) — upstream's causal definition, written independently of models/taehv._run."""
    from wan_desktop.models.taehv import MemBlock, TGrow

    frames = list(latents[0].transpose(0, 1).unbind(0))  # T × [z, h, w]
    seq = [f[None] for f in frames]
    for block in model.decoder:
        out, prev = [], None
        for f in seq:
            if isinstance(block, MemBlock):
                out.append(block(f, torch.zeros_like(f) if prev is None else prev))
                prev = f
            elif isinstance(block, TGrow):
                g = block(f)  # [stride, C, H, W]
                out.extend(g[j : j + 1] for j in range(g.shape[0]))
            else:
                out.append(block(f))
        seq = out
    y = torch.cat(seq)  # [F_raw, 3p², H, W]
    if model.cfg.patch_size > 1:
        y = torch.nn.functional.pixel_shuffle(y, model.cfg.patch_size)
    y = y[model.cfg.t_upscale - 1 :].clamp(0, 1) * 2 - 1
    return y.transpose(0, 1)[None]


def test_released_key_layout_loads_and_decodes(tmp_path):
    assert set(TAEHV(TaeConfig()).state_dict()) == OFFICIAL_KEYS  # full-size taew2_1 layout
    path = tmp_path / "taew2_1.safetensors"
    ref = random_tae_file(path, z=16, patch=1)
    model = load_taehv(path)
    assert model.cfg == ref.cfg
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    lat = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        video = model.decode(lat)
        want = sequential_reference(ref, lat)
    assert video.shape == (1, 3, 9, 32, 48)  # 4(T−1)+1 frames, 8× spatial: Wan2.1's VAE geometry
    assert video.min() >= -1 and video.max() <= 1 and video.std() > 1e-3
    assert torch.allclose(video, want, atol=1e-6)


def test_chunked_decode_equals_whole_and_tgrow_trim(tmp_path):
    path = tmp_path / "taew2_1.pth"
    random_tae_file(path, z=16, patch=1, tgrow7=2, seed=3)
    model = load_taehv(path)
    assert model.cfg.decoder_time_upscale == (False, True, True)
    lat = torch.randn(1, 16, 5, 3, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model.decode(lat)
        for chunk in (2, 1):  # a chunk boundary inside the memory's reach: still the same frames
            assert torch.allclose(model.decode(lat, chunk=chunk), whole, atol=1e-6), chunk
        assert torch.allclose(whole, sequential_reference(model, lat), atol=1e-6)
    assert whole.shape[2] == 17


def test_wan22_file_and_previews_for_z16_and_z48(tmp_path):
    p22 = tmp_path / "taew2_2.safetensors"
    random_tae_file(p22, z=48, patch=2, seed=5)
    p21 = tmp_path / "taew2_1.safetensors"
    random_tae_file(p21, z=16, patch=1, seed=6, decoder_only=True)
    for path, z, s in ((p22, 48, 16), (p21, 16, 8)):
        preview = TaePreview(path, z_dim=z)
        frames = preview(torch.randn(z, 2, 3, 4))
        assert frames.dtype == torch.uint8 and frames.shape == (5, 3 * s, 4 * s, 3)
        assert int(frames.max()) > int(frames.min())  # a real image, not a constant
    with pytest.raises(ConfigError, match="16-channel latents; this model makes 48"):
        TinyVaeDecoder(p21, z_dim=48)
    with pytest.raises(CheckpointError, match="no encoder"):
        load_taehv(p21).encode(torch.zeros(1, 3, 5, 16, 16))
    enc = load_taehv(p22).encode(torch.zeros(1, 3, 5, 32, 32))
    assert enc.shape == (1, 48, 2, 2, 2)


def test_bad_tiny_vae_files_are_named_errors(tmp_path):
    with pytest.raises(CheckpointError, match="tiny VAE file not found"):
        load_taehv(tmp_path / "nope.safetensors")
    bad = tmp_path / "not_tae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, str(bad))
    with pytest.raises(CheckpointError, match="not a TAEHV"):
        load_taehv(bad)
