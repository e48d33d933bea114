"""``torchrun --nproc-per-node 2 -m wan_desktop generate ...``: each process reads its rank from
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR / MASTER_PORT), rank 0's
request (its random seed included) runs on both, and the video is the one-process run's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_models import build_tiny_model
from tests.parallel_runs import generate, psnr

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    t2v = build_tiny_model(tmp_path / "model", "t2v-1.3B")
    out = tmp_path / "two"
    args = ["generate", "--model", str(t2v.official), "--prompt", "a red fox", "--device", "cpu"]
    args += ["--dtype", "float32", "--size", "64x32", "--frames", "5", "--steps", "3"]
    args += ["--guidance", "5", "--no-progress", "--out", str(out)]  # no --seed: rank 0 draws it
    r = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "-m", "wan_desktop", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    seed = json.loads((out / "settings.json").read_text())["request"]["seed"]
    # rank 0 alone prints the seed that ran (both ranks ran it) and the output path
    assert re.findall(r"seed: (\d+)", r.stderr) == [str(seed)]
    assert r.stdout.splitlines() == [str(out)]
    one = generate(t2v, tmp_path / "one", seed=seed)
    many = sorted(out.glob("*.png"))
    assert len(many) == one.frames.shape[0]

    db = psnr(one.frames, np.stack([np.asarray(Image.open(p)) for p in many]))
    print(f"\ntorchrun x2 (auto: cfg): PSNR {db:.1f} dB")
    assert db >= 60.0
