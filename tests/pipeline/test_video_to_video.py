"""Video-to-video (SDEdit, wan_desktop/video_to_video.py) against diffusers' own
WanVideoToVideoPipeline on the same tiny random weights: same seed, UniPC on Wan's official sigma
grid, same negative prompt, text padded to 512, the same input frames; and the schedule arithmetic
(which steps run, the start latents) on its own."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures_models import build_tiny_model
from tests.numerics import psnr_uint8
from tests.v2v_reference import input_frames, png_folder, wan_v2v_reference
from wan_desktop.errors import ConfigError, VideoInputError
from wan_desktop.options import RunOptions
from wan_desktop.pipeline import StepDone, generate, run_schedule
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import make_schedule
from wan_desktop.variants import get_variant
from wan_desktop.video_to_video import noised, start_step, tail

pytest.importorskip("diffusers")

PROMPT = "A cat walks on the grass, realistic style."
W, H, FRAMES, STEPS, SHIFT, SEED = 64, 32, 9, 8, 3.0, 42


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_tiny_model(tmp_path_factory.mktemp(name), name)
        return cache[name]

    return get


def _ours(model, layout: str, request: GenerationRequest, events=None):
    from wan_desktop.engines.factory import build_components, detect_for_options

    paths = {
        "diffusers": dict(model=str(model.diffusers)),
        "official": dict(model=str(model.official)),
        "comfyui": dict(
            model=str(model.comfy_dit), vae=str(model.comfy_vae), text_encoder=str(model.comfy_t5)
        ),
    }[layout]
    options = RunOptions(device="cpu", dtype="float32", **paths)
    variant, files = detect_for_options(options)
    components, device = build_components(options, variant, files)
    resolved = request.resolve(variant)
    emit = events.append if events is not None else (lambda e: None)
    return generate(components, resolved, device=device, emit=emit), resolved


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "layout", "strength", "size"),
    [
        ("t2v-1.3B", "diffusers", 0.6, (W, H)),
        ("t2v-1.3B", "official", 0.6, (W, H)),
        ("t2v-1.3B", "comfyui", 0.6, (W, H)),
        ("t2v-1.3B", "official", 1.0, (W, H)),
        ("t2v-1.3B", "official", 0.3, (W, H)),
        ("ti2v-5B", "diffusers", 0.7, (64, 64)),
    ],
)
def test_v2v_matches_wan_video_to_video_pipeline(models, tmp_path, name, layout, strength, size):
    model = models(name)
    w, h = size
    frames = input_frames(FRAMES, w, h)
    request = GenerationRequest(
        prompt=PROMPT,
        task="v2v",
        video=str(png_folder(tmp_path / "in", frames)),
        strength=strength,
        width=w,
        height=h,
        frames=FRAMES,
        steps=STEPS,
        shift=SHIFT,
        guidance=5.0,
        seed=SEED,
    )
    events: list = []
    ours, resolved = _ours(model, layout, request, events)
    ref = wan_v2v_reference(model, resolved, frames)
    assert ours.shape == ref.shape == (FRAMES, h, w, 3)
    steps_run = [e for e in events if isinstance(e, StepDone)]
    assert len(steps_run) == int(STEPS * strength) == steps_run[-1].total
    p = psnr_uint8(ours, ref)
    print(f"V2V {name} {layout} strength {strength}: PSNR {p:.1f} dB vs WanVideoToVideoPipeline")
    assert p >= 40.0


def test_the_denoise_starts_from_the_noised_video_at_the_strengths_step():
    """The first model call sees (1 − σ_k)·x0 + σ_k·ε at t_k, k = N − int(N·s), and the calls
    go on over the grid's tail only."""
    from wan_desktop.pipeline import Conditioning, denoise

    variant = get_variant("t2v-1.3B")
    r = GenerationRequest(
        prompt="x", task="v2v", video="v.mp4", strength=0.5, steps=6, shift=5.0, guidance=1.0
    ).resolve(variant)
    x0 = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    calls: list[tuple[torch.Tensor, float]] = []

    def model(x, t, context, **_):
        calls.append((x.clone(), float(t[0])))
        return torch.zeros_like(x)

    cond = Conditioning(context=torch.zeros(1, 2, 2), context_neg=None, video_latent=x0)
    out = denoise([model], eps, cond, r)
    full = make_schedule("unipc", 6, 5.0)
    k = 3
    assert [t for _, t in calls] == list(full.timesteps[k:])
    s = torch.tensor(full.sigmas[k], dtype=torch.float32)
    assert torch.equal(calls[0][0], (1 - s) * x0 + s * eps)
    assert torch.allclose(out, calls[0][0])  # a zero velocity keeps x: x0 prediction = x


