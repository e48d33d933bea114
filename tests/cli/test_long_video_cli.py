"""`wan-desktop generate` beyond one window (long_video.py) with real tiny models: the exact frame
count, the window in the progress line and the sidecar, per-window prompts (`--prompt` with
` | `, `--prompt-file`), `--extend` of a PNG folder, `--color-match off`, and the bad inputs
(one line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

SMALL = ["--size", "64x32", "--steps", "2", "--device", "cpu", "--dtype", "float32"]


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def test_frames_beyond_the_window_run_windows_with_the_window_in_the_progress(
    t2v, tmp_path, cli, monkeypatch
):
    monkeypatch.setenv("WAN_PROGRESS", "1")  # the bar without a terminal
    out = tmp_path / "long"
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            "a cat | a dog",
            "--frames",
            "97",
            *SMALL,
            "--seed",
            "1",
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    assert _pngs(out) == [f"{i:05d}.png" for i in range(97)]  # each frame once
    meta = json.loads((out / "settings.json").read_text())
    assert meta["windows"] == 2 and meta["frames_written"] == 97
    assert meta["request"]["window_frames"] == 81 and meta["request"]["prompt"] == "a cat | a dog"
    assert "long video: 2 windows of up to 81 frames" in r.err
    assert "window 1/2 · denoise 2/2" in r.err and "window 2/2 · denoise 2/2" in r.err


def test_prompt_file_gives_one_prompt_per_window_and_extend_continues_a_png_folder(
    t2v, tmp_path, cli
):
    src = tmp_path / "src"
    src.mkdir()
    frames = np.random.default_rng(2).integers(0, 256, (9, 32, 64, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(src / f"{i:05d}.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the room\n\nthe room at night\n", encoding="utf-8")
    out = tmp_path / "more"
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt-file",
            prompts,
            "--frames",
            "13",
            *SMALL,
            "--seed",
            "2",
            "--extend",
            src,
            "--color-match",
            "off",
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    assert len(_pngs(out)) == 9 + 13 - 5  # the video, then what is new (the overlap once)
    for i in range(4):  # its frames before the overlap are copied losslessly
        assert np.array_equal(iio.imread(out / f"{i:05d}.png"), frames[i])
    meta = json.loads((out / "settings.json").read_text())
    assert meta["request"]["prompt"] == "the room\nthe room at night"
    assert meta["request"]["extend"] == str(src) and meta["request"]["color_match"] is False


def test_window_frames_and_overlap_flags_set_the_sliding_windows(t2v, tmp_path, cli):
    out = tmp_path / "windows"
    windows = ["--window-frames", "21", "--window-overlap", "1", "--no-progress", "--out", out]
    r = cli(
        ["generate", "--model", t2v.official, "--prompt", "x", "--frames", "45", *SMALL, *windows]
    )
    assert r.code == 0, r.err
    meta = json.loads((out / "settings.json").read_text())
    # 45 frames = 12 latents in 21-frame windows (6 latents) carrying 1: 6 + 5 + 1 → 3 windows
    assert meta["request"]["window_frames"] == 21 and meta["request"]["window_overlap"] == 1
    assert meta["windows"] == 3 and meta["frames_written"] == 45 == len(_pngs(out))
    assert "long video: 3 windows of up to 21 frames" in r.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "x", "--prompt-file", "{tmp}/p.txt"], "give --prompt TEXT or --prompt-file"),
        ([], "give --prompt TEXT or --prompt-file"),
        (["--prompt-file", "{tmp}/missing.txt"], "--prompt-file"),
        (["--prompt", "x", "--extend", "{tmp}/missing.mp4"], "extend not found"),
        (["--prompt", "x", "--color-match", "maybe"], "invalid choice"),
        (["--prompt", "x", "--window-frames", "40"], "window frames must be 4n+1"),
        (["--prompt", "x", "--window-frames", "21", "--window-overlap", "6"], "1 to 5 latent"),
    ],
)
def test_bad_long_video_input_is_one_line_exit_2_nothing_written(args, message, t2v, tmp_path, cli):
    (tmp_path / "p.txt").write_text("x\n")
    out = tmp_path / "out.mp4"
    r = cli(
        ["generate", "--model", t2v.official, "--frames", "97", *SMALL, "--out", out]
        + [a.format(tmp=tmp_path) for a in args]
    )
    assert r.code == 2 and len(r.err_lines) == 1 and message in r.err, r.err
    assert not out.exists() and list(tmp_path.glob(".*")) == []


@pytest.mark.slow
def test_i2v_long_video_continues_through_the_last_frames(i2v, tmp_path, cli):
    image = tmp_path / "a.png"
    arr = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(image)
    out = tmp_path / "long.mp4"
    r = cli(
        [
            "generate",
            "--model",
            i2v.official,
            "--prompt",
            "x",
            "--image",
            image,
            "--frames",
            "97",
            *SMALL,
            "--seed",
            "3",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    from wan_desktop.video import read_back

    assert read_back(out) == (97, (64, 32))  # ffmpeg decodes every frame back
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["windows"] == 2 and meta["request"]["color_match"] is True
