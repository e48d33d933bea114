"""Writing results: H.264 ``.mp4`` (+ ``<out>.json`` sidecar) or a folder of lossless PNG frames
(+ ``settings.json``). Everything is written under a temporary name and renamed when complete, so
a cancelled, failed or killed run never leaves a half-written file at the requested path.

An mp4 is published only when ffmpeg exited with status 0 and the file decodes back to the frames
written, at their size: a full disk, a quota or a file-size limit (which ffmpeg may only hit while
writing the trailer) is an :class:`OutputError`, never a corrupt video with exit 0. On any failure
the temporary files are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, OutputError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

CRF = 16  # visually lossless for generated video; the PNG output is the exact one


def is_mp4(path: Path) -> bool:
    return path.suffix.lower() == ".mp4"


def sidecar_path(out: Path) -> Path:
    """``video.mp4`` -> ``video.mp4.json``; a PNG folder keeps ``settings.json`` inside."""
    return out.with_name(out.name + ".json") if is_mp4(out) else out / "settings.json"


def check_output_path(out: Path) -> None:
    """Fail before any work if the result could not be written there."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise ConfigError(f"--out {out}: folder {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: folder {parent} is not writable")
    if out.exists() and out.is_dir() and is_mp4(out):
        raise ConfigError(f"--out {out}: is a folder")
    if not is_mp4(out) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out {out}: exists and is not an empty folder",
            remedy="Choose a new folder name, or a path ending in .mp4.",
        )


def _frames_u8(chunk: Tensor | np.ndarray) -> np.ndarray:
    """[F, H, W, 3] uint8 numpy from a uint8 tensor/array."""
    import numpy as np

    arr = chunk.detach().cpu().numpy() if hasattr(chunk, "detach") else np.asarray(chunk)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``path`` whole or not at all: its ``.partial`` never outlives a failure."""
    tmp = path.with_name(f".{path.name}.partial")
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path.name}: {_reason(e)}") from None


def _reason(e: OSError) -> str:
    """``[Errno 27] File too large: '/x/.o.partial'`` -> ``File too large``."""
    return e.strerror or str(e) or type(e).__name__


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _ffmpeg_flags() -> dict[str, Any]:
    """Popen options for ffmpeg: its own process group (a Ctrl-C in the terminal cancels the run
    through our handler; it must not kill the encoder of a run that is finishing), no console
    window on Windows, and Python's ignored SIGXFSZ kept (``restore_signals=False``): a file-size
    limit is then a "File too large" error and an exit status, not a silent kill."""
    if sys.platform.startswith("win"):
        return {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
            | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        }
    return {"start_new_session": True, "restore_signals": False}


def _ffmpeg_cause(log: str) -> str:
    """ffmpeg's first error line without its ``[out#0/mp4 @ 0x55…]`` prefixes."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", lines[0]) if lines else ""


class _Encoder:
    """ffmpeg turning raw RGB frames from its stdin into an H.264 file, as imageio-ffmpeg's
    ``write_frames`` does (same command), but ours to check: ``close()`` raises OutputError unless
    ffmpeg exited with status 0, with ffmpeg's first error line as the reason (see
    :func:`_ffmpeg_flags` for how it is started)."""

    def __init__(self, path: Path, size: tuple[int, int], fps: int, *, name: str) -> None:
        import imageio_ffmpeg

        w, h = size
        rate = str(Fraction(fps).limit_denominator())
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-y",
            "-f",
            "rawvideo",
            "-vcodec",
            "rawvideo",
            "-s",
            f"{w}x{h}",
            "-pix_fmt",
            "rgb24",
            "-r",
            rate,
            "-i",
            "-",
            "-an",
            "-vcodec",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-hide_banner",
            "-nostats",
            "-v",
            "error",
            "-crf",
            str(CRF),
            str(path),
        ]
        self.name = name  # the published file's name, for messages
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **_ffmpeg_flags(),
            )
        except OSError as e:
            raise OutputError(
                f"cannot start ffmpeg to write {name}: {_reason(e)}",
                remedy="Reinstall the app (its ffmpeg is missing or not executable).",
            ) from None
        self._log: list[str] = []  # ffmpeg's first error lines (the cause comes first)
        self._reader = threading.Thread(target=self._drain, name="ffmpeg-log", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        """Keep ffmpeg's log (a full pipe would stall it); the pipe closes when ffmpeg exits."""
        assert self._proc.stderr is not None
        with self._proc.stderr as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").strip()
                if line and len(self._log) < 20:
                    self._log.append(line)

    def _failure(self, what: str) -> OutputError:
        """The error to raise, with ffmpeg's first error line as the reason."""
        self._reader.join(timeout=5)
        code = self._proc.returncode
        status = (
            f"ffmpeg was killed by {_signal_name(-code)}"
            if code is not None and code < 0
            else f"ffmpeg exited with status {code}"
            if code is not None
            else "ffmpeg failed"
        )
        cause = _ffmpeg_cause("\n".join(self._log))
        return OutputError(
            f"{what} {self.name} failed: {status}" + (f" ({cause})" if cause else "")
        )

    def send(self, frame: np.ndarray) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(frame)  # the buffer itself, no copy
        except OSError:  # BrokenPipe: ffmpeg is gone
            self.kill()
            raise self._failure("encoding") from None

    def close(self) -> None:
        """Flush, wait for ffmpeg to finish the file; OutputError unless it exited with 0."""
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):  # ffmpeg already exited: its status says why
            self._proc.stdin.close()
        try:
            self._proc.wait()
        except BaseException:  # a second Ctrl-C while the encoder finishes
            self.kill()
            raise
        if self._proc.returncode != 0:
            raise self._failure("encoding")
        self._reader.join(timeout=5)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


