"""`wan-desktop generate` from the outside: files, metadata, bad input (exit 2, one line, nothing
written), Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tests.fixtures_models import build_tiny_model
from wan_desktop.cli import main

SMALL = ["--size", "64x32", "--frames", "9", "--steps", "3", "--device", "cpu", "--dtype",
         "float32", "--no-progress"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("cli"), "t2v-1.3B")


@pytest.fixture(scope="module")
def ti2v(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("cli5b"), "ti2v-5B")


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mp4_has_frames_size_fps_and_a_complete_sidecar(model, tmp_path, capsys):
    out = tmp_path / "cat.mp4"
    code, stdout, err = run(["generate", "--model", str(model.official), "--prompt", "a cat",
                             "--seed", "7", *SMALL, "--out", str(out)], capsys)
    assert code == 0, err
    assert stdout.strip() == str(out)
    frames = iio.imread(out)
    assert frames.shape == (9, 32, 64, 3)
    assert round(iio.immeta(out)["fps"]) == 16
    meta = json.loads((tmp_path / "cat.mp4.json").read_text())
    req = meta["request"]
    assert (req["seed"], req["width"], req["height"], req["frames"], req["steps"]) == \
        (7, 64, 32, 9, 3)
    assert req["negative_prompt"].startswith("色调艳丽") and req["sampler"] == "unipc"
    assert meta["variant"] == "t2v-1.3B" and meta["fps"] == 16 and meta["version"]
    assert meta["model"]["path"] == str(model.official) and meta["model"]["random_weights"] == "False"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.mp4", "cat.mp4.json"]


def test_png_folder_is_lossless_and_seeds_reproduce(model, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "1"), (b, "1"), (c, "2")):
        code, _, err = run(["generate", "--model", str(model.diffusers), "--prompt", "a cat",
                            "--seed", seed, *SMALL, "--out", str(out)], capsys)
        assert code == 0, err
    names = sorted(p.name for p in a.iterdir())
    assert names == [f"{i:05d}.png" for i in range(9)] + ["settings.json"]
    fa = np.stack([iio.imread(a / f"{i:05d}.png") for i in range(9)])
    fb = np.stack([iio.imread(b / f"{i:05d}.png") for i in range(9)])
    fc = np.stack([iio.imread(c / f"{i:05d}.png") for i in range(9)])
    assert np.array_equal(fa, fb) and not np.array_equal(fa, fc)
    # lossless: the PNGs are exactly the frames generate() returns for the same request
    from wan_desktop.engines.factory import build_components, detect_for_options

    from wan_desktop.pipeline import GenerationRequest, RunOptions, generate

    opts = RunOptions(model=str(model.diffusers), device="cpu", dtype="float32")
    variant, files = detect_for_options(opts)
    comps, dev = build_components(opts, variant, files)
    req = GenerationRequest(prompt="a cat", seed=1, width=64, height=32, frames=9, steps=3)
    assert np.array_equal(generate(comps, req.resolve(variant), device=dev).numpy(), fa)


def test_comfyui_files_with_vae_and_text_encoder(model, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code, _, err = run(["generate", "--model", str(model.comfy_dit), "--vae", str(model.comfy_vae),
                        "--text-encoder", str(model.comfy_t5), "--prompt", "a cat", *SMALL,
                        "--out", str(out)], capsys)
    assert code == 0, err
    assert iio.imread(out).shape == (9, 32, 64, 3)


def test_ti2v_fps_is_24(ti2v, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    code, _, err = run(["generate", "--model", str(ti2v.official), "--prompt", "a cat",
                        "--size", "64x64", "--frames", "5", "--steps", "2", "--device", "cpu",
                        "--no-progress", "--out", str(out)], capsys)
    assert code == 0, err
    assert round(iio.immeta(out)["fps"]) == 24 and iio.imread(out).shape == (5, 64, 64, 3)


def _bad_cases(model, tmp: Path):
    text_png = tmp / "text.png"
    text_png.write_text("not an image")
    junk_dir = tmp / "junk"
    junk_dir.mkdir(exist_ok=True)
    cut = tmp / "cut.safetensors"
    data = model.comfy_dit.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    m = ["--model", str(model.official)]
    return {
        "size": ([*m, "--size", "50x32"], "multiple of 16"),
        "frames": ([*m, "--frames", "6"], r"4n\+1"),
        "steps0": ([*m, "--steps", "0"], "at least 1"),
        "steps_nan": ([*m, "--steps", "abc"], "invalid int"),
        "guidance": ([*m, "--guidance", "x"], "not a number"),
        "seed": ([*m, "--seed", "-1"], "seed"),
        "task": ([*m, "--task", "i2v", "--image", str(text_png)], "cannot do i2v"),
        "no_image_model": (["--model", str(junk_dir)], "not a Wan model folder"),
        "truncated": (["--model", str(cut)], "truncated"),
        "last_image": ([*m, "--last-image", str(text_png)], "flf2v"),
        "sampler": ([*m, "--sampler", "ddim"], "invalid choice"),
        "missing_out_dir": (m, "does not exist"),
        "cuda": ([*m, "--device", "cuda"], "no CUDA GPU"),
        "size_text": ([*m, "--size", "big"], "WIDTHxHEIGHT"),
    }


@pytest.mark.parametrize("case", ["size", "frames", "steps0", "steps_nan", "guidance", "seed",
                                  "task", "no_image_model", "truncated", "last_image", "sampler",
                                  "missing_out_dir", "cuda", "size_text"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(model, tmp_path, capsys, case):
    args, match = _bad_cases(model, tmp_path)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("missing" if case == "missing_out_dir" else "") / "x.mp4"
    with pytest.raises(SystemExit) if case in ("steps_nan", "guidance", "sampler", "size_text") \
            else _noraise() as exc:
        code = main(["generate", "--prompt", "a cat", "--no-progress", *args, "--out", str(out)])
    if exc is not None and getattr(exc, "value", None) is not None:
        code = exc.value.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    import re

    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []


class _noraise:
    value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_image_tasks_need_readable_images(tmp_path, capsys):
    m = build_tiny_model(tmp_path / "m", "i2v-14B")
    capsys.readouterr()  # diffusers' own progress bars while building the model
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    for image, match in ((tmp_path / "nope.png", "image not found"), (bad, "cannot read image")):
        code, _, err = run(["generate", "--model", str(m.official), "--prompt", "x", "--image",
                            str(image), *SMALL, "--out", str(tmp_path / "o.mp4")], capsys)
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["generate", "--model", str(m.official), "--prompt", "x", *SMALL, "--out",
                        str(tmp_path / "o.mp4")], capsys)
    assert code == 2 and "needs an input image" in err
    assert not (tmp_path / "o.mp4").exists()


def test_long_prompt_is_truncated_with_a_warning(model, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    prompt = " ".join(["a cat walks on the grass"] * 200)
    code, _, err = run(["generate", "--model", str(model.official), "--prompt", prompt, *SMALL,
                        "--out", str(out)], capsys)
    assert code == 0 and out.exists()
    assert "512 tokens" in err and "warning" in err.lower()


def test_random_weights_refused_with_a_model_and_for_unknown_names(model, tmp_path, capsys):
    code, _, err = run(["generate", "--model", str(model.official), "--random-weights", "t2v-1.3B",
                        "--prompt", "x", "--out", str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run(["generate", "--random-weights", "t2v-99B", "--prompt", "x", "--out",
                        str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "unknown variant" in err and len(err.strip().splitlines()) == 1


def test_random_weight_components_are_marked_in_the_sidecar(tmp_path):
    import torch
    from wan_desktop.engines.torch_backend import build_torch_components

    from tests.tiny import tiny_variant
    from wan_desktop.pipeline import GenerationRequest, generate_to_file

    variant = tiny_variant("t2v-1.3B")
    comps = build_torch_components(variant, None, device=torch.device("cpu"), dtype=torch.float32)
    req = GenerationRequest(prompt="x", width=64, height=32, frames=5, steps=2).resolve(variant)
    out = generate_to_file(comps, req, tmp_path / "r.mp4")
    meta = json.loads((tmp_path / "r.mp4.json").read_text())
    assert out.exists() and meta["model"]["random_weights"] == "True"


def test_progress_bar_shows_steps_rate_and_eta(model, tmp_path):
    env = os.environ | {"WAN_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "wan_desktop.cli", "generate", "--model",
                        str(model.official), "--prompt", "x", *SMALL[:-1], "--out",
                        str(tmp_path / "p.mp4")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "denoise 3/3" in r.stderr and "it/s" in r.stderr and "ETA" in r.stderr


def test_ctrl_c_cancels_and_leaves_nothing(model, tmp_path):
    out = tmp_path / "c.mp4"
    # enough steps that the run is still denoising when the signal arrives
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan_desktop.cli", "generate", "--model", str(model.official),
         "--prompt", "x", "--size", "256x256", "--frames", "33", "--steps", "400", "--device",
         "cpu", "--dtype", "float32", "--out", str(out)],
        stderr=subprocess.PIPE, text=True, env=os.environ | {"WAN_PROGRESS": "1"})
    buf = ""
    deadline = time.time() + 120
    while "denoise 1/" not in buf and time.time() < deadline:
        buf += proc.stderr.read(1)
    assert "denoise 1/" in buf, buf
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 130, buf + rest
    assert "cancelled" in rest and "nothing was written" in rest
    assert list(tmp_path.iterdir()) == []
