"""SkyReels-V2 Diffusion Forcing runs against diffusers' own SkyReelsV2DiffusionForcingPipeline,
...ImageToVideoPipeline and ...VideoToVideoPipeline on the same tiny random weights: same seed,
UniPC on Wan's official σ grid, same negative prompt, text padded to 512; synchronous and
asynchronous schedules, with and without addnoise_condition, three windows or more.

The reference (tests/skyreels_models.reference_frames) seeds torch's global generator with seed + 1:
diffusers draws the carried frames' noise from it, we from a generator seeded so."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.numerics import psnr_uint8
from tests.skyreels_models import build_tiny_skyreels, reference_frames
from wan_desktop import diffusion_forcing as df
from wan_desktop.errors import ConfigError
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest
from wan_desktop.variants import NEGATIVE_PROMPT, SKYREELS_VARIANTS

pytest.importorskip("diffusers")

PROMPT = "A swan glides across a misty lake at dawn."
W, H, STEPS, SHIFT, SEED = 32, 32, 4, 8.0, 7


@pytest.fixture(scope="module")
def df13(tmp_path_factory):
    return build_tiny_skyreels(tmp_path_factory.mktemp("df13"), "skyreels-v2-df-1.3B-540P")


def _components(model, layout: str):
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
    return components, device


def _request(**kw) -> GenerationRequest:
    base = dict(prompt=PROMPT, width=W, height=H, steps=STEPS, shift=SHIFT, guidance=5.0, seed=SEED)
    return GenerationRequest(**(base | kw))


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, W)[None, :, None] * np.linspace(0.3, 1, H)[:, None, None]
    arr = (base + rng.uniform(0, 40, (H, W, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


# name: (frames, base_frames, overlap_history, ar_step, causal_block_size, addnoise, fps)
T2V_CASES = {
    "sync, 3 windows": (41, 17, 5, 0, 1, 0.0, 24),
    "sync, 3 windows, addnoise 20, fps 16": (41, 17, 5, 0, 1, 20.0, 16),
    "async ar 1 block 2, 4 windows": (37, 13, 5, 1, 2, 0.0, 24),
    "async ar 1 block 2, 4 windows, addnoise 20": (37, 13, 5, 1, 2, 20.0, 24),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(T2V_CASES))
def test_t2v_matches_diffusers_df_pipeline(df13, case):
    frames, base, overlap, ar, block, noise, fps = T2V_CASES[case]
    components, device = _components(df13, "diffusers")
    r = _request(
        frames=frames,
        base_frames=base,
        overlap_history=overlap,
        ar_step=ar,
        causal_block_size=block,
        addnoise_condition=noise,
        fps=fps,
    ).resolve(components.variant)
    assert r.negative_prompt == NEGATIVE_PROMPT
    plan = df.check(r, components.variant)
    assert plan.count >= 3
    ours = df.generate(components, r, device=device)
    ref = reference_frames(df13, r)
    assert ours.shape == ref.shape == (frames, H, W, 3)
    p = psnr_uint8(ours, ref)
    print(f"DF T2V {case} ({plan.count} windows): PSNR {p:.1f} dB vs diffusers")
    assert p >= 40.0


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official", "comfyui"])
def test_t2v_from_the_official_and_comfyui_files(df13, layout):
    components, device = _components(df13, layout)
    assert components.variant.name == "skyreels-v2-df-1.3B-540P"
    r = _request(
        frames=41, base_frames=17, overlap_history=5, addnoise_condition=20.0, batch_cfg=False
    ).resolve(components.variant)
    ours = df.generate(components, r, device=device)  # CFG as two calls, as diffusers
    p = psnr_uint8(ours, reference_frames(df13, r))
    print(f"DF T2V from the {layout} layout (CFG unbatched): PSNR {p:.1f} dB vs diffusers")
    assert p >= 40.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [(41, 17, 5, 0, 1, 20.0), (37, 13, 5, 1, 2, 0.0)], ids=["sync addnoise", "async"]
)
def test_i2v_matches_diffusers_df_image_pipeline(df13, tmp_path, case):
    frames, base, overlap, ar, block, noise = case
    components, device = _components(df13, "diffusers")
    image = _image(3)
    image.save(tmp_path / "first.png")
    r = _request(
        image=str(tmp_path / "first.png"),
        frames=frames,
        base_frames=base,
        overlap_history=overlap,
        ar_step=ar,
        causal_block_size=block,
        addnoise_condition=noise,
    ).resolve(components.variant)
    assert r.task.value == "i2v"
    ours = df.generate(components, r, device=device)
    ref = reference_frames(df13, r, "i2v", image=image)
    assert ours.shape == ref.shape
    p = psnr_uint8(ours, ref)
    print(f"DF I2V {'async' if ar else 'sync'} (addnoise {noise:g}): PSNR {p:.1f} dB vs diffusers")
    assert p >= 40.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [(37, 17, 5, 0, 1, 20.0), (37, 13, 5, 1, 2, 0.0), (25, 13, 9, 1, 2, 20.0)],
    ids=["sync", "async", "async, carried latents cut to whole blocks"],
)
def test_extend_matches_diffusers_df_video_pipeline(df13, tmp_path, case):
    """Continuing a video: ours writes the video once, then the frames after the carried latents;
    diffusers writes the video, then the whole decoded result, carried latents included: its
    frames after len(video) + the carried latents' frames are ours after the video. With
    overlap_history 9 (3 latents) and blocks of 2, 2 latents are carried (5 frames)."""
    frames, base, overlap, ar, block, noise = case
    components, device = _components(df13, "diffusers")
    src = tmp_path / "source"
    src.mkdir()
    video = [_image(10 + i) for i in range(11)]
    for i, im in enumerate(video):
        im.save(src / f"{i:05d}.png")
    r = _request(
        extend=str(src),
        frames=frames,
        base_frames=base,
        overlap_history=overlap,
        ar_step=ar,
        causal_block_size=block,
        addnoise_condition=noise,
    ).resolve(components.variant)
    plan = df.check(r, components.variant)
    kept: list[torch.Tensor] = []
    ours = df.generate(components, r, sink=kept.append, device=device)
    originals = torch.cat(kept)
    assert originals.shape == (11, H, W, 3)
    assert torch.equal(originals, torch.from_numpy(np.stack([np.asarray(v) for v in video])))
    ref = reference_frames(df13, r, "v2v", video=video)
    carried = (overlap - 1) // 4 + 1
    carried -= carried % block
    drop = 4 * (carried - 1) + 1  # the decoded frames of the carried latents
    assert ours.shape[0] == ref.shape[0] - len(video) - drop >= frames - overlap
    p = psnr_uint8(ours, ref[len(video) + drop :])
    what = f"{'async' if ar else 'sync'}, overlap {overlap}"
    print(f"DF extend {what} ({plan.count} windows): PSNR {p:.1f} dB")
    assert p >= 40.0


def test_timestep_matrix_sync_async_and_carried_frames():
    ts = [999, 900, 700]
    rows_t, rows_i, rows_u = df.timestep_matrix(3, ts, ar_step=0, ready=0, block=1)
    assert rows_t == [[999] * 3, [900] * 3, [700] * 3]  # synchronous: every frame together
    assert all(all(u) for u in rows_u)
    # asynchronous, blocks of 2 frames, 1 step behind; the first block carried (done, t = 0)
    rows_t, rows_i, rows_u = df.timestep_matrix(6, ts, ar_step=1, ready=2, block=2)
    assert rows_t[0] == [0, 0, 999, 999, 999, 999]
    assert rows_u[0] == [False, False, True, True, False, False]
    assert rows_t[1] == [0, 0, 900, 900, 999, 999]
    assert rows_t[-1] == [0, 0, 0, 0, 700, 700]
    assert rows_i[-1] == [4, 4, 4, 4, 3, 3]
    # every frame's solver steps exactly once per timestep, in order
    for f in range(6):
        steps = [row[f] for row, u in zip(rows_i, rows_u, strict=True) if u[f]]
        assert steps == ([] if f < 2 else [1, 2, 3])


def test_plan_and_check_windows():
    v = SKYREELS_VARIANTS["skyreels-v2-df-14B-540P"]
    r = GenerationRequest(prompt="x", frames=257).resolve(v)
    p = df.check(r, v)  # the README's 10 s example: 257 frames in 97-frame windows, overlap 17
    assert (p.total, p.base, p.overlap, p.sizes) == (65, 25, 5, (25, 25, 25))
    r737 = GenerationRequest(prompt="x", frames=737, ar_step=5, causal_block_size=5).resolve(v)
    assert df.check(r737, v).count == 9  # its 30 s asynchronous example
    assert df.plan(GenerationRequest(prompt="x", frames=97).resolve(v)).sizes == (25,)
    with pytest.raises(ConfigError, match="multiple of 5") as e:
        df.check(replace(r737, frames=741), v)
    assert e.value.field == "frames" and "--frames 737" in str(e.value.remedy)
    with pytest.raises(ConfigError, match="step cache"):
        df.check(r, v, step_cache=0.1)


def test_forcing_settings_are_validated_and_only_for_df_models():
    v = SKYREELS_VARIANTS["skyreels-v2-df-1.3B-540P"]
    for kw, field in (
        (dict(base_frames=20), "base_frames"),
        (dict(overlap_history=97), "overlap_history"),
        (dict(ar_step=-1), "ar_step"),
        (dict(causal_block_size=0), "causal_block_size"),
        (dict(addnoise_condition=-1.0), "addnoise_condition"),
        (dict(fps=0), "fps"),
    ):
        with pytest.raises(ConfigError) as e:
            GenerationRequest(prompt="x", **kw).resolve(v)
        assert e.value.field == field
    from wan_desktop.variants import VARIANTS

    with pytest.raises(ConfigError, match="SkyReels-V2 Diffusion Forcing") as e:
        GenerationRequest(prompt="x", ar_step=5).resolve(VARIANTS["t2v-1.3B"])
    assert e.value.field == "ar_step"


def test_extend_needs_frames_after_the_overlap(tmp_path: Path):
    v = SKYREELS_VARIANTS["skyreels-v2-df-1.3B-540P"]
    src = tmp_path / "v"
    src.mkdir()
    for i in range(5):
        _image(i).save(src / f"{i:05d}.png")
    r = GenerationRequest(prompt="x", extend=str(src), frames=17).resolve(v)
    with pytest.raises(ConfigError, match="more than that") as e:
        df.check(r, v)
    assert e.value.field == "frames"
    with pytest.raises(ConfigError, match="has 5 frame") as e:
        df.check(replace(r, frames=41), v)  # 17 frames to carry over, the video has 5
    assert e.value.field == "extend"


@pytest.mark.slow
def test_plain_skyreels_t2v_runs_the_wan_pipeline(tmp_path):
    """The non-DF SkyReels-V2 T2V is a Wan2.1 DiT: detected by its diffusers classes / release
    name, it runs the ordinary pipeline, equal to diffusers' SkyReelsV2Pipeline."""
    from diffusers import SkyReelsV2Pipeline

    from tests.reference import diffusers_unipc
    from wan_desktop.pipeline import generate

    model = build_tiny_skyreels(tmp_path, "skyreels-v2-t2v-14B-540P")
    for layout in ("diffusers", "official"):
        components, device = _components(model, layout)
        assert components.variant.name.startswith("skyreels-v2-t2v-"), layout
        assert components.variant.forcing is None
    r = _request(frames=9).resolve(components.variant)
    ours = generate(components, r, device=device)
    refs = model.refs
    pipe = SkyReelsV2Pipeline(
        tokenizer=refs["tokenizer"],
        text_encoder=refs["text_encoder"],
        vae=refs["vae"],
        transformer=refs["transformer"],
        scheduler=diffusers_unipc(r.shift),
    )
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        video = pipe(
            prompt=r.prompt,
            negative_prompt=r.negative_prompt,
            height=H,
            width=W,
            num_frames=9,
            num_inference_steps=r.steps,
            guidance_scale=r.guidance,
            generator=torch.Generator().manual_seed(r.seed),
            output_type="np",
            max_sequence_length=512,
        ).frames[0]
    ref = torch.from_numpy((video * 255).astype(np.uint8))
    p = psnr_uint8(ours, ref)
    print(f"SkyReels-V2 T2V (plain Wan2.1 DiT, official layout): PSNR {p:.1f} dB vs diffusers")
    assert p >= 40.0


