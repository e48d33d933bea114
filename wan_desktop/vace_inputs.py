"""The pixel inputs of a VACE run, built for the user from what they give: a control video (pose,
depth, edges, any frames; optionally turned into grayscale or an edge map here), a mask video
(white = generate, black = keep), outpainting margins, clips to extend, reference images. No model
is involved: vace.py encodes the result into the VACE context.

The conventions are those of the official VACE code (Wan-Video/Wan2.1@9737cba wan/vace.py
``prepare_source``) and diffusers' ``WanVACEPipeline``:
* frames are in [-1, 1]; a pixel nothing is known about is mid-gray, 0 (the official code's
  127.5; diffusers' own example passes PIL gray 128, 0.004 off);
* the mask is 1 where the model generates, 0 where it keeps the frames: a mask video's first
  channel thresholded at half (diffusers: ``(x + 1) / 2 > 0.5``);
* no control video: gray frames, all generated; no mask video: all generated;
* a reference image keeps its aspect: scaled to fit the frame (bilinear, no antialias, as
  diffusers' ``F.interpolate``), centred on white (1.0).

Every input is read through video_input (streamed; one [3, F, H, W] tensor filled frame by frame)
and held as decoded, uint8, until vace.py encodes it (123 MiB for 81 frames of 832×480 with a soft
mask, against 617 MiB as float32); every problem is a ConfigError naming the request field
(``control_video``, ``mask_video``, ``outpaint``, ``first_clip``, ``last_clip``, ``ref_images``,
``preprocess``) and the reason.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image
    from torch import Tensor

    from .request import GenerationRequest, ResolvedRequest

GRAY = 0.0  # an unknown pixel in [-1, 1]
# Canny: gaussian blur (5×5, σ 1.4, as the textbook Canny), Sobel, non-maximum suppression and
# hysteresis between these gradient magnitudes of 8-bit luminance. The VACE / ControlNet Canny
# annotator runs cv2.Canny(image, 100, 200) on the unblurred image, where a step edge of contrast c
# has an (L1) Sobel magnitude of 4c: edges from c = 50, continued down to c = 25. After our blur a
# step has √(gx² + gy²) = 2.17c at most, so these thresholds keep the same sensitivity.
CANNY_SIGMA = 1.4
CANNY_LOW = 54.0
CANNY_HIGH = 108.0
PREPROCESSORS = ("gray", "edges", "none")


@dataclass(frozen=True, kw_only=True)
class VaceInputs:
    """What a VACE run conditions on, at the run's size, held as decoded (uint8) until encoded.

    video:   [3, F, H, W] uint8, the frames' levels (0..255)
    unknown: [1, F, H, W] bool, True where nothing is known about a pixel (gray: 0 in [-1, 1],
             which no level is); None: nowhere
    levels:  [1, F, H, W] uint8, the mask's level: 255 generate, 0 keep; levels between come from
             a mask video (H.264, antialiased edges)
    refs:    reference images, each [3, 1, H, W] float32 in [-1, 1], on a white canvas

    The float views are made on demand (``device``: where; the run's GPU, so the host never holds
    them): ``frames`` [3, F, H, W] float32 in [-1, 1]; ``mask`` [1, F, H, W] float32 in {0, 1}
    (levels above half); ``soft_mask`` [1, F, H, W] float32 in [0, 1] (level / 255; None when
    every level is 0 or 255). The official code and diffusers pack the soft mask into the VACE
    context's mask channels (``packed_mask``) and split the frames with ``mask``.
    """

    video: Tensor
    levels: Tensor
    unknown: Tensor | None = None
    refs: tuple[Tensor, ...] = ()

    def __post_init__(self) -> None:
        import torch

        c, f, h, w = self.video.shape
        if c != 3 or tuple(self.levels.shape) != (1, f, h, w):
            raise ValueError(f"video {tuple(self.video.shape)} / mask {tuple(self.levels.shape)}")
        if self.video.dtype != torch.uint8 or self.levels.dtype != torch.uint8:
            raise ValueError(f"video {self.video.dtype} / mask {self.levels.dtype}: uint8 expected")
        if self.unknown is not None and (
            self.unknown.shape != self.levels.shape or self.unknown.dtype != torch.bool
        ):
            raise ValueError(f"unknown {tuple(self.unknown.shape)} {self.unknown.dtype}")
        for r in self.refs:
            if tuple(r.shape) != (3, 1, h, w):
                raise ValueError(f"reference {tuple(r.shape)} for frames {h}x{w}")

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[1])

    def pixels(self, device: torch.device | str = "cpu") -> Tensor:
        """The frames as float32 in [-1, 1] on ``device`` (to_pixels' ops; unknown pixels 0)."""
        x = self.video.to(device).float().div_(255.0).mul_(2).sub_(1)
        if self.unknown is not None:
            x.masked_fill_(self.unknown.to(device), GRAY)
        return x

    def binary_mask(self, device: torch.device | str = "cpu") -> Tensor:
        """The mask, float32 in {0, 1} on ``device``: 1 where the level is above half."""
        return (self.levels.to(device) > 127).float()

    def soft(self, device: torch.device | str = "cpu") -> Tensor | None:
        """The mask's levels / 255, float32 on ``device``; None when every level is 0 or 255."""
        levels = self.levels.to(device)
        if bool(((levels == 0) | (levels == 255)).all()):
            return None
        return levels.float() / 255.0

    def packed(self, device: torch.device | str = "cpu") -> Tensor:
        """The mask the VACE context packs: the soft mask where there is one, else the binary."""
        soft = self.soft(device)
        return self.binary_mask(device) if soft is None else soft

    @property
    def frames(self) -> Tensor:
        return self.pixels()

    @property
    def mask(self) -> Tensor:
        return self.binary_mask()

    @property
    def soft_mask(self) -> Tensor | None:
        return self.soft()

    @property
    def packed_mask(self) -> Tensor:
        return self.packed()


@dataclass(frozen=True, kw_only=True)
class VaceSources:
    """What the user gives one VACE run of ``frames`` frames at ``width``×``height``: the files
    and settings :func:`build` turns into :class:`VaceInputs` and :func:`check` vets. Nothing is
    read here; each field is the request field of the same name (see GenerationRequest)."""

    width: int
    height: int
    frames: int
    control_video: str | Path | None = None
    mask_video: str | Path | None = None
    ref_images: tuple[str | Path, ...] = ()
    outpaint: tuple[int, int, int, int] | None = None  # pixels added left, top, right, bottom
    first_clip: str | Path | None = None
    last_clip: str | Path | None = None
    preprocess: str | None = None

    @classmethod
    def from_request(
        cls,
        r: ResolvedRequest | GenerationRequest,
        *,
        width: int | None = None,
        height: int | None = None,
        frames: int | None = None,
    ) -> VaceSources:
        """A request's VACE inputs at its size and frame count, or at those given (an unresolved
        request may have none yet)."""
        w = r.width if width is None else width
        h = r.height if height is None else height
        f = r.frames if frames is None else frames
        if w is None or h is None or f is None:
            raise ValueError(f"VACE inputs need a size and a frame count, got {w}x{h}, {f}")
        return cls(
            width=w,
            height=h,
            frames=f,
            control_video=r.control_video,
            mask_video=r.mask_video,
            ref_images=tuple(r.ref_images),
            outpaint=r.outpaint,
            first_clip=r.first_clip,
            last_clip=r.last_clip,
            preprocess=r.preprocess,
        )


# ----------------------------------------------------------------------------- building


def build(s: VaceSources) -> VaceInputs:
    """The inputs of one VACE run of ``s.frames`` frames at ``s.width``×``s.height``.

    * control video: its first ``frames`` frames (cropped to the aspect and resized), through the
      preprocessor (``gray``, ``edges``, ``none``/None);
    * mask video: the mask of those frames (it must match the control video's frame count and
      size); without one, every frame is generated;
    * outpaint (L, T, R, B pixels): the control video (and its mask) is fitted into the frame less
      the margins; the margins are gray and generated, the inside kept (or as the mask says);
    * first / last clip: the clip's frames are put at the start (its last frames) / end (its first
      frames) and kept, at most ``frames // 2`` of each; the rest is the control video, or gray,
      generated;
    * reference images: see :func:`reference_image`.
    """
    import torch

    check(s)
    width, height, frames = s.width, s.height, s.frames
    outpaint, preprocess = s.outpaint, s.preprocess
    left, top, right, bottom = outpaint or (0, 0, 0, 0)
    iw, ih = width - left - right, height - top - bottom  # where the control video goes
    # uint8 levels throughout (VaceInputs); where no pixel is known, ``unknown`` (gray)
    unknown = None
    if s.control_video is not None:
        video = read_control(s.control_video, iw, ih, frames, preprocess=preprocess)
    else:
        video = torch.zeros((3, frames, ih, iw), dtype=torch.uint8)
        unknown = torch.ones((1, frames, ih, iw), dtype=torch.bool)
    if s.mask_video is not None:
        levels = read_mask(s.mask_video, iw, ih, frames)
    else:
        # no mask: an outpainted video is kept inside; a plain control video is all generated
        levels = torch.full((1, frames, ih, iw), 0 if outpaint else 255, dtype=torch.uint8)
    if outpaint:
        video, levels = pad(video, levels, outpaint, fill=0, generate=255)
        known = torch.zeros((1, frames, ih, iw), dtype=torch.bool)
        unknown, _ = pad(known if unknown is None else unknown, known, outpaint, fill=True)
    limit = frames // 2
    for clip_path, field in ((s.first_clip, "first_clip"), (s.last_clip, "last_clip")):
        if clip_path is None:
            continue
        first = field == "first_clip"
        clip = _clip_frames(clip_path, width, height, limit, last=first, field=field)
        n = clip.shape[1]
        at = slice(0, n) if first else slice(frames - n, frames)
        video[:, at], levels[:, at] = clip, 0
        if unknown is not None:
            unknown[:, at] = False
    refs = tuple(reference_image(p, width, height) for p in s.ref_images)
    return VaceInputs(video=video, levels=levels, unknown=unknown, refs=refs)


def check(s: VaceSources) -> None:
    """Everything :func:`build` would refuse, without decoding a pixel (ffmpeg counts the frames,
    no further than ``s.frames``): for a job's add-time check."""
    from .video_input import open_source, probe, too_short

    frames, control_video, mask_video = s.frames, s.control_video, s.mask_video
    first_clip, last_clip, preprocess = s.first_clip, s.last_clip, s.preprocess

    if preprocess not in (None, *PREPROCESSORS):
        raise ConfigError(
            f"unknown preprocessor {preprocess!r}; expected {', '.join(PREPROCESSORS)}",
            field="preprocess",
        )
    if preprocess not in (None, "none") and control_video is None:
        raise ConfigError(
            f"the {preprocess} preprocessor needs a control video to work on",
            field="preprocess",
        )
    if mask_video is not None and control_video is None:
        raise ConfigError(
            "a mask video needs the control video it masks (black = keep those pixels)",
            remedy="Give --control-video too.",
            field="mask_video",
        )
    if s.outpaint is not None:
        _check_margins(s.outpaint, s.width, s.height, control_video, first_clip, last_clip)
    if control_video is not None:
        control = open_source(control_video, field="control_video")
        n, size = probe(control, limit=frames)
        if n < frames:
            raise too_short(control, n, frames)
        if mask_video is not None:
            mask = open_source(mask_video, field="mask_video")
            m, msize = probe(mask, limit=frames)
            if m != n:
                raise ConfigError(
                    f"the mask video {mask.path.name} has {m} frame(s), the control video "
                    f"{control.path.name} {n}: a mask needs one frame per control frame",
                    field="mask_video",
                )
            if msize != size:
                raise ConfigError(
                    f"the mask video {mask.path.name} is {msize[0]}x{msize[1]}, the control video "
                    f"{control.path.name} {size[0]}x{size[1]}: they must be the same size",
                    field="mask_video",
                )
    kept = 0
    for clip, field in ((first_clip, "first_clip"), (last_clip, "last_clip")):
        if clip is not None:
            src = open_source(clip, field=field)
            kept += min(probe(src, limit=frames)[0], frames // 2)
    if kept >= frames:  # (only with frames = 1: each clip keeps at most frames // 2)
        raise ConfigError(
            f"the clips keep all {frames} frames: nothing is left to generate",
            remedy="Use more --frames.",
            field="first_clip" if first_clip is not None else "last_clip",
        )
    for p in s.ref_images:
        _open_image(p, field="ref_images")


def _check_margins(
    margins: tuple[int, int, int, int],
    width: int,
    height: int,
    control_video: object,
    first_clip: object,
    last_clip: object,
) -> None:
    if len(margins) != 4 or any(isinstance(v, bool) or not isinstance(v, int) for v in margins):
        raise ConfigError(f"outpaint must be 4 whole pixel counts, got {margins}", field="outpaint")
    left, top, right, bottom = margins
    if min(margins) < 0 or not any(margins):
        raise ConfigError(
            f"outpaint margins must be ≥ 0 and not all 0, got {left},{top},{right},{bottom}",
            field="outpaint",
        )
    if left + right >= width or top + bottom >= height:
        raise ConfigError(
            f"outpaint {left},{top},{right},{bottom} leaves no room for the video in "
            f"{width}x{height}",
            remedy="Use smaller margins or a larger --size (the size is the outpainted frame's).",
            field="outpaint",
        )
    if control_video is None:
        raise ConfigError(
            "outpainting needs the video to extend: give it as the control video",
            field="outpaint",
        )
    if first_clip is not None or last_clip is not None:
        raise ConfigError(
            "outpainting and clip extension cannot be combined in one run",
            remedy="Outpaint first, then extend the result (or the other way round).",
            field="outpaint",
        )


# ----------------------------------------------------------------------------- pieces


def pad(
    frames: Tensor,
    mask: Tensor,
    margins: tuple[int, int, int, int],
    *,
    fill: float = GRAY,
    generate: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Outpainting: ``frames`` [C, F, h, w] and ``mask`` [1, F, h, w] placed inside margins
    (left, top, right, bottom pixels): frames ``fill`` (gray) and mask ``generate`` in the
    margins (uint8 levels: 0 and 255, the gray kept apart as VaceInputs.unknown)."""
    import torch

    left, top, right, bottom = margins
    c, f, h, w = frames.shape
    big_w, big_h = w + left + right, h + top + bottom
    out = torch.full((c, f, big_h, big_w), fill, dtype=frames.dtype)
    out[:, :, top : top + h, left : left + w] = frames
    out_mask = torch.full((1, f, big_h, big_w), generate, dtype=mask.dtype)
    out_mask[:, :, top : top + h, left : left + w] = mask
    return out, out_mask


def read_control(
    path: str | Path, width: int, height: int, frames: int, *, preprocess: str | None = None
) -> Tensor:
    """A control video's first ``frames`` frames, each through the preprocessor, as [3, F, H, W]
    uint8 (filled frame by frame; to_pixels makes them [-1, 1])."""
    import torch

    from .video_input import iter_frames, open_source, too_short

    src = open_source(path, field="control_video")
    out = torch.empty(3, frames, height, width, dtype=torch.uint8)
    n = 0
    for i, frame in enumerate(iter_frames(src, width, height, limit=frames)):
        out[:, i] = torch.tensor(apply_preprocessor(frame, preprocess)).permute(2, 0, 1)
        n = i + 1
    if n < frames:
        raise too_short(src, n, frames)
    return out


def read_mask(path: str | Path, width: int, height: int, frames: int) -> Tensor:
    """A mask video's first ``frames`` frames as [1, F, H, W] uint8: each one's first channel
    (white, above half: generate; black: keep; mask_of makes it {0, 1} or level / 255)."""
    import torch

    from .video_input import iter_frames, open_source, too_short

    src = open_source(path, field="mask_video")
    out = torch.empty(1, frames, height, width, dtype=torch.uint8)
    n = 0
    for i, frame in enumerate(iter_frames(src, width, height, limit=frames)):
        out[0, i] = torch.tensor(frame[..., 0])
        n = i + 1
    if n < frames:
        raise too_short(src, n, frames)
    return out


def _clip_frames(
    path: str | Path, width: int, height: int, limit: int, *, last: bool, field: str
) -> Tensor:
    """A clip's frames to keep, [3, n, H, W] uint8, n ≤ ``limit``: its first frames, or its
    last ones (``last``; streamed through, only ``limit`` frames held)."""
    import torch

    from .video_input import iter_frames, open_source

    src = open_source(path, field=field)
    frames: Iterable[np.ndarray]
    if last:
        frames = collections.deque(iter_frames(src, width, height), maxlen=limit)
    else:
        frames = iter_frames(src, width, height, limit=limit)
    return torch.stack([torch.tensor(f).permute(2, 0, 1) for f in frames], dim=1)


def reference_image(path: str | Path, width: int, height: int, *, multiple: int = 8) -> Tensor:
    """A reference image as [3, 1, height, width] in [-1, 1], as diffusers' WanVACEPipeline
    prepares it (``preprocess_conditions``): sides that are not multiples of ``multiple`` (its
    VAE's 8) are first cut down to them by a LANCZOS resize (its image processor, given no size);
    then the whole image is scaled to fit the frame (``min`` of the two ratios, sizes truncated;
    bilinear, align_corners False, no antialias) and centred on white. (The official
    ``prepare_source`` skips the first resize: the two differ only for such odd sizes.)"""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    img = _open_image(path, field="ref_images")
    w0, h0 = img.size
    w8, h8 = w0 - w0 % multiple, h0 - h0 % multiple
    if w8 == 0 or h8 == 0:
        raise ConfigError(
            f"reference image {Path(path).name} is {w0}x{h0}: at least {multiple}x{multiple} "
            "pixels are needed",
            field="ref_images",
        )
    if (w8, h8) != (w0, h0):
        img = img.resize((w8, h8), resample=Image.Resampling.LANCZOS)
    ref = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1) * 2 - 1
    ih, iw = ref.shape[-2:]
    scale = min(height / ih, width / iw)
    nh, nw = int(ih * scale), int(iw * scale)
    resized = F.interpolate(ref[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    canvas = torch.ones(3, height, width)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, top : top + nh, left : left + nw] = resized
    return canvas[:, None]


def _open_image(path: str | Path, *, field: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"reference image not found: {p}", field=field)
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"cannot read reference image {p.name}: {e}", field=field) from None


def to_pixels(frame: np.ndarray) -> Tensor:
    """[H, W, 3] uint8 -> [3, H, W] float32 in [-1, 1]."""
    import numpy as np
    import torch

    arr = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
    return arr.float().div_(255.0).mul_(2).sub_(1)


def mask_of(frame: np.ndarray, *, soft: bool = False) -> Tensor:
    """[H, W, 3] uint8 -> [H, W] float32: 1 where the first channel is above half (> 127.5);
    ``soft``: that channel / 255."""
    import torch

    level = torch.from_numpy(frame[..., 0].copy())
    return level.float() / 255.0 if soft else (level > 127).float()


# ----------------------------------------------------------------------------- preprocessors


def apply_preprocessor(frame: np.ndarray, kind: str | None) -> np.ndarray:
    """[H, W, 3] uint8 through ``gray`` / ``edges`` / ``none`` (None), still [H, W, 3] uint8."""
    if kind in (None, "none"):
        return frame
    if kind == "gray":
        return gray(frame)
    if kind == "edges":
        return edges(frame)
    raise ConfigError(
        f"unknown preprocessor {kind!r}; expected {', '.join(PREPROCESSORS)}", field="preprocess"
    )


def luminance(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] float32 luma, ITU-R BT.601 (0.299 R + 0.587 G + 0.114 B, as
    cv2's RGB2GRAY)."""
    import numpy as np

    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def gray(frame: np.ndarray) -> np.ndarray:
    """A grayscale frame (to colorize): the luma, rounded, in all three channels."""
    import numpy as np

    y = np.clip(np.rint(luminance(frame)), 0, 255).astype(np.uint8)
    return np.repeat(y[..., None], 3, axis=-1)


def edges(
    frame: np.ndarray,
    *,
    low: float = CANNY_LOW,
    high: float = CANNY_HIGH,
    sigma: float = CANNY_SIGMA,
) -> np.ndarray:
    """A Canny edge map of the frame's luma: white (255) edge pixels on black, [H, W, 3] uint8."""
    import numpy as np

    e = canny(luminance(frame), low=low, high=high, sigma=sigma)
    return np.repeat((e.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def canny(
    image: np.ndarray,
    *,
    low: float = CANNY_LOW,
    high: float = CANNY_HIGH,
    sigma: float = CANNY_SIGMA,
) -> np.ndarray:
    """Canny on a [H, W] float image (0..255): bool [H, W], True on edges.

    1. gaussian blur, 5×5 (σ ``sigma``, separable), borders reflected;
    2. Sobel gradients (borders replicated); magnitude √(gx² + gy²);
    3. non-maximum suppression: a pixel stays if its magnitude is a maximum along its gradient
       direction (quantized to 0°, 45°, 90°, 135°; strictly above the neighbour behind, at least
       the one ahead, so a two-pixel plateau keeps one pixel, as OpenCV);
    4. hysteresis: pixels ≥ ``high`` are edges, pixels ≥ ``low`` are edges where they connect
       (8-neighbours, through other such pixels) to one.
    Plain numpy on shifted views (a 480p frame in tens of milliseconds).
    """
    import numpy as np

    x = np.asarray(image, dtype=np.float32)
    h, w = x.shape
    # 1. blur
    r = np.arange(-2, 3, dtype=np.float64)
    g = np.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).astype(np.float32)
    p = np.pad(x, ((0, 0), (2, 2)), mode="reflect")
    x = sum(g[k] * p[:, k : k + w] for k in range(5))
    p = np.pad(x, ((2, 2), (0, 0)), mode="reflect")
    x = sum(g[k] * p[k : k + h, :] for k in range(5))
    # 2. Sobel
    p = np.pad(x, 1, mode="edge")

    def sh(a: np.ndarray, dy: int, dx: int) -> np.ndarray:  # a[y + dy, x + dx] of padded a
        return a[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (sh(p, -1, 1) + 2 * sh(p, 0, 1) + sh(p, 1, 1)) - (
        sh(p, -1, -1) + 2 * sh(p, 0, -1) + sh(p, 1, -1)
    )
    gy = (sh(p, 1, -1) + 2 * sh(p, 1, 0) + sh(p, 1, 1)) - (
        sh(p, -1, -1) + 2 * sh(p, -1, 0) + sh(p, -1, 1)
    )
    mag = np.hypot(gx, gy)
    # 3. non-maximum suppression along the quantized gradient direction (y grows downwards)
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    sector = ((angle + 22.5) // 45).astype(np.int64) % 4  # 0: 0°, 1: 45°, 2: 90°, 3: 135°
    m = np.pad(mag, 1)  # zero outside the frame
    keep = np.zeros((h, w), dtype=bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):  # the neighbour ahead
        keep |= (sector == s) & (mag >= sh(m, dy, dx)) & (mag > sh(m, -dy, -dx))
    thin = np.where(keep, mag, 0.0)
    # 4. hysteresis: grow the strong pixels through the weak ones until nothing changes
    weak = thin >= low
    edge = thin >= high
    while True:
        q = np.pad(edge, 1)
        grown = np.zeros_like(edge)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= sh(q, dy, dx)
        grown &= weak
        if np.array_equal(grown, edge):
            return edge
        edge = grown
