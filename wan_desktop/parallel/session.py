"""One parallel run, as the run owner starts it (``run.execute`` with ``options.parallel`` > 1).

In the caller's process (the CLI, or the app's GPU worker) this process is rank 0 and launches the
others (launch.py); under ``torchrun`` (or in a launched worker) it joins as the rank its
environment says. Each rank then runs the same job body: rank 0 with the caller's cancel token,
progress callback and review, the others with their events dropped and the review's verdict taken
from rank 0; they write nothing (run._generate_unwritten): rank 0 alone writes the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from ..cancel import CancelToken
from ..errors import Cancelled, ConfigError, WanError
from . import ranked
from .errors import LaunchError, RankFailed
from .group import Group, RankEnv, join
from .layout import Layout, plan_layout

if TYPE_CHECKING:
    import torch

    from ..contracts import Components
    from ..memory import Plan
    from ..options import RunOptions
    from ..pipeline import Event, Review, Verdict
    from ..request import ResolvedRequest
    from ..variants import Variant

R = TypeVar("R")


def layout_for(options: RunOptions, request: ResolvedRequest, variant: Variant) -> Layout:
    """The process layout of a job (a ConfigError naming the valid counts when it has none);
    under torchrun, ``--parallel`` must be torchrun's process count."""
    env = RankEnv.from_environ()
    world = options.parallel
    if env is not None and env.world != world:
        raise ConfigError(
            f"--parallel {world}, but torchrun started {env.world} processes",
            remedy="Leave --parallel out under torchrun (its process count is used).",
            field="parallel",
        )
    layout = plan_layout(
        world, options.parallel_mode, cfg_used=request.use_cfg, heads=variant.dit.num_heads
    )
    if layout.seq > 1 and options.backend.value != "torch":
        raise ConfigError(
            f"sequence parallel runs the PyTorch backend only, not {options.backend.value}",
            remedy="Use --backend torch, or --parallel 2 --parallel-mode cfg.",
            field="parallel",
        )
    return layout


def checked_options(options: RunOptions, request: ResolvedRequest, variant: Variant) -> RunOptions:
    """``options`` with torchrun's process count when started by it (``--parallel`` left out),
    once the layout for the job is known to exist (else the ConfigError of :func:`layout_for`)."""
    env = RankEnv.from_environ()
    if env is not None and options.parallel == 1:
        options = replace(options, parallel=env.world)
    if options.parallel > 1:
        layout_for(options, request, variant)
    if env is not None and options.device != "cpu":
        _select_gpu(env.local_rank)  # before the plans read the free memory: this rank's GPU
    return options


def rank_layout(options: RunOptions, request: ResolvedRequest, variant: Variant) -> Layout | None:
    """The layout each rank's memory plan is for (None: one process)."""
    return None if options.parallel == 1 else layout_for(options, request, variant)


def leads() -> bool:
    """Whether this process speaks for the run (prints its output path and seed): always in a
    one-process run, and only on rank 0 under torchrun or in a launched worker."""
    env = RankEnv.from_environ()
    return env is None or env.rank == 0


def _select_gpu(local_rank: int) -> None:
    import torch

    if torch.cuda.is_available() and local_rank < torch.cuda.device_count():
        torch.cuda.set_device(local_rank)


@dataclass(frozen=True)
class Ranks:
    """This rank's part in a run: what ``run.execute`` needs to wrap its components."""

    group: Group
    cancel: CancelToken

    def wrap(self, components: Components) -> Components:
        return ranked.wrap(components, self.group, self.cancel)

    @property
    def rank(self) -> int:
        return self.group.rank

    def shard(self, components: Components, plan: Plan | None) -> bool:
        """Under rank 0's plan with FSDP shards (memory.DiTPlan.fsdp_shards): every DiT's blocks
        fully_shard'ed over the ranks, in place; every rank calls this once per attempt and
        follows rank 0's choice (a rank without plans, on the CPU, too). True when sharded: the
        components are then tied to this run's group and must not serve another run."""
        shards = self.group.share("fsdp", 1 if plan is None else plan.dit.fsdp_shards)
        if shards <= 1:
            return False
        from .fsdp import shard_blocks

        for denoiser in components.denoisers:
            model = getattr(denoiser, "model", None)  # through the wrappers (their .model)
            if model is None:
                raise ConfigError(
                    "FSDP sharding runs the PyTorch backend's DiT only",
                    remedy="Use --backend torch, or a larger --vram-budget per GPU.",
                )
            shard_blocks(model, device_type=self.group.device.type, guard=self._guard)
        return True

    def _guard(self) -> None:
        self.group.guard(self.cancel)

    def agree(self, plans: Sequence[Plan]) -> tuple[Plan, ...]:
        """The memory-plan ladder every rank runs (ladder.agree: the most constrained GPU's)."""
        from .ladder import agree

        return agree(self.group, plans)

    def run_plans(
        self,
        plans: Sequence[Plan],
        attempt: Callable[[Plan], R],
        *,
        warn: Callable[[str], None],
        free: Callable[[], None],
    ) -> tuple[R, Plan]:
        """``attempt`` down the ladder, every rank moving to the next plan together after a
        CUDA out-of-memory error on any of them (ladder.run_together)."""
        from .ladder import run_together

        return run_together(self.group, self.cancel, plans, attempt, warn=warn, free=free)


