"""Step caching (an opt-in speed mode): skip the DiT's block stack on steps whose input barely changed.

Method (TeaCache, Liu et al. 2024, arXiv:2411.19108; its Wan2.1 port in ali-vilab/TeaCache@7c10efc):
the output of the block stack changes between neighbouring steps about as much as its input does. On
each call we measure the relative L1 change of a cheap *signal* against the previous call's,

    d = mean|s_t − s_prev| / mean|s_prev|,

add it to an accumulator, and while the accumulator stays below ``threshold`` we reuse the previous
*residual* (block-stack output − input) instead of running the blocks: h = x + r_prev. Once it
reaches the threshold the blocks run, the residual is stored and the accumulator restarts at 0.
Signals: ``"modulated"`` — block 0's modulated input LN(x)·(1+scale)+shift (TeaCache's general
recipe, depends on the latents); ``"e"`` / ``"e0"`` — the time embedding or its 6-way projection
(TeaCache's Wan recipe: depends on the timestep only, so the skip pattern is known from the
schedule). TeaCache rescales d by a polynomial fitted per released model (``coefficients``, highest
power first; published ones in ``TEACACHE_WAN21``): such fits are only valid for those weights.

State is kept per call *slot*: calls with the same timestep are one step, and the k-th call of a step
(cond, then uncond when CFG runs as two calls) is slot k; a batched cond+uncond call keeps one
accumulator per batch row and skips only when every row may. Each Wan2.2 expert has its own
denoiser, hence its own cache. The first ``warmup_steps`` and the last ``final_steps`` steps of a
generation always run (the last only when the schedule is known: ``begin(timesteps)``).

Cost: one host read of a few floats per call (the skip decision). Quality cost: measured by the
tests (PSNR vs uncached on a tiny model) and by ``wan-desktop bench --step-cache``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from wan_desktop.errors import ConfigError

if TYPE_CHECKING:
    from wan_desktop.models.dit import DiTState, WanModel

log = logging.getLogger(__name__)

SIGNALS = ("modulated", "e", "e0")

# TeaCache's rescaling polynomials for the released Wan2.1 T2V weights (teacache_generate.py at
# ali-vilab/TeaCache@7c10efc; "e" with 1 warm-up step, "e0" with 5 in their recipe).
TEACACHE_WAN21: dict[tuple[str, str], tuple[float, ...]] = {
    ("t2v-1.3B", "e"): (
        2.39676752e03,
        -1.31110545e03,
        2.01331979e02,
        -8.29855975e00,
        1.37887774e-01,
    ),
    ("t2v-1.3B", "e0"): (
        -5.21862437e04,
        9.23041404e03,
        -5.28275948e02,
        1.36987616e01,
        -4.99875664e-02,
    ),
    ("t2v-14B", "e"): (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    ("t2v-14B", "e0"): (
        -3.03318725e05,
        4.90537029e04,
        -2.65530556e03,
        5.87365115e01,
        -3.15583525e-01,
    ),
}


@dataclass(frozen=True, kw_only=True)
class StepCacheConfig:
    threshold: float  # accumulated relative L1 change below which a step reuses the residual
    signal: str = "modulated"
    warmup_steps: int = 1
    final_steps: int = 1
    coefficients: tuple[float, ...] = ()  # rescaling polynomial of d (highest power first); () = d

    def __post_init__(self) -> None:
        if not (self.threshold >= 0):
            raise ConfigError(f"step-cache threshold must be >= 0, got {self.threshold}")
        if self.signal not in SIGNALS:
            raise ConfigError(
                f"step-cache signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}"
            )
        if self.warmup_steps < 1 or self.final_steps < 0:
            raise ConfigError("step cache: warmup_steps must be >= 1 and final_steps >= 0")


@dataclass
class StepCacheStats:
    calls: int = 0
    computed: int = 0
    skipped: int = 0
    skipped_steps: list[int] = field(default_factory=list)  # step indices with a skipped call

    def as_dict(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "computed": self.computed,
            "skipped": self.skipped,
            "skipped_steps": sorted(set(self.skipped_steps)),
        }


@dataclass
class _Slot:
    prev: Tensor | None = None  # previous signal
    acc: list[float] = field(default_factory=list)  # accumulated distance per batch row
    residual: Tensor | None = None  # block-stack output − input of the last computed call


def _rescale(d: float, coefficients: tuple[float, ...]) -> float:
    if not coefficients:
        return d
    out = 0.0
    for c in coefficients:  # Horner
        out = out * d + c
    return out


class StepCache:
    """TeaCache-style residual reuse around a DiT's block stack (see the module docstring)."""

    def __init__(self, config: StepCacheConfig) -> None:
        self.config = config
        self.stats = StepCacheStats()
        self._timesteps: list[float] | None = None
        self._slots: dict[int, _Slot] = {}
        self._last_t: float | None = None
        self._step = -1
        self._call_in_step = 0

    def begin(self, timesteps: Sequence[float] | None = None) -> None:
        """Start a generation: forget all state. ``timesteps`` (the schedule) lets the cache know the
        step index of every call, so the final steps always run (Wan2.2 experts share one schedule)."""
        self._timesteps = [float(t) for t in timesteps] if timesteps is not None else None
        self._slots.clear()
        self._last_t = None
        self._step = -1
        self._call_in_step = 0
        self.stats = StepCacheStats()

    def _locate(self, t_value: float) -> tuple[int, int]:
        """(step index, slot) of a call with timestep ``t_value``."""
        if self._last_t is not None and t_value > self._last_t + 1e-6:
            # the schedule went back up: a new generation without begin()
            log.debug(
                "step cache: timestep rose (%.3f -> %.3f), starting over", self._last_t, t_value
            )
            self.begin(self._timesteps)
        if self._last_t is not None and abs(t_value - self._last_t) <= 1e-6:
            self._call_in_step += 1
        else:
            self._call_in_step = 0
            if self._timesteps is not None:
                self._step = min(
                    range(len(self._timesteps)), key=lambda i: abs(self._timesteps[i] - t_value)
                )
            else:
                self._step += 1
        self._last_t = t_value
        return self._step, self._call_in_step

    def _must_compute(self, step: int) -> bool:
        if step < self.config.warmup_steps:
            return True
        return (
            self._timesteps is not None and step >= len(self._timesteps) - self.config.final_steps
        )

    def _signal(self, model: WanModel, state: DiTState) -> Tensor:
        sig = self.config.signal
        if sig == "modulated":
            return model.blocks[0].modulated_input(state.x, state.e0)
        return state.e if sig == "e" else state.e0

    def __call__(
        self,
        model: WanModel,
        state: DiTState,
        t: Tensor,
        run_blocks: Callable[[Tensor, DiTState], Tensor],
    ) -> Tensor:
        """The block stack's output for ``state`` (run, or reused): [B, L, dim] fp32.

        t: the call's timesteps [B] or [B, L] (only their maximum is read, to find the step)."""
        cfg = self.config
        self.stats.calls += 1
        if cfg.threshold == 0:  # reuses nothing: exactly the uncached forward, no host read
            self.stats.computed += 1
            return run_blocks(state.x, state)
        # the previous signal is kept in the compute dtype (bf16 on a GPU: half the memory of a
        # [B, L, dim] fp32 copy); distances are taken in fp32
        s = self._signal(model, state).to(state.context.dtype)
        b = s.shape[0]
        # One host read per call: the timestep (which step, which slot) together with this call's
        # distance to every slot's previous signal (at most a few slots: cond, uncond).
        parts = [t.detach().float().amax().reshape(1)]
        candidates: list[int] = []
        dims = tuple(range(1, s.dim()))
        for sid, sl in self._slots.items():
            if sl.prev is not None and sl.prev.shape == s.shape:
                prev = sl.prev.float()
                parts.append(
                    (s.float() - prev).abs().mean(dim=dims)
                    / prev.abs().mean(dim=dims).clamp_min(1e-12)
                )
                candidates.append(sid)
        host = torch.cat(parts).tolist()
        step, slot_id = self._locate(host[0])
        dists: list[float] = []
        if slot_id in candidates:
            k = 1 + candidates.index(slot_id) * b
            dists = host[k : k + b]
        slot = self._slots.setdefault(slot_id, _Slot())
        if not dists or len(slot.acc) != b:
            slot.acc = [0.0] * b
            slot.residual = None
            dists = []

        skip = False
        if (
            dists
            and slot.residual is not None
            and slot.residual.shape == state.x.shape
            and not self._must_compute(step)
        ):
            new_acc = [
                a + _rescale(d, cfg.coefficients) for a, d in zip(slot.acc, dists, strict=True)
            ]
            if all(a < cfg.threshold for a in new_acc):
                skip = True
                slot.acc = new_acc
        slot.prev = s
        if skip:
            assert slot.residual is not None
            self.stats.skipped += 1
            self.stats.skipped_steps.append(step)
            return state.x + slot.residual
        h = run_blocks(state.x, state)
        self.stats.computed += 1
        slot.acc = [0.0] * b
        slot.residual = h - state.x
        return h