# ----------------------------------------------------------------------------- the schedule


def test_strength_runs_the_last_int_n_times_s_steps_of_the_grid():
    full = make_schedule("unipc", 10, 5.0)
    assert [start_step(10, s) for s in (1.0, 0.8, 0.75, 0.5, 0.1, 0.09)] == [0, 2, 3, 5, 9, 10]
    t = tail(full, 0.75)  # int(7.5) = 7 steps
    assert t.steps == 7
    assert t.sigmas == full.sigmas[3:] and t.timesteps == full.timesteps[3:]
    assert t.sigmas[-1] == 0.0
    with pytest.raises(ConfigError) as e:
        tail(full, 0.09)
    assert e.value.field == "strength"


def test_run_schedule_of_a_v2v_request_is_the_tail():
    variant = get_variant("t2v-1.3B")
    r = GenerationRequest(
        prompt="x", task="v2v", video="in.mp4", strength=0.5, steps=10, shift=5.0
    ).resolve(variant)
    full = make_schedule("unipc", 10, 5.0)
    assert run_schedule(r) == tail(full, 0.5)
    assert run_schedule(r).timesteps[0] == full.timesteps[5]


def test_start_latents_mix_the_video_and_the_noise_at_sigma():
    x0 = torch.full((1, 2, 1, 2, 2), 2.0)
    eps = torch.full((1, 2, 1, 2, 2), -1.0)
    out = noised(x0, eps, 0.25)
    assert torch.allclose(out, torch.full_like(x0, 0.75 * 2.0 - 0.25))
    assert torch.equal(noised(x0, eps, 0.0), x0)


# ----------------------------------------------------------------------------- the request


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        (dict(task="v2v"), "video", "needs an input video"),
        (dict(task="v2v", video="v.mp4", strength=0.0), "strength", "(0, 1]"),
        (dict(task="v2v", video="v.mp4", strength=1.5), "strength", "(0, 1]"),
        (dict(task="v2v", video="v.mp4", strength=float("nan")), "strength", "(0, 1]"),
        (dict(task="v2v", video="v.mp4", strength=0.1, steps=5), "strength", "runs no step"),
        (dict(task="t2v", video="v.mp4"), "video", "choose the task v2v"),
        (dict(task="t2v", strength=0.5), "strength", "only used by the v2v task"),
    ],
)
def test_bad_v2v_requests_name_the_field(kw, field, words):
    with pytest.raises(ConfigError) as e:
        GenerationRequest(prompt="x", **kw).resolve(get_variant("t2v-1.3B"))
    assert e.value.field == field and words in e.value.message


def test_v2v_runs_on_every_t2v_model_and_defaults_to_diffusers_strength():
    for name in ("t2v-1.3B", "t2v-14B", "t2v-A14B", "ti2v-5B"):
        r = GenerationRequest(prompt="x", task="v2v", video="v.mp4").resolve(get_variant(name))
        assert r.strength == 0.8
    with pytest.raises(ConfigError, match="cannot do v2v") as e:
        GenerationRequest(prompt="x", task="v2v", video="v.mp4").resolve(get_variant("i2v-14B"))
    assert e.value.field == "task"


