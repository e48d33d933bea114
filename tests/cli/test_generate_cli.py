"""`wan-desktop generate` from the outside: the files it writes (mp4 + sidecar, lossless PNG folder),
seeds, the three model layouts, defaults from the variant, every bad input (exit 2, one line, nothing
written), long prompts, random weights, the progress bar and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import wan_desktop
from tests.numerics import psnr_uint8
from wan_desktop.options import RunOptions
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import Sampler

SMALL = [
    "--size",
    "64x32",
    "--frames",
    "9",
    "--steps",
    "3",
    "--device",
    "cpu",
    "--dtype",
    "float32",
    "--no-progress",
]


def _pngs(folder: Path, n: int) -> np.ndarray:
    return np.stack([iio.imread(folder / f"{i:05d}.png") for i in range(n)])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_uint8(torch.from_numpy(a), torch.from_numpy(b))


# ----------------------------------------------------------------------------- outputs


def test_mp4_decodes_to_the_frames_size_and_fps_and_the_sidecar_holds_every_setting(
    t2v, tmp_path, cli
):
    out = tmp_path / "cat.mp4"
    handler_before = signal.getsignal(signal.SIGINT)
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            "a cat",
            "--seed",
            "7",
            *SMALL,
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    assert r.out.strip() == str(out) and r.err == ""  # a given seed is not echoed
    # the video
    frames = iio.imread(out)
    meta = iio.immeta(out)
    print(f"mp4: {frames.shape}, fps {meta['fps']}, {meta['codec']} {meta['pix_fmt']}")
    assert frames.shape == (9, 32, 64, 3)
    assert meta["fps"] == 16.0 and meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    # the sidecar: the resolved request, the run options, the model, the app
    side = json.loads((tmp_path / "cat.mp4.json").read_text())
    req = side["request"]
    assert (req["seed"], req["width"], req["height"], req["frames"], req["steps"]) == (
        7,
        64,
        32,
        9,
        3,
    )
    assert (req["task"], req["sampler"], req["guidance"], req["shift"]) == (
        "t2v",
        "unipc",
        5.0,
        5.0,
    )
    assert req["prompt"] == "a cat" and req["negative_prompt"].startswith("色调艳丽")
    assert set(req) == {f for f in GenerationRequest.__dataclass_fields__}
    assert set(side["options"]) == {f for f in RunOptions.__dataclass_fields__}
    assert side["options"]["model"] == str(t2v.official) and side["options"]["dtype"] == "float32"
    assert side["variant"] == "t2v-1.3B" and side["fps"] == 16 and side["frames_written"] == 9
    assert side["version"] == wan_desktop.__version__ and side["app"] == "wan-desktop"
    assert side["model"]["path"] == str(t2v.official) and side["model"]["format"] == "official"
    assert side["model"]["random_weights"] is False and side["device"] == "cpu"
    # nothing else in the folder (no temporary files), and Ctrl-C is the caller's again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4", "cat.mp4.json"]
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_png_folder_is_lossless_and_seeds_reproduce(t2v, tmp_path, cli):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 1), (b, 1), (c, 2)):
        r = cli(
            [
                "generate",
                "--model",
                t2v.diffusers,
                "--prompt",
                "a cat",
                "--seed",
                seed,
                *SMALL,
                "--out",
                out,
            ]
        )
        assert r.code == 0, r.err
    assert sorted(p.name for p in a.iterdir()) == [f"{i:05d}.png" for i in range(9)] + [
        "settings.json"
    ]
    settings = json.loads((a / "settings.json").read_text())
    assert settings["request"]["seed"] == 1 and settings["model"]["format"] == "diffusers"
    fa, fb, fc = _pngs(a, 9), _pngs(b, 9), _pngs(c, 9)
    print(f"seed 1 vs 2: PSNR {_psnr(fa, fc):.1f} dB")
    assert np.array_equal(fa, fb) and not np.array_equal(fa, fc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
    # lossless: the PNGs are exactly the frames generate() returns for the same request
    from wan_desktop.engines.factory import build_components, detect_for_options

    from wan_desktop.pipeline import generate

    opts = RunOptions(model=str(t2v.diffusers), device="cpu", dtype="float32")
    variant, files = detect_for_options(opts)
    comps, dev = build_components(opts, variant, files)
    req = GenerationRequest(prompt="a cat", seed=1, width=64, height=32, frames=9, steps=3)
    want = generate(comps, req.resolve(variant), device=dev).numpy()
    assert np.array_equal(want, fa)


def test_comfyui_files_with_vae_and_text_encoder_make_the_same_video(t2v, tmp_path, cli):
    """Same weights (the ComfyUI DiT stored in fp16), same seed: the same video as the official
    folder, up to the fp16 rounding of the DiT weights."""
    ref, out = tmp_path / "ref", tmp_path / "comfy"
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            "a cat",
            "--seed",
            5,
            *SMALL,
            "--out",
            ref,
        ]
    )
    assert r.code == 0, r.err
    r = cli(
        [
            "generate",
            "--model",
            t2v.comfy_dit,
            "--vae",
            t2v.comfy_vae,
            "--text-encoder",
            t2v.comfy_t5,
            "--prompt",
            "a cat",
            "--seed",
            5,
            *SMALL,
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    side = json.loads((out / "settings.json").read_text())
    assert side["model"]["format"] == "comfyui" and side["options"]["vae"] == str(t2v.comfy_vae)
    psnr = _psnr(_pngs(ref, 9), _pngs(out, 9))
    print(f"ComfyUI (fp16 DiT) vs official (fp32): PSNR {psnr:.1f} dB")
    assert psnr > 40.0


def test_ti2v_video_is_24_fps(ti2v, tmp_path, cli):
    out = tmp_path / "x.mp4"
    r = cli(
        [
            "generate",
            "--model",
            ti2v.official,
            "--prompt",
            "a cat",
            "--size",
            "64x64",
            "--frames",
            "5",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            out,
        ]
    )
    assert r.code == 0, r.err
    assert iio.immeta(out)["fps"] == 24.0 and iio.imread(out).shape == (5, 64, 64, 3)
    assert json.loads((tmp_path / "x.mp4.json").read_text())["fps"] == 24


@pytest.mark.parametrize(
    "model,want",
    [
        ("t2v", dict(width=832, height=480, frames=81, steps=50, guidance=5.0, shift=5.0, fps=16)),
        (
            "ti2v",
            dict(width=1280, height=704, frames=121, steps=50, guidance=5.0, shift=5.0, fps=24),
        ),
    ],
)
def test_defaults_come_from_the_detected_variant(model, want, request, tmp_path, cli, monkeypatch):
    """Dry run: everything up to building the components is real, then the request that would be
    generated (and saved in the sidecar) is captured instead of running it at full size."""
    import wan_desktop.engines.factory as factory

    import wan_desktop.pipeline as pipeline

    tiny = request.getfixturevalue(model)
    seen = {}
    monkeypatch.setattr(
        factory, "build_components", lambda *a, **k: (SimpleNamespace(denoisers=()), "cpu")
    )

    def fake_write(components, req, out, **kw):
        seen.update(request=req, options=kw["options"], out=out)
        return out

    monkeypatch.setattr(pipeline, "generate_to_file", fake_write)
    r = cli(
        [
            "generate",
            "--model",
            tiny.official,
            "--prompt",
            "x",
            "--no-progress",
            "--out",
            tmp_path / "d.mp4",
        ]
    )
    assert r.code == 0, r.err
    assert re.fullmatch(r"seed: \d+", r.err.strip())  # a random seed is reported
    req = seen["request"]
    got = dict(
        width=req.width,
        height=req.height,
        frames=req.frames,
        steps=req.steps,
        guidance=req.guidance,
        shift=req.shift,
        fps=tiny.variant.defaults.fps,
    )
    print(f"{model} defaults: {got}")
    assert got == want
    assert req.negative_prompt == tiny.variant.defaults.negative_prompt
    assert req.sampler is Sampler.UNIPC
    assert req.seed == int(r.err.split()[-1])


def test_step_cache_knows_the_schedule_so_the_last_step_always_runs(
    t2v, tmp_path, cli, monkeypatch
):
    """--step-cache with a threshold that would skip everything: the first and the last step still
    run (the CLI gives the denoisers the run's schedule before generating)."""
    import wan_desktop.engines.factory as factory

    built = []
    real = factory.build_components
    monkeypatch.setattr(
        factory, "build_components", lambda *a, **k: built.append(real(*a, **k)) or built[-1]
    )
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            "x",
            "--seed",
            "1",
            *SMALL,
            "--steps",
            "6",
            "--guidance",
            "1",
            "--step-cache",
            "1e9",
            "--out",
            tmp_path / "s",
        ]
    )
    assert r.code == 0, r.err
    stats = built[0][0].denoisers[0].cache_stats
    print(f"--step-cache 1e9 over 6 steps: {stats}")
    assert stats["computed"] == 2 and stats["skipped_steps"] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    """name -> (model fixture, extra args (a function of tmp), pattern the error line must match)."""

    def text_png(tmp):
        p = tmp / "text.png"
        p.write_text("not an image")
        return p

    def junk_dir(tmp):
        (tmp / "junk").mkdir(exist_ok=True)
        (tmp / "junk" / "readme.txt").write_text("no model here")
        return tmp / "junk"

    def truncated(m):
        def make(tmp):
            data = m.comfy_dit.read_bytes()
            (tmp / "cut.safetensors").write_bytes(data[: len(data) // 2])
            return tmp / "cut.safetensors"

        return make

    return {
        "size_50x32": ("t2v", lambda m, t: ["--size", "50x32"], "not a multiple of 16"),
        "size_text": ("t2v", lambda m, t: ["--size", "big"], "WIDTHxHEIGHT"),
        "size_zero": ("t2v", lambda m, t: ["--size", "0x32"], "must be positive"),
        "frames_6": ("t2v", lambda m, t: ["--frames", "6"], r"4n\+1"),
        "frames_text": ("t2v", lambda m, t: ["--frames", "nine"], "invalid int"),
        "steps_0": ("t2v", lambda m, t: ["--steps", "0"], "at least 1"),
        "steps_abc": ("t2v", lambda m, t: ["--steps", "abc"], "invalid int"),
        "guidance_x": ("t2v", lambda m, t: ["--guidance", "x"], "not a number"),
        "guidance_negative": ("t2v", lambda m, t: ["--guidance", "-1"], "negative"),
        "shift_nan": ("t2v", lambda m, t: ["--shift", "nan"], "not a finite number"),
        "vram_negative": ("t2v", lambda m, t: ["--vram-budget", "-3"], "negative"),
        "seed_negative": ("t2v", lambda m, t: ["--seed", "-1"], "seed must be between"),
        "seed_huge": ("t2v", lambda m, t: ["--seed", str(2**64)], "seed must be between"),
        "task_i2v_on_t2v": (
            "t2v",
            lambda m, t: ["--task", "i2v", "--image", text_png(t)],
            "cannot do i2v",
        ),
        "image_on_t2v": ("t2v", lambda m, t: ["--image", text_png(t)], "takes no input image"),
        "i2v_without_image": ("i2v", lambda m, t: [], "needs an input image"),
        "image_missing": ("i2v", lambda m, t: ["--image", t / "nope.png"], "image not found"),
        "image_not_an_image": ("i2v", lambda m, t: ["--image", text_png(t)], "cannot read image"),
        "last_image_without_flf2v": (
            "t2v",
            lambda m, t: ["--last-image", text_png(t)],
            "only used by the flf2v",
        ),
        "sampler_unknown": ("t2v", lambda m, t: ["--sampler", "ddim"], "invalid choice"),
        "task_unknown": ("t2v", lambda m, t: ["--task", "t3v"], "invalid choice"),
        "v2v_without_video": ("t2v", lambda m, t: ["--task", "v2v"], "needs an input video"),
        "model_not_a_model": (None, lambda m, t: ["--model", junk_dir(t)], "not a Wan model"),
        "model_truncated": (None, lambda m, t: ["--model", truncated(m)(t)], "truncated"),
        "model_missing": (None, lambda m, t: ["--model", t / "nowhere"], "no such file"),
        "no_model": (None, lambda m, t: [], "--model"),
        "out_missing_folder": (
            "t2v",
            lambda m, t: ["--out", t / "out" / "missing" / "x.mp4"],
            "does not exist",
        ),
        "out_nonempty_folder": (
            "t2v",
            lambda m, t: ["--out", t / "out" / "full"],
            "not an empty folder",
        ),
        "device_cuda": ("t2v", lambda m, t: ["--device", "cuda"], "no CUDA GPU"),
        "attention_unknown": ("t2v", lambda m, t: ["--attention", "bogus"], "unknown attention"),
        "random_weights_and_model": (
            "t2v",
            lambda m, t: ["--random-weights", "t2v-1.3B"],
            "not both",
        ),
        "random_weights_unknown": (
            None,
            lambda m, t: ["--random-weights", "t2v-99B"],
            "unknown variant",
        ),
        "unknown_option": ("t2v", lambda m, t: ["--colour", "red"], "unrecognized arguments"),
        "no_prompt": ("t2v", lambda m, t: ["--prompt"], "expected one argument"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, request, tmp_path, cli):
    fixture, extra, pattern = BAD[case]
    if case == "device_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    m = request.getfixturevalue(fixture or "t2v")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if case == "out_nonempty_folder":
        (out_dir / "full").mkdir()
        (out_dir / "full" / "keep.txt").write_text("mine")
    args = ["generate", "--prompt", "a cat", *SMALL, "--out", out_dir / "x.mp4"]
    if fixture is not None:
        args[1:1] = ["--model", m.official]
    args += [str(a) for a in extra(m, tmp_path)]  # later options win over the defaults above
    r = cli(args)
    print(f"{case}: {r.err.strip()}")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error:"), r.err
    assert re.search(pattern, r.err_lines[0]), r.err_lines[0]
    assert "Traceback" not in r.err and r.out == ""
    # nothing at --out, no temporary files beside it; a folder the user had is untouched
    if case == "out_nonempty_folder":
        assert [p.name for p in out_dir.rglob("*")] == ["full", "keep.txt"]
    else:
        assert list(out_dir.iterdir()) == []


def test_gpu_out_of_memory_is_one_line_and_writes_nothing(t2v, tmp_path, cli, monkeypatch):
    import wan_desktop.pipeline as pipeline

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB.\nGPU 0 has a total capacity of 8 GiB"
        )

    monkeypatch.setattr(pipeline, "generate_to_file", oom)
    r = cli(
        ["generate", "--model", t2v.official, "--prompt", "x", *SMALL, "--out", tmp_path / "o.mp4"]
    )
    print(r.err.strip())
    # on a CUDA machine the memory-plan ladder retries each tighter plan first, one warning line each;
    # on the CPU there is no ladder: the error is the only line
    *warnings, last = r.err_lines
    assert r.code == 2 and all(ln.startswith("warning: ") for ln in warnings)
    assert torch.cuda.is_available() or not warnings
    assert last.startswith("error: out of GPU memory: CUDA out of memory. Tried")
    assert "Lower the resolution" in last and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- prompts, weights


def test_long_prompt_is_truncated_with_a_warning(t2v, tmp_path, cli):
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            "a short prompt",
            "--seed",
            "1",
            *SMALL,
            "--out",
            tmp_path / "short.mp4",
        ]
    )
    assert r.code == 0 and "warning" not in r.err
    prompt = " ".join(["a cat walks on the grass"] * 200)  # ~1200 tokens
    r = cli(
        [
            "generate",
            "--model",
            t2v.official,
            "--prompt",
            prompt,
            "--seed",
            "1",
            *SMALL,
            "--out",
            tmp_path / "long.mp4",
        ]
    )
    assert r.code == 0, r.err
    assert (tmp_path / "long.mp4").is_file()
    warnings = [ln for ln in r.err_lines if ln.startswith("warning:")]
    print(warnings)
    assert len(warnings) == 1 and "512 tokens" in warnings[0]
    assert json.loads((tmp_path / "long.mp4.json").read_text())["request"]["prompt"] == prompt


