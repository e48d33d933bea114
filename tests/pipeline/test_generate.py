"""The generation loop with fake components: event order, cancel, CFG, expert switch, conditioning."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fakes import fake_components
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, ConfigError
from wan_desktop.pipeline import (
    Finished,
    GenerationRequest,
    StageStarted,
    StepDone,
    generate,
    initial_noise,
)
from wan_desktop.samplers import Sampler, make_schedule
from wan_desktop.variants import Task

W, H, F = 64, 32, 9


def _req(**kw) -> GenerationRequest:
    base = dict(prompt="a cat", width=W, height=H, frames=F, steps=5, seed=3)
    return GenerationRequest(**(base | kw))


def _image(path, w=W, h=H):
    arr = (np.random.default_rng(0).uniform(0, 255, (h, w, 3))).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


def test_events_come_in_order_with_a_preview_every_step():
    comps, _parts = fake_components()
    events = []
    frames = generate(comps, _req().resolve(comps.variant), emit=events.append)
    kinds = [type(e).__name__ if not isinstance(e, StageStarted) else e.stage for e in events]
    assert kinds == ["encode", "denoise", *["StepDone"] * 5, "decode", "Finished"]
    steps = [e for e in events if isinstance(e, StepDone)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5] and all(e.total == 5 for e in steps)
    assert all(e.preview is not None and e.preview.shape == (16, 3, 4, 8) for e in steps)
    assert [e.timestep for e in steps] == list(make_schedule("unipc", 5, 5.0).timesteps)
    assert isinstance(events[-1], Finished) and events[-1].frames == F
    assert frames.dtype == torch.uint8 and frames.shape == (F, H, W, 3)


def test_cancel_mid_denoise_never_decodes():
    comps, parts = fake_components(delay=0.02)
    token = CancelToken()
    seen = []

    def emit(e):
        seen.append(e)
        if isinstance(e, StepDone) and e.step == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        generate(comps, _req(steps=20).resolve(comps.variant), cancel=token, emit=emit)
    assert parts["vae"].calls == []  # the VAE never ran
    assert len(parts["denoisers"][0].calls) == 2  # stopped within one step (batched CFG)
    assert not any(isinstance(e, StageStarted) and e.stage == "decode" for e in seen)


def test_cancel_from_another_thread_stops_within_one_step():
    comps, parts = fake_components(delay=0.05)
    token = CancelToken()
    den = parts["denoisers"][0]
    t = threading.Thread(target=lambda: (den.started.wait(5), token.cancel()))
    t.start()
    with pytest.raises(Cancelled):
        generate(comps, _req(steps=50, batch_cfg=False).resolve(comps.variant), cancel=token)
    t.join()
    assert len(den.calls) <= 2  # the call in flight, at most one more half-step (uncond)


def test_guidance_one_runs_no_uncond_pass():
    comps, parts = fake_components()
    generate(comps, _req(guidance=1.0, steps=4).resolve(comps.variant))
    den = parts["denoisers"][0]
    assert len(den.calls) == 4 and all(c["shape"][0] == 1 for c in den.calls)
    assert parts["text"].calls == [{"prompts": ["a cat"]}]


def test_batched_cfg_equals_sequential():
    out = {}
    for batch in (True, False):
        comps, parts = fake_components()
        out[batch] = generate(comps, _req(batch_cfg=batch).resolve(comps.variant))
        n = len(parts["denoisers"][0].calls)
        assert n == (5 if batch else 10)
    assert torch.equal(out[True], out[False])


def test_initial_noise_is_cpu_float32_randn_of_the_seed():
    g = torch.Generator().manual_seed(1234)
    want = torch.randn((1, 16, 3, 4, 8), generator=g, dtype=torch.float32)
    assert torch.equal(initial_noise((1, 16, 3, 4, 8), 1234), want)
    comps, parts = fake_components()
    generate(comps, _req(seed=1234, guidance=1.0, steps=1).resolve(comps.variant))
    assert torch.equal(parts["denoisers"][0].calls[0]["latents"], want)  # the model saw it


def test_same_seed_same_video_other_seed_differs():
    a = generate(*_fake())
    b = generate(*_fake())
    c = generate(*_fake(seed=4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _fake(seed=3):
    comps, _ = fake_components()
    return comps, _req(seed=seed).resolve(comps.variant)


def test_wan22_switches_experts_exactly_at_the_boundary():
    comps, parts = fake_components("t2v-A14B")
    generate(
        comps, _req(steps=40, shift=12.0, guidance=4.0, guidance_low=3.0).resolve(comps.variant)
    )
    high, low = parts["denoisers"]
    assert (len(high.calls), len(low.calls)) == (26, 14)
    assert all(float(c["timestep"][0]) >= 875 for c in high.calls)
    assert all(float(c["timestep"][0]) < 875 for c in low.calls)


def test_wan22_per_expert_guidance_is_used():
    """Guidance 1 on the low-noise expert means no uncond pass there (batch of 1)."""
    comps, parts = fake_components("t2v-A14B")
    generate(
        comps, _req(steps=10, shift=12.0, guidance=4.0, guidance_low=1.0).resolve(comps.variant)
    )
    high, low = parts["denoisers"]
    assert all(c["shape"][0] == 2 for c in high.calls)
    assert all(c["shape"][0] == 1 for c in low.calls)


def test_ti2v_keeps_the_image_latent_and_gives_first_frame_tokens_t0(tmp_path):
    comps, parts = fake_components("ti2v-5B")
    w = h = 64
    req = _req(task="ti2v", image=_image(tmp_path / "a.png", w, h), width=w, height=h, steps=4)
    generate(comps, req.resolve(comps.variant))
    vae = parts["vae"]
    encoded = [c for c in vae.calls if "encode" in c]
    assert encoded and encoded[0]["encode"] == (1, 3, 1, h, w)  # the image alone, one frame
    final = next(c for c in vae.calls if "decode" in c)["decode"]
    den = parts["denoisers"][0]
    tokens_per_frame = (h // 16 // 2) * (w // 16 // 2)
    for call in den.calls:
        t = call["timestep"]
        assert t.shape == (2, 3 * tokens_per_frame)  # per token, cond+uncond batch
        assert torch.all(t[:, :tokens_per_frame] == 0) and torch.all(t[:, tokens_per_frame:] > 0)
    # the first latent frame decoded is the encoded image, untouched by the sampler
    from wan_desktop.pipeline import load_image

    image_latent = vae.encode(load_image(req.image, w, h)[:, :, None])
    assert final.shape[2] == 3 and torch.equal(final[:, :, :1], image_latent)


def test_i2v_mask_marks_first_frame_and_flf2v_last(tmp_path):
    img = _image(tmp_path / "a.png")
    comps, parts = fake_components("i2v-14B")
    generate(comps, _req(task="i2v", image=img, steps=2).resolve(comps.variant))
    y = parts["denoisers"][0].calls[0]["y"]
    assert y.shape == (2, 20, 3, 4, 8)
    assert torch.all(y[:, :4, 0] == 1) and torch.all(y[:, :4, 1:] == 0)
    assert parts["denoisers"][0].calls[0]["clip_fea"].shape == (2, 5, 160)
    comps, parts = fake_components("flf2v-14B")
    generate(comps, _req(task="flf2v", image=img, last_image=img, steps=2).resolve(comps.variant))
    y = parts["denoisers"][0].calls[0]["y"]
    # the last pixel frame is the 4th of the last latent frame's four: only mask channel 3
    assert torch.all(y[:, :4, 0] == 1) and torch.all(y[:, 3, -1] == 1)
    assert torch.all(y[:, :3, -1] == 0) and torch.all(y[:, :4, 1:-1] == 0)
    assert parts["denoisers"][0].calls[0]["clip_fea"].shape == (2, 10, 160)  # two images


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(width=50), "not a multiple of 16"),
        (dict(frames=6), r"4n\+1"),
        (dict(steps=0), "at least 1"),
        (dict(task="i2v"), "cannot do i2v"),
        (dict(sampler="ddim"), "unknown sampler"),
        (dict(last_image="x.png"), "only used by the flf2v"),
        (dict(seed=-1), "seed"),
        (dict(guidance=float("nan")), "guidance"),
        (dict(guidance=1e308), r"guidance must be at most 100, got 1e\+308"),
        (dict(guidance=100.5), "guidance must be at most 100, got 100.5"),
        (dict(guidance_low=1e3), "guidance-low must be at most 100, got 1000"),
        (dict(shift=1e6), r"shift must be at most 100, got 1e\+06"),
    ],
)
def test_request_validation_names_the_value(kw, match):
    comps, _ = fake_components()
    with pytest.raises(ConfigError, match=match):
        _req(**kw).resolve(comps.variant)


def test_guidance_and_shift_up_to_100_are_accepted():
    """The bound is ComfyUI's own range top; every preset and variant default is far below it."""
    from wan_desktop.presets import PRESETS
    from wan_desktop.request import MAX_GUIDANCE_SHIFT
    from wan_desktop.variants import VARIANTS

    comps, _ = fake_components()
    r = _req(guidance=100.0, guidance_low=100.0, shift=100.0).resolve(comps.variant)
    assert (
        (r.guidance, r.guidance_low, r.shift) == (100.0, 100.0, 100.0) == (MAX_GUIDANCE_SHIFT,) * 3
    )
    d = [v.defaults for v in VARIANTS.values()]
    top = max(x for v in d for x in (v.guidance, v.guidance_low or 0, v.shift, v.shift_480p or 0))
    top = max(
        [top, *(x or 0 for p in PRESETS.values() for x in (p.guidance, p.guidance_low, p.shift))]
    )
    assert top == 16.0  # FLF2V's shift: the largest value any recipe uses


