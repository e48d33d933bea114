"""Sampler tests: official σ grids (spec §6.2), parity with diffusers' schedulers driven on those grids,
and closed-form checks on velocity fields whose exact flow is known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tests.numerics import rel_err
from tests.reference import (
    diffusers_dpmpp_on_wan_grid,
    diffusers_unipc,
    diffusers_unipc_on_wan_grid,
    wan_dpm_sigmas,
    wan_sigmas,
)
from wan_desktop.errors import ConfigError
from wan_desktop.samplers import (
    SAMPLERS,
    Sampler,
    Schedule,
    cfg,
    make_sampler,
    make_schedule,
    shift_sigmas,
)

# ---------------------------------------------------------------------------------------------
# schedules


def test_unipc_grid_4_steps_shift_3_is_officials_not_diffusers_default():
    s = make_schedule("unipc", 4, 3.0)
    assert s.timesteps == (999, 899, 749, 499)
    assert s.steps == 4 and len(s.sigmas) == 5 and s.sigmas[-1] == 0.0
    # diffusers' own flow grid (linspace(1, 1/1000, N+1)) gives different timesteps (spec, top note)
    from diffusers import UniPCMultistepScheduler

    plain = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    plain.set_timesteps(4)
    assert plain.timesteps.tolist() == [999, 900, 750, 500]


@pytest.mark.parametrize(
    ("steps", "shift", "head", "tail"),
    [
        (50, 5.0, [999, 995, 991, 987, 982], [356, 302, 241, 172, 92]),
        (40, 12.0, [999, 997, 995, 993, 990], [631, 571, 492, 386, 235]),
        (40, 5.0, [999, 994, 989, 983, 978], [416, 356, 288, 208, 113]),
        (40, 3.0, [999, 991, 982, 973, 963], [299, 249, 195, 136, 71]),
    ],
)
def test_unipc_timesteps_match_spec_examples(steps, shift, head, tail):
    for name in ("unipc", "euler"):  # Euler steps on the same official grid
        t = make_schedule(name, steps, shift).timesteps
        assert len(t) == steps
        assert list(t[:5]) == head and list(t[-5:]) == tail


def test_wan22_expert_boundaries_split_steps_as_official():
    t2v = make_schedule("unipc", 40, 12.0).timesteps
    i2v = make_schedule("unipc", 40, 5.0).timesteps
    assert sum(t >= 875 for t in t2v) == 26
    assert sum(t >= 900 for t in i2v) == 15


def test_dpmpp_grid_starts_at_sigma_one():
    s = make_schedule("dpm++", 20, 5.0)
    assert s.sigmas[0] == 1.0 and s.timesteps[0] == 1000 and s.sigmas[-1] == 0.0
    np.testing.assert_array_equal(
        np.asarray(s.sigmas[:-1]), wan_dpm_sigmas(20, 5.0).astype(np.float32)
    )


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 40, 50, 100])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0, 16.0])
def test_schedules_equal_reference_grids_and_diffusers_timesteps(steps, shift):
    ours = make_schedule("unipc", steps, shift)
    ref = diffusers_unipc_on_wan_grid(steps, shift)
    assert list(ours.timesteps) == ref.timesteps.tolist()
    assert list(ours.sigmas) == ref.sigmas.tolist()
    np.testing.assert_array_equal(
        np.asarray(ours.sigmas[:-1]), wan_sigmas(steps, shift).astype(np.float32)
    )
    dpm = make_schedule("dpm++", steps, shift)
    dref = diffusers_dpmpp_on_wan_grid(steps, shift)
    assert list(dpm.timesteps) == dref.timesteps.tolist()
    assert list(dpm.sigmas) == dref.sigmas.tolist()


def test_wan_grid_scheduler_keeps_wans_grid_when_wanpipeline_calls_set_timesteps():
    # WanPipeline calls scheduler.set_timesteps(num_inference_steps, device=device)
    sched = diffusers_unipc(5.0)
    sched.set_timesteps(50, device="cpu")
    ours = make_schedule("unipc", 50, 5.0)
    assert sched.timesteps.tolist() == list(ours.timesteps)
    assert sched.sigmas.tolist() == list(ours.sigmas)


def test_shift_sigmas_formula():
    s = np.array([0.0, 0.25, 0.5, 0.999, 1.0])
    np.testing.assert_array_equal(shift_sigmas(s, 1.0), s)
    np.testing.assert_allclose(shift_sigmas(s, 3.0), 3 * s / (1 + 2 * s), rtol=0, atol=0)
    assert shift_sigmas(0.5, 5.0) == pytest.approx(5 / 6)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, "10"])
def test_bad_steps_raise_config_error_naming_the_value(steps):
    with pytest.raises(ConfigError, match="steps") as e:
        make_schedule("unipc", steps, 5.0)
    assert repr(steps) in str(e.value)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), float("inf"), True, "5"])
def test_bad_shift_raises_config_error_naming_the_value(shift):
    with pytest.raises(ConfigError, match="shift") as e:
        make_schedule("unipc", 10, shift)
    assert repr(shift) in str(e.value)


def test_unknown_sampler_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"'ddim'.*unipc, dpm\+\+, euler, rcm"):
        make_schedule("ddim", 10, 5.0)
    with pytest.raises(ConfigError, match=r"'ddim'.*unipc, dpm\+\+, euler, rcm"):
        make_sampler("ddim", make_schedule("unipc", 10, 5.0))
    assert [s.value for s in SAMPLERS] == ["unipc", "dpm++", "euler"]  # the ODE solvers
    assert [s.value for s in Sampler] == ["unipc", "dpm++", "euler", "rcm"]


def test_sampler_names_parse_to_the_enum_and_both_forms_run_alike():
    assert Sampler.parse("dpm++") is Sampler.DPMPP and Sampler.parse(Sampler.RCM) is Sampler.RCM
    assert Sampler.RCM.stochastic and not any(s.stochastic for s in SAMPLERS)
    assert make_schedule(Sampler.DPMPP, 7, 5.0) == make_schedule("dpm++", 7, 5.0)
    assert make_schedule(Sampler.DPMPP, 7, 5.0) != make_schedule(Sampler.UNIPC, 7, 5.0)
    assert (
        type(make_sampler(Sampler.EULER, make_schedule("euler", 3, 5.0))).__name__ == "EulerSampler"
    )


def test_schedule_rejects_inconsistent_grids():
    with pytest.raises(ConfigError):
        Schedule(sigmas=(0.9, 0.5), timesteps=(900, 500))  # no final sigma
    with pytest.raises(ConfigError):
        Schedule(sigmas=(0.9, 0.9, 0.0), timesteps=(900, 900))  # not strictly decreasing
    with pytest.raises(ConfigError):
        Schedule(sigmas=(0.9, 0.1), timesteps=(900,))  # does not end at 0


# ---------------------------------------------------------------------------------------------
# parity with diffusers on the official grids


def _velocity_field(shape, seed=0):
    """A velocity that depends nonlinearly on x and on t (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape[1], shape[1], generator=g) / math.sqrt(shape[1])
    eps = torch.randn(shape, generator=g)

    def v(x: torch.Tensor, t: int) -> torch.Tensor:
        mix = torch.einsum("bcfhw,cd->bdfhw", x, a)
        return torch.tanh(2 * mix) * (t / 1000) + 0.8 * eps - 0.6 * x * (1 - t / 1000)

    return v