def test_cancel_stops_within_a_step_and_writes_nothing(tmp_path):
    """A cancelled DF run raises Cancelled at the next model call and never decodes."""
    from wan_desktop.engines.factory import build_components

    from tests.skyreels_models import tiny_skyreels
    from wan_desktop.cancel import CancelToken
    from wan_desktop.errors import Cancelled
    from wan_desktop.pipeline import StepDone

    variant = tiny_skyreels("skyreels-v2-df-1.3B-540P")
    options = RunOptions(device="cpu", dtype="float32", random_weights=variant.name)
    components, _device = build_components(options, variant, None)
    r = _request(frames=41, base_frames=17, overlap_history=5, steps=2).resolve(variant)
    token = CancelToken()
    steps: list[int] = []

    def emit(event):
        if isinstance(event, StepDone):
            steps.append(event.step)
            if event.window == 2:
                token.cancel()

    decoded = []
    components.vae_decoder.decode_frames = lambda lat: decoded.append(lat)  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        df.generate_to_file(components, r, tmp_path / "out.mp4", cancel=token, emit=emit)
    assert steps == [1, 2, 1]  # window 1's two calls, window 2's first, then nothing
    assert not decoded and not list(tmp_path.iterdir())


def test_prepare_plans_memory_for_one_window_and_notes_the_windows(tmp_path, monkeypatch):
    """A 257-frame DF-14B run in 57-frame windows is planned for a 57-frame window (the DiT never
    holds more), and prepare() says how many windows it runs."""
    from wan_desktop.engines.factory import EngineFactory

    from wan_desktop import run

    planned: list[int] = []
    real = run.plans_for_run

    def plans_for_run(variant, request, **kw):
        planned.append(request.frames)
        return real(variant, request, **kw)

    monkeypatch.setattr(run, "plans_for_run", plans_for_run)
    prepared = run.prepare(
        GenerationRequest(prompt="a swan", frames=257, base_frames=57),
        RunOptions(random_weights="skyreels-v2-df-14B-540P", device="cpu", vram_budget_gb=24.0),
        out=tmp_path / "x.mp4",
        factory=EngineFactory(),
        planning=run.Planning.ALWAYS,
    )
    assert prepared.variant.name == "skyreels-v2-df-14B-540P" and prepared.request.frames == 257
    assert planned == [57] and prepared.plans
    assert any("6 window(s) of 15 latent frames" in n for n in prepared.notes)
    assert df.one_window(prepared.request).frames == 57