def read_back(path: Path) -> tuple[int, tuple[int, int]]:
    """Decode a finished video from start to end, stopping at the first error: (frame count,
    (width, height)). A file ffmpeg cannot open or decode whole is an OutputError.

    ffmpeg's ``framecrc`` output is a few header lines (``#dimensions 0: 832x480``) and one line
    per decoded frame, so nothing of the pictures crosses the pipe."""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-xerror",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-f",
        "framecrc",
        "-",
    ]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, **_ffmpeg_flags())
    except OSError as e:
        raise OutputError(f"cannot start ffmpeg to read {path.name} back: {_reason(e)}") from None
    out = r.stdout.decode("utf-8", "replace")
    dims = re.search(r"^#dimensions 0: (\d+)x(\d+)$", out, re.MULTILINE)
    if r.returncode != 0 or dims is None:
        cause = _ffmpeg_cause(r.stderr.decode("utf-8", "replace")) or "no video stream"
        raise OutputError(f"the encoded video {path.name} cannot be read back ({cause})")
    count = sum(1 for ln in out.splitlines() if ln and not ln.startswith("#"))
    return count, (int(dims[1]), int(dims[2]))


class VideoWriter:
    """Stream frames chunk by chunk to ``out``; ``finish()`` makes it appear, ``abort()`` removes
    every trace. Use as a context manager: an exception inside aborts."""

    def __init__(self, out: str | Path, *, fps: int, metadata: Mapping[str, Any]) -> None:
        self.out = Path(out)
        self.fps = fps
        self.metadata = dict(metadata)
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._encoder: _Encoder | None = None
        if is_mp4(self.out):
            self._tmp = self.out.with_name(f".{self.out.name}.partial.mp4")
        else:
            self._tmp = self.out.with_name(f".{self.out.name}.partial")
            try:
                if self._tmp.exists():
                    shutil.rmtree(self._tmp)
                self._tmp.mkdir(parents=False)
            except OSError as e:
                raise OutputError(
                    f"cannot create the frames folder {self._tmp}: {_reason(e)}"
                ) from None

    def add(self, frames: Tensor | np.ndarray) -> None:
        arr = _frames_u8(frames)
        h, w = arr.shape[1:3]
        if self._size is None:
            self._size = (w, h)
            if is_mp4(self.out):
                if w % 2 or h % 2:
                    raise ConfigError(f"H.264 needs even width and height, got {w}x{h}")
                self._encoder = _Encoder(self._tmp, (w, h), self.fps, name=self.out.name)
        elif self._size != (w, h):
            raise ValueError(f"frame size changed from {self._size} to {(w, h)}")
        if self._encoder is not None:
            for frame in arr:
                self._encoder.send(frame)
        else:
            from PIL import Image

            for frame in arr:
                name = f"{self.frames:05d}.png"
                try:
                    Image.fromarray(frame).save(self._tmp / name, compress_level=4)
                except OSError as e:
                    raise OutputError(
                        f"cannot write frame {name} of {self.out.name}: {_reason(e)}"
                    ) from None
                self.frames += 1
            return
        self.frames += len(arr)

    def finish(self, extra_metadata: Mapping[str, Any] | None = None) -> Path:
        """Publish: the mp4 only once ffmpeg exited with 0 and the file reads back with every
        frame at its size; then its sidecar. On failure (OutputError) nothing is left."""
        if self.frames == 0:
            raise ValueError("no frames were written")
        meta = {**self.metadata, **(extra_metadata or {}), "frames_written": self.frames}
        try:
            if self._encoder is not None:
                self._encoder.close()
                self._encoder = None
                count, size = read_back(self._tmp)
                assert self._size is not None  # set by the first add()
                if (count, size) != (self.frames, self._size):
                    raise OutputError(
                        f"the encoded video {self.out.name} reads back as {count} frame(s) of "
                        f"{size[0]}x{size[1]}, but {self.frames} of "
                        f"{self._size[0]}x{self._size[1]} were written"
                    )
                side = sidecar_path(self.out)
                _write_json_atomic(side, meta)
                try:
                    os.replace(self._tmp, self.out)
                except OSError as e:
                    side.unlink(missing_ok=True)  # no sidecar without its video
                    raise OutputError(
                        f"cannot move the finished video to {self.out}: {_reason(e)}"
                    ) from None
            else:
                _write_json_atomic(self._tmp / "settings.json", meta)
                try:
                    if self.out.is_dir():  # an empty folder the user named
                        self.out.rmdir()
                    os.replace(self._tmp, self.out)
                except OSError as e:
                    raise OutputError(
                        f"cannot move the finished frames to {self.out}: {_reason(e)}"
                    ) from None
        except BaseException:
            self.abort()
            raise
        return self.out

    def abort(self) -> None:
        """Stop ffmpeg (the file is being thrown away) and remove the temporary file or folder."""
        if self._encoder is not None:
            self._encoder.kill()
            self._encoder = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_video(
    out: str | Path, chunks: Iterable[Tensor | np.ndarray], *, fps: int, metadata: Mapping[str, Any]
) -> Path:
    with VideoWriter(out, fps=fps, metadata=metadata) as w:
        for c in chunks:
            w.add(c)
        return w.finish()


def to_uint8_frames(video: Tensor) -> Tensor:
    """[B=1 or none, 3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8.

    Truncates like Wan's save_video and diffusers' export_to_video ((x+1)/2·255 cast to uint8), so
    our frames equal theirs for equal float videos.
    """
    import torch

    if video.ndim == 5:
        video = video[0]
    x = ((video.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous()
