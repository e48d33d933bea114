import json
import re
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from wan_desktop.errors import ConfigError, OutputError
from wan_desktop.video import (
    VideoWriter,
    _write_json_atomic,
    check_output_path,
    read_back,
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
    assert names == [
        "00000.png",
        "00001.png",
        "00002.png",
        "00003.png",
        "00004.png",
        "settings.json",
    ]
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
    (tmp_path / "afile").write_text("mine")
    for name in ("x.mp4", "frames"):  # before: accepted, then a raw OSError once the run ended
        with pytest.raises(ConfigError, match=r"afile is a file, not a folder"):
            check_output_path(tmp_path / "afile" / name)
    check_output_path(tmp_path / "new.mp4")
    check_output_path(tmp_path / "newdir")


# ----------------------------------------------------------------------------- failures publish nothing

# A child process that writes under a file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets): the
# same failure as a full disk or a quota, but only in that process. Python ignores SIGXFSZ, so its
# own writes fail with EFBIG; ffmpeg inherits that and reports "File too large" with an exit status.
_LIMITED_WRITER = """
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from wan_desktop.errors import WanError
from wan_desktop.video import write_video

out, limit, meta_bytes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
frames = np.random.default_rng(0).integers(0, 256, (9, 256, 256, 3), dtype=np.uint8)
try:
    write_video(out, [frames[:4], frames[4:]], fps=16, metadata={"pad": "x" * meta_bytes})
    print(json.dumps({"ok": True}))
except WanError as e:
    print(json.dumps({"ok": False, "type": type(e).__name__, "line": e.one_line()}))
"""


def _write_limited(out, limit, meta_bytes=0):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", _LIMITED_WRITER, str(out), str(limit), str(meta_bytes)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr  # a typed error, no traceback
    return json.loads(r.stdout)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize(
    "name,limit,meta_bytes,pattern",
    [
        # ffmpeg cannot write the mp4 header / its packets / its trailer
        ("o.mp4", 0, 0, r"encoding o.mp4 failed: ffmpeg exited with status \d+ \(.*File too large"),
        (
            "o.mp4",
            12 * 1024,
            0,
            r"encoding o.mp4 failed: ffmpeg exited with status \d+ \(.*File too "
            r"large",
        ),
        # the video fits, its sidecar (a 600 kB prompt) does not
        ("o.mp4", 500_000, 600_000, r"cannot write o.mp4.json: File too large"),
        # a PNG frame does not fit; then the frames fit and settings.json does not
        ("frames", 12 * 1024, 0, r"cannot write frame 00000.png of frames: File too large"),
        ("frames", 300_000, 600_000, r"cannot write settings.json: File too large"),
    ],
)
def test_a_write_that_fails_midway_publishes_nothing_and_leaves_no_partial_file(
    tmp_path, name, limit, meta_bytes, pattern
):
    """Before: ffmpeg's exit status was never read, so a 12 KiB stump of an mp4 was published
    (with a sidecar saying 9 frames were written) and the caller saw success."""
    res = _write_limited(tmp_path / name, limit, meta_bytes)
    print(res)
    assert not res["ok"] and res["type"] == "OutputError", res
    assert re.search(pattern, res["line"]) and "\n" not in res["line"]
    assert "Free disk space" in res["line"]
    assert list(tmp_path.iterdir()) == []  # nothing at the path, no .partial anywhere


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_the_same_write_without_a_limit_publishes_the_video(tmp_path):
    import resource

    assert _write_limited(tmp_path / "o.mp4", resource.RLIM_INFINITY, 600_000) == {"ok": True}
    assert read_back(tmp_path / "o.mp4") == (9, (256, 256))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4", "o.mp4.json"]


def test_an_encoder_killed_before_the_end_is_an_output_error(tmp_path):
    """ffmpeg dying by a signal (the OOM killer, a file-size limit without SIGXFSZ ignored) is named
    as such; the half-written file is removed."""
    w = VideoWriter(tmp_path / "k.mp4", fps=16, metadata={})
    w.add(_frames(n=5))
    w._encoder._proc.kill()  # the real ffmpeg process, killed from outside
    with pytest.raises(OutputError, match=r"encoding k.mp4 failed: ffmpeg was killed by SIGKILL"):
        w.add(_frames(n=4))  # ffmpeg is gone: the pipe breaks (or, if buffered, finish() says so)
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_read_back_counts_frames_and_refuses_a_truncated_or_damaged_file(tmp_path):
    out = tmp_path / "clip.mp4"
    write_video(out, [_frames()], fps=16, metadata={})
    assert read_back(out) == (9, (64, 48))
    data = out.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the moov atom (the index) is at the end: unreadable
    with pytest.raises(
        OutputError,
        match=r"the encoded video cut.mp4 cannot be read back "
        r"\(moov atom not found\)",
    ):
        read_back(cut)
    # the index intact, the pictures zeroed: it opens, but the first frame does not decode
    start = data.index(b"mdat") + 4
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(data[:start] + bytes(len(data) // 3) + data[start + len(data) // 3 :])
    with pytest.raises(OutputError, match=r"the encoded video damaged.mp4 cannot be read back"):
        read_back(damaged)


def test_write_json_atomic_removes_its_partial_when_the_rename_fails(tmp_path):
    target = tmp_path / "settings.json"
    target.mkdir()  # a folder in the way: os.replace fails after the .partial was written
    (target / "keep").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write settings\.json"):
        _write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]  # no .partial