@pytest.mark.parametrize("name", ["unipc", "dpm++"])
@pytest.mark.parametrize(("steps", "shift"), [(8, 3.0), (20, 5.0), (40, 12.0), (2, 5.0), (1, 3.0)])
def test_sampler_matches_diffusers_on_official_grid(name, steps, shift):
    shape = (1, 4, 3, 8, 8)
    vel = _velocity_field(shape)
    ref = (diffusers_unipc_on_wan_grid if name == "unipc" else diffusers_dpmpp_on_wan_grid)(
        steps, shift
    )
    schedule = make_schedule(name, steps, shift)
    ours = make_sampler(name, schedule)
    assert list(schedule.timesteps) == ref.timesteps.tolist()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    xa, xb, worst = x.clone(), x.clone(), 0.0
    for i, t in enumerate(schedule.timesteps):
        xa = ours.step(i, vel(xa, t), xa)
        tb = ref.timesteps[i]
        xb = ref.step(vel(xb, int(tb)), tb, xb, return_dict=False)[0]
        worst = max(worst, rel_err(xa, xb))
    final = rel_err(xa, xb)
    print(
        f"{name} N={steps} shift={shift}: max rel err vs diffusers final {final:.2e}, any step {worst:.2e}"
    )
    assert worst <= 1e-6


def test_x0_prediction_and_cfg():
    schedule = make_schedule("unipc", 10, 5.0)
    g = torch.Generator().manual_seed(2)
    x, v, v2 = (torch.randn(2, 3, 4, generator=g) for _ in range(3))
    for name in SAMPLERS:
        s = make_sampler(name, schedule)
        assert torch.equal(s.x0(3, v, x), x - schedule.sigmas[3] * v)
    assert torch.allclose(cfg(v, v2, 5.0), v + 5.0 * (v2 - v))
    assert torch.equal(cfg(v, v2, 1.0), v + (v2 - v))


# ---------------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 5, 13, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 12.0])
def test_exact_linear_flow_lands_on_x0(name, steps, shift):
    # v = ε − x0 for a fixed pair: the flow is a straight line, every solver must be exact
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 16, 8, generator=g), torch.randn(2, 16, 8, generator=g)
    schedule = make_schedule(name, steps, shift)
    sampler = make_sampler(name, schedule)
    s0 = schedule.sigmas[0]
    x = (1 - s0) * x0 + s0 * eps
    for i in range(steps):
        x = sampler.step(i, eps - x0, x)
    assert rel_err(x, x0) <= 1e-5


