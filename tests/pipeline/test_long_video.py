"""Long videos by sliding windows (wan_desktop/long_video.py): the window plan, the exact frame
count (overlaps written once), how each model continues the previous window (T2V: held latents
re-noised to each σ; TI2V: clean carried latents at t = 0; I2V / FLF2V: the previous window's last
frames as image conditioning, FLF2V's end frame in the last window only), per-window prompts, the
window in progress events, cancel (nothing written), --extend, and host memory bounded by one
window whatever the length.

Fake components (tests/fakes.py) where the numbers of a real DiT would hide what is checked; the
run owner with a real tiny model at the end."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fakes import fake_components
from tests.live_bytes import LiveBytes
from wan_desktop import long_video as LV
from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, ConfigError
from wan_desktop.pipeline import Finished, StageStarted, StepDone, generate
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import make_schedule

W, H = 64, 32


def _req(**kw) -> GenerationRequest:
    base = dict(prompt="a cat", width=W, height=H, frames=49, window_frames=17, steps=3, seed=3)
    return GenerationRequest(**(base | kw))


def _image(path: Path, seed: int = 0, w: int = W, h: int = H) -> str:
    arr = np.random.default_rng(seed).uniform(0, 255, (h, w, 3)).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


def _run(comps, request, **kw) -> tuple[torch.Tensor, list]:
    chunks, events = [], []
    n = LV.generate_long(comps, request, chunks.append, emit=events.append, **kw)
    video = torch.cat(chunks)
    assert video.shape[0] == n
    return video, events


# ----------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(
    ("frames", "window", "overlap", "count"),
    [
        (49, 17, 2, 4),
        (157, 81, 2, 2),
        (161, 81, 2, 3),
        (81 * 8, 81, 2, 9),
        (85, 81, 1, 2),
        (33, 17, 4, 5),
    ],
)
def test_windows_cover_every_frame_once_and_overlap_by_p_frames(frames, window, overlap, count):
    frames = (frames - 1) // 4 * 4 + 1
    r = _req(frames=frames, window_frames=window, window_overlap=overlap).resolve(
        fake_components()[0].variant
    )
    plan = LV.plan_windows(r)
    p = 4 * (overlap - 1) + 1
    ws = plan.windows
    assert plan.count == count and plan.overlap_frames == p
    assert ws[0].held == 0 and all(w.held == overlap for w in ws[1:-1])
    # every window is whole (engines are built for one size): the last carries more instead
    assert all(w.frames == window for w in ws)
    assert overlap <= ws[-1].held < (window - 1) // 4 + 1
    assert [w.last for w in ws] == [False] * (count - 1) + [True]
    # each window starts where the frames it re-makes begin; the last ends at the last frame
    for a, b in itertools.pairwise(ws):
        assert 4 * b.start == 4 * a.start + a.frames - b.overlap_frames
    assert 4 * ws[-1].start + ws[-1].frames == frames
    # what each adds sums to the video: nothing twice, nothing missing
    assert ws[0].frames + sum(w.frames - w.overlap_frames for w in ws[1:]) == frames


def test_prompts_split_on_bars_or_lines_and_the_last_repeats():
    assert LV.split_prompts("a cat | a dog\na bird") == ("a cat", "a dog", "a bird")
    assert LV.split_prompts("one|two") == ("one|two",)  # only " | " separates
    comps, parts = fake_components()
    r = _req(prompt="a cat | a dog", guidance=1.0).resolve(comps.variant)
    assert [w.prompt for w in LV.plan_windows(r).windows] == ["a cat", "a dog", "a dog", "a dog"]
    _run(comps, r)
    assert [c["prompts"] for c in parts["text"].calls] == [["a cat"]] + [["a dog"]] * 3


def test_window_and_overlap_are_checked_with_their_field():
    v = fake_components()[0].variant
    for kw, field in (
        ({"window_frames": 18}, "window_frames"),
        ({"window_frames": 1}, "window_frames"),
        ({"window_overlap": 0}, "window_overlap"),
        ({"window_overlap": 5}, "window_overlap"),  # a 17-frame window has 5 latent frames
    ):
        with pytest.raises(ConfigError) as e:
            _req(**kw).resolve(v)
        assert e.value.field == field
    assert not LV.is_long(_req(frames=17).resolve(v)) and LV.is_long(_req(frames=21).resolve(v))


# ----------------------------------------------------------------------------- T2V


@pytest.mark.parametrize(
    ("frames", "overlap"), [(21, 2), (49, 2), (97, 2), (45, 1), (45, 2), (41, 3), (33, 4)]
)
def test_every_frame_is_written_once_at_its_place(frames, overlap):
    """The fake VAE decodes each latent frame alone and T2V windows keep the carried latents
    exactly, so the video must be the decode of the whole latent sequence the windows made:
    any frame missing, repeated or out of place would show."""
    comps, parts = fake_components()
    r = _req(frames=frames, window_overlap=overlap).resolve(comps.variant)
    video, events = _run(comps, r)
    assert video.shape == (frames, H, W, 3) and video.dtype == torch.uint8
    assert isinstance(events[-1], Finished) and events[-1].frames == frames
    plan = LV.plan_windows(r)
    decoded = [c["decode"] for c in parts["vae"].calls if "decode" in c]
    whole = torch.zeros(1, 16, (frames - 1) // 4 + 1, *decoded[0].shape[3:])
    for w, lat in zip(plan.windows, decoded, strict=True):
        whole[:, :, w.start : w.start + w.latent_frames] = lat
    assert torch.equal(video, parts["vae"].decode_frames(whole))


def test_t2v_windows_hold_the_carried_latents_renoised_to_each_sigma_and_exact_at_the_end():
    comps, parts = fake_components(a=0.3)
    r = _req(frames=29, guidance=1.0, steps=4).resolve(comps.variant)  # windows of 5 + 5 latents
    _run(comps, r)
    decoded = [c["decode"] for c in parts["vae"].calls if "decode" in c]
    assert len(decoded) == 2
    carried = decoded[0][:, :, -2:]
    assert torch.equal(decoded[1][:, :, :2], carried)  # σ = 0 at the end: the latents themselves
    sched = make_schedule(r.sampler, r.steps, r.shift)
    second = parts["denoisers"][0].calls[r.steps :]  # the second window's model inputs
    from wan_desktop.pipeline import initial_noise

    noise = initial_noise(tuple(second[0]["latents"].shape), r.seed + 1)
    for i, call in enumerate(second):
        s = sched.sigmas[i]
        want = (1 - s) * carried + s * noise[:, :, :2]
        torch.testing.assert_close(call["latents"][:, :, :2], want, rtol=0, atol=1e-6)
        assert not torch.allclose(call["latents"][:, :, 2:], decoded[1][:, :, 2:])


def test_the_first_window_is_a_one_window_run():
    comps, _ = fake_components()
    long_video, _ = _run(comps, _req(frames=49).resolve(comps.variant))
    comps, _ = fake_components()
    one = generate(comps, _req(frames=17).resolve(comps.variant))
    # window 1's frames up to the overlap are written unchanged; the overlap is blended with
    # window 2's decode of the same latents, which this VAE (each latent alone) re-makes exactly
    assert torch.equal(long_video[:17], one)


def test_the_overlap_is_a_crossfade_of_both_windows():
    a = torch.full((5, 2, 2, 3), 0, dtype=torch.uint8)
    b = torch.full((5, 2, 2, 3), 240, dtype=torch.uint8)
    mixed = LV.crossfade(a, b)
    assert mixed[:, 0, 0, 0].tolist() == [40, 80, 120, 160, 200]


def test_events_name_the_window_and_steps_restart_in_each():
    comps, _ = fake_components()
    _, events = _run(comps, _req(frames=49).resolve(comps.variant))
    steps = [(e.window, e.windows, e.step) for e in events if isinstance(e, StepDone)]
    assert steps == [(w, 4, s) for w in (1, 2, 3, 4) for s in (1, 2, 3)]
    stages = [(e.window, e.stage) for e in events if isinstance(e, StageStarted)]
    assert stages == [(w, s) for w in (1, 2, 3, 4) for s in ("encode", "denoise", "decode")]


def test_cancel_in_a_later_window_stops_within_one_step_and_writes_nothing(tmp_path):
    comps, parts = fake_components(delay=0.01)
    token = CancelToken()
    r = _req(frames=49).resolve(comps.variant)

    def emit(e):
        if isinstance(e, StepDone) and e.window == 3 and e.step == 1:
            token.cancel()

    out = tmp_path / "long.mp4"
    with pytest.raises(Cancelled):
        LV.generate_to_file(comps, r, out, cancel=token, emit=emit)
    assert len(parts["denoisers"][0].calls) == 2 * 3 + 1  # two windows and one step
    assert list(tmp_path.iterdir()) == []  # no video, no sidecar, no temporary file


def test_a_png_folder_holds_the_video_and_its_window_plan(tmp_path):
    comps, _ = fake_components()
    r = _req(frames=49).resolve(comps.variant)
    out = LV.generate_to_file(comps, r, tmp_path / "frames")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:05d}.png" for i in range(49)] + ["settings.json"]
    import json

    meta = json.loads((out / "settings.json").read_text())
    assert meta["windows"] == 4 and meta["frames_written"] == 49
    assert meta["request"]["window_frames"] == 17 and meta["request"]["window_overlap"] == 2
    assert list(meta) == [  # pipeline.output_metadata's keys, then the window plan and timing
        *("app", "version", "variant", "fps", "request", "options", "device", "model"),
        *("windows", "window_plan", "seconds", "created", "frames_written"),
    ]
    assert meta["model"] == {"fake": True, "random_weights": False, "variant": "t2v-1.3B"}
    assert (
        meta["window_plan"]
        == "4 windows of up to 17 frames, 5 frame(s) of overlap (2 latent), 49 frames"
    )


# ----------------------------------------------------------------------------- TI2V, I2V, FLF2V


def test_ti2v_continues_through_its_first_frame_latents_at_t0(tmp_path):
    comps, parts = fake_components("ti2v-5B")
    w = h = 64
    r = _req(task="ti2v", image=_image(tmp_path / "a.png", w=w, h=h), width=w, height=h)
    r = r.resolve(comps.variant)
    _run(comps, replace(r, guidance=1.0))
    decoded = [c["decode"] for c in parts["vae"].calls if "decode" in c]
    tokens_per_frame = (h // 16 // 2) * (w // 16 // 2)
    calls = parts["denoisers"][0].calls
    plan = LV.plan_windows(r)
    for k in range(1, 4):  # every later window starts with the last latents made, kept clean
        n = plan.windows[k].held  # 2, the last window 3 (it is whole: it carries more)
        assert n == (2 if k < 3 else 3)
        assert torch.equal(decoded[k][:, :, :n], decoded[k - 1][:, :, -n:])
        for c in calls[3 * k : 3 * k + 3]:
            t = c["timestep"][0]
            assert (t[: n * tokens_per_frame] == 0).all() and (t[n * tokens_per_frame :] > 0).all()
            assert torch.equal(c["latents"][:, :, :n], decoded[k - 1][:, :, -n:])
    assert sum(1 for c in parts["vae"].calls if "encode" in c) == 1  # the input image only


def test_i2v_windows_condition_on_the_previous_windows_last_frames(tmp_path):
    comps, parts = fake_components("i2v-14B")
    r = _req(task="i2v", image=_image(tmp_path / "a.png"), color_match=False)
    video, _ = _run(comps, replace(r.resolve(comps.variant), guidance=1.0))
    assert video.shape[0] == 49
    encodes = [c["encode"] for c in parts["vae"].calls if "encode" in c]
    assert encodes == [(1, 3, 17, H, W)] * 4  # every window whole
    ys = [c["y"] for c in parts["denoisers"][0].calls[::3]]
    for k, y in enumerate(ys):
        mask = y[0, :4, :, 0, 0]  # [4, T_lat]: ones on the given frames
        want = torch.zeros_like(mask)
        if k == 0:  # the input image: frame 0 (latent 0, all 4 channels)
            want[:, 0] = 1
        else:  # the previous window's last 5 frames (latents 0, 1); the last window's 9 (0-2)
            want[:, : (2 if k < 3 else 3)] = 1
        assert torch.equal(mask, want)
    clip_calls = parts["image"].calls
    assert len(clip_calls) == 4 and all(c["images"] == (1, 3, H, W) for c in clip_calls)


def test_i2v_continuation_encodes_the_frames_it_continues_from(tmp_path):
    """The conditioning pixels of window 2 are window 1's last 5 frames as written (uncorrected
    here), the blend aside."""
    comps, parts = fake_components("i2v-14B")
    seen = []
    enc = parts["vae"].encode

    def spy(video):
        seen.append(video.clone())
        return enc(video)

    parts["vae"].encode = spy
    r = _req(task="i2v", image=_image(tmp_path / "a.png"), frames=29, color_match=False)
    _video, _ = _run(comps, replace(r.resolve(comps.variant), guidance=1.0))
    got = ((seen[1][0, :, :5].permute(1, 2, 3, 0) + 1) / 2 * 255).round().to(torch.uint8)
    # frames 12..16 of window 1 were held back and became window 2's conditioning
    first_window = next(c["decode"] for c in parts["vae"].calls if "decode" in c)
    from wan_desktop.video import to_uint8_frames

    assert torch.equal(got, to_uint8_frames(parts["vae"].decode(first_window))[12:17])
    assert (seen[1][0, :, 5:] == 0).all()  # nothing given after them


def test_flf2v_end_frame_only_in_the_last_window(tmp_path):
    comps, parts = fake_components("flf2v-14B")
    r = _req(
        task="flf2v",
        image=_image(tmp_path / "a.png", 0),
        last_image=_image(tmp_path / "z.png", 1),
        color_match=False,
    )
    _run(comps, replace(r.resolve(comps.variant), guidance=1.0))
    ys = [c["y"] for c in parts["denoisers"][0].calls[::3]]
    last_flags = [bool(y[0, 3, -1, 0, 0] == 1) for y in ys]  # the last frame's mask channel
    assert last_flags == [False, False, False, True]
    assert [c["images"][0] for c in parts["image"].calls] == [2, 2, 2, 2]  # FLF2V: 2 images


# ----------------------------------------------------------------------------- --extend


def _png_video(folder: Path, n: int) -> np.ndarray:
    folder.mkdir()
    frames = np.random.default_rng(5).integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return frames


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_extend_copies_the_video_and_continues_from_its_last_frames(task, tmp_path):
    src = _png_video(tmp_path / "src", 11)
    name = "t2v-1.3B" if task == "t2v" else "i2v-14B"
    comps, parts = fake_components(name)
    r = _req(frames=29, extend=str(tmp_path / "src")).resolve(comps.variant)  # i2v: no image
    assert r.task.value == task
    plan = LV.plan_windows(r)
    assert [w.held for w in plan.windows] == [2, 2]
    video, _ = _run(comps, r)
    assert video.shape[0] == 11 + 29 - 5  # the source, then what is new (the overlap once)
    assert torch.equal(video[:6], torch.from_numpy(src[:6]))  # copied losslessly
    encodes = [c["encode"] for c in parts["vae"].calls if "encode" in c]
    assert encodes[0][2] == (5 if task == "t2v" else 17)  # its last 5 frames (alone, or given)


def test_extend_checks_the_video_and_the_frames(tmp_path):
    v = fake_components()[0].variant
    with pytest.raises(ConfigError) as e:
        LV.check(_req(extend=str(tmp_path / "missing.mp4")).resolve(v), v)
    assert e.value.field == "extend"
    _png_video(tmp_path / "src", 3)
    with pytest.raises(ConfigError) as e:
        LV.check(_req(frames=5, extend=str(tmp_path / "src")).resolve(v), v)
    assert e.value.field == "frames"
    i2v = fake_components("i2v-14B")[0].variant
    with pytest.raises(ConfigError) as e:  # its frames are the start: an image is one too many
        _req(extend=str(tmp_path / "src"), image=_image(tmp_path / "a.png")).resolve(i2v)
    assert e.value.field == "extend"
    comps, _ = fake_components()
    with pytest.raises(ConfigError) as e:  # fewer frames than it carries over
        _run(comps, _req(frames=29, extend=str(tmp_path / "src")).resolve(v))
    assert e.value.field == "extend"


# ----------------------------------------------------------------------------- memory


def _peak_bytes(windows: int) -> tuple[int, int]:
    """Peak bytes of tensors alive during a T2V long video of ``windows`` 17-frame windows whose
    frames go to a sink that keeps nothing, and the frames it received."""
    comps, parts = fake_components()
    frames = 17 + (windows - 1) * 12
    r = _req(frames=frames, width=256, height=128, steps=2, guidance=1.0).resolve(comps.variant)
    got = [0]

    def sink(chunk):
        got[0] += chunk.shape[0]

    def forget(event):  # the fakes keep a copy of every input: not the run's memory
        for part in (parts["denoisers"][0], parts["vae"], parts["text"]):
            part.calls.clear()

    with LiveBytes() as m:
        LV.generate_long(comps, r, sink, emit=forget, preview_every=0)
    return m.peak, got[0]


def test_host_memory_is_one_window_whatever_the_length():
    peak3, n3 = _peak_bytes(3)
    peak10, n10 = _peak_bytes(10)
    assert (n3, n10) == (41, 125)
    # 10 windows hold what 3 do: one window's frames (17), the 5 held back, and the latents
    assert peak10 <= peak3 * 1.02
    # about what one window alone takes (its decode in float dominates), far from the video
    comps, _ = fake_components()
    one = _req(frames=17, width=256, height=128, steps=2, guidance=1.0).resolve(comps.variant)
    with LiveBytes() as m:
        generate(comps, one, preview_every=0)
    frame = 256 * 128 * 3  # one uint8 frame
    assert peak10 <= m.peak + 6 * frame, (peak10, m.peak)
    print(
        f"\npeak tensor bytes: one 17-frame window {m.peak / 2**20:.2f} MiB; long video of 3 "
        f"windows {peak3 / 2**20:.2f} MiB, of 10 windows {peak10 / 2**20:.2f} MiB "
        f"(the 125 uint8 frames alone: {125 * frame / 2**20:.2f} MiB)"
    )


# ----------------------------------------------------------------------------- real tiny models


def _tiny(name: str):
    from wan_desktop.engines.torch_backend import build_torch_components

    from tests.tiny import tiny_variant

    variant = tiny_variant(name)
    return build_torch_components(variant, None, device=torch.device("cpu"), dtype=torch.float32)


def _real_peak(comps, windows: int) -> tuple[int, int]:
    r = _req(frames=17 + (windows - 1) * 12, steps=2, guidance=1.0).resolve(comps.variant)
    got = [0]

    def sink(chunk):
        got[0] += chunk.shape[0]

    with LiveBytes() as m:
        LV.generate_long(comps, r, sink, preview_every=0)
    return m.peak, got[0]


@pytest.mark.slow
def test_a_real_tiny_model_holds_one_window_for_10_windows():
    comps = _tiny("t2v-1.3B")
    peak3, n3 = _real_peak(comps, 3)
    peak10, n10 = _real_peak(comps, 10)
    assert (n3, n10) == (41, 125)
    assert peak10 <= peak3 * 1.02, (peak3, peak10)
    print(
        f"\nreal tiny T2V, peak tensor bytes: 3 windows {peak3 / 2**20:.2f} MiB, 10 windows "
        f"{peak10 / 2**20:.2f} MiB"
    )


def test_a_real_tiny_t2v_keeps_the_carried_latents_exactly():
    comps = _tiny("t2v-1.3B")
    decoded = []
    decode = comps.vae_decoder.decode_frames

    def spy(x):
        decoded.append(x.clone())
        return decode(x)

    comps.vae_decoder.decode_frames = spy
    video, _ = _run(comps, _req(frames=29, steps=3).resolve(comps.variant))
    assert video.shape == (29, H, W, 3) and len(decoded) == 2
    torch.testing.assert_close(decoded[1][:, :, :2], decoded[0][:, :, -2:], rtol=0, atol=1e-6)


def test_prepare_reports_the_windows_and_plans_memory_for_one(tmp_path):
    from wan_desktop.engines.factory import EngineFactory

    from wan_desktop import run
    from wan_desktop.options import RunOptions

    opts = RunOptions(random_weights="t2v-1.3B", device="cpu", vram_budget_gb=12)

    def prepared(frames: int) -> run.PreparedRun:
        return run.prepare(
            GenerationRequest(prompt="x", frames=frames),
            opts,
            out=tmp_path / "o.mp4",
            factory=EngineFactory(),
            planning=run.Planning.ALWAYS,
        )

    one, long = prepared(81), prepared(81 * 8 - 7 * 5)  # 8 windows of 81, 5 frames of overlap
    assert (one.windows, long.windows) == (1, 8)
    assert any(n.startswith("long video: 8 windows of up to 81 frames") for n in long.notes)
    assert long.describe_plans() == one.describe_plans()  # the planner plans one window
    assert long.size == one.size == "832x480x81"


_RSS_SCRIPT = """
import resource, sys, torch
from tests.fakes import fake_components
from wan_desktop import long_video as LV
from wan_desktop.request import GenerationRequest
torch.set_num_threads(1)
windows, out = int(sys.argv[1]), sys.argv[2]
comps, parts = fake_components()
def forget(event):  # the fakes keep a copy of every input: not the run's memory
    for part in (parts["denoisers"][0], parts["vae"], parts["text"]):
        part.calls.clear()
r = GenerationRequest(prompt="x", width=1024, height=512, frames=17 + (windows - 1) * 12,
                      window_frames=17, steps=1, guidance=1.0).resolve(comps.variant)
LV.generate_to_file(comps, r, out, emit=forget)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_rss_of_10_windows_is_that_of_3(tmp_path):
    """The process's peak resident memory (ru_maxrss), writing real mp4s: 84 more frames of
    1024x512 (132 MB as uint8) would show; the difference stays within allocator noise."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]

    def peak_kib(windows: int) -> int:
        out = tmp_path / f"w{windows}.mp4"
        r = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(windows), str(out)],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        from wan_desktop.video import read_back

        assert read_back(out)[0] == 17 + (windows - 1) * 12
        return int(r.stdout.split()[-1])

    rss3, rss10 = peak_kib(3), peak_kib(10)
    held = 84 * 1024 * 512 * 3 / 1024  # KiB: the 84 more frames, were they kept
    print(f"\npeak RSS: 3 windows {rss3 / 1024:.0f} MiB, 10 windows {rss10 / 1024:.0f} MiB")
    assert rss10 - rss3 < held / 3, (rss3, rss10)
