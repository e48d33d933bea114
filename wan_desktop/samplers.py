"""Flow-matching samplers used by Wan: UniPC (the official default), DPM-Solver++ 2M and Euler.

Our own implementation of the solvers in Wan-Video/Wan2.1@9737cba ``wan/utils/fm_solvers_unipc.py``
(FlowUniPCMultistepScheduler) and ``wan/utils/fm_solvers.py`` (FlowDPMSolverMultistepScheduler);
shared/wan-spec.md §6.1–6.4. Flux-style: the generation loop owns the model and calls
``solver.step(i, v, x)``; a :class:`Solver` knows nothing of models and is made fresh for every run
(``make_sampler``) from the :class:`Sampler` a request names.

Flow convention: ``x_σ = (1 − σ)·x0 + σ·ε``, the model predicts ``v = dx/dσ ≈ ε − x0``, so the data
prediction is ``x0̂ = x − σ·v`` and the model timestep is ``t = int64(σ·1000)`` (truncated).

Numerics: σ is held as the float32 values the official schedulers store. Every per-step scalar
(σ ratios, ``expm1(−h)``, UniC's ρ) is computed once, when the sampler is made, with float32 CPU
arithmetic in the order the reference uses, and kept as Python floats, so ``step`` is a handful of
elementwise tensor ops on the tensors' device with no host sync. Tensor math runs in float32 and the
result is cast back to the sample's dtype.

Deliberate deviations from the official code:
* steps are addressed by index ``i``; the official first ``step`` looks its index up by timestep
  value and takes the *second* match when the first integer timestep is duplicated (N=100 at
  shift ≥ 12, spec §6.2). We follow diffusers' ``set_begin_index(0)`` behaviour instead.
* velocity and sample are upcast to float32 before ``x0̂ = x − σ·v`` (the official code forms x0̂ in
  the sample's dtype); identical for the float32 latents Wan uses.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import Tensor


class Sampler(enum.Enum):
    """Which update a run steps with; the value is the name users type and settings files hold."""

    UNIPC = "unipc"  # the official default
    DPMPP = "dpm++"
    EULER = "euler"
    RCM = "rcm"  # TurboDiffusion's few-step update

    @property
    def stochastic(self) -> bool:
        """Re-noises between steps, so it is no ODE solver (no exactness on a straight flow)."""
        return self is Sampler.RCM

    @classmethod
    def parse(cls, name: Sampler | str) -> Sampler:
        """The member for a name ("unipc", ...); a member is returned as it is."""
        if isinstance(name, Sampler):
            return name
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ConfigError(f"unknown sampler {name!r}; expected one of {known}") from None


SAMPLERS: tuple[Sampler, ...] = tuple(s for s in Sampler if not s.stochastic)  # ODE solvers

NUM_TRAIN_TIMESTEPS = 1000

# The official UniPC scheduler is built with shift=1 on the grid 1 − linspace(1, 1/1000, 1000)[::-1];
# set_timesteps spaces from sigma_max = that grid's first entry read back from a float32 tensor
# (0.99900001287…), not the literal 0.999. Kept exact so the truncated timesteps match bit for bit.
WAN_SIGMA_MAX = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))


def shift_sigmas(sigmas: np.ndarray | Sequence[float] | float, shift: float) -> np.ndarray:
    """σ' = shift·σ / (1 + (shift − 1)·σ), elementwise in float64 (the official formula and order)."""
    s = np.asarray(sigmas, dtype=np.float64)
    return shift * s / (1 + (shift - 1) * s)


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """The σ grid of one run.

    sigmas:    N+1 floats, strictly decreasing, ending in 0.0; each exactly a float32 value (the
               values the official schedulers keep and step with).
    timesteps: N model timesteps: for the samplers' grids Python ints, ``int64(σ'·1000)``
               truncated from the float64 shifted σ, exactly what the official code feeds the
               model; for an explicit grid (presets.explicit_schedule) σ·1000 unrounded.
    """

    sigmas: tuple[float, ...]
    timesteps: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.timesteps) < 1 or len(self.sigmas) != len(self.timesteps) + 1:
            raise ConfigError(
                f"schedule needs N ≥ 1 timesteps and N+1 sigmas, got {len(self.timesteps)} "
                f"timesteps and {len(self.sigmas)} sigmas"
            )
        if self.sigmas[-1] != 0.0:
            raise ConfigError(f"schedule must end at σ = 0, got {self.sigmas[-1]}")
        if any(not a > b for a, b in itertools.pairwise(self.sigmas)) or self.sigmas[0] > 1.0:
            raise ConfigError(
                f"schedule sigmas must decrease strictly from ≤ 1 to 0, got {self.sigmas}"
            )

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def make_schedule(sampler: Sampler | str, steps: int, shift: float) -> Schedule:
    """The official grid for ``sampler`` (spec §6.2).

    unipc, euler: ``linspace(WAN_SIGMA_MAX, 0, N+1)[:-1]`` shifted, then a final 0
                  (FlowUniPCMultistepScheduler.set_timesteps(N, shift=shift)).
    dpm++:        ``linspace(1, 0, N+1)[:N]`` shifted, then a final 0 (``get_sampling_sigmas``); its
                  first σ is exactly 1 (t = 1000).
    """
    sampler = Sampler.parse(sampler)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be an integer ≥ 1, got {steps!r}")
    if (
        isinstance(shift, bool)
        or not isinstance(shift, (int, float, np.floating))
        or not math.isfinite(shift)
        or shift <= 0
    ):
        raise ConfigError(f"shift must be a finite number > 0, got {shift!r}")
    n = int(steps)
    if sampler is Sampler.DPMPP:
        base = np.linspace(1.0, 0.0, n + 1)[:n]
    else:
        base = np.linspace(WAN_SIGMA_MAX, 0.0, n + 1)[:-1]
    shifted = shift_sigmas(base, float(shift))
    timesteps = (shifted * NUM_TRAIN_TIMESTEPS).astype(np.int64)
    sigmas = np.concatenate([shifted, [0.0]]).astype(np.float32)
    return Schedule(
        sigmas=tuple(float(s) for s in sigmas), timesteps=tuple(int(t) for t in timesteps)
    )


