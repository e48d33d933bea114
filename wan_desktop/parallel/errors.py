"""The typed errors of a run on several processes (each a WanError with a remedy)."""

from __future__ import annotations

from ..errors import WanError


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
