"""The three stages of a run, each on its own: condition (text and image conditioning), denoise
(the sampling loop over any velocity callable, CFG through samplers.cfg), decode; and the
ResolvedRequest they read (typed fields, saved form)."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fakes import fake_components
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled
from wan_desktop.pipeline import (
    Conditioning,
    StepDone,
    begin_run,
    condition,
    decode,
    denoise,
    expert_at,
    generate,
    initial_noise,
    run_schedule,
)
from wan_desktop.presets import get_preset
from wan_desktop.request import GenerationRequest, ResolvedRequest
from wan_desktop.samplers import Sampler
from wan_desktop.variants import VARIANTS, Task

Z, T, H, W = 4, 2, 3, 5  # latent shape of the plain-callable runs


def _resolved(name: str = "t2v-1.3B", **kw) -> ResolvedRequest:
    base = dict(prompt="a cat", width=64, height=32, frames=9, steps=6, seed=3)
    return GenerationRequest(**(base | kw)).resolve(VARIANTS[name])


def _image(path, w=64, h=32):
    arr = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


class StraightFlow:
    """A plain velocity callable, no Denoiser: v = c(context), constant in x and t, so the flow is
    the straight line x_σ = x_0 + σ·c and every ODE solver lands exactly on x_0 = x_σ0 − σ0·c.
    c is the context's first row (its first Z channels) broadcast over the latent grid."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []  # (batch, timestep) of every call

    def __call__(self, latents, timestep, context, *, y=None, clip_fea=None):
        self.calls.append((latents.shape[0], float(timestep[0])))
        c = context[:, 0, :Z].view(-1, Z, 1, 1, 1)
        return c.expand_as(latents).clone()


def _text(cond_row: list[float], neg_row: list[float] | None) -> Conditioning:
    def ctx(row):
        return torch.tensor(row, dtype=torch.float32).view(1, 1, Z).expand(1, 3, Z).clone()

    return Conditioning(
        context=ctx(cond_row), context_neg=None if neg_row is None else ctx(neg_row)
    )


# ----------------------------------------------------------------------------- denoise


@pytest.mark.parametrize("sampler", ["unipc", "dpm++", "euler"])
@pytest.mark.parametrize("batch_cfg", [True, False])
def test_denoise_a_plain_callable_with_cfg_lands_on_the_guided_straight_flow(sampler, batch_cfg):
    """CFG mixes the two velocities as v_u + g·(v_c − v_u) (samplers.cfg): on a straight flow the
    result is noise − σ0·(c_u + g·(c_c − c_u)), whatever the solver and the CFG batching."""
    c_c, c_u, g = [1.0, -2.0, 0.5, 3.0], [0.25, 1.0, -1.0, 0.0], 4.0
    request = _resolved(sampler=sampler, guidance=g, batch_cfg=batch_cfg)
    model, noise = StraightFlow(), initial_noise((1, Z, T, H, W), 7)
    events: list[StepDone] = []
    out = denoise([model], noise, _text(c_c, c_u), request, emit=events.append)
    guided = torch.tensor(c_u) + g * (torch.tensor(c_c) - torch.tensor(c_u))
    sigma0 = run_schedule(request).sigmas[0]
    want = noise - sigma0 * guided.view(1, Z, 1, 1, 1)
    print(f"{sampler} batch={batch_cfg}: max error {float((out - want).abs().max()):.1e}")
    assert torch.allclose(out, want, atol=1e-5, rtol=0)
    # one call a step (a batch of 2) or two calls (cond, then uncond), at the run's timesteps
    calls_per_step = [(2,)] if batch_cfg else [(1,), (1,)]
    assert model.calls == [
        (*c, float(t)) for t in run_schedule(request).timesteps for c in calls_per_step
    ]
    # every preview is the x0 prediction x − σ·v, on the straight flow x0 itself
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6]
    assert all(torch.allclose(e.preview, want[0], atol=1e-5) for e in events)