def cfg(v_uncond: Tensor, v_cond: Tensor, g: float) -> Tensor:
    """Classifier-free guidance on velocities: v_u + g·(v_c − v_u) (spec §6.5)."""
    return v_uncond + g * (v_cond - v_uncond)


def make_sampler(sampler: Sampler | str, schedule: Schedule, *, seed: int = 0) -> Solver:
    """A fresh solver for one run over ``schedule`` (it keeps the run's history); ``seed`` is the
    run's seed (only the stochastic rcm sampler draws noise)."""
    sampler = Sampler.parse(sampler)
    if sampler is Sampler.RCM:
        return RcmSampler(schedule, seed=seed)
    cls = {Sampler.UNIPC: UniPCSampler, Sampler.DPMPP: DPMPPSampler, Sampler.EULER: EulerSampler}[
        sampler
    ]
    return cls(schedule)


# --------------------------------------------------------------------------------------------------
# float32 scalar helpers, evaluated once per run on the CPU


def _f32(x: float) -> torch.Tensor:
    import torch

    return torch.tensor(x, dtype=torch.float32)


def _lam(sigma: torch.Tensor) -> torch.Tensor:
    """λ = log α − log σ, α = 1 − σ (half log-SNR); −inf at σ = 1 and +inf at σ = 0 by IEEE rules."""
    import torch

    return torch.log(1 - sigma) - torch.log(sigma)


class Solver:
    """One run of a :class:`Sampler`. Call ``step(i, …)`` for i = 0 … N−1 in order, each exactly
    once."""

    name: str = ""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._sig = schedule.sigmas
        self._next = 0

    def x0(self, i: int, velocity: Tensor, sample: Tensor) -> Tensor:
        """Current data prediction x − σ_i·v (for live previews), in the sample's dtype."""
        return (sample.float() - self._sig[i] * velocity.float()).to(sample.dtype)

    def step(self, i: int, velocity: Tensor, sample: Tensor) -> Tensor:
        """Advance ``sample`` (at σ_i) to σ_{i+1} given the model's velocity at (sample, t_i)."""
        if i != self._next:
            # a programming error (loop out of order / sampler reused), not something a user can do
            raise ValueError(f"{self.name} sampler expected step {self._next}, got step {i}")
        self._next += 1
        return self._step(i, velocity.float(), sample.float()).to(sample.dtype)

    def _step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_finite(self, *values: float) -> None:
        if not all(math.isfinite(c) for c in values):
            raise ConfigError(
                f"the {self.name} sampler cannot step on σ grid {self.schedule.sigmas}"
            )


