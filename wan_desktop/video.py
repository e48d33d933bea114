"""Writing results: H.264 ``.mp4`` (+ ``<out>.json`` sidecar) or a folder of lossless PNG frames
(+ ``settings.json``). Everything is written under a temporary name and renamed when complete, so
a cancelled, failed or killed run never leaves a half-written file at the requested path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

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
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: folder {parent} is not writable")
    if out.exists() and out.is_dir() and is_mp4(out):
        raise ConfigError(f"--out {out}: is a folder")
    if not is_mp4(out) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder",
                          remedy="Choose a new folder name, or a path ending in .mp4.")


def _frames_u8(chunk: Tensor | np.ndarray) -> np.ndarray:
    """[F, H, W, 3] uint8 numpy from a uint8 tensor/array."""
    import numpy as np

    arr = chunk.detach().cpu().numpy() if hasattr(chunk, "detach") else np.asarray(chunk)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class VideoWriter:
    """Stream frames chunk by chunk to ``out``; ``finish()`` makes it appear, ``abort()`` removes
    every trace. Use as a context manager: an exception inside aborts."""

    def __init__(self, out: str | Path, *, fps: int, metadata: Mapping[str, Any]) -> None:
        self.out = Path(out)
        self.fps = fps
        self.metadata = dict(metadata)
        self.frames = 0
        self._size: tuple[int, int] | None = None
        self._encoder: Any = None
        if is_mp4(self.out):
            self._tmp = self.out.with_name(f".{self.out.name}.partial.mp4")
        else:
            self._tmp = self.out.with_name(f".{self.out.name}.partial")
            if self._tmp.exists():
                shutil.rmtree(self._tmp)
            self._tmp.mkdir(parents=False)

    def add(self, frames: Tensor | np.ndarray) -> None:
        arr = _frames_u8(frames)
        h, w = arr.shape[1:3]
        if self._size is None:
            self._size = (w, h)
            if is_mp4(self.out):
                if w % 2 or h % 2:
                    raise ConfigError(f"H.264 needs even width and height, got {w}x{h}")
                import imageio_ffmpeg

                self._encoder = imageio_ffmpeg.write_frames(
                    str(self._tmp), (w, h), fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                    quality=None, macro_block_size=1, output_params=["-crf", str(CRF)],
                )
                self._encoder.send(None)  # start ffmpeg
        elif self._size != (w, h):
            raise ValueError(f"frame size changed from {self._size} to {(w, h)}")
        if self._encoder is not None:
            for frame in arr:
                self._encoder.send(frame)
        else:
            from PIL import Image

            for frame in arr:
                Image.fromarray(frame).save(self._tmp / f"{self.frames:05d}.png", compress_level=4)
                self.frames += 1
            return
        self.frames += len(arr)

    def finish(self, extra_metadata: Mapping[str, Any] | None = None) -> Path:
        if self.frames == 0:
            raise ValueError("no frames were written")
        meta = {**self.metadata, **(extra_metadata or {}), "frames_written": self.frames}
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None
            _write_json_atomic(sidecar_path(self.out), meta)
            os.replace(self._tmp, self.out)
        else:
            _write_json_atomic(self._tmp / "settings.json", meta)
            if self.out.is_dir():  # an empty folder the user named
                self.out.rmdir()
            os.replace(self._tmp, self.out)
        return self.out

    def abort(self) -> None:
        if self._encoder is not None:
            with contextlib.suppress(Exception):  # ffmpeg may already be gone; we only clean up
                self._encoder.close()
            self._encoder = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_video(out: str | Path, chunks: Iterable[Tensor | np.ndarray], *, fps: int,
                metadata: Mapping[str, Any]) -> Path:
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