def test_random_weight_components_are_marked_in_the_sidecar(tmp_path):
    """The --random-weights path (factory with no files) on a tiny variant: a full-size model is
    too big for CI."""
    from wan_desktop.engines.torch_backend import build_torch_components

    from tests.tiny import tiny_variant
    from wan_desktop.pipeline import generate_to_file

    variant = tiny_variant("t2v-1.3B")
    comps = build_torch_components(variant, None, device=torch.device("cpu"), dtype=torch.float32)
    req = GenerationRequest(prompt="x", width=64, height=32, frames=5, steps=2).resolve(variant)
    out = generate_to_file(
        comps, req, tmp_path / "r.mp4", options=RunOptions(random_weights="t2v-1.3B")
    )
    meta = json.loads((tmp_path / "r.mp4.json").read_text())
    assert out.is_file() and iio.imread(out).shape == (5, 32, 64, 3)
    assert meta["model"]["random_weights"] is True and meta["variant"] == "t2v-1.3B"
    assert meta["options"]["random_weights"] == "t2v-1.3B" and "path" not in meta["model"]


# ----------------------------------------------------------------------------- progress, Ctrl-C


@pytest.mark.slow  # the CLI in a fresh process
def test_subprocess_progress_bar_shows_steps_rate_and_eta(t2v, tmp_path):
    """The real command line (python -m wan_desktop.cli) with WAN_PROGRESS=1 (stderr is no tty)."""
    out = tmp_path / "p.mp4"
    env = os.environ | {"WAN_PROGRESS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "wan_desktop.cli",
            "generate",
            "--model",
            str(t2v.official),
            "--prompt",
            "x",
            *SMALL[:-1],
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and iio.imread(out).shape == (9, 32, 64, 3)
    updates = re.findall(r"denoise (\d+)/(\d+) \|[█░]+\| ([\d.]+) it/s ETA (\d\d:\d\d)", r.stderr)
    print(updates)
    assert [(int(s), int(n)) for s, n, _, _ in updates] == [(1, 3), (2, 3), (3, 3)]
    assert all(float(rate) > 0 for _, _, rate, _ in updates) and updates[-1][3] == "00:00"
    assert "seed: " in r.stderr and "done in" in r.stderr


def test_sigint_sets_the_cancel_token_and_a_second_one_interrupts():
    """The mechanism, in-process: Ctrl-C only sets the token (the loop raises Cancelled at its next
    check); a second Ctrl-C raises KeyboardInterrupt; the old handler comes back afterwards."""
    from wan_desktop.cli import _install_sigint
    from wan_desktop.errors import Cancelled

    before = signal.getsignal(signal.SIGINT)
    token, restore = _install_sigint()
    try:
        token.check()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert token.cancelled
        with pytest.raises(Cancelled):
            token.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is before
