"""Reading input videos (video-to-video, VACE control / mask / clips): an mp4 (any file ffmpeg
reads) or a folder of PNG frames, as RGB frames cropped to the target aspect and resized.

Frames are streamed: :func:`iter_frames` yields one ``[H, W, 3]`` uint8 frame at a time and
asks ffmpeg for at most ``limit`` frames, so host memory is bounded by one source frame plus what
the caller keeps, never by the length of the file. :func:`read_frames` fills one preallocated
``[1, 3, F, H, W]`` uint8 tensor from that stream (what video-to-video hands the VAE encoder, which
makes each chunk [-1, 1] floats as it encodes it: 0.22 GB at 1280×720×81 where float32 frames
take 0.9 GB); :func:`read_video` gives the same frames as float32 in [-1, 1]. Every problem is a
:class:`~wan_desktop.errors.VideoInputError` (a ``ConfigError``) naming the file and the request
field it came from.

The crop and resize are those of ``pipeline.load_image`` (centre crop to the target aspect, never
a stretch; LANCZOS), so an input image and the same picture as a one-frame video agree.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import VideoInputError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image
    from torch import Tensor

FRAME_SUFFIXES = (".png",)  # a frames folder: lossless frames, as our own PNG output writes them


@dataclass(frozen=True, kw_only=True)
class VideoSource:
    """An input video on disk: ``folder`` (PNG frames, in natural name order) or a file."""

    path: Path
    field: str  # the request field it came from ("video", "control_video", ...)
    frame_files: tuple[Path, ...] | None = None  # a folder's frames; None for a video file

    @property
    def is_folder(self) -> bool:
        return self.frame_files is not None


def open_source(path: str | Path, *, field: str) -> VideoSource:
    """Check that ``path`` is an existing video file or a folder with PNG frames (cheap: no
    decoding)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoInputError(f"{_label(field)} not found: {p}", field=field)
    if p.is_dir():
        files = tuple(
            sorted(
                (f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES and f.is_file()),
                key=_natural_key,
            )
        )
        if not files:
            raise VideoInputError(
                f"{_label(field)} folder {p} has no PNG frames",
                remedy="Give a folder of PNG frames (00000.png, 00001.png, ...) or a video file.",
                field=field,
            )
        return VideoSource(path=p, field=field, frame_files=files)
    if not p.is_file():
        raise VideoInputError(f"{_label(field)} {p} is not a file or folder", field=field)
    return VideoSource(path=p, field=field)


def count_frames(source: VideoSource, *, limit: int | None = None) -> int:
    """How many frames ``source`` has, counting no further than ``limit`` (see :func:`probe`)."""
    return probe(source, limit=limit)[0]


