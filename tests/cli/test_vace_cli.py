"""`wan-desktop generate --task vace` from the outside: the PNG frames the CLI writes from a control
video, a mask video and a reference image equal diffusers' WanVACEPipeline on the same tiny weights
(ComfyUI and diffusers layouts); bad VACE input is one line, exit 2, nothing written; `inspect`
names the VACE blocks."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from tests.numerics import psnr_uint8
from tests.vace_models import FRAMES, H, W, build_tiny_vace_model, reference_frames, write_inputs
from wan_desktop.request import GenerationRequest

pytest.importorskip("diffusers")

SMALL = ["--size", f"{W}x{H}", "--frames", str(FRAMES), "--steps", "4", "--device", "cpu"]
SMALL += ["--dtype", "float32", "--seed", "7", "--no-progress"]


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return build_tiny_vace_model(tmp_path_factory.mktemp("cli_vace"), "vace-1.3B")


def _pngs(folder: Path) -> torch.Tensor:
    return torch.from_numpy(np.stack([iio.imread(folder / f"{i:05d}.png") for i in range(FRAMES)]))


def _flags(paths: dict) -> list[str]:
    out: list[str] = []
    if "control_video" in paths:
        out += ["--control-video", paths["control_video"]]
    if "mask_video" in paths:
        out += ["--mask-video", paths["mask_video"]]
    for ref in paths.get("ref_images", ()):
        out += ["--ref-image", ref]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["comfyui", "diffusers"])
def test_cli_png_frames_match_wan_vace_pipeline(vace, layout, tmp_path, cli):
    paths, pil = write_inputs(tmp_path)
    model = (
        ["--model", vace.comfy_dit, "--vae", vace.comfy_vae, "--text-encoder", vace.comfy_t5]
        if layout == "comfyui"
        else ["--model", vace.diffusers]
    )
    out = tmp_path / "out"
    flags = [*_flags(paths), "--control-scale", "0.9", *SMALL, "--out", out]
    r = cli(["generate", *model, "--prompt", "a cat", *flags])
    assert r.code == 0, r.err
    settings = json.loads((out / "settings.json").read_text())
    req = settings["request"]
    assert req["task"] == "vace" and req["control_scale"] == 0.9
    assert req["ref_images"] == list(paths["ref_images"])
    assert req["control_video"] == paths["control_video"]
    # the saved settings read back as the same request
    again = GenerationRequest.from_dict(req)
    assert again.ref_images == paths["ref_images"] and again.mask_video == paths["mask_video"]
    from wan_desktop.checkpoints.detect import detect_model

    resolved = again.resolve(detect_model(vace.official).variant)
    p = psnr_uint8(_pngs(out), reference_frames(vace, resolved, pil, scale=0.9))
    print(f"CLI vace ({layout}), control+mask+ref: PSNR {p:.1f} dB vs WanVACEPipeline")
    assert p >= 40.0


@pytest.mark.slow
def test_bad_vace_input_is_one_line_and_writes_nothing(vace, tmp_path, cli):
    paths, _ = write_inputs(tmp_path, refs=1)
    base = ["generate", "--model", vace.official, "--prompt", "a cat", *SMALL]
    cases = {
        "missing control": (["--control-video", tmp_path / "nope"], "not found"),
        "mask alone": (["--mask-video", paths["mask_video"]], "needs the control video"),
        "short control": (
            ["--control-video", paths["control_video"], "--frames", "13"],
            "has 9 frame(s), 13 needed",
        ),
        "not an image": (["--ref-image", tmp_path / "control"], "reference image"),
        "scale": (["--control-scale", "11"], "control scale must be between 0 and 10"),
        "task": (["--task", "t2v"], "cannot do t2v"),
    }
    for name, (flags, msg) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        r = cli([*base, *flags, "--out", out])
        assert r.code == 2, (name, r.err)
        assert msg in r.err and len(r.err.strip().splitlines()) == 1, (name, r.err)
        assert not out.exists(), name


def test_inspect_names_the_vace_model(vace, cli):
    r = cli(["inspect", vace.comfy_dit])
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["variant"] == "vace-1.3B" and info["format"] == "comfyui"
    assert info["vace"] == {"blocks": 2, "layers": [0, 1], "in_dim": 96}


def test_print_plan_counts_the_vace_branch(tmp_path, cli):
    """A VACE-14B job plans for its resident VACE blocks and hints: a higher peak than the T2V-14B
    job of the same size, or more blocks streamed."""
    from wan_desktop import memory as M
    from wan_desktop.variants import VARIANTS

    args = ["--size", "1280x720", "--frames", "81", "--vram-budget", "24", "--print-plan"]
    r = cli(["generate", "--random-weights", "vace-14B", "--prompt", "x", *args, "--out", tmp_path])
    assert r.code == 0, r.err
    want = M.plan_ladder(
        M.workload_for(VARIANTS["vace-14B"], 1280, 720, 81, task="vace"),
        24,
        ram_gib=M.system_ram_gib(),
    )
    assert r.out.strip() == "\n".join(p.describe() for p in want)
    base = M.plan_ladder(M.workload_for(VARIANTS["t2v-14B"], 1280, 720, 81), 24)[0]
    vace = want[0]
    print(f"24 GB, 720p x 81: VACE-14B {vace.describe().splitlines()[0]}")
    print(f"                   T2V-14B  {base.describe().splitlines()[0]}")
    assert (vace.dit.swap_blocks, vace.predicted.peak_gib) > (
        base.dit.swap_blocks,
        base.predicted.peak_gib,
    )