def test_denoise_without_a_negative_context_never_runs_cfg():
    request = _resolved(guidance=4.0)
    model, noise = StraightFlow(), initial_noise((1, Z, T, H, W), 1)
    out = denoise([model], noise, _text([1.0, 2.0, 3.0, 4.0], None), request, preview_every=0)
    assert all(b == 1 for b, _ in model.calls) and len(model.calls) == 6
    sigma0 = run_schedule(request).sigmas[0]
    assert torch.allclose(
        out, noise - sigma0 * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, Z, 1, 1, 1), atol=1e-5
    )


def test_denoise_switches_to_the_second_model_below_the_boundary():
    request = _resolved("t2v-A14B", steps=10, shift=12.0, guidance=1.0, guidance_low=1.0)
    high, low = StraightFlow(), StraightFlow()
    events: list[StepDone] = []
    denoise(
        [high, low],
        initial_noise((1, Z, T, H, W), 0),
        _text([0.0] * 4, None),
        request,
        boundary=0.875,
        emit=events.append,
        preview_every=0,
    )
    assert high.calls and low.calls
    assert all(t >= 875 for _, t in high.calls) and all(t < 875 for _, t in low.calls)
    assert [e.expert for e in events] == [0] * len(high.calls) + [1] * len(low.calls)
    assert all(e.preview is None for e in events)


def test_expert_choice_by_time_by_step_and_for_one_model():
    assert [
        expert_at(i, t, experts=2, boundary=0.875, boundary_step=None)
        for i, t in enumerate([999, 900, 875, 874, 10])
    ] == [0, 0, 0, 1, 1]
    # a distilled recipe's step boundary wins over the timestep one
    assert [expert_at(i, 999, experts=2, boundary=0.875, boundary_step=2) for i in range(4)] == [
        0,
        0,
        1,
        1,
    ]
    assert expert_at(3, 10, experts=1, boundary=0.875, boundary_step=1) == 0
    assert expert_at(3, 10, experts=2, boundary=None, boundary_step=None) == 0


def test_cancel_between_the_cfg_passes_stops_denoise_before_the_uncond_call():
    token = CancelToken()
    model = StraightFlow()

    def cancelling(*args, **kw):
        token.cancel()  # the user presses Cancel during the cond pass
        return model(*args, **kw)

    with pytest.raises(Cancelled):
        denoise(
            [cancelling],
            initial_noise((1, Z, T, H, W), 0),
            _text([1.0] * 4, [0.0] * 4),
            _resolved(batch_cfg=False),
            cancel=token,
        )
    assert len(model.calls) == 1


def test_cancel_inside_denoise_never_decodes():
    comps, parts = fake_components()
    token = CancelToken()
    seen = []

    def emit(e):
        seen.append(e)
        if isinstance(e, StepDone) and e.step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        generate(comps, _resolved(), cancel=token, emit=emit)
    assert [e.step for e in seen if isinstance(e, StepDone)] == [1, 2, 3]
    assert len(parts["denoisers"][0].calls) == 3
    assert not [c for c in parts["vae"].calls if "decode" in c]


def test_rcm_starts_at_sigma0_times_the_noise():
    """A distilled σ grid below 1 (TurboDiffusion rCM) starts from σ_0·noise: the model's first
    input."""
    comps, _ = fake_components()
    request = get_preset("turbo").apply(
        GenerationRequest(prompt="a cat", width=64, height=32, frames=9, seed=5), comps.variant
    )
    request = request.resolve(comps.variant)
    model, noise = StraightFlow(), initial_noise((1, Z, T, H, W), 5)
    seen = []

    def first_input(latents, timestep, context, **kw):
        seen.append(latents.clone())
        return model(latents, timestep, context, **kw)

    denoise([first_input], noise, _text([0.0] * 4, None), request, preview_every=0)
    sigma0 = run_schedule(request).sigmas[0]
    assert sigma0 < 1.0 and torch.equal(seen[0], noise * sigma0)


# ----------------------------------------------------------------------------- condition


