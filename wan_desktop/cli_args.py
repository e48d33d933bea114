"""What every ``wan-desktop`` subcommand module shares: the parser class and the argument types.

The layout of a subcommand module (``cli.py``'s generate / export / inspect, ``model_manager_cli.py``,
``bench.py``): ``add_parser(subparsers) -> None`` registers the command, ``run(args) -> int`` runs
the parsed namespace and returns the exit status; ``cli.main`` dispatches by the command's name.
Argument errors are one line on stderr and exit status 2, like every other user error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (argparse prints the usage too), exit 2.

    Text arguments (a prompt; not paths, which may be any bytes) must be valid UTF-8: Python keeps
    the undecodable bytes of a command line as lone surrogates, which would fail only when the
    settings are written, after the whole generation."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it; same behaviour
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if isinstance(value, str) and (problem := utf8_problem(value)) is not None:
                name = "/".join(action.option_strings) or action.dest
                self.error(f"argument {name}: not valid UTF-8 text ({problem})")
        return parsed, extras


def utf8_problem(text: str) -> str | None:
    """Why an argument cannot be written as UTF-8 (None: it can): Python keeps a command line's
    undecodable bytes as lone surrogates U+DC80..U+DCFF ("surrogateescape"). (text.utf8_problem
    says the same for prompts from elsewhere; the layers keep these two modules apart.)"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02x} at character {e.start + 1}"
        return f"lone surrogate U+{code:04X} at character {e.start + 1}"
    return None


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (``832x480``, ``832*480``) as ``(width, height)``."""
    try:
        w, h = text.lower().replace("*", "x").split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT, e.g. 832x480, got {text!r}"
        ) from None


def positive_float(text: str) -> float:
    """A finite number ≥ 0 (guidance 0 is allowed; the request rules say what else is)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return v


# ----------------------------------------------------------------------------- long videos


def add_long_video_arguments(g: argparse.ArgumentParser) -> None:
    """``generate``'s long-video flags (sliding windows, long_video.py)."""
    g.add_argument(
        "--prompt-file",
        type=Path,
        metavar="FILE",
        help="prompts, one line per window (the last line repeats); instead of --prompt",
    )
    g.add_argument(
        "--color-match",
        choices=["on", "off"],
        help="match each window's colours to the first (windows continued through pixels: "
        "i2v, flf2v, --extend); default on",
    )
    g.add_argument(
        "--extend",
        type=Path,
        metavar="VIDEO",
        help="continue this video (an mp4 or a folder of PNG frames); --frames new frames",
    )
    g.add_argument(
        "--window-frames",
        type=int,
        metavar="N",
        help="sliding windows: frames per window (4n+1); default the model's (81, TI2V 121)",
    )
    g.add_argument(
        "--window-overlap",
        type=int,
        metavar="N",
        help="sliding windows: latent frames each window carries over (default 2)",
    )


def window_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The GenerationRequest fields of ``--window-frames`` / ``--window-overlap`` (request.py
    checks them against the model's VAE time stride)."""
    return {"window_frames": args.window_frames, "window_overlap": args.window_overlap}


def add_forcing_arguments(g: argparse.ArgumentParser) -> None:
    """``generate``'s SkyReels-V2 Diffusion Forcing flags (diffusion_forcing.py); unset, each
    takes the detected model's recommended value."""
    g.add_argument("--base-frames", type=int, metavar="N", help="DF: frames per window (4n+1)")
    g.add_argument(
        "--overlap-history", type=int, metavar="N", help="DF: frames carried to the next window"
    )
    g.add_argument("--ar-step", type=int, metavar="N", help="DF: 0 synchronous, > 0 asynchronous")
    g.add_argument(
        "--causal-block-size", type=int, metavar="N", help="DF: latent frames per causal block"
    )
    g.add_argument(
        "--addnoise-condition",
        type=positive_float,
        metavar="X",
        help="DF: noise level of the carried frames (20 recommended)",
    )
    g.add_argument("--fps", type=int, metavar="N", help="frame rate (DF: also the fps embedding)")


def forcing_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The GenerationRequest fields of :func:`add_forcing_arguments`' flags."""
    names = ("base_frames", "overlap_history", "ar_step", "causal_block_size")
    return {n: getattr(args, n) for n in (*names, "addnoise_condition", "fps")}


def add_parallel_arguments(g: argparse.ArgumentParser) -> None:
    """``generate``'s multi-GPU flags (wan_desktop/parallel/): N worker processes, one per GPU
    (gloo on ``--device cpu``); under ``torchrun`` the process count is torchrun's."""
    g.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="processes (one per GPU) sharing the generation; default 1 (torchrun: its count)",
    )
    g.add_argument(
        "--parallel-mode",
        choices=["cfg", "sequence", "auto"],
        default="auto",
        help="cfg: cond / uncond on different GPUs; sequence: Ulysses; auto: cfg, then sequence",
    )