class EulerSampler(Solver):
    """x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_i. Stateless; first order."""

    name = "euler"

    def __init__(self, schedule: Schedule) -> None:
        super().__init__(schedule)
        s = [_f32(v) for v in schedule.sigmas]
        self._dt = [float(s[k + 1] - s[k]) for k in range(schedule.steps)]

    def _step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        return x + self._dt[i] * v


class RcmSampler(Solver):
    """rCM's stochastic few-step update, TurboDiffusion's default (its deterministic form is euler):
    x0 = x − σ_i·v, then x ← (1 − σ_{i+1})·x0 + σ_{i+1}·ε with fresh noise ε
    (thu-ml/TurboDiffusion@aaecff5 turbodiffusion/inference/wan2.1_t2v_infer.py, sampling loop).
    As there, one generator gives the initial noise and then every ε: a CPU generator of the run's
    seed, which first skips the draw ``pipeline.initial_noise`` made, so a seed is one video."""

    name = "rcm"

    def __init__(self, schedule: Schedule, *, seed: int = 0) -> None:
        super().__init__(schedule)
        self._seed = seed
        self._gen: torch.Generator | None = None

    def _step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        import torch

        if self._gen is None:
            self._gen = torch.Generator(device="cpu").manual_seed(self._seed)
            torch.randn(tuple(x.shape), generator=self._gen, dtype=torch.float32)  # initial noise
        eps = torch.randn(tuple(x.shape), generator=self._gen, dtype=torch.float32).to(x.device)
        s, s_next = self._sig[i], self._sig[i + 1]
        return (x - s * v) * (1.0 - s_next) + eps * s_next


@dataclass(frozen=True)
class _Update:
    """Scalars of one exponential-integrator update x_t = cx·x − cm·m0 − cm·(Σ ρ_j·D_j) (bh2: B(h)
    = expm1(−h), so the D terms share cm). ``r``: λ-ratio of the older output (order 2 only)."""

    order: int
    cx: float
    cm: float
    r: float = 0.0
    rho: tuple[float, ...] = ()