def test_condition_encodes_the_negative_prompt_only_when_cfg_runs():
    comps, parts = fake_components()
    cond = condition(comps, _resolved(guidance=5.0))
    text_len, dim = comps.variant.dit.text_len, comps.variant.dit.text_dim
    assert parts["text"].calls[-1]["prompts"] == ["a cat", comps.variant.defaults.negative_prompt]
    assert cond.context.shape == cond.context_neg.shape == (1, text_len, dim)
    n = parts["text"].encode(["a cat"])[0].shape[0]
    assert torch.equal(cond.context[0, :n], parts["text"].encode(["a cat"])[0])
    assert not cond.context[0, n:].any()  # zero rows after the real tokens
    assert cond.y is cond.clip_fea is cond.cond_latent is cond.token_mask is None
    cond = condition(comps, _resolved(guidance=1.0))
    assert parts["text"].calls[-1]["prompts"] == ["a cat"] and cond.context_neg is None


def test_condition_i2v_and_flf2v_give_the_mask_and_the_encoded_frames(tmp_path):
    img = _image(tmp_path / "a.png")
    for name, task, last, n_img in (("i2v-14B", "i2v", None, 1), ("flf2v-14B", "flf2v", img, 2)):
        comps, parts = fake_components(name)
        cond = condition(comps, _resolved(name, task=task, image=img, last_image=last))
        z, t, h, w = comps.variant.latent_shape(64, 32, 9)
        assert cond.y.shape == (1, 4 + z, t, h, w)
        mask = cond.y[0, :4]
        # latent frame j holds pixel frames 4j−3 … 4j (the first frame 4 times): the first is
        # given; FLF2V also the last pixel frame, the 4th of the last latent frame
        assert mask[:, 0].eq(1).all() and mask[:, 1:-1].eq(0).all() and mask[:3, -1].eq(0).all()
        assert mask[3, -1].eq(1 if last else 0).all()
        assert cond.clip_fea.shape == (1, n_img * 5, comps.variant.dit.image_dim)  # 5: the fake
        assert parts["vae"].calls[-1] == {"encode": (1, 3, 9, 32, 64)}  # first (+ last) + zeros