def test_defaults_come_from_the_variant():
    from wan_desktop.variants import NEGATIVE_PROMPT, VARIANTS

    r = GenerationRequest(prompt="x").resolve(VARIANTS["t2v-1.3B"])
    assert (r.width, r.height, r.frames, r.steps, r.guidance, r.shift, r.sampler, r.task) == (
        832,
        480,
        81,
        50,
        5.0,
        5.0,
        Sampler.UNIPC,
        Task.T2V,
    )
    assert r.negative_prompt == NEGATIVE_PROMPT
    r = GenerationRequest(prompt="x").resolve(VARIANTS["t2v-A14B"])
    assert (r.steps, r.guidance, r.guidance_low, r.shift, r.width) == (40, 4.0, 3.0, 12.0, 1280)
    r = GenerationRequest(prompt="x", task="i2v", image="a.png", width=832, height=480).resolve(
        VARIANTS["i2v-14B"]
    )
    assert r.shift == 3.0 and r.negative_prompt.startswith("镜头晃动")
    r = GenerationRequest(prompt="x").resolve(VARIANTS["ti2v-5B"])
    assert (r.frames, r.width, r.height) == (121, 1280, 704)


# ----------------------------------------------------------------------------- added checks


def test_fakes_implement_the_component_protocols():
    from wan_desktop.contracts import Denoiser, ImageEncoder, TextEncoder, VaeDecoder, VaeEncoder

    _comps, parts = fake_components("i2v-14B")
    assert isinstance(parts["text"], TextEncoder) and isinstance(parts["image"], ImageEncoder)
    assert all(isinstance(d, Denoiser) for d in parts["denoisers"])
    assert isinstance(parts["vae"], VaeDecoder) and isinstance(parts["vae"], VaeEncoder)
    parts["vae"].load("cpu")
    parts["vae"].unload()
    assert parts["journal"] == [("vae", "load", "cpu"), ("vae", "unload", "cpu")]
    assert not parts["vae"].loaded


