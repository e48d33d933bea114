import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from wan_desktop.errors import ConfigError
from wan_desktop.video import (
    VideoWriter,
    check_output_path,
    sidecar_path,
    to_uint8_frames,
    write_video,
)


def _frames(n=9, h=48, w=64):
    g = torch.Generator().manual_seed(1)
    # smooth content so H.264 at CRF 16 reproduces it closely
    base = torch.linspace(0, 1, w).view(1, 1, w, 1) * torch.linspace(0.2, 1, h).view(1, h, 1, 1)
    t = torch.linspace(0, 1, n).view(n, 1, 1, 1)
    r = (base + 0.2 * t).expand(n, h, w, 1)
    gch = (1 - base).expand(n, h, w, 1)
    b = (0.5 * base + 0.1 * torch.rand(1, 1, 1, 1, generator=g)).expand(n, h, w, 1)
    rgb = torch.cat([r, gch, b], dim=-1)
    return (rgb.clamp(0, 1) * 255).to(torch.uint8)


def test_mp4_roundtrip_frame_count_size_fps_and_sidecar(tmp_path):
    out = tmp_path / "clip.mp4"
    frames = _frames()
    write_video(out, [frames[:1], frames[1:5], frames[5:]], fps=16, metadata={"seed": 7})
    back = iio.imread(out)
    assert back.shape == (9, 48, 64, 3)
    meta = iio.immeta(out)
    assert round(meta["fps"]) == 16
    assert np.abs(back.astype(int) - frames.numpy().astype(int)).mean() < 3.0
    side = json.loads(sidecar_path(out).read_text())
    assert side["seed"] == 7 and side["frames_written"] == 9
    assert {p.name for p in tmp_path.iterdir()} == {"clip.mp4", "clip.mp4.json"}


def test_png_folder_is_lossless(tmp_path):
    out = tmp_path / "frames"
    frames = _frames(n=5)
    write_video(out, [frames], fps=16, metadata={"prompt": "x"})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "00003.png", "00004.png", "settings.json"]
    back = np.stack([iio.imread(out / f"{i:05d}.png") for i in range(5)])
    assert np.array_equal(back, frames.numpy())
    assert json.loads((out / "settings.json").read_text())["prompt"] == "x"


def test_abort_leaves_nothing(tmp_path):
    for name in ("a.mp4", "dir"):
        with pytest.raises(RuntimeError), VideoWriter(tmp_path / name, fps=16, metadata={}) as w:
            w.add(_frames(n=3))
            raise RuntimeError("cancelled mid-write")
    assert list(tmp_path.iterdir()) == []


def test_to_uint8_truncates_like_reference():
    v = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).view(1, 3, 2, 1, 1).repeat(1, 1, 1, 1, 1)
    u = to_uint8_frames(v)
    assert u.shape == (2, 1, 1, 3)
    # frame 0: channels (-1, 0, 1); frame 1: (-0.5, 0.999, 2 clamped)
    assert u.flatten().tolist() == [0, 127, 255, 63, 254, 255]


def test_check_output_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "x.mp4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        check_output_path(tmp_path / "full")
    check_output_path(tmp_path / "new.mp4")
    check_output_path(tmp_path / "newdir")