# the job body: (the prepared run of this rank, its Ranks, cancel, emit, review) -> the result
Body = Callable[[Any, Ranks, CancelToken, Callable[["Event"], None], "Review | None"], R]


def run_parallel(
    prepared: Any,  # run.PreparedRun (this package sits below the run owner)
    body: Body[R],
    *,
    cancel: CancelToken,
    emit: Callable[[Event], None],
    review: Review | None,
) -> R:
    """Run ``body`` on every rank of ``prepared``'s layout; this process's result (rank 0: the
    written output). Raises on every rank: Cancelled (rank 0 cancelled), RankFailed (another rank
    failed or died, with its message), or this rank's own error."""
    layout = layout_for(prepared.options, prepared.request, prepared.variant)
    env = RankEnv.from_environ()
    workers = None
    store = None
    if env is None:  # the caller's process: rank 0, launching the others
        from .launch import launch

        env, store, workers = launch(job_of(prepared), layout.world)
    failed = False
    try:
        group = join(
            env,
            layout,
            device=rank_device(prepared.device, env.local_rank),
            store=store,
            watch=None if workers is None else workers.watch,
        )
        try:
            has_review = group.share("review", review is not None)
            # rank 0's request on every rank: under torchrun each process parsed its own
            # command line, and one without --seed drew its own random seed
            request = group.share("request", prepared.request)
            if group.rank == 0:
                mine = prepared
                rank_review = None if review is None else _leading(review, group)
            else:
                mine = replace(prepared, request=request)  # its output: rank 0 writes it
                emit = _drop
                rank_review = _following(group) if has_review else None
            try:
                result = body(mine, Ranks(group, cancel), cancel, emit, rank_review)
                group.sync(cancel)  # every rank finished (rank 0's output is written)
            except Cancelled as e:
                group.tell_cancel(e.message)
                raise
            except RankFailed:
                raise
            except BaseException as e:
                group.tell_failure(_one_line(e))
                raise
            return result
        except BaseException as e:
            failed = isinstance(e, RankFailed)
            if workers is not None:  # a worker that hangs or computes on is not waited for long
                workers.finish(timeout_s=5.0)
            raise
        finally:
            if workers is not None:
                workers.done = True
            group.close(failed=failed)
    finally:
        if workers is not None:
            workers.finish()


def job_of(prepared: Any) -> dict[str, Any]:
    """What a launched worker needs to prepare the same job (rank_worker.py reads it)."""
    options = replace(prepared.options, preset=None)  # the request has the preset applied
    return {
        "request": prepared.request.to_dict(),
        "options": options.to_dict(),
        "out": str(prepared.out),
    }


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK), or the CPU."""
    import torch

    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise LaunchError(
            f"rank {local_rank} has no GPU: {torch.cuda.device_count()} CUDA device(s) visible",
            remedy="Give --parallel at most the number of GPUs.",
        )
    return torch.device("cuda", local_rank)


def _drop(event: Event) -> None:
    return None


def _leading(review: Review, group: Group) -> Review:
    def ask(latents: torch.Tensor) -> Verdict:
        verdict = review(latents)
        group.share("verdict", verdict)
        return verdict

    return ask


def _following(group: Group) -> Review:
    def wait(latents: torch.Tensor) -> Verdict:
        verdict: Verdict = group.share("verdict")
        return verdict

    return wait


def _one_line(e: BaseException) -> str:
    if isinstance(e, WanError):
        return e.one_line()
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
