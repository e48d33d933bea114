"""Typed errors for everything a user, a file or a GPU can trigger.

Every class carries a ``remedy``: one sentence telling the user what to do next. The CLI prints
``error: <message> (<remedy>)`` on one line and exits 2; the GUI shows the same text in a message
box when it refuses a job (marking the field a ``ConfigError.field`` names), or on the failed job's
history line when the job fails while running.
"""

from __future__ import annotations


class WanError(Exception):
    """Base class of every error a user can trigger."""

    remedy: str = "See the log for details."

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if remedy is not None:
            self.remedy = remedy

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        return f"{text} ({self.remedy})" if self.remedy else text


class ConfigError(WanError):
    """A request or setting has a value outside its rule."""

    remedy = "Fix the value named in the message."

    def __init__(
        self, message: str, *, remedy: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, remedy=remedy)
        # the request value at fault ("size", "frames", "steps", "image", "last_image",
        # "guidance", "shift", "seed", "task"), so a form can mark that field; None: no one field
        self.field = field


class CheckpointError(WanError):
    """A model file or folder is missing, unreadable, incomplete or of an unknown kind."""

    remedy = "Check that the model files are complete (re-download them if needed) and of a supported Wan model."


class EngineError(WanError):
    """A runtime backend cannot be used: not installed, engine built for another GPU/shape/version."""

    remedy = "Rebuild the engines for this model and GPU, or choose the PyTorch backend."


class OutOfVram(WanError):
    """The GPU ran out of memory even with the tightest plan."""

    remedy = (
        "Lower the resolution or frame count, choose a smaller VRAM plan, or use FP8/INT8 weights."
    )


class Cancelled(WanError):
    """The user cancelled the job; nothing was written."""

    remedy = ""


class OutputError(WanError):
    """The result could not be written or read back: disk full, quota or file-size limit, the
    encoder failed. Nothing is left at the output path."""

    remedy = (
        "Free disk space in the output folder (or raise its quota or file-size limit), or "
        "choose another output path."
    )


class NumericError(WanError):
    """The computation produced NaN or infinite values (weights, a LoRA, a strength or a precision
    that overflows); the run stops at once and writes nothing."""

    remedy = (
        "Try a higher precision (--dtype float32 or bfloat16 instead of float16), a lower "
        "LoRA strength or another LoRA, and check the model files (re-download them)."
    )


class VideoInputError(ConfigError):
    """An input video (video-to-video, VACE control, mask or clip) cannot be used: missing,
    unreadable, without frames, or shorter than the run."""

    remedy = "Give an .mp4 file (or another video ffmpeg reads) or a folder of PNG frames."


def is_cuda_oom(e: BaseException) -> bool:
    """The one test for a CUDA out-of-memory error (torch's class, looked up only when loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)


def oom_line(e: BaseException) -> str:
    """The first line of an out-of-memory error's text (torch's "CUDA out of memory. Tried to
    allocate ..."), for a one-line message."""
    return (str(e).strip().splitlines() or ["CUDA out of memory"])[0]