def test_condition_ti2v_keeps_the_first_frame_and_gives_its_tokens_t0(tmp_path):
    comps, _ = fake_components("ti2v-5B")
    cond = condition(comps, _resolved("ti2v-5B", task="ti2v", image=_image(tmp_path / "a.png")))
    z, t, h, w = comps.variant.latent_shape(64, 32, 9)
    _, ph, pw = comps.variant.dit.patch_size
    tokens_per_frame = (h // ph) * (w // pw)
    tt = cond.timestep(500.0)
    assert tt.shape == (1, t * tokens_per_frame)
    assert tt[0, :tokens_per_frame].eq(0).all() and tt[0, tokens_per_frame:].eq(500).all()
    x = torch.randn(1, z, t, h, w)
    kept = cond.keep_first(x)
    assert torch.equal(kept[:, :, :1], cond.cond_latent) and torch.equal(
        kept[:, :, 1:], x[:, :, 1:]
    )
    # without TI2V conditioning: a [1] timestep and the latents untouched
    plain = _text([0.0] * 4, None)
    assert torch.equal(plain.timestep(500.0), torch.tensor([500.0])) and plain.keep_first(x) is x


# ----------------------------------------------------------------------------- the whole run


def test_generate_is_condition_then_denoise_then_decode():
    comps, _ = fake_components("t2v-A14B")
    request = _resolved("t2v-A14B", steps=8)
    video = generate(comps, request, preview_every=0)
    comps2, _ = fake_components("t2v-A14B")
    cond = condition(comps2, request)
    noise = initial_noise((1, *comps2.variant.latent_shape(64, 32, 9)), request.seed)
    latents = denoise(
        comps2.denoisers, noise, cond, request, boundary=comps2.boundary, preview_every=0
    )
    frames = decode(comps2, latents)
    assert frames.dtype == torch.uint8 and frames.shape == (9, 32, 64, 3)
    assert torch.equal(video, frames)


def test_generate_refuses_an_unresolved_request():
    comps, _ = fake_components()
    with pytest.raises(TypeError, match="resolve"):
        generate(comps, GenerationRequest(prompt="a cat"))  # type: ignore[arg-type]


def test_begin_run_gives_every_denoiser_the_schedule():
    comps, parts = fake_components("t2v-A14B")
    request = get_preset("fast").apply(
        GenerationRequest(prompt="x", width=64, height=32, frames=9), comps.variant
    )
    request = request.resolve(comps.variant)
    begin_run(comps, request)
    want = tuple(run_schedule(request).timesteps)
    assert [d.schedules for d in parts["denoisers"]] == [[want], [want]]
    assert want == pytest.approx((1000.0, 937.5, 833.333, 625.0), abs=1e-3)  # the distilled grid


# ----------------------------------------------------------------------------- ResolvedRequest


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("t2v-1.3B", {}),
        ("t2v-A14B", {"guidance_low": 2.0, "batch_cfg": False}),
        ("i2v-14B", {"image": "a.png", "sampler": "dpm++"}),
        ("flf2v-14B", {"image": "a.png", "last_image": "b.png"}),
        ("ti2v-5B", {"image": "a.png", "task": "ti2v"}),
        ("t2v-A14B", {"preset": "fast"}),
        ("t2v-1.3B", {"preset": "turbo", "seed": 2**62}),
    ],
)
def test_resolved_request_is_typed_and_its_saved_form_reads_back_the_same(name, kw):
    variant = VARIANTS[name]
    preset = kw.pop("preset", None)
    request = GenerationRequest(prompt="a cat", **kw)
    if preset:
        request = get_preset(preset).apply(request, variant)
    r = request.resolve(variant)
    assert isinstance(r.task, Task) and isinstance(r.sampler, Sampler)
    assert all(
        getattr(r, f.name) is not None
        or f.name in ("image", "last_image", "sigmas", "boundary_step", "extend")
        or f.name in ("video", "strength", "outpaint", "first_clip", "last_clip", "preprocess")
        or f.name in ("base_frames", "overlap_history", "ar_step", "causal_block_size")  # DF
        or f.name in ("addnoise_condition", "fps")
        or f.name in ("control_video", "mask_video", "control_scale")  # VACE (vace.py)
        for f in fields(r)
    )
    saved = json.loads(json.dumps(r.to_dict()))
    assert list(saved) == [f.name for f in fields(GenerationRequest)]  # the sidecar's keys
    assert saved["task"] == r.task.value and saved["sampler"] == r.sampler.value
    assert GenerationRequest.from_dict(saved).resolve(variant) == r


def test_resolved_to_dict_is_the_old_resolved_request_dict():
    """Sidecars and history keep the form saved before the ResolvedRequest: task and sampler as
    strings, every GenerationRequest field, nothing else."""
    r = _resolved("t2v-A14B")
    assert r.to_dict() == {
        "prompt": "a cat",
        "negative_prompt": VARIANTS["t2v-A14B"].defaults.negative_prompt,
        "task": "t2v",
        "image": None,
        "last_image": None,
        "width": 64,
        "height": 32,
        "frames": 9,
        "steps": 6,
        "guidance": 4.0,
        "guidance_low": 3.0,
        "shift": 12.0,
        "sampler": "unipc",
        "seed": 3,
        "batch_cfg": True,
        "sigmas": None,
        "boundary_step": None,
        "window_frames": 81,  # long videos: the model's window, 2 latent frames carried over
        "window_overlap": 2,
        "color_match": True,
        "extend": None,
        "base_frames": None,  # SkyReels-V2 DF (diffusion_forcing.py): None for other models
        "overlap_history": None,
        "ar_step": None,
        "causal_block_size": None,
        "addnoise_condition": None,
        "fps": None,
        "video": None,  # v2v (video_to_video.py)
        "strength": None,
        "outpaint": None,  # VACE inputs built for the user (vace_inputs.py)
        "first_clip": None,
        "last_clip": None,
        "preprocess": None,
        "control_video": None,  # VACE (vace.py): the control and mask videos, references, scale
        "mask_video": None,
        "ref_images": (),
        "control_scale": None,
    }