def test_every_call_reports_its_window_and_previews_the_window():
    """Progress is per model call and window (window 2/3 · call 4/4); the preview is the window's
    current x0 [z, T_w, h, w] (every call here; none with preview_every=0), close to what the
    window ends as at its last call."""
    from wan_desktop.engines.factory import build_components

    from tests.skyreels_models import tiny_skyreels
    from wan_desktop.pipeline import StageStarted, StepDone

    variant = tiny_skyreels("skyreels-v2-df-1.3B-540P")
    options = RunOptions(device="cpu", dtype="float32", random_weights=variant.name)
    components, device = build_components(options, variant, None)
    r = _request(frames=41, base_frames=17, overlap_history=5, steps=4).resolve(variant)
    events: list = []
    latents = df.sample(components, r, emit=events.append, device=device)
    steps = [e for e in events if isinstance(e, StepDone)]
    assert [(e.window, e.windows, e.step, e.total) for e in steps[:5]] == [
        (1, 3, 1, 4), (1, 3, 2, 4), (1, 3, 3, 4), (1, 3, 4, 4), (2, 3, 1, 4)
    ]  # fmt: skip
    assert [e.window for e in events if isinstance(e, StageStarted)] == [1, 2, 3]
    assert all(e.preview is not None and e.preview.shape == (16, 5, 4, 4) for e in steps)
    last = steps[-1].preview
    assert torch.allclose(last[:, 2:], latents[0, :, -3:], atol=0.2 * float(latents.abs().max()))
    quiet: list = []
    df.sample(components, r, emit=quiet.append, device=device, preview_every=0)
    assert all(e.preview is None for e in quiet if isinstance(e, StepDone))


def test_review_before_decode(tmp_path):
    """The app's review: asked once with every window's latents; DECODE writes the same video as
    no review, DISCARD raises Discarded before the VAE and writes nothing."""
    from wan_desktop.engines.factory import build_components

    from tests.skyreels_models import tiny_skyreels
    from wan_desktop.pipeline import Discarded, Verdict

    variant = tiny_skyreels("skyreels-v2-df-1.3B-540P")
    options = RunOptions(device="cpu", dtype="float32", random_weights=variant.name)
    components, device = build_components(options, variant, None)
    r = _request(frames=41, base_frames=17, overlap_history=5, steps=2).resolve(variant)
    seen: list[tuple[int, ...]] = []

    def review(verdict):
        def ask(latents):
            seen.append(tuple(latents.shape))
            return verdict

        return ask

    plain = df.generate(components, r, device=device)
    kept = df.generate(components, r, device=device, review=review(Verdict.DECODE))
    assert torch.equal(plain, kept) and seen == [(16, 11, 4, 4)]
    with pytest.raises(Discarded):
        df.generate_to_file(components, r, tmp_path / "x.mp4", review=review(Verdict.DISCARD))
    assert not list(tmp_path.iterdir())
