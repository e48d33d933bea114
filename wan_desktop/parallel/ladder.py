"""The memory-plan ladder of a parallel run: one ladder for every rank, climbed down together.

Each rank planned its own GPU (run.prepare reads its free memory); the ranks must run the same
plan (its VAE tiles are dealt over them, its FSDP choice is collective), so they take the ladder
of the most constrained GPU: the one whose first plan predicts the lowest peak. A CUDA
out-of-memory error on any rank ends the attempt on every rank (group.Group.tell_oom: the others'
waits raise PeerOutOfMemory); once all have left it, they go on to the next plan together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ..errors import OutOfVram, is_cuda_oom, oom_line
from .errors import PeerOutOfMemory, stuck_in_exchange
from .group import Group

if TYPE_CHECKING:
    from ..cancel import CancelToken
    from ..memory import Plan

T = TypeVar("T")


def agree(group: Group, plans: Sequence[Plan]) -> tuple[Plan, ...]:
    """The ladder every rank runs: the planned ranks' ladder whose first plan predicts the lowest
    peak (the lowest rank on a tie); empty when no rank planned (the CPU, engine backends)."""
    ladders = [tuple(lad) for lad in group.exchange("plans", tuple(plans))]
    planned = [lad for lad in ladders if lad]
    if not planned:
        return ()
    return min(planned, key=lambda lad: lad[0].predicted.peak_gib)


def run_together(
    group: Group,
    cancel: CancelToken,
    plans: Sequence[Plan],
    attempt: Callable[[Plan], T],
    *,
    warn: Callable[[str], None],
    free: Callable[[], None],
) -> tuple[T, Plan]:
    """``attempt(plan)`` on every rank for each plan in order until every rank finishes one
    without a CUDA out-of-memory error anywhere; returns (this rank's result, that plan). Rank 0
    warns once per move (naming the rank that ran out). After the last plan, or when a rank ran
    out while the others were inside a torch exchange with it, every rank raises OutOfVram.
    Other errors (and Cancelled) pass through. ``free``: gives memory back after an attempt
    out of memory."""
    if not plans:
        raise ValueError("run_together needs at least one plan")
    for i, plan in enumerate(plans):
        group.begin_attempt(i)
        try:
            result = attempt(plan)
            group.sync(cancel)  # every rank finished it (a peer's late error is seen here)
            group.attempt = None
            return result, plan
        except BaseException as e:
            own = is_cuda_oom(e)
            if not own and not isinstance(e, PeerOutOfMemory):
                group.attempt = None
                raise
            if own:
                group.tell_oom(oom_line(e))
            broken = isinstance(e, PeerOutOfMemory) and e.broken
            del e
        free()
        line, any_broken = group.end_attempt(broken=broken)
        if any_broken:
            raise stuck_in_exchange(line)
        if i + 1 == len(plans):
            raise OutOfVram(
                f"out of GPU memory on {line} (with the tightest plan, {plan.name}, predicted "
                f"peak {plan.predicted.peak_gib:.1f} GiB a rank)"
            )
        nxt = plans[i + 1]
        if group.rank == 0:
            warn(
                f"out of GPU memory on {line.split(':', 1)[0]} with plan {plan.name} (predicted "
                f"peak {plan.predicted.peak_gib:.1f} GiB); every rank retries with plan "
                f"{nxt.name} (predicted peak {nxt.predicted.peak_gib:.1f} GiB)"
            )
    raise AssertionError("unreachable")
