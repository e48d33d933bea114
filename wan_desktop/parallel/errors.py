"""The typed errors of a run on several processes (each a WanError with a remedy)."""

from __future__ import annotations

from ..errors import OutOfVram, WanError


class RankFailed(WanError):
    """Another process of a parallel run failed, was killed or stopped answering: every rank
    ends with this one error."""

    remedy = (
        "A killed process has often run out of memory: free memory or lower the size, then run "
        "again, or with --parallel 1 to check the job on one GPU."
    )


class LaunchError(WanError):
    """The worker processes of a parallel run could not be started or did not join in time."""

    remedy = (
        "Check that every GPU is visible (CUDA_VISIBLE_DEVICES) and that local TCP connections "
        "are allowed, or run with --parallel 1."
    )


def no_fallback(message: str) -> OutOfVram:
    """A parallel run's out-of-memory error: its ranks do not move to a tighter plan (one rank
    cannot retry alone, and they do not agree on a retry), so the run ends, saying so."""
    return OutOfVram(
        f"{message}; a parallel run does not fall back to a tighter memory plan",
        remedy="Run again with a lower --vram-budget (every rank then starts from a tighter "
        "plan), or with --parallel 1, which moves to the next plan on its own.",
    )
