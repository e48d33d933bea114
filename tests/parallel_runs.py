"""Running one job through the run owner on 1 or N processes (CPU, gloo) for tests/parallel:
rank 0 is the test's own process, the others are the launcher's worker processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import TinyModel
from wan_desktop import pipeline, run
from wan_desktop.cancel import CancelToken
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest


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
