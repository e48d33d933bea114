"""Video-to-video holds its input frames as uint8 until the VAE encodes them (each chunk becomes
[-1, 1] floats only as it is encoded), with the same latents as float32 frames bit for bit; the
conditioning encode of v2v and VACE (control, mask and reference frames) runs in the memory
plan's spatial tiles, which the planner chooses when whole 720p frames would not fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from wan_desktop.engines.residency import apply_plan
from wan_desktop.engines.vae_tiling import Tiling

from tests.live_bytes import LiveBytes
from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop.request import GenerationRequest
from wan_desktop.variants import VARIANTS
from wan_desktop.video_input import read_frames, read_video
from wan_desktop.video_to_video import encode_video

W, H = 128, 64


def _components(name: str = "t2v-1.3B"):
    from wan_desktop.engines.torch_backend import build_torch_components

    return build_torch_components(
        tiny_variant(name), None, device=torch.device("cpu"), dtype=torch.float32, load=False
    )


def _frames(folder: Path, n: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
            folder / f"{i:05d}.png"
        )
    return folder


def _request(comps, video: Path, frames: int):
    kw = dict(prompt="a fox", width=W, height=H, frames=frames, steps=4, seed=1)
    return GenerationRequest(task="v2v", video=str(video), strength=0.5, **kw).resolve(
        comps.variant
    )


def _peak(fn) -> int:
    with LiveBytes() as m:
        out = fn()
    del out
    return m.peak


@pytest.mark.slow  # four encodes of up to 65 frames under the dispatch-mode byte counter
def test_v2v_frames_stay_uint8_until_the_encoder_and_host_ram_grows_by_their_bytes(tmp_path):
    comps = _components()
    video = _frames(tmp_path / "in", 65)
    px = W * H
    r17, r65 = _request(comps, video, 17), _request(comps, video, 65)
    assert read_frames(video, W, H, 5).dtype == torch.uint8
    # the same latents as float32 frames in [-1, 1], bit for bit
    want = comps.vae_encoder.encode(read_video(video, W, H, 17)).float()
    assert torch.equal(encode_video(comps, r17, device="cpu"), want)

    # peak tensor bytes of the whole encode (reading, the encoder's work, the latents): 48 more
    # frames cost their uint8 bytes and their latents, not a float copy of the video
    ours = _peak(lambda: encode_video(comps, r65, device="cpu")) - _peak(
        lambda: encode_video(comps, r17, device="cpu")
    )
    floats = _peak(lambda: comps.vae_encoder.encode(read_video(video, W, H, 65))) - _peak(
        lambda: comps.vae_encoder.encode(read_video(video, W, H, 17))
    )
    per_frame, float_per_frame = ours / (48 * px), floats / (48 * px)
    print(
        f"host bytes per input frame pixel: {per_frame:.2f} (uint8 frames) vs "
        f"{float_per_frame:.2f} (float32 frames); 1280x720x81 input: "
        f"{3 * 1280 * 720 * 81 / 1e9:.2f} GB vs {12 * 1280 * 720 * 81 / 1e9:.2f} GB"
    )
    latent_per_px = 4 * comps.variant.vae.z_dim / (comps.variant.vae.spatial_factor**2 * 4)
    assert per_frame <= 3 + 2 * latent_per_px + 0.05  # 3 bytes of uint8 RGB, the latents twice
    assert float_per_frame >= 12  # what the float32 frames cost


def _tiled_plan(name: str, task: str) -> M.Plan:
    """A real plan of the tiny variant with the conditioning encode in tiles of 4x5 latent px."""
    p = M.plan_for(M.workload_for(tiny_variant(name), W, H, 5, task=task), 24)
    tiled = replace(p.vae, encode_tile=(4, 5), encode_overlap=1)
    return replace(p, text=replace(p.text, where="cpu"), vae=tiled)


def test_the_planned_encode_tiles_reach_the_v2v_encode(tmp_path):
    comps = _components()
    video = _frames(tmp_path / "in", 9)
    r = _request(comps, video, 9)
    whole = encode_video(comps, r, device="cpu")
    planned = apply_plan(_components(), _tiled_plan("t2v-1.3B", "v2v"), "cpu")
    got = encode_video(planned, r, device="cpu")
    want = comps.vae_encoder.encode(
        read_frames(video, W, H, 9), tiles=Tiling(tile=(4, 5), overlap=1)
    )
    assert torch.equal(got, want) and not torch.equal(got, whole)


def test_the_planned_encode_tiles_reach_the_vace_control_and_reference_encodes(tmp_path):
    from wan_desktop.vace import encode_context
    from wan_desktop.vace_inputs import VaceInputs

    comps = _components("vace-1.3B")
    g = torch.Generator().manual_seed(0)
    inputs = VaceInputs(
        video=torch.randint(0, 256, (3, 9, H, W), generator=g, dtype=torch.uint8),
        levels=torch.randint(0, 2, (1, 9, H, W), generator=g, dtype=torch.uint8) * 255,
        refs=(torch.rand(3, 1, H, W, generator=g) * 2 - 1,),
    )
    whole = encode_context(comps.vae_encoder, inputs)
    planned = apply_plan(_components("vace-1.3B"), _tiled_plan("vace-1.3B", "vace"), "cpu")
    tiled = encode_context(planned.vae_encoder, inputs)
    assert tiled.shape == whole.shape == (1, 96, 1 + 3, H // 8, W // 8)
    # the latents (inactive, reactive, the reference) differ; the packed mask does not
    assert not torch.equal(tiled[:, :32], whole[:, :32])
    assert torch.equal(tiled[:, 32:], whole[:, 32:])


@pytest.mark.parametrize(("name", "task"), [("t2v-1.3B", "v2v"), ("vace-14B", "vace")])
def test_the_planner_tiles_the_720p_v2v_and_vace_encodes_on_an_8_gb_card(name, task):
    w = M.workload_for(VARIANTS[name], 1280, 720, 81, task=task)
    p = M.plan_for(w, 8, ram_gib=64)
    untiled = M.predict(w, p.text, p.dit, replace(p.vae, encode_tile=None), p.ram)
    assert p.vae.encode_tile is not None
    assert untiled.encode_gib > M.usable_gib(8) >= p.predicted.encode_gib
    print(
        f"{name} {task} 1280x720x81 on 8 GB: encode {untiled.encode_gib:.2f} GiB in whole "
        f"frames, {p.predicted.encode_gib:.2f} GiB in tiles of {p.vae.encode_tile}"
    )
    # a 12 GB card encodes whole frames
    assert M.plan_for(w, 12, ram_gib=64).vae.encode_tile is None
