"""TAEHV (madebyollin/taehv) files with random weights in the released key layout, for the tiny-VAE
tests (tests/models/test_taehv.py) and the tests that decode or preview with one (presets, GUI)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from wan_desktop.models.taehv import TAEHV, TaeConfig


def random_tae_file(
    path,
    *,
    z: int,
    patch: int,
    seed: int = 0,
    tgrow7: int = 1,
    decoder_only: bool = False,
    widths=(32, 24, 16, 16),
):
    """A TAEHV state dict in the released layout with random weights (small widths for speed;
    the loader reads widths from the shapes)."""
    torch.manual_seed(seed)
    model = TAEHV(TaeConfig(latent_channels=z, patch_size=patch, widths=widths, encoder_width=16))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if tgrow7 == 2:  # some files store a 2× first TGrow that the decoder runs at 1×
        w = state["decoder.7.conv.weight"]
        state["decoder.7.conv.weight"] = torch.cat([torch.randn_like(w), w])
    if decoder_only:
        state = {k: v for k, v in state.items() if k.startswith("decoder.")}
    if str(path).endswith(".pth"):
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return model