class UniPCSampler(Solver):
    """FlowUniPC, bh2, solver_order 2, predict_x0, lower_order_final, UniC corrector on every step
    after the first (disable_corrector=[]), final σ = 0 (spec §6.3).

    Per step i: m_i = x − σ_i·v. If i > 0 the corrector rebuilds x_i from the stored previous
    (corrected) sample x_{i−1} and m_{i−1}, m_i (and m_{i−2} at order 2); so edits a caller makes to
    ``sample`` between steps reach UniPC only through m_i, as in the official code. Then the
    predictor goes from the corrected x_i to σ_{i+1}, order min(2, N − i) (order 1 at i = 0); the
    last step lands on m_{N−1} exactly.
    """

    name = "unipc"

    def __init__(self, schedule: Schedule) -> None:
        import torch

        super().__init__(schedule)
        n = schedule.steps
        s = [_f32(v) for v in schedule.sigmas]
        lam = [_lam(v) for v in s]
        # warm-up (order 1 first) and lower_order_final (order 1 last)
        self._orders = [1 if k == 0 else min(2, n - k) for k in range(n)]
        self._pred: list[_Update] = []
        self._corr: list[_Update | None] = [None]
        for k in range(n):
            # predictor k: σ_k → σ_{k+1}
            h = lam[k + 1] - lam[k]
            hphi1 = torch.expm1(-h)
            order = self._orders[k]
            r = float((lam[k - 1] - lam[k]) / h) if order == 2 else 0.0
            self._pred.append(
                _Update(
                    order=order, cx=float(s[k + 1] / s[k]), cm=float((1 - s[k + 1]) * hphi1), r=r
                )
            )
        for k in range(1, n):
            # corrector k: redo σ_{k−1} → σ_k with m_k known, at the previous predictor's order
            order = self._orders[k - 1]
            h = lam[k] - lam[k - 1]
            hh = -h
            hphi1 = torch.expm1(hh)
            if order == 1:
                rho: tuple[float, ...] = (0.5,)
                r = 0.0
            else:
                # UniC-2: solve R·ρ = b, R = [[1, 1], [r, 1]], b_i = φ_i·i!/B(h) (spec §6.3)
                r_t = (lam[k - 2] - lam[k - 1]) / h
                phi = hphi1 / hh - 1
                b1 = phi / hphi1
                phi = phi / hh - 0.5
                b2 = phi * 2 / hphi1
                one = torch.ones((), dtype=torch.float32)
                mat = torch.stack([torch.stack([one, one]), torch.stack([r_t, one])])
                sol = torch.linalg.solve(mat, torch.stack([b1, b2]))
                rho = (float(sol[0]), float(sol[1]))
                r = float(r_t)
            self._corr.append(
                _Update(
                    order=order,
                    cx=float(s[k] / s[k - 1]),
                    cm=float((1 - s[k]) * hphi1),
                    r=r,
                    rho=rho,
                )
            )
        for u in self._pred[:-1] + [c for c in self._corr if c is not None]:
            self._check_finite(u.cx, u.cm, u.r if u.order == 2 else 0.0, *u.rho)
        self._m1: Tensor | None = None  # m_{i−1}
        self._m2: Tensor | None = None  # m_{i−2}
        self._x_prev: Tensor | None = None  # corrected x_{i−1}

    def _step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        m = x - self._sig[i] * v
        if i > 0:
            c = self._corr[i]
            assert c is not None and self._m1 is not None and self._x_prev is not None
            d = m - self._m1
            if c.order == 2:
                assert self._m2 is not None
                d = c.rho[0] * ((self._m2 - self._m1) / c.r) + c.rho[1] * d
            else:
                d = c.rho[0] * d
            x = c.cx * self._x_prev - c.cm * self._m1 - c.cm * d
        p = self._pred[i]
        self._m2, self._m1, self._x_prev = self._m1, m, x
        if i == self.schedule.steps - 1:
            self._m2 = self._m1 = self._x_prev = None  # release the history
            return m  # σ_N = 0: cx = 0, cm = −1
        out = p.cx * x - p.cm * m
        if p.order == 2:
            assert self._m2 is not None
            out = out - p.cm * (0.5 * ((self._m2 - m) / p.r))
        return out


class DPMPPSampler(Solver):
    """DPM-Solver++ 2M (midpoint), data prediction, first order on the first and the last step
    (lower_order_final with final σ = 0), second order in between (spec §6.4). At σ_0 = 1 (the dpm++
    grid) λ_0 = −inf, so step 1's second-order term vanishes exactly as in the official code."""

    name = "dpm++"

    def __init__(self, schedule: Schedule) -> None:
        import torch

        super().__init__(schedule)
        n = schedule.steps
        s = [_f32(v) for v in schedule.sigmas]
        lam = [_lam(v) for v in s]
        self._upd: list[_Update] = []
        for k in range(n):
            h = lam[k + 1] - lam[k]
            cx = float(s[k + 1] / s[k])
            cm = (1 - s[k + 1]) * (torch.exp(-h) - 1.0)
            if 0 < k < n - 1:
                r0 = (lam[k] - lam[k - 1]) / h
                # D1 = (1/r0)·(m_k − m_{k−1}), weighted ½·cm (midpoint); 1/r0 = 0 when σ_{k−1} = 1
                self._upd.append(_Update(order=2, cx=cx, cm=float(cm), r=float(1.0 / r0)))
            else:
                self._upd.append(_Update(order=1, cx=cx, cm=float(cm)))
        for u in self._upd[:-1]:
            self._check_finite(u.cx, u.cm, u.r)
        self._m1: Tensor | None = None

    def _step(self, i: int, v: Tensor, x: Tensor) -> Tensor:
        m = x - self._sig[i] * v
        u = self._upd[i]
        prev, self._m1 = self._m1, m
        if i == self.schedule.steps - 1:
            self._m1 = None
            return m  # σ_N = 0: cx = 0, cm = −1
        out = u.cx * x - u.cm * m
        if u.order == 2 and u.r != 0.0:
            assert prev is not None
            out = out - (0.5 * u.cm) * (u.r * (m - prev))
        return out