def parallel_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The RunOptions fields of :func:`add_parallel_arguments`' flags (no --parallel: 1, or
    torchrun's WORLD_SIZE, which prepare() reads)."""
    return {
        "parallel": 1 if args.parallel is None else args.parallel,
        "parallel_mode": args.parallel_mode,
    }


def prompt_text(prompt: str | None, prompt_file: Path | None) -> str:
    """The prompt of ``--prompt`` or ``--prompt-file`` (its non-empty lines, one per window,
    joined by newlines: long_video.split_prompts reads them back)."""
    from .errors import ConfigError

    if (prompt is None) == (prompt_file is None):
        raise ConfigError("give --prompt TEXT or --prompt-file FILE (one of them)", field="prompt")
    if prompt_file is None:
        assert prompt is not None
        return prompt
    try:
        text = prompt_file.expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"--prompt-file {prompt_file}: not UTF-8 text ({e.reason} at byte {e.start})",
            field="prompt",
        ) from None
    except OSError as e:
        raise ConfigError(
            f"--prompt-file {prompt_file}: {e.strerror or e}", field="prompt"
        ) from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"--prompt-file {prompt_file} has no prompt", field="prompt")
    return "\n".join(lines)


def add_vace_arguments(g: argparse.ArgumentParser) -> None:
    """``generate``'s VACE inputs (task vace, vace.py): control video, mask video, reference
    images and the control scale."""
    g.add_argument(
        "--control-video",
        type=Path,
        metavar="PATH",
        help="vace: the control frames (pose, depth, edges, any video; an mp4 or PNG folder)",
    )
    g.add_argument(
        "--mask-video",
        type=Path,
        metavar="PATH",
        help="vace: white = generate, black = keep (an mp4 or a folder of PNG frames)",
    )
    g.add_argument(
        "--ref-image",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="vace: a reference image, e.g. the subject (repeatable)",
    )
    g.add_argument(
        "--control-scale",
        type=positive_float,
        metavar="S",
        help="vace: strength of the control (diffusers' conditioning_scale; default 1)",
    )


# ----------------------------------------------------------------------------- video inputs


def add_video_input_arguments(g: argparse.ArgumentParser) -> None:
    """``generate``'s video-to-video flags and the VACE inputs built for the user
    (video_to_video.py, vace_inputs.py)."""
    g.add_argument(
        "--video",
        type=Path,
        metavar="PATH",
        help="v2v: the input video (an mp4 or a folder of PNG frames)",
    )
    g.add_argument(
        "--strength",
        type=positive_float,
        metavar="S",
        help="v2v: how much of the video is redone, in (0, 1]; default 0.8",
    )
    g.add_argument(
        "--outpaint",
        type=margins,
        metavar="L,T,R,B",
        help="vace: pixels to add left, top, right, bottom (generated; the video kept inside)",
    )
    g.add_argument(
        "--first-clip",
        type=Path,
        metavar="VIDEO",
        help="vace: a video whose frames open the result, kept; the rest is generated",
    )
    g.add_argument(
        "--last-clip",
        type=Path,
        metavar="VIDEO",
        help="vace: a video whose frames close the result, kept; the rest is generated",
    )
    g.add_argument(
        "--preprocess",
        choices=["gray", "edges", "none"],
        help="vace: turn the control video into grayscale (to colorize) or an edge map",
    )


def video_input_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The GenerationRequest fields of :func:`add_video_input_arguments`' flags."""
    return {
        "video": None if args.video is None else str(args.video),
        "strength": args.strength,
        "outpaint": args.outpaint,
        "first_clip": None if args.first_clip is None else str(args.first_clip),
        "last_clip": None if args.last_clip is None else str(args.last_clip),
        "preprocess": args.preprocess,
    }


def margins(text: str) -> tuple[int, int, int, int]:
    """``L,T,R,B`` whole pixel counts ≥ 0 (``--outpaint 0,64,0,64``)."""
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"must be 4 whole pixel counts ≥ 0 as LEFT,TOP,RIGHT,BOTTOM (e.g. 0,64,0,64), "
            f"got {text!r}"
        )
    return values[0], values[1], values[2], values[3]
