"""Continuing a video with a SkyReels-V2 DF model hands the source's frames to the sink without
torch's "non-writable NumPy array" warning (PIL's arrays are read-only: they are copied)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tests.skyreels_models import build_tiny_skyreels
from wan_desktop import diffusion_forcing as df
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest

pytest.importorskip("diffusers")


@pytest.mark.slow
def test_extend_sinks_the_source_frames_without_a_warning(tmp_path):
    from wan_desktop.engines.factory import build_components, detect_for_options

    model = build_tiny_skyreels(tmp_path / "df", "skyreels-v2-df-1.3B-540P")
    options = RunOptions(model=str(model.diffusers), device="cpu", dtype="float32")
    variant, files = detect_for_options(options)
    components, device = build_components(options, variant, files)
    src = tmp_path / "source"
    src.mkdir()
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(7)]
    for i, frame in enumerate(video):
        Image.fromarray(frame).save(src / f"{i:05d}.png")
    r = GenerationRequest(
        prompt="a lake",
        width=32,
        height=32,
        steps=2,
        seed=3,
        extend=str(src),
        frames=13,
        base_frames=13,
        overlap_history=5,
    ).resolve(variant)
    kept: list[torch.Tensor] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (the non-writable array's) fails the run
        new = df.generate(components, r, sink=kept.append, device=device)
    assert torch.equal(torch.cat(kept), torch.from_numpy(np.stack(video)))
    assert new.shape[1:] == (32, 32, 3) and new.shape[0] > 0
    kept[0][0, 0, 0, 0] = 0  # the sink's frames are its own, writable