def test_the_request_round_trips_through_its_saved_settings():
    variant = get_variant("t2v-1.3B")
    r = GenerationRequest(prompt="x", task="v2v", video="v.mp4", strength=0.55).resolve(variant)
    again = GenerationRequest.from_dict(r.to_dict()).resolve(variant)
    assert again == r and r.to_dict()["task"] == "v2v" and r.to_dict()["strength"] == 0.55


def test_a_short_or_missing_input_video_is_refused_before_any_weights(tmp_path):
    from wan_desktop.pipeline import check_images

    variant = get_variant("t2v-1.3B")
    src = png_folder(tmp_path / "in", input_frames(5, 16, 16))
    ok = GenerationRequest(prompt="x", task="v2v", video=str(src), frames=5).resolve(variant)
    check_images(ok)
    short = GenerationRequest(prompt="x", task="v2v", video=str(src), frames=9).resolve(variant)
    with pytest.raises(VideoInputError, match=r"has 5 frame\(s\), 9 needed") as e:
        check_images(short)
    assert e.value.field == "video" and "--frames 5" in e.value.remedy
    gone = GenerationRequest(prompt="x", task="v2v", video=str(tmp_path / "no.mp4")).resolve(
        variant
    )
    with pytest.raises(VideoInputError, match="not found"):
        check_images(gone)


@pytest.mark.parametrize("task", ["t2v", "v2v"])
def test_saved_settings_of_a_plain_run_resolve_again(task):
    """A saved non-VACE request carries no control scale (resolve refuses one outside vace)."""
    variant = get_variant("t2v-1.3B")
    kw = dict(video="v.mp4") if task == "v2v" else {}
    r = GenerationRequest(prompt="x", task=task, **kw).resolve(variant)
    assert r.to_dict()["control_scale"] is None
    assert GenerationRequest.from_dict(r.to_dict()).resolve(variant) == r


@pytest.mark.parametrize(
    ("boundary_step", "strength", "want"),
    [
        (None, 1.0, [0, 0, 0, 0, 1, 1]),  # by time: t ≥ 875 on the high-noise expert
        (None, 0.5, [0, 1, 1]),  # the tail: steps 3, 4, 5 of the grid
        (None, 0.34, [1, 1]),  # the tail starts below the boundary
        (5, 0.5, [0, 0, 1]),  # a recipe's boundary step counts from the grid's start
    ],
)
def test_two_experts_switch_where_the_full_grid_would(boundary_step, strength, want):
    from wan_desktop.pipeline import Conditioning, denoise

    r = GenerationRequest(
        prompt="x",
        task="v2v",
        video="v.mp4",
        strength=strength,
        steps=6,
        shift=12.0,
        guidance=1.0,
        guidance_low=1.0,
        boundary_step=boundary_step,
    ).resolve(get_variant("t2v-A14B"))
    calls: list[int] = []

    def expert(k):
        def model(x, t, context, **_):
            calls.append(k)
            return torch.zeros_like(x)

        return model

    x0 = torch.zeros(1, 4, 1, 2, 2)
    cond = Conditioning(context=torch.zeros(1, 2, 2), context_neg=None, video_latent=x0)
    denoise([expert(0), expert(1)], torch.ones_like(x0), cond, r, boundary=0.875)
    full = make_schedule("unipc", 6, 12.0).timesteps
    assert sum(t >= 875 for t in full) == 4  # (the grid the answers rest on)
    assert calls == want


def test_components_without_a_vae_encoder_say_how_to_get_one():
    """An engine folder exported for T2V has no VAE encoder (export's default for T2V models)."""
    import types

    from wan_desktop.video_to_video import encode_video

    r = GenerationRequest(prompt="x", task="v2v", video="v.mp4").resolve(get_variant("t2v-1.3B"))
    with pytest.raises(ConfigError) as e:
        encode_video(types.SimpleNamespace(vae_encoder=None), r, device="cpu")
    assert e.value.field == "task" and "--components t5,dit,vae,vae_encoder" in e.value.remedy