def test_use_cfg_counts_the_low_noise_guidance_only_for_two_experts():
    assert _resolved(guidance=5.0).use_cfg
    assert not _resolved(guidance=1.0).use_cfg
    assert not _resolved(guidance=1.0, guidance_low=3.0).use_cfg  # one model: no low-noise expert
    assert _resolved("t2v-A14B", guidance=1.0, guidance_low=3.0).use_cfg
    assert not _resolved("t2v-A14B", guidance=1.0, guidance_low=1.0).use_cfg
    r = _resolved("t2v-A14B", guidance=4.0, guidance_low=2.5)
    assert (r.guidance_for(0), r.guidance_for(1)) == (4.0, 2.5)
    assert not replace(r, batch_cfg=False).batch_cfg and r.batch_cfg  # what the memory plan does


# ----------------------------------------------------------------------------- non-finite latents


class PoisonedFlow(StraightFlow):
    """StraightFlow whose velocity is ``value`` (NaN or ±Inf) in one latent element from its
    ``at``-th call on (0-based): a model that overflows mid-run."""

    def __init__(self, at: int, value: float) -> None:
        super().__init__()
        self.at, self.value = at, value

    def __call__(self, latents, timestep, context, *, y=None, clip_fea=None):
        v = super().__call__(latents, timestep, context, y=y, clip_fea=clip_fea)
        if len(self.calls) > self.at:
            v[0, 0, 0, 0, 0] = self.value
        return v


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_denoise_stops_at_the_step_whose_latents_are_not_finite(value):
    """One NaN/Inf element in the velocity of step 3 stops the run at step 3, naming it: steps 1
    and 2 were reported, step 3 never is, and no later step runs."""
    from wan_desktop.errors import NumericError

    model, events = PoisonedFlow(at=2, value=value), []
    with pytest.raises(
        NumericError,
        match=r"at denoising step 3 of 6 \(the diffusion model, "
        r"guidance 1\)",
    ) as e:
        denoise(
            [model],
            initial_noise((1, Z, T, H, W), 0),
            _text([1.0] * 4, None),
            _resolved(guidance=1.0),
            emit=events.append,
        )
    assert [ev.step for ev in events] == [1, 2] and len(model.calls) == 3
    assert "nothing was written" in e.value.one_line() and "precision" in e.value.remedy


def test_denoise_names_the_low_noise_expert_and_its_guidance():
    from wan_desktop.errors import NumericError

    request = _resolved("t2v-A14B", steps=10, shift=12.0, guidance=1.0, guidance_low=1.0)
    high, low = StraightFlow(), PoisonedFlow(at=0, value=float("inf"))
    events: list[StepDone] = []
    with pytest.raises(
        NumericError, match=r"step (\d+) of 10 \(the low-noise expert, guidance 1\)"
    ) as e:
        denoise(
            [high, low],
            initial_noise((1, Z, T, H, W), 0),
            _text([0.0] * 4, None),
            request,
            boundary=0.875,
            emit=events.append,
            preview_every=0,
        )
    first_low = len(high.calls) + 1  # the low-noise expert's first step is the bad one
    assert f"step {first_low} of 10" in str(e.value) and len(low.calls) == 1
    assert [ev.expert for ev in events] == [0] * len(high.calls)


def test_nan_latents_never_reach_the_decoder():
    """A model giving NaN from its first call: generate() stops at step 1 and never decodes (the
    NaN frames would have been written as black: to_uint8_frames turns NaN into 0)."""
    from wan_desktop.errors import NumericError

    comps, parts = fake_components(a=float("nan"))
    with pytest.raises(NumericError, match="step 1 of 6"):
        generate(comps, _resolved())
    assert len(parts["denoisers"][0].calls) == 1
    assert not [c for c in parts["vae"].calls if "decode" in c]