def test_wan22_each_expert_applies_its_own_guidance():
    """Recover the guidance from the update itself: with Euler, x' = x + dσ·v and the fake gives
    v_c − v_u = mean(ctx_c) − mean(ctx_u), so g = (v − v_u) / (v_c − v_u) on every step. The last
    preview (x0 at the final step) is what the VAE decodes."""
    comps, parts = fake_components("t2v-A14B")
    req = _req(steps=10, shift=12.0, guidance=4.0, guidance_low=2.5, sampler="euler").resolve(
        comps.variant
    )
    previews = []
    generate(
        comps, req, emit=lambda e: previews.append(e.preview) if isinstance(e, StepDone) else None
    )
    high, low = parts["denoisers"]
    calls = [(c, 4.0) for c in high.calls] + [(c, 2.5) for c in low.calls]  # high t first
    calls, want = zip(*calls, strict=True)
    assert list(calls) == sorted(calls, key=lambda c: -float(c["timestep"][0]))
    xs = [c["latents"][:1] for c in calls] + [parts["vae"].calls[-1]["decode"]]
    sig = make_schedule("euler", 10, 12.0).sigmas
    got = []
    for i, c in enumerate(calls):
        v = (xs[i + 1] - xs[i]) / (sig[i + 1] - sig[i])
        b_c, b_u = c["context"].float().mean(dim=(1, 2)).tolist()
        v_u = 0.5 * xs[i] + b_u
        got.append(float(((v - v_u) / (b_c - b_u)).mean()))
    print("recovered guidance per step:", [round(g, 4) for g in got])
    assert len(high.calls) >= 1 and len(low.calls) >= 1
    assert np.allclose(got, list(want), atol=1e-3)
    assert torch.allclose(previews[-1], xs[-1][0], atol=1e-6)