def probe(source: VideoSource, *, limit: int | None = None) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) of ``source`` as stored, counting no further than ``limit``. A
    video file is decoded by ffmpeg without sending a pixel back (its ``framecrc`` lines are
    counted); a folder's size is its first frame's header."""
    if source.frame_files is not None:
        n = len(source.frame_files)
        return (n if limit is None else min(n, limit)), _image_size(source, source.frame_files[0])
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error"]
    cmd += ["-i", str(source.path), "-map", "0:v:0"]
    if limit is not None:
        cmd += ["-frames:v", str(limit)]
    cmd += ["-f", "framecrc", "-"]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise VideoInputError(
            f"cannot start ffmpeg to read {source.path.name}: {e.strerror or e}",
            remedy="Reinstall wan-desktop (its imageio-ffmpeg package brings ffmpeg).",
            field=source.field,
        ) from None
    out = r.stdout.decode("utf-8", "replace")
    dims = re.search(r"^#dimensions 0: (\d+)x(\d+)$", out, re.MULTILINE)
    if r.returncode != 0 or dims is None:
        raise _unreadable(source, r.stderr.decode("utf-8", "replace"))
    n = sum(1 for ln in out.splitlines() if ln and not ln.startswith("#"))
    if n == 0:
        raise _no_frames(source)
    return n, (int(dims[1]), int(dims[2]))


def _image_size(src: VideoSource, f: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise VideoInputError(
            f"cannot read frame {f.name} of the {_label(src.field)} folder {src.path}: {e}",
            remedy="Replace or remove the damaged frame.",
            field=src.field,
        ) from None


def iter_frames(
    source: VideoSource | str | Path,
    width: int,
    height: int,
    *,
    limit: int | None = None,
    field: str = "video",
) -> Iterator[np.ndarray]:
    """The frames of ``source`` one at a time, each ``[height, width, 3]`` uint8 RGB, centre-cropped
    to the target aspect and resized; at most ``limit``. Raises VideoInputError for an unreadable
    file or frame, or a video without frames (at the first ``next``)."""
    src = source if isinstance(source, VideoSource) else open_source(source, field=field)
    if limit is not None and limit < 1:
        return
    n = 0
    for img in _source_images(src, limit):
        yield fit_frame(img, width, height)
        n += 1
        if limit is not None and n >= limit:
            return
    if n == 0:
        raise _no_frames(src)


def read_video(
    source: VideoSource | str | Path,
    width: int,
    height: int,
    frames: int,
    *,
    field: str = "video",
) -> Tensor:
    """The first ``frames`` frames of ``source`` as ``[1, 3, frames, height, width]`` float32 in
    [-1, 1] (one tensor filled frame by frame: no list of decoded frames beside it). Fewer frames
    in the source is a VideoInputError that says how many there are."""
    import numpy as np
    import torch

    src = source if isinstance(source, VideoSource) else open_source(source, field=field)
    out = torch.empty(1, 3, frames, height, width, dtype=torch.float32)
    n = 0
    for i, frame in enumerate(iter_frames(src, width, height, limit=frames)):
        arr = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
        out[0, :, i] = arr.float().div_(255.0).mul_(2).sub_(1)
        n = i + 1
    if n < frames:
        raise too_short(src, n, frames)
    return out


def read_frames(
    source: VideoSource | str | Path,
    width: int,
    height: int,
    frames: int,
    *,
    field: str = "video",
) -> Tensor:
    """The frames :func:`read_video` reads, kept as they were decoded: ``[1, 3, frames, height,
    width]`` uint8 (a quarter of the float32 bytes), filled frame by frame."""
    import numpy as np
    import torch

    src = source if isinstance(source, VideoSource) else open_source(source, field=field)
    out = torch.empty(1, 3, frames, height, width, dtype=torch.uint8)
    n = 0
    for i, frame in enumerate(iter_frames(src, width, height, limit=frames)):
        out[0, :, i] = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
        n = i + 1
    if n < frames:
        raise too_short(src, n, frames)
    return out


def too_short(source: VideoSource, have: int, need: int, *, temporal: int = 4) -> VideoInputError:
    """The error for a source with fewer frames than a run needs, with the largest usable count."""
    usable = (have - 1) // temporal * temporal + 1
    return VideoInputError(
        f"{_label(source.field)} {source.path.name} has {have} frame(s), {need} needed",
        remedy=f"Use --frames {usable} (or fewer), or a longer video.",
        field=source.field,
    )


def fit_frame(img: Image.Image, width: int, height: int) -> np.ndarray:
    """An image -> [height, width, 3] uint8 RGB: the excess of the wider side cropped around the
    centre, then a LANCZOS resize (as ``pipeline.load_image``)."""
    import numpy as np
    from PIL import Image

    img = img.convert("RGB")
    iw, ih = img.size
    target = width / height
    if abs(iw / ih - target) > 1e-3:  # crop the excess, never stretch
        if iw / ih > target:
            cw = round(ih * target)
            img = img.crop(((iw - cw) // 2, 0, (iw - cw) // 2 + cw, ih))
        else:
            ch = round(iw / target)
            img = img.crop((0, (ih - ch) // 2, iw, (ih - ch) // 2 + ch))
    if img.size != (width, height):
        img = img.resize((width, height), resample=Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


# ----------------------------------------------------------------------------- sources


def _source_images(src: VideoSource, limit: int | None) -> Iterator[Image.Image]:
    if src.frame_files is not None:
        yield from _folder_images(src, src.frame_files[:limit])
    else:
        yield from _file_images(src, limit)


def _folder_images(src: VideoSource, files: tuple[Path, ...]) -> Iterator[Image.Image]:
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                img = im.copy()
        except (UnidentifiedImageError, OSError) as e:
            raise VideoInputError(
                f"cannot read frame {f.name} of the {_label(src.field)} folder {src.path}: {e}",
                remedy="Replace or remove the damaged frame.",
                field=src.field,
            ) from None
        yield img


def _file_images(src: VideoSource, limit: int | None) -> Iterator[Image.Image]:
    """ffmpeg decoding to raw RGB on a pipe (imageio-ffmpeg's reader), asked for at most ``limit``
    frames; closing this generator stops ffmpeg."""
    import imageio_ffmpeg
    import numpy as np
    from PIL import Image

    params = ["-map", "0:v:0"] + ([] if limit is None else ["-frames:v", str(limit)])
    gen = imageio_ffmpeg.read_frames(str(src.path), output_params=params)
    try:
        try:
            meta = next(gen)
        except (OSError, RuntimeError, StopIteration) as e:
            raise _unreadable(src, str(e)) from None
        w, h = meta["size"]
        while True:
            try:
                raw = next(gen)
            except StopIteration:
                return
            except (OSError, RuntimeError) as e:
                raise _unreadable(src, str(e)) from None
            yield Image.fromarray(np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3))
    finally:
        gen.close()


# ----------------------------------------------------------------------------- errors


def _label(field: str) -> str:
    return field.replace("_", " ")


def _natural_key(p: Path) -> tuple[object, ...]:
    """frame2.png before frame10.png."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name.lower()))


def _unreadable(src: VideoSource, log: str) -> VideoInputError:
    lines = [
        ln.strip()
        for ln in log.splitlines()
        if ln.strip() and not ln.startswith(("===", "Could not"))
    ]
    cause = re.sub(r"^(\[[^\]]*\]\s*)+", "", lines[-1]) if lines else "not a video"
    return VideoInputError(
        f"cannot read the {_label(src.field)} {src.path.name}: {cause[:200]}",
        field=src.field,
    )


def _no_frames(src: VideoSource) -> VideoInputError:
    return VideoInputError(
        f"the {_label(src.field)} {src.path.name} has no video frames",
        field=src.field,
    )
