"""`wan-desktop generate` runs that used to end with exit 0 and a wrong file: NaN/Inf weights (DiT,
VAE), a NaN LoRA, absurd LoRA strengths and guidance values, weights that overflow float16 or
make the latents overflow, and an output the disk cannot hold. Each is now exit 2, one line naming
the cause (the tensor, the value, the step), and nothing at --out."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.lora_files import lowrank, official_layout

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
    "--seed",
    "1",
    "--no-progress",
]


def _copy(model: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(model, tmp / "model"))


def _edit_dit(key: str, edit):
    """A copy of the official folder with one DiT tensor changed by ``edit(tensor)`` (in place)."""

    def make(m, tmp):
        folder = _copy(m.official, tmp)
        path = folder / "diffusion_pytorch_model.safetensors"
        state = load_file(path)
        state[key] = state[key].clone()
        edit(state[key])
        save_file(state, path)
        return ["--model", folder]

    return make


def _nan_vae(m, tmp):
    folder = _copy(m.official, tmp)
    path = folder / "Wan2.1_VAE.pth"
    state = torch.load(path, weights_only=True)
    state["decoder.conv1.weight"].view(-1)[3] = float("nan")
    torch.save(state, path)
    return ["--model", folder]


def _lora(nan: bool, strength: str | None = None):
    def make(m, tmp):
        tensors = official_layout(lowrank(1))
        if nan:
            tensors["diffusion_model.blocks.0.self_attn.q.lora_down.weight"][0, 0] = float("nan")
        path = tmp / "l.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        return ["--model", m.official, "--lora", f"{path}:{strength}" if strength else path]

    return make


def _plain(*extra):
    return lambda m, tmp: ["--model", m.official, *extra]


def _set(index, value):
    def edit(t):
        t[index] = value

    return edit


CASES = {
    "dit_nan": (
        _edit_dit("blocks.0.ffn.0.weight", _set((0, 0), float("nan"))),
        r"diffusion model .*: tensor blocks\.0\.ffn\.0\.weight has 1 NaN/infinite value",
    ),
    "dit_inf": (
        _edit_dit("head.head.weight", _set((1, 2), float("inf"))),
        r"tensor head\.head\.weight has 1 NaN/infinite value",
    ),
    "dit_overflows_fp16": (
        lambda m, tmp: [
            *_edit_dit("blocks.1.self_attn.q.weight", _set((0, 0), 1e6))(m, tmp),
            "--dtype",
            "float16",
        ],
        r"tensor blocks\.1\.self_attn\.q\.weight has values up to 1e\+06, which overflow float16",
    ),
    "vae_nan": (_nan_vae, r"VAE .*: tensor decoder\.conv1\.weight has 1 NaN/infinite value"),
    "lora_nan": (
        _lora(nan=True),
        r"l\.safetensors: tensor diffusion_model\.blocks\.0\.self_attn"
        r"\.q\.lora_down\.weight has 1 NaN/infinite value",
    ),
    "lora_strength_1e300": (
        _lora(nan=False, strength="1e300"),
        r"LoRA strength must be a number from -100 to 100, got 1e\+300",
    ),
    "guidance_1e308": (_plain("--guidance", "1e308"), r"guidance must be at most 100, got 1e\+308"),
    "shift_1e6": (_plain("--shift", "1e6"), r"shift must be at most 100, got 1e\+06"),
    # finite weights whose activations overflow: the latents turn Inf/NaN inside the run
    "latents_overflow": (
        _edit_dit("head.head.weight", lambda t: t.mul_(1e37)),
        r"the latents became NaN or infinite at denoising step \d of 3 \(the "
        r"diffusion model, guidance 5\); nothing was written",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_non_finite_numbers_exit_2_with_one_line_and_write_nothing(case, t2v, tmp_path, cli):
    """Before: exit 0 and a black or noise video (to_uint8_frames turns NaN into 0)."""
    make, pattern = CASES[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = cli(
        ["generate", "--prompt", "a cat", *SMALL, *make(t2v, tmp_path), "--out", out_dir / "x.mp4"]
    )
    print(f"{case}: {r.err.strip()}")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error:"), r.err
    assert re.search(pattern, r.err_lines[0]), r.err_lines[0]
    assert "Traceback" not in r.err and r.out == ""
    assert list(out_dir.iterdir()) == []


@pytest.mark.slow  # the CLI in a fresh process (~6 s)
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE (ulimit -f) is POSIX")
def test_a_full_disk_while_encoding_exits_2_and_publishes_nothing(t2v, tmp_path):
    """`(ulimit -f 12; wan-desktop generate ... --size 128x128 --out o.mp4)`: ffmpeg can write only
    12 KiB of the ~90 KiB video. Before: exit 0, a 12 KiB unreadable o.mp4 and a sidecar saying 9
    frames were written."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (12 * 1024, resource.RLIM_INFINITY))

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
            *SMALL,
            "--size",
            "128x128",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "o.mp4"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    print(r.stderr.strip())
    assert r.returncode == 2 and r.stdout == "", r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.match(
        r"error: encoding o\.mp4 failed: ffmpeg exited with "
        r"status \d+ \(.*File too large\) \(Free disk space",
        lines[0],
    ), r.stderr
    assert list(tmp_path.iterdir()) == []  # no o.mp4, no sidecar, no .partial
