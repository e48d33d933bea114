"""`wan-desktop generate --task v2v --video PATH --strength S` from the outside: its PNG frames
equal diffusers' WanVideoToVideoPipeline (from a PNG folder and from an mp4), the settings are
saved, and every bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from tests.numerics import psnr_uint8
from tests.v2v_reference import input_frames, png_folder, wan_v2v_reference
from wan_desktop.request import GenerationRequest
from wan_desktop.variants import get_variant
from wan_desktop.video import write_video

pytest.importorskip("diffusers")

W, H, FRAMES, STEPS = 64, 32, 9, 6
SMALL = ["--size", f"{W}x{H}", "--frames", str(FRAMES), "--steps", str(STEPS), "--shift", "3"]
CPU = ["--device", "cpu", "--dtype", "float32", "--no-progress", "--seed", "11"]


def _pngs(folder: Path, n: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([iio.imread(folder / f"{i:05d}.png") for i in range(n)]))


def _resolved(strength: float, video: Path):
    return GenerationRequest(
        prompt="a cat",
        task="v2v",
        video=str(video),
        strength=strength,
        width=W,
        height=H,
        frames=FRAMES,
        steps=STEPS,
        shift=3.0,
        seed=11,
    ).resolve(get_variant("t2v-1.3B"))


@pytest.mark.slow
def test_cli_v2v_png_frames_match_wan_video_to_video_pipeline(t2v, tmp_path, cli):
    frames = input_frames(FRAMES, W, H)
    src = png_folder(tmp_path / "in", frames)
    out = tmp_path / "out"
    r = cli(
        [
            *("generate", "--model", t2v.official, "--prompt", "a cat", "--task", "v2v"),
            *("--video", src, "--strength", "0.5", *SMALL, *CPU, "--out", out),
        ]
    )
    assert r.code == 0, r.err
    ours = _pngs(out, FRAMES)
    ref = wan_v2v_reference(t2v, _resolved(0.5, src), frames)
    p = psnr_uint8(ours, ref)
    print(f"CLI v2v (PNG folder in, PNG frames out): PSNR {p:.1f} dB vs WanVideoToVideoPipeline")
    assert p >= 40.0
    saved = json.loads((out / "settings.json").read_text())["request"]
    assert saved["task"] == "v2v" and saved["strength"] == 0.5 and saved["video"] == str(src)


@pytest.mark.slow
def test_cli_v2v_reads_an_mp4_longer_than_the_run(t2v, tmp_path, cli):
    """An mp4 of 17 frames at another size: the first 9, centre-cropped and resized, as the
    reference gets them from imageio (its own decode of the same file)."""
    big = np.stack([np.asarray(f) for f in input_frames(17, 96, 32, seed=3)])
    src = write_video(tmp_path / "in.mp4", [big], fps=16, metadata={})
    decoded = iio.imread(src)[:FRAMES]  # [9, 32, 96, 3]: crop the middle 64 columns
    frames = [Image.fromarray(f[:, 16:80]) for f in decoded]
    out = tmp_path / "out"
    r = cli(
        [
            *("generate", "--model", t2v.diffusers, "--prompt", "a cat", "--task", "v2v"),
            *("--video", src, *SMALL, *CPU, "--out", out),
        ]
    )
    assert r.code == 0, r.err
    ours = _pngs(out, FRAMES)
    p = psnr_uint8(ours, wan_v2v_reference(t2v, _resolved(0.8, src), frames))
    print(f"CLI v2v (mp4 in, default strength 0.8): PSNR {p:.1f} dB vs WanVideoToVideoPipeline")
    assert p >= 40.0


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--task", "v2v"], "task v2v needs an input video"),
        (["--task", "v2v", "--video", "{src}", "--strength", "1.5"], "strength must be in (0, 1]"),
        (["--task", "v2v", "--video", "{src}", "--frames", "13"], "has 9 frame(s), 13 needed"),
        (["--task", "v2v", "--video", "{missing}"], "video not found"),
        (["--video", "{src}"], "takes no input video; choose the task v2v"),
        (["--outpaint", "0,8,0,8"], "outpaint is only used by the vace task"),
        (["--outpaint", "1,2,3"], "argument --outpaint: must be 4 whole pixel counts"),
        (["--preprocess", "blur"], "argument --preprocess: invalid choice"),
    ],
    ids=["no-video", "strength", "short", "missing", "t2v", "outpaint-task", "margins", "prep"],
)
def test_bad_v2v_input_is_one_line_exit_2_and_nothing_written(t2v, tmp_path, cli, extra, words):
    src = png_folder(tmp_path / "in", input_frames(FRAMES, W, H))
    args = [str(a).format(src=src, missing=tmp_path / "gone.mp4") for a in extra]
    out = tmp_path / "out.mp4"
    base = ["generate", "--model", t2v.official, "--prompt", "a cat", "--size", f"{W}x{H}"]
    r = cli([*base, *CPU, "--frames", str(FRAMES), *args, "--out", out])
    assert r.code == 2
    assert words in r.err and len(r.err.strip().splitlines()) == 1
    assert not out.exists()
