"""Sampling presets as data: "Fast (4 steps)" for step- and CFG-distilled Wan models / LoRAs, the
TurboDiffusion rCM recipe, and "Quality (full)" (the variant's own defaults). The CLI's ``--preset``
and the GUI's preset menu read :data:`PRESETS`; a preset only fills request fields the user left
unset, so ``--preset fast --steps 6`` is six steps on the distilled grid.

Recipes and their sources:
* **fast** — lightx2v 4-step distills (Wan2.1 T2V/I2V-14B, Wan2.2 A14B high/low; the distilled
  checkpoints and the "Lightning"/lightx2v LoRAs): ``denoising_step_list = [1000, 750, 500, 250]``,
  ``sample_shift = 5``, ``enable_cfg = false`` (guidance 1: no uncond pass), Wan2.2
  ``boundary_step_index = 2``. The σ of step k is entry ``1000 − t_k`` of
  ``shift(linspace(1, 0, 1001)[:-1])`` and the model is fed ``σ·1000`` unrounded; each step is
  ``x ← (x − σ·v) + σ_next·v`` (Euler on the flow). ModelTC/LightX2V@f8aee98
  ``lightx2v/models/schedulers/wan/step_distill/scheduler.py`` (WanStepDistillScheduler,
  Wan22StepDistillScheduler), ``configs/distill/wan21/wan_t2v_distill_model_4step_cfg.json``,
  ``configs/distill/wan22/wan_moe_i2v_distill_model.json``. With shift 5 the timesteps are
  1000, 937.5, 833.3, 625.
* **turbo** — TurboDiffusion rCM 1–4-step checkpoints: TrigFlow times ``[atan(σ_max), 1.5, 1.4,
  1.0][:steps]`` then 0, mapped to flow σ = sin t / (sin t + cos t); σ_max 80 (Wan2.1) / 200
  (Wan2.2); the start latent is ``σ_0 · noise``; guidance 1. thu-ml/TurboDiffusion@aaecff5
  ``turbodiffusion/inference/wan2.1_t2v_infer.py`` l.111–140. Sampler ``rcm``, their default: each
  step predicts x0 = x − σ·v and re-noises it to σ_next with fresh seeded noise (samplers.RcmSampler);
  ``--sampler euler`` is their deterministic ``--ode`` update (``x ← x − (σ − σ_next)·v``,
  wan2.2_i2v_infer.py). Their checkpoints use sparse-linear attention (models/sla.py).
* **quality** — nothing overridden: the variant's steps, guidance, shift and UniPC.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .request import GenerationRequest
    from .samplers import Schedule
    from .variants import Variant

LIGHTX2V_STEPS = (1000, 750, 500, 250)
LIGHTX2V_SHIFT = 5.0
LIGHTX2V_BOUNDARY_STEP = 2
RCM_MID_T = (1.5, 1.4, 1.0)


def lightx2v_sigmas(step_list: tuple[int, ...], shift: float) -> tuple[float, ...]:
    """σ of each step of a lightx2v ``denoising_step_list`` (float32 arithmetic as theirs)."""
    import torch

    if (
        not step_list
        or any(not (0 < t <= 1000) for t in step_list)
        or any(a <= b for a, b in itertools.pairwise(step_list))
    ):
        raise ConfigError(
            f"distilled step list must decrease within 1..1000, got {list(step_list)}"
        )
    base = torch.linspace(1.0, 0.0, 1001)[:-1]
    shifted = shift * base / (1 + (shift - 1) * base)
    return tuple(float(shifted[1000 - t]) for t in step_list)


def rcm_sigmas(steps: int, sigma_max: float) -> tuple[float, ...]:
    """TurboDiffusion's rCM σ grid for 1–4 steps (without the final 0), float64 as theirs."""
    if not 1 <= steps <= 1 + len(RCM_MID_T):
        raise ConfigError(f"the rCM recipe runs 1 to 4 steps, got {steps}")
    ts = [math.atan(sigma_max), *RCM_MID_T[: steps - 1]]
    return tuple(math.sin(t) / (math.cos(t) + math.sin(t)) for t in ts)