def test_batched_cfg_equals_sequential_on_a_real_tiny_model():
    """A tiny random-weight DiT: cond+uncond as one batch of 2 == two calls (the planner switches
    between them to save memory, so they must give the same video)."""
    from wan_desktop.engines.torch_backend import build_torch_components

    from tests.numerics import rel_err
    from tests.tiny import tiny_variant

    variant = tiny_variant("t2v-1.3B")
    comps = build_torch_components(variant, None, device=torch.device("cpu"), dtype=torch.float32)
    decode = comps.vae_decoder.decode_frames
    latents = {}

    def run(**kw):
        def spy(x):
            latents[tuple(kw.items())] = x.clone()
            return decode(x)

        comps.vae_decoder.decode_frames = spy
        try:
            return generate(comps, _req(steps=4, **kw).resolve(variant))
        finally:
            comps.vae_decoder.decode_frames = decode

    batched, sequential = run(batch_cfg=True), run(batch_cfg=False)
    run(guidance=1.0)
    lb, ls, l1 = (
        latents[k] for k in ((("batch_cfg", True),), (("batch_cfg", False),), (("guidance", 1.0),))
    )
    err, cfg_effect = rel_err(lb, ls), rel_err(lb, l1)
    frame_diff = (batched.int() - sequential.int()).abs().max().item()
    print(
        f"batched vs sequential CFG: latent rel err {err:.2e}, max frame diff {frame_diff}; "
        f"CFG vs none: {cfg_effect:.2e}"
    )
    assert err <= 1e-5 and frame_diff <= 1
    assert cfg_effect > 1e-2  # the uncond pass matters, so equality above means something


def test_generate_to_file_writes_nothing_when_the_run_fails_or_is_cancelled(tmp_path):
    from wan_desktop.errors import OutOfVram
    from wan_desktop.pipeline import generate_to_file

    comps, parts = fake_components(fail_at_step=2)
    for out in (tmp_path / "f.mp4", tmp_path / "frames"):
        with pytest.raises(OutOfVram):
            generate_to_file(comps, _req().resolve(comps.variant), out)
    assert parts["vae"].calls == [] and list(tmp_path.iterdir()) == []

    comps, parts = fake_components()
    token = CancelToken()
    with pytest.raises(Cancelled):
        generate_to_file(
            comps,
            _req().resolve(comps.variant),
            tmp_path / "c.mp4",
            cancel=token,
            emit=lambda e: token.cancel() if isinstance(e, StepDone) else None,
        )
    assert len(parts["denoisers"][0].calls) == 1 and list(tmp_path.iterdir()) == []


def test_generate_to_file_sidecar_keeps_json_types(tmp_path):
    from wan_desktop.options import RunOptions
    from wan_desktop.pipeline import generate_to_file

    comps, _ = fake_components()
    comps.info.update(random_weights=True, path=tmp_path, swap_blocks=0, step_cache=None)
    out = generate_to_file(
        comps,
        _req().resolve(comps.variant),
        tmp_path / "v.mp4",
        options=RunOptions(random_weights="t2v-1.3B"),
    )
    meta = __import__("json").loads((tmp_path / "v.mp4.json").read_text())
    assert out.is_file() and meta["model"]["random_weights"] is True
    assert meta["model"]["swap_blocks"] == 0 and meta["model"]["step_cache"] is None
    assert meta["model"]["path"] == str(tmp_path) and meta["request"]["seed"] == 3


def test_generate_to_file_checks_the_output_path_before_running(tmp_path):
    from wan_desktop.pipeline import generate_to_file

    comps, parts = fake_components()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    for out, match in (
        (tmp_path / "gone" / "v.mp4", "does not exist"),
        (tmp_path / "full", "not an empty folder"),
    ):
        with pytest.raises(ConfigError, match=match):
            generate_to_file(comps, _req().resolve(comps.variant), out)
    assert parts["denoisers"][0].calls == [] and parts["text"].calls == []
    # an empty folder the user made is fine: it becomes the PNG folder
    (tmp_path / "empty").mkdir()
    out = generate_to_file(comps, _req().resolve(comps.variant), tmp_path / "empty")
    assert sorted(p.name for p in out.iterdir())[-2:] == ["00008.png", "settings.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]
