"""Input videos (wan_desktop/video_input.py): mp4 files and PNG folders read as frames cropped and
resized to the run's size, at most N of them, one at a time; every bad input is one typed error
naming the file and the request field."""

import types

import numpy as np
import pytest
import torch
from PIL import Image

from wan_desktop.errors import ConfigError, VideoInputError
from wan_desktop.video import write_video
from wan_desktop.video_input import (
    count_frames,
    fit_frame,
    iter_frames,
    open_source,
    probe,
    read_video,
)


def _smooth(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """[n, h, w, 3] uint8, smooth (H.264 at CRF 16 keeps it within a few levels), each frame
    brighter than the last so frames can be told apart."""
    x = np.linspace(0, 1, w)[None, None, :]
    y = np.linspace(0.2, 1, h)[None, :, None]
    t = np.linspace(0, 0.5, n)[:, None, None]
    r = np.broadcast_to(x * y + t, (n, h, w))
    g = np.broadcast_to(1 - x * y, (n, h, w))
    b = np.broadcast_to(0.5 * x * y + 0.1, (n, h, w))
    return (np.stack([r, g, b], axis=-1).clip(0, 1) * 255).astype(np.uint8)


def _png_folder(path, frames: np.ndarray, names=None):
    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / (names[i] if names else f"{i:05d}.png"))
    return path


def test_png_folder_frames_are_exact_at_their_own_size(tmp_path):
    frames = _smooth(5)
    folder = _png_folder(tmp_path / "in", frames)
    got = np.stack(list(iter_frames(folder, 64, 48)))
    assert got.dtype == np.uint8 and got.shape == (5, 48, 64, 3)
    assert np.array_equal(got, frames)


def test_png_folder_is_read_in_natural_order(tmp_path):
    frames = _smooth(3)
    folder = _png_folder(tmp_path / "in", frames, names=["f10.png", "f2.png", "f1.png"])
    got = list(iter_frames(folder, 64, 48))
    # f1, f2, f10: frames 2, 1, 0 as written
    assert [np.array_equal(g, frames[i]) for g, i in zip(got, (2, 1, 0), strict=True)] == [True] * 3


def test_mp4_frames_match_what_was_written_and_stop_at_the_limit(tmp_path):
    frames = _smooth(13)
    out = write_video(tmp_path / "in.mp4", [frames], fps=16, metadata={})
    src = open_source(out, field="video")
    assert count_frames(src) == 13
    assert count_frames(src, limit=5) == 5
    got = np.stack(list(iter_frames(src, 64, 48, limit=5)))
    assert got.shape == (5, 48, 64, 3)
    err = np.abs(got.astype(int) - frames[:5].astype(int))
    assert err.mean() < 3.0  # H.264 at CRF 16 and yuv420p, nothing else
    # in order: each frame is nearest the frame written at its place
    for i in range(5):
        dist = [np.abs(got[i].astype(int) - f.astype(int)).mean() for f in frames]
        assert int(np.argmin(dist)) == i


def test_frames_are_centre_cropped_to_the_target_aspect_never_stretched():
    # 2:1 source, three vertical bands: red | green | blue; a square target keeps the middle half
    src = np.zeros((40, 80, 3), np.uint8)
    src[:, :20, 0] = 255
    src[:, 20:60, 1] = 255
    src[:, 60:, 2] = 255
    out = fit_frame(Image.fromarray(src), 16, 16)
    assert out.shape == (16, 16, 3)
    assert out[:, :, 1].min() == 255 and out[:, :, 0].max() == 0 and out[:, :, 2].max() == 0


def test_a_tall_source_loses_its_top_and_bottom():
    src = np.zeros((80, 40, 3), np.uint8)
    src[:20] = 255  # white top quarter, cropped away for a 1:1 target
    src[60:] = 255
    out = fit_frame(Image.fromarray(src), 20, 20)
    assert out.max() == 0


def test_read_video_fills_one_tensor_in_minus_one_to_one(tmp_path):
    frames = _smooth(9)
    folder = _png_folder(tmp_path / "in", frames)
    video = read_video(folder, 64, 48, 5)
    assert video.shape == (1, 3, 5, 48, 64) and video.dtype == torch.float32
    want = torch.from_numpy(frames[:5]).permute(3, 0, 1, 2).float() / 255 * 2 - 1
    assert torch.equal(video[0], want)


def test_reading_is_streamed_one_frame_at_a_time(tmp_path, monkeypatch):
    """Taking 2 frames of a 30-frame folder opens 2 files: nothing is decoded ahead."""
    folder = _png_folder(tmp_path / "in", _smooth(30, 16, 16))
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    it = iter_frames(folder, 16, 16)
    assert isinstance(it, types.GeneratorType)
    next(it)
    next(it)
    assert len(opened) == 2


def test_a_short_video_says_how_many_frames_it_has_and_what_to_use(tmp_path):
    folder = _png_folder(tmp_path / "in", _smooth(7))
    with pytest.raises(VideoInputError) as e:
        read_video(folder, 64, 48, 9, field="video")
    assert e.value.field == "video"
    assert "has 7 frame(s), 9 needed" in e.value.message
    assert "--frames 5" in e.value.remedy


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p / "missing.mp4", "not found"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "has no PNG frames"),
        (
            lambda p: (p / "junk.mp4").write_bytes(b"not a video at all" * 50) and p / "junk.mp4",
            "cannot read",
        ),
    ],
    ids=["missing", "empty-folder", "garbage-file"],
)
def test_bad_sources_are_one_typed_error_naming_the_field(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(VideoInputError) as e:
        src = open_source(path, field="control_video")
        list(iter_frames(src, 16, 16))
    assert isinstance(e.value, ConfigError) and e.value.field == "control_video"
    assert words in e.value.message and path.name in e.value.message
    assert e.value.remedy
    assert "\n" not in e.value.one_line()


def test_a_damaged_frame_in_a_folder_is_named(tmp_path):
    folder = _png_folder(tmp_path / "in", _smooth(3))
    (folder / "00001.png").write_bytes(b"\x89PNG broken")
    it = iter_frames(folder, 64, 48, field="mask_video")
    next(it)
    with pytest.raises(VideoInputError, match=r"00001\.png") as e:
        next(it)
    assert e.value.field == "mask_video"


def test_a_garbage_file_is_refused_when_counted_too(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoInputError, match=r"cannot read the video x\.mp4"):
        count_frames(open_source(bad, field="video"))


def test_probe_gives_the_stored_size_and_the_count_up_to_the_limit(tmp_path):
    frames = _smooth(7, 48, 64)
    mp4 = open_source(write_video(tmp_path / "v.mp4", [frames], fps=16, metadata={}), field="video")
    folder = open_source(_png_folder(tmp_path / "f", frames[:, :32]), field="mask_video")
    assert probe(mp4) == (7, (64, 48)) and probe(mp4, limit=3) == (3, (64, 48))
    assert probe(folder) == (7, (64, 32)) and probe(folder, limit=5) == (5, (64, 32))