def explicit_schedule(sigmas: tuple[float, ...]) -> Schedule:
    """A Schedule over explicit σ values (final 0 appended); timesteps σ·1000 unrounded, as the
    distilled recipes feed their models."""
    import numpy as np

    from .samplers import Schedule

    s32 = [float(np.float32(s)) for s in sigmas]
    return Schedule(sigmas=(*s32, 0.0), timesteps=tuple(s * 1000.0 for s in s32))


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Request fields a preset sets (None: keep the user's value or the variant's default)."""

    name: str
    label: str  # shown in the GUI
    description: str
    steps: int | None = None
    guidance: float | None = None
    guidance_low: float | None = None
    shift: float | None = None
    sampler: str | None = None
    recipe: str | None = None  # "lightx2v" | "rcm": how the σ grid is built

    def apply(self, request: GenerationRequest, variant: Variant) -> GenerationRequest:
        """Fill the fields the user left unset; build the explicit σ grid of a distilled recipe."""
        unset = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in ("steps", "guidance", "guidance_low", "shift", "sampler")
            and getattr(self, f.name) is not None
            and getattr(request, f.name) is None
        }
        r = replace(request, **unset)
        if self.recipe is None or request.sigmas is not None:
            return r
        if self.recipe == "lightx2v":
            steps = r.steps or len(LIGHTX2V_STEPS)
            # other step counts: the same evenly spaced list lightx2v uses (1000·(1 − k/N))
            step_list = (
                LIGHTX2V_STEPS
                if steps == 4
                else tuple(round(1000 * (1 - k / steps)) for k in range(steps))
            )
            sigmas = lightx2v_sigmas(step_list, r.shift or LIGHTX2V_SHIFT)
            boundary = (LIGHTX2V_BOUNDARY_STEP * steps // 4) if variant.experts == 2 else None
        elif self.recipe == "rcm":
            sigmas = rcm_sigmas(r.steps or 4, 200.0 if variant.family == "wan2.2" else 80.0)
            boundary = None  # the timestep boundary of the variant (TurboDiffusion's rule)
        else:  # pragma: no cover - data error
            raise ConfigError(f"unknown recipe {self.recipe!r}")
        return replace(
            r,
            steps=len(sigmas),
            sigmas=sigmas,
            boundary_step=r.boundary_step if r.boundary_step is not None else boundary,
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="fast",
            label="Fast (4 steps)",
            description="4 steps, no CFG: for lightx2v / Lightning distilled models and LoRAs",
            steps=4,
            guidance=1.0,
            guidance_low=1.0,
            shift=LIGHTX2V_SHIFT,
            sampler="euler",
            recipe="lightx2v",
        ),
        Preset(
            name="turbo",
            label="Turbo (rCM, 4 steps)",
            description="TurboDiffusion rCM checkpoints: 1-4 steps, no CFG",
            steps=4,
            guidance=1.0,
            guidance_low=1.0,
            shift=1.0,
            sampler="rcm",
            recipe="rcm",
        ),
        Preset(
            name="quality",
            label="Quality (full)",
            description="the model's own steps, guidance and sampler",
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}"
        ) from None


# words in a model's file or folder name that say it is a few-step distill
_DISTILLED = (
    "distill",
    "lightx2v",
    "lightning",
    "4step",
    "4-step",
    "turbo",
    "rcm",
    "causvid",
    "fastwan",
)


def few_step_warning(preset: str | None, model: str, *, has_loras: bool) -> str | None:
    """Why a few-step preset will likely give a blurry video: a base model (by its name) and no
    LoRA, which is how 4-step distills usually come. None when there is nothing to say."""
    if preset not in ("fast", "turbo") or has_loras:
        return None
    if any(m in model.lower() for m in _DISTILLED):
        return None
    return (
        f"the {preset} preset expects a step-distilled model or a 4-step LoRA; a base model "
        "gives a blurry video in 4 steps"
    )
