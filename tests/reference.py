"""Reference samplers for parity tests: diffusers' schedulers driven on Wan's *official* σ grids.

Independent of ``wan_desktop``: the grids are recomputed here the way the official schedulers do it
(Wan-Video/Wan2.1@9737cba ``wan/utils/fm_solvers_unipc.py`` / ``fm_solvers.py``), so a test that
compares ``wan_desktop.samplers`` with these checks our grid as well as our solver math.

What diffusers 0.42 does with ``UniPCMultistepScheduler.set_timesteps(sigmas=…)`` (use_flow_sigmas):
* it applies ``flow_shift`` to the σ given (same float64 formula as Wan), so pass the *unshifted*
  base grid and ``flow_shift=shift``;
* it appends the final σ = 0 itself (``final_sigmas_type="zero"``): pass N values, not N+1;
* timesteps come out as ``int64(σ'·1000)``, truncated, exactly as the official code;
* it would subtract 1e-6 from a first σ within 1e-6 of 1 (never on Wan's UniPC grid: σ'_0 < 1).
Given the base grid ``linspace(σ_max, 0, N+1)[:-1]``, diffusers' UniPC equals the official
FlowUniPCMultistepScheduler (spec, top note).

``DPMSolverMultistepScheduler.set_timesteps`` takes no ``sigmas``; ``diffusers_dpmpp_on_wan_grid``
therefore sets its ``sigmas`` / ``timesteps`` after ``set_timesteps`` to what the official
FlowDPMSolverMultistepScheduler.set_timesteps(sigmas=get_sampling_sigmas(N, shift)) stores.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

NUM_TRAIN_TIMESTEPS = 1000


def wan_sigma_max() -> float:
    """The official UniPC scheduler's sigma_max: first entry of its shift-1 training grid, a float32."""
    alphas = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS)[::-1].copy()
    return torch.from_numpy(1.0 - alphas).to(torch.float32)[0].item()


def wan_base_sigmas(steps: int) -> np.ndarray:
    """Unshifted official UniPC grid, N float64 values: linspace(σ_max, 0, N+1)[:-1]."""
    return np.linspace(wan_sigma_max(), 0.0, steps + 1)[:-1]


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def wan_sigmas(steps: int, shift: float) -> np.ndarray:
    """Shifted official UniPC grid, N float64 values (the final 0 is not included)."""
    return _shift(wan_base_sigmas(steps), shift)


def wan_dpm_sigmas(steps: int, shift: float) -> np.ndarray:
    """Official DPM++ grid (``get_sampling_sigmas``): linspace(1, 0, N+1)[:N] shifted, N float64."""
    return _shift(np.linspace(1, 0, steps + 1)[:steps], shift)


class WanGridUniPCScheduler(UniPCMultistepScheduler):
    """diffusers' UniPC that always steps on Wan's official grid.

    ``WanPipeline.__call__`` calls ``scheduler.set_timesteps(num_inference_steps, device=device)``
    with no sigmas, which on a plain UniPCMultistepScheduler(use_flow_sigmas=True) would replace the
    grid by diffusers' own ``linspace(1, 1/1000, N+1)[:-1]`` (timesteps 999, 900, 750, 500 instead of
    Wan's 999, 899, 749, 499 at N=4, shift 3). This subclass answers such a call with Wan's base grid
    for that N (shifted by the configured ``flow_shift``), so passing ``scheduler=`` to WanPipeline
    reproduces the official sampling. Explicit ``sigmas=`` are passed through unchanged.
    """

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | np.ndarray | None = None,
        mu: float | None = None,
    ) -> None:
        if sigmas is None:
            if num_inference_steps is None:
                raise ValueError("pass num_inference_steps or sigmas")
            sigmas = wan_base_sigmas(num_inference_steps)
        super().set_timesteps(device=device, sigmas=sigmas, mu=mu)


def diffusers_unipc(shift: float) -> WanGridUniPCScheduler:
    """UniPC configured as the official FlowUniPC (the Wan conversion script's config): flow
    prediction, flow sigmas, bh2, order 2, predict_x0, lower_order_final, corrector on every step,
    final σ = 0."""
    return WanGridUniPCScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        disable_corrector=[],
        final_sigmas_type="zero",
    )


def on_wan_grid(pipe, shift: float):
    """``pipe`` (a diffusers Wan pipeline: WanPipeline, WanVACEPipeline, WanVideoToVideoPipeline ...)
    set to sample as the official code does, UniPC on Wan's σ grid (``diffusers_unipc(shift)``),
    with its progress bar off. Returns the pipeline."""
    pipe.scheduler = diffusers_unipc(shift)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_unipc_on_wan_grid(steps: int, shift: float) -> WanGridUniPCScheduler:
    """A diffusers UniPC scheduler already ``set_timesteps`` on Wan's official grid (N steps, shift)."""
    sched = diffusers_unipc(shift)
    sched.set_timesteps(sigmas=wan_base_sigmas(steps))
    sched.set_begin_index(0)  # step by index, as WanPipeline does
    return sched


def diffusers_dpmpp_on_wan_grid(steps: int, shift: float) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++ configured as the official FlowDPMSolver (flow prediction, 2M
    midpoint, lower_order_final, final σ = 0) with the official DPM++ grid written into its state."""
    sched = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=1.0,
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        solver_order=2,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    sig = wan_dpm_sigmas(steps, shift)
    sched.sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))
    sched.timesteps = torch.from_numpy(sig * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    sched.set_begin_index(0)
    return sched
