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


class PeerOutOfMemory(RankFailed):
    """A rank of a parallel run ran out of GPU memory in the current memory-plan attempt: every
    rank leaves the attempt with this (the failed rank with torch's own error) and the ranks
    move to the next plan together (run.execute). ``message``: "rank N: <torch's first line>".
    ``broken``: this rank learnt of it from a failed torch exchange, whose group cannot go on."""

    def __init__(self, message: str, *, broken: bool = False) -> None:
        super().__init__(message)
        self.broken = broken


def stuck_in_exchange(line: str) -> OutOfVram:
    """A rank ran out of GPU memory while the others waited for it inside a torch exchange
    (past a model's first calls, where exchanges are not guarded): the group's collectives are
    broken, so the ranks cannot move to a tighter plan together and the run ends."""
    return OutOfVram(
        f"out of GPU memory on {line}; the other ranks were inside an exchange with it, so the "
        "run cannot move to a tighter memory plan",
        remedy="Run again with a lower --vram-budget (every rank then starts from a tighter "
        "plan), or with --parallel 1.",
    )