class _GaussianFlow:
    """Data x0 ~ N(μ, s²) per element: the exact flow-matching velocity is
    v(x, σ) = −μ + (σ − (1−σ)s²)/std(σ)²·(x − (1−σ)μ), std(σ)² = (1−σ)²s² + σ², and the ODE maps
    x_σ0 = (1−σ0)μ + std(σ0)·z to x0 = μ + s·z. Curved in σ, so it measures solver order."""

    def __init__(self, n=256, seed=4):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(n, generator=g, dtype=torch.float64)
        self.s = 0.2 + torch.rand(n, generator=g, dtype=torch.float64)
        self.z = torch.randn(n, generator=g, dtype=torch.float64)

    def std(self, sig):
        return ((1 - sig) ** 2 * self.s**2 + sig**2).sqrt()

    def v(self, x, sig):
        x = x.double()
        k = (sig - (1 - sig) * self.s**2) / self.std(sig) ** 2
        return (-self.mu + k * (x - (1 - sig) * self.mu)).float()

    def error(self, name, steps, shift):
        schedule = make_schedule(name, steps, shift)
        sampler = make_sampler(name, schedule)
        s0 = schedule.sigmas[0]
        x = ((1 - s0) * self.mu + self.std(s0) * self.z).float()
        for i in range(steps):
            x = sampler.step(i, self.v(x, schedule.sigmas[i]), x)
        return float((x.double() - (self.mu + self.s * self.z)).abs().max())


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_euler_is_first_order_and_unipc_dpmpp_converge_faster(shift):
    flow = _GaussianFlow()
    ns = [10, 20, 40, 80]
    errs = {name.value: [flow.error(name, n, shift) for n in ns] for name in SAMPLERS}
    print(
        f"shift {shift}: "
        + "; ".join(f"{k} " + " ".join(f"{e:.2e}" for e in v) for k, v in errs.items())
    )
    eu = errs["euler"]
    for a, b in itertools.pairwise(eu):
        assert 1.85 <= a / b <= 2.05  # error ∝ 1/N
    for name in ("unipc", "dpm++"):
        e = errs[name]
        assert all(x < y for x, y in zip(e, eu, strict=True))
        # 8× the steps: Euler gains 8×, a second-order method up to 64× (measured 23–71×: the
        # shifted grids and the final jump to x0̂ keep it pre-asymptotic at these N)
        assert e[0] / e[-1] > 2 * eu[0] / eu[-1]


# ---------------------------------------------------------------------------------------------
# bookkeeping, dtypes, devices


@pytest.mark.parametrize("name", SAMPLERS)
def test_steps_must_come_in_order_once(name):
    schedule = make_schedule(name, 3, 5.0)
    s = make_sampler(name, schedule)
    x = torch.randn(4)
    x = s.step(0, x, x)
    with pytest.raises(ValueError, match="expected step 1"):
        s.step(2, x, x)
    s.step(1, x, x)
    s.step(2, x, x)
    with pytest.raises(ValueError, match="expected step 3"):
        s.step(0, x, x)


@pytest.mark.parametrize("name", SAMPLERS)
def test_bf16_sample_is_stepped_in_float32_and_returned_in_bf16(name):
    schedule = make_schedule(name, 6, 5.0)
    vel = _velocity_field((1, 4, 2, 4, 4), seed=5)
    x = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(6)).bfloat16()
    a, b = make_sampler(name, schedule), make_sampler(name, schedule)
    for i, t in enumerate(schedule.timesteps):
        v = vel(x.float(), t).bfloat16()
        y = a.step(i, v, x)
        y32 = b.step(i, v.float(), x.float())
        assert y.dtype == torch.bfloat16 and torch.equal(y, y32.bfloat16())
        x = y


@pytest.mark.parametrize("name", SAMPLERS)
def test_step_never_reads_tensor_values_on_the_host(name):
    # meta tensors have no data: any .item()/bool() on them raises, so a full run proves the step
    # is free of host syncs on a real GPU too
    schedule = make_schedule(name, 5, 5.0)
    s = make_sampler(name, schedule)
    x = torch.empty(1, 4, 2, 4, 4, device="meta")
    for i in range(5):
        x = s.step(i, torch.empty_like(x), x)
        assert x.device.type == "meta" and x.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.parametrize("name", SAMPLERS)
def test_cuda_step_matches_cpu_without_syncs(name):
    schedule = make_schedule(name, 8, 5.0)
    vel = _velocity_field((1, 4, 2, 8, 8), seed=7)
    x = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(8))
    vs = []
    xc, cpu = x.clone(), make_sampler(name, schedule)
    for i, t in enumerate(schedule.timesteps):
        vs.append(vel(xc, t))
        xc = cpu.step(i, vs[-1], xc)
    # replay the same velocities on the GPU, so only the device differs
    xg, gpu = x.cuda(), make_sampler(name, schedule)
    vs_gpu = [v.cuda() for v in vs]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i, v in enumerate(vs_gpu):
            xg = gpu.step(i, v, xg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rel_err(xg.cpu(), xc) <= 1e-6
