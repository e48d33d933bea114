"""Colour matching (wan_desktop/color_match.py): the L*a*b* conversion against CIE reference
values, the transfer of per-channel statistics, and the drift it removes from a long video whose
windows continue through pixels (6 windows of a static scene).

The drift test's VAE is a double with a known small colour error per encode → decode round trip
(a gain and an offset per RGB channel, as a real VAE's reconstruction has): a tiny random-weight
VAE reconstructs nothing, so it could not show a drift. Its DiT holds the scene still (the
velocity that lands on the given frame's latents), so every colour change is the round trips'."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fakes import fake_components
from wan_desktop import long_video as LV
from wan_desktop.color_match import lab_stats, lab_to_rgb, match_colors, rgb_to_lab
from wan_desktop.request import GenerationRequest
from wan_desktop.video import to_uint8_frames

W, H = 64, 32


def test_lab_matches_cie_reference_values():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lab = rgb_to_lab(rgb)
    want = torch.tensor(
        [[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]]
    )
    torch.testing.assert_close(lab, want, atol=0.02, rtol=0)


def test_lab_round_trip_is_exact_to_float_precision():
    rgb = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=2e-5, rtol=0)


def test_match_moves_each_channel_to_the_reference_statistics():
    g = torch.Generator().manual_seed(1)
    ref = (torch.rand(4, 16, 16, 3, generator=g) * 160 + 40).to(torch.uint8)
    off = (ref.float() * 0.8 + torch.tensor([30.0, 0.0, -20.0])).clamp(0, 255).to(torch.uint8)
    target = lab_stats(ref)
    before = lab_stats(off)
    after = lab_stats(match_colors(off, target))
    assert before.distance(target) > 5
    assert after.distance(target) < 0.5  # uint8 rounding
    for a, b in zip(after.std, target.std, strict=True):
        assert abs(a - b) < 0.5
    same = match_colors(ref, target)  # already matched: unchanged but for rounding
    assert (same.int() - ref.int()).abs().max() <= 1


# ----------------------------------------------------------------------------- drift


GAIN = (0.985, 1.0, 0.97)  # per RGB channel, in [-1, 1] units, per decode
OFFSET = (0.02, -0.01, 0.015)


@dataclass
class DriftingVae:
    """Encode: 8x8 average pooling, RGB in latent channels 0-2 (others 0), every 4th frame.
    Decode: nearest upsampling with a colour error (GAIN, OFFSET): each round trip shifts a
    little, as a real VAE's reconstruction does."""

    z_dim: int = 16
    spatial: int = 8
    calls: int = 0

    def load(self, device) -> None: ...

    def unload(self) -> None: ...

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        rgb = torch.nn.functional.avg_pool3d(video[:, :, ::4].float(), (1, 8, 8))
        z = torch.zeros(b, self.z_dim, *rgb.shape[2:])
        z[:, :3] = rgb
        return z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = latents[:, :3].float()
        x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
        x = x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)
        gain = torch.tensor(GAIN).view(1, 3, 1, 1, 1)
        return (x * gain + torch.tensor(OFFSET).view(1, 3, 1, 1, 1)).clamp(-1, 1)

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        return to_uint8_frames(self.decode(latents))


class StillDenoiser:
    """The velocity that carries every frame to the first given frame's latents: a still scene
    (x0 = y's first latent frame; v = (x − x0)/σ, σ = t/1000)."""

    def load(self, device) -> None: ...

    def unload(self) -> None: ...

    def begin(self, timesteps) -> None: ...

    def __call__(self, latents, timestep, context, *, y=None, clip_fea=None):
        z = latents.shape[1]
        x0 = y[:, 4 : 4 + z, :1].expand_as(latents)
        sigma = (timestep.float() / 1000).clamp_min(1e-3).view(-1, 1, 1, 1, 1)
        return (latents.float() - x0) / sigma


def _scene(path) -> str:
    """A still picture with colour and contrast: a smooth two-way gradient."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    arr = np.stack([40 + 150 * xx / W, 70 + 110 * yy / H, 170 - 100 * xx / W], axis=-1)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return str(path)


def _drift(tmp_path, *, correct: bool) -> tuple[float, float]:
    """ΔE*76 between the mean colours of the first and the last window, and between the first
    window and the 5 frames that end the video."""
    comps, _ = fake_components("i2v-14B")
    vae = DriftingVae()
    comps.vae_decoder = comps.vae_encoder = vae
    comps.denoisers = (StillDenoiser(),)
    r = GenerationRequest(
        prompt="a still room",
        task="i2v",
        image=_scene(tmp_path / "scene.png"),
        width=W,
        height=H,
        frames=17 + 5 * 12,  # 6 windows of 17 frames, 5 of overlap
        window_frames=17,
        steps=4,
        guidance=1.0,
        color_match=correct,
    ).resolve(comps.variant)
    plan = LV.plan_windows(r)
    assert plan.count == 6
    chunks: list[torch.Tensor] = []
    LV.generate_long(comps, r, chunks.append)
    video = torch.cat(chunks)
    assert video.shape[0] == 77 and vae.calls == 6
    first = lab_stats(video[:17])
    last = lab_stats(video[4 * plan.windows[-1].start :])
    return first.distance(last), first.distance(lab_stats(video[-5:]))


def test_colour_matching_removes_the_drift_of_six_windows(tmp_path):
    off, off_end = _drift(tmp_path, correct=False)
    on, on_end = _drift(tmp_path, correct=True)
    print(
        f"\nmean colour shift, first window -> last (ΔE*76 of the Lab means, 6 windows): "
        f"without matching {off:.2f} (last 5 frames {off_end:.2f}), "
        f"with matching {on:.2f} (last 5 frames {on_end:.2f})"
    )
    assert off > 3.0  # five re-encodes visibly shift the colours
    assert on < off / 5 and on < 1.0  # matched: under one just-noticeable difference


@pytest.mark.parametrize("correct", [True, False])
def test_matching_applies_only_where_pixels_are_re_encoded(correct):
    """T2V windows continue through latents: nothing re-encoded, nothing corrected, so the
    request's switch changes nothing there."""
    comps, _ = fake_components()
    r = GenerationRequest(
        prompt="x", width=W, height=H, frames=29, window_frames=17, steps=2, color_match=correct
    ).resolve(comps.variant)
    chunks: list[torch.Tensor] = []
    LV.generate_long(comps, r, chunks.append)
    comps2, _ = fake_components()
    chunks2: list[torch.Tensor] = []
    LV.generate_long(comps2, replace(r, color_match=not correct), chunks2.append)
    assert torch.equal(torch.cat(chunks), torch.cat(chunks2))
