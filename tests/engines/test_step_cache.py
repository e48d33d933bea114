"""Step caching on whole tiny generations (20 steps, random weights, CPU fp32).

With random weights the step-to-step change of the signal is large (~0.2-0.4 relative L1 per step,
printed below), so the "moderate" threshold here is 0.4; real weights change far less per step
(TeaCache uses 0.05-0.3 on Wan2.1). The quality figures printed are PSNR vs the uncached video.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from wan_desktop.engines.step_cache import StepCache, StepCacheConfig
from wan_desktop.engines.torch_backend import build_torch_components

from tests.numerics import psnr_uint8
from tests.tiny import tiny_variant
from wan_desktop.errors import ConfigError
from wan_desktop.pipeline import generate
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import make_schedule

STEPS = 20


def _generate(
    name: str = "t2v-1.3B",
    cache: StepCacheConfig | float | None = None,
    *,
    begin: bool = True,
    batch_cfg: bool = True,
    steps: int = STEPS,
):
    variant = tiny_variant(name)
    request = replace(
        GenerationRequest(
            prompt="a cat", width=64, height=32, frames=9, steps=steps, seed=1, batch_cfg=batch_cfg
        ).resolve(variant)
    )
    comps = build_torch_components(variant, None, device=torch.device("cpu"), dtype=torch.float32)
    if cache is not None:
        cfg = cache if isinstance(cache, StepCacheConfig) else StepCacheConfig(threshold=cache)
        for den in comps.denoisers:
            den.cache = StepCache(cfg)
    if begin:
        schedule = make_schedule(request.sampler, request.steps, request.shift)
        for den in comps.denoisers:
            den.begin(schedule.timesteps)
    video = generate(comps, request, device="cpu", preview_every=0)
    return video, [den.cache_stats for den in comps.denoisers], comps


@pytest.fixture(scope="module")
def uncached():
    return _generate()[0]


def test_threshold_zero_reuses_nothing(uncached):
    for threshold in (0.0, 1e-12):  # 0: short path; 1e-12: the full decision path, never below
        video, (stats,), _ = _generate(cache=threshold)
        assert stats["skipped"] == 0 and stats["computed"] == STEPS
        assert torch.equal(video, uncached)


def test_huge_threshold_skips_all_but_first_and_last(uncached):
    video, (stats,), _ = _generate(cache=1e9)
    assert stats["computed"] == 2 and stats["skipped_steps"] == list(range(1, STEPS - 1))
    print(
        f"huge threshold: {stats['skipped']} of {STEPS} steps skipped, "
        f"PSNR {psnr_uint8(video, uncached):.1f} dB vs uncached"
    )


@pytest.mark.parametrize("signal", ["e", "e0"])
def test_timestep_signals(signal):
    _, (stats,), _ = _generate(cache=StepCacheConfig(threshold=1e9, signal=signal), steps=6)
    assert stats["computed"] == 2 and stats["skipped_steps"] == [1, 2, 3, 4]


def test_moderate_threshold_skips_some(uncached):
    video, (stats,), _ = _generate(cache=0.4)
    p = psnr_uint8(video, uncached)
    print(
        f"threshold 0.4: skipped steps {stats['skipped_steps']} ({stats['skipped']} of {STEPS}), "
        f"PSNR {p:.1f} dB vs uncached"
    )
    assert 0 < stats["skipped"] < STEPS - 2
    assert 25.0 < p < float("inf")  # measured 37.5 dB; the huge threshold gives 23.7 dB


def test_cond_and_uncond_have_separate_state():
    """CFG as two calls per step: two slots, each computes its own first and last step."""
    _, (stats,), _ = _generate(cache=1e9, batch_cfg=False, steps=8)
    assert stats["calls"] == 16 and stats["computed"] == 4
    assert stats["skipped_steps"] == list(range(1, 7))


def test_without_schedule_only_the_first_step_is_forced_and_runs_restart():
    _, (stats,), comps = _generate(cache=1e9, begin=False, steps=6)
    assert stats["computed"] == 1 and stats["skipped"] == 5
    # a second generation without begin(): the rising timestep starts the cache over
    variant = comps.variant
    request = GenerationRequest(
        prompt="a cat", width=64, height=32, frames=9, steps=6, seed=1
    ).resolve(variant)
    generate(comps, request, device="cpu", preview_every=0)
    assert comps.denoisers[0].cache_stats["computed"] == 1


def test_wan22_experts_cache_separately():
    _, stats, _ = _generate("t2v-A14B", cache=1e9, steps=10)
    high, low = stats
    print(f"Wan2.2 experts: high-noise {high}, low-noise {low}")
    assert high["computed"] == 1 and low["computed"] == 2  # first step, switch step, last step
    assert high["calls"] + low["calls"] == 10


def test_config_is_validated():
    with pytest.raises(ConfigError, match="threshold"):
        StepCacheConfig(threshold=-1)
    with pytest.raises(ConfigError, match="signal"):
        StepCacheConfig(threshold=0.1, signal="x")
