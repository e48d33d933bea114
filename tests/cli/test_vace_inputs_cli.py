"""`--preprocess`, `--outpaint` and `--first-clip` / `--last-clip` through `wan-desktop generate
--task vace`: each run equals the run given the control (and mask) video those flags stand for,
written out by hand as PNG frames (exactly for the preprocessor; for outpaint and clips within
the 1/255 of PNG's gray 128 against the builders' exact mid-gray 0)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from tests.numerics import psnr_uint8
from tests.vace_models import FRAMES, H, W, build_tiny_vace_model, control_frames
from wan_desktop.vace_inputs import gray

pytest.importorskip("diffusers")

RUN = ["--frames", str(FRAMES), "--steps", "4", "--device", "cpu", "--dtype", "float32"]
RUN += ["--seed", "7", "--no-progress", "--prompt", "a cat"]


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return build_tiny_vace_model(tmp_path_factory.mktemp("cli_vace_inputs"), "vace-1.3B")


def _folder(path: Path, frames) -> Path:
    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(np.asarray(f, dtype=np.uint8)).save(path / f"{i:05d}.png")
    return path


def _run(cli, vace, out: Path, *flags) -> torch.Tensor:
    r = cli(
        ["generate", "--model", vace.diffusers, "--size", f"{W}x{H}", *RUN, *flags, "--out", out]
    )
    assert r.code == 0, r.err
    return torch.from_numpy(np.stack([iio.imread(out / f"{i:05d}.png") for i in range(FRAMES)]))


@pytest.mark.slow
def test_preprocess_gray_is_the_control_video_grayed(vace, tmp_path, cli):
    frames = [np.asarray(f) for f in control_frames()]
    src = _folder(tmp_path / "c", frames)
    grayed = _folder(tmp_path / "g", [gray(f) for f in frames])
    ours = _run(cli, vace, tmp_path / "a", "--control-video", src, "--preprocess", "gray")
    by_hand = _run(cli, vace, tmp_path / "b", "--control-video", grayed)
    assert torch.equal(ours, by_hand)
    plain = _run(cli, vace, tmp_path / "p", "--control-video", src)
    assert not torch.equal(ours, plain)  # the preprocessor changed the run


@pytest.mark.slow
def test_outpaint_is_the_padded_video_with_its_mask(vace, tmp_path, cli):
    inner = [np.asarray(f)[:, 16:48] for f in control_frames()]  # 32 x 32
    src = _folder(tmp_path / "c", inner)
    padded, mask = [], []
    for f in inner:
        p = np.full((H, W, 3), 128, np.uint8)  # PNG's nearest to mid-gray
        p[:, 16:48] = f
        m = np.full((H, W, 3), 255, np.uint8)
        m[:, 16:48] = 0
        padded.append(p)
        mask.append(m)
    ours = _run(cli, vace, tmp_path / "a", "--control-video", src, "--outpaint", "16,0,16,0")
    by_hand = _run(
        cli,
        vace,
        tmp_path / "b",
        "--control-video",
        _folder(tmp_path / "p", padded),
        "--mask-video",
        _folder(tmp_path / "m", mask),
    )
    p = psnr_uint8(ours, by_hand)
    print(f"--outpaint 16,0,16,0 vs the padded video + mask by hand: PSNR {p:.1f} dB")
    assert p >= 40.0


@pytest.mark.slow
def test_clips_are_kept_frames_before_and_after_gray(vace, tmp_path, cli):
    frames = [np.asarray(f) for f in control_frames()]
    first, last = frames[:3], frames[-2:]
    control = [*first, *[np.full((H, W, 3), 128, np.uint8)] * (FRAMES - 5), *last]
    black, white = np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 255, np.uint8)
    mask = [black] * 3 + [white] * (FRAMES - 5) + [black] * 2
    ours = _run(
        cli,
        vace,
        tmp_path / "a",
        "--first-clip",
        _folder(tmp_path / "f", first),
        "--last-clip",
        _folder(tmp_path / "l", last),
    )
    by_hand = _run(
        cli,
        vace,
        tmp_path / "b",
        "--control-video",
        _folder(tmp_path / "c", control),
        "--mask-video",
        _folder(tmp_path / "m", mask),
    )
    p = psnr_uint8(ours, by_hand)
    print(f"--first-clip (3) --last-clip (2) vs the control + mask by hand: PSNR {p:.1f} dB")
    assert p >= 40.0


def test_outpaint_without_room_is_refused_in_one_line(vace, tmp_path, cli):
    src = _folder(tmp_path / "c", [np.asarray(f) for f in control_frames()])
    out = tmp_path / "o.mp4"
    r = cli(
        [
            *("generate", "--model", vace.diffusers, "--size", f"{W}x{H}", *RUN),
            *("--control-video", src, "--outpaint", "32,0,32,0", "--out", out),
        ]
    )
    assert r.code == 2 and "leaves no room" in r.err and len(r.err.strip().splitlines()) == 1
    assert not out.exists()
