"""A Wan2.1 I2V GGUF whose CLIP vision file lies in another folder runs with ``--clip FILE``: the
model manager's install (each repo in its own folder) passes it, and the video equals the one
made from the same files laid out as a ComfyUI models folder (the CLIP found in
models/clip_vision/). Without it the run is refused in one line that names the CLIP file."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tests.gguf_files import t5_gguf
from tests.split_installs import comfy_folder, install_release
from wan_desktop.model_manager import ModelManager

pytest.importorskip("gguf")

RELEASE = "gguf-wan2.1-i2v-14b-480p-q8_0"
SMALL = ["--size", "32x32", "--frames", "5", "--steps", "2", "--device", "cpu"]
COMMON = [*SMALL, "--dtype", "float32", "--no-progress", "--seed", "3", "--task", "i2v"]


def _image(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp / "start.png"
    iio.imwrite(path, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return path


def _frames(folder: Path) -> np.ndarray:
    return np.stack([iio.imread(p) for p in sorted(folder.glob("*.png"))])


@pytest.mark.slow
def test_an_i2v_gguf_install_runs_with_clip_and_equals_the_comfyui_folder(i2v, tmp_path, cli):
    model = install_release(RELEASE, tmp_path / "models", i2v)
    args = ModelManager(tmp_path / "models").get_installed(RELEASE).generate_args()
    assert args["clip"].name == "clip_vision_h.safetensors"
    assert args["clip"].parent.name == "clip_vision"  # Comfy-Org's repo, not beside the DiT
    parts = [
        "--vae",
        args["vae"],
        "--text-encoder",
        args["text_encoder"],
        "--tokenizer",
        args["tokenizer"],
    ]
    image = _image(tmp_path)
    prompt = ["--prompt", "a fox", "--image", image]

    r = cli(["generate", "--model", model, *parts, *prompt, *COMMON, "--out", tmp_path / "no"])
    assert r.code == 2, r.err
    assert "CLIP" in r.err and "--clip" in r.err and len(r.err.strip().splitlines()) <= 2
    assert not (tmp_path / "no").exists()

    out = tmp_path / "install"
    clip = ["--clip", args["clip"]]
    r = cli(["generate", "--model", model, *parts, *clip, *prompt, *COMMON, "--out", out])
    assert r.code == 0, r.err

    # the same DiT bytes, umT5 GGUF, VAE and CLIP as a ComfyUI models folder: found by folder
    dit = comfy_folder(i2v, tmp_path / "comfy" / "models")
    te = ["--text-encoder", t5_gguf(i2v, "Q8_0"), "--tokenizer", args["tokenizer"]]
    ref = tmp_path / "comfy_out"
    r = cli(["generate", "--model", dit, *te, *prompt, *COMMON, "--out", ref])
    assert r.code == 0, r.err
    a, b = _frames(out), _frames(ref)
    assert a.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(a, b)


def test_inspect_takes_clip_and_reports_it(i2v, tmp_path, cli):
    import json

    model = install_release(RELEASE, tmp_path / "models", i2v)
    args = ModelManager(tmp_path / "models").get_installed(RELEASE).generate_args()
    given = []
    for k in ("vae", "text_encoder", "tokenizer", "clip"):
        given += [f"--{k.replace('_', '-')}", args[k]]
    r = cli(["inspect", model, *given])
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["format"] == "gguf" and info["missing"] == []
    assert info["components"]["image_encoder"]["files"] == [str(args["clip"])]
    r = cli(["inspect", model, *given[:-2]])
    assert json.loads(r.out)["missing"] == ["image_encoder"]
