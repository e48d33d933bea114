"""Running one job through the run owner on 1 or N processes (CPU, gloo) for tests/parallel:
rank 0 is the test's own process, the others are the launcher's worker processes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import TinyModel
from wan_desktop import memory as M
from wan_desktop import pipeline, run
from wan_desktop.cancel import CancelToken
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest
from wan_desktop.variants import get_variant


@dataclass
class Outcome:
    frames: np.ndarray  # uint8 [F, H, W, 3] (PNG frames: lossless)
    latents: torch.Tensor | None  # the denoised latents, fp32, as the review hook saw them on
    # rank 0 (None: ``review=False``, as for a long video, which takes no review)
    events: list[pipeline.Event] = field(default_factory=list)


def generate(
    model: TinyModel,
    out: Path,
    *,
    parallel: int = 1,
    mode: str = "auto",
    cancel: CancelToken | None = None,
    emit=None,
    review: bool = True,
    **request,
) -> Outcome:
    base = dict(prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=4, guidance=5.0)
    factory = EngineFactory()
    prepared = run.prepare(
        GenerationRequest(**{**base, **request}),
        RunOptions(
            model=str(model.official),
            device="cpu",
            dtype="float32",
            parallel=parallel,
            parallel_mode=mode,
        ),
        out=out,
        factory=factory,
    )
    seen: list[torch.Tensor] = []
    events: list[pipeline.Event] = []

    def ask(latents: torch.Tensor) -> pipeline.Verdict:
        seen.append(latents)
        return pipeline.Verdict.DECODE

    def record(event: pipeline.Event) -> None:
        events.append(event)
        if emit is not None:
            emit(event)

    run.execute(
        prepared,
        components=run.ComponentCache(factory),
        cancel=cancel,
        emit=record,
        review=ask if review else None,
    )
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])
    return Outcome(frames=frames, latents=seen[0] if seen else None, events=events)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


# ----------------------------------------------------------------------------- the plan ladder


def named_plan(name: str, *, peak_gib: float | None = None, **dit) -> M.Plan:
    """A real plan of the full-size 1.3B at 24 GiB (the text encoder on the CPU), named, its DiT
    fields replaced by ``dit``; ``peak_gib``: its predicted peak (which ladder.agree compares)."""
    v = get_variant("t2v-1.3B")
    p = M.plan_for(M.workload_for(v, 64, 32, 5), 24)
    p = replace(
        p, name=name, text=replace(p.text, where="cpu", cache=False), dit=replace(p.dit, **dit)
    )
    if peak_gib is not None:
        p = replace(p, predicted=replace(p.predicted, peak_gib=peak_gib))
    return p


class OomDenoiser:
    """A real denoiser behind torch's CUDA out-of-memory error (which this machine cannot
    produce): raised from the ``oom_from``-th call of an attempt on, while the memory plan keeps
    every block resident (``set_swap_blocks(0)``, as plans without streaming do)."""

    def __init__(self, inner, oom_from: int) -> None:
        self.inner, self.oom_from = inner, oom_from
        self.swap = 0
        self.calls = 0  # in this attempt
        self.ooms = 0

    def load(self, device) -> None:
        self.inner.load(device)

    def unload(self) -> None:
        self.inner.unload()

    def begin(self, timesteps) -> None:
        self.inner.begin(timesteps)

    def set_swap_blocks(self, n: int, *, pin: bool = True) -> None:
        self.swap, self.calls = n, 0  # a new attempt
        self.inner.set_swap_blocks(n, pin=pin)

    def __call__(self, latents, timestep, context, **kw):
        self.calls += 1
        if self.swap == 0 and self.calls >= self.oom_from:
            self.ooms += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.inner(latents, timestep, context, **kw)


class OomFactory(EngineFactory):
    """The real factory; with ``oom_from``, its denoisers are :class:`OomDenoiser` doubles."""

    def __init__(self, oom_from: int | None, cache: Path) -> None:
        super().__init__(prompt_cache_dir=cache)
        self.oom_from = oom_from
        self.doubles: list[OomDenoiser] = []
        self.leads: list[bool] = []  # the ``lead`` of every build (rank > 0: False)

    def build(self, options, variant, files, *, plan, size, warn, lead=True):
        self.leads.append(lead)
        comps = super().build(options, variant, files, plan=plan, size=size, warn=warn, lead=lead)
        if self.oom_from is not None:
            self.doubles = [OomDenoiser(d, self.oom_from) for d in comps.denoisers]
            comps.denoisers = tuple(self.doubles)
        return comps


def ladder_rank(
    rank: int,
    world: int,
    model: str,
    out: str,
    ladders: dict[int, list[M.Plan]],
    oom: dict[int, int],
    mode: str = "cfg",
) -> dict:
    """One rank of a parallel run started as torchrun starts it (tests/spawn_gloo.run_ranks):
    the 1.3B tiny model at ``model``, its memory-plan ladder ``ladders[rank]`` (none: the CPU's,
    empty), out of GPU memory from call ``oom[rank]`` on under resident plans. Returns what
    it saw: the plan that ran, rank 0's warnings, the error, its builds' ``lead`` flags."""
    from wan_desktop.errors import WanError

    factory = OomFactory(oom.get(rank), Path(out).parent / f"cache-{rank}")
    prepared = run.prepare(
        GenerationRequest(
            prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=4, guidance=5.0
        ),
        RunOptions(model=model, device="cpu", dtype="float32", parallel=world, parallel_mode=mode),
        out=out,
        factory=factory,
    )
    prepared = replace(prepared, plans=tuple(ladders.get(rank, ())))
    warnings: list[str] = []
    seen: dict = {"plan": None, "error": None, "error_type": None}
    try:
        result = run.execute(prepared, components=run.ComponentCache(factory), warn=warnings.append)
        seen["plan"] = None if result.plan is None else result.plan.name
    except WanError as e:
        seen["error"], seen["error_type"] = e.message, type(e).__name__
    seen["warnings"] = warnings
    seen["leads"] = factory.leads
    seen["ooms"] = sum(d.ooms for d in factory.doubles)
    return seen
