"""tests/gpu/measure_gpu_figures.sh as a smoke test: ``TINY=1`` runs every one of its benches (both
parts) on tiny configs on the CPU and summarizes them into the committed results format, so the
script and its summary work before GPU time is spent on them (the numbers mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every bench of the GPU script on tiny configs (~2 min)

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_takes_every_figure_and_writes_the_results_file(tmp_path):
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        ["bash", "tests/gpu/measure_gpu_figures.sh", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "performance.json"
    r2 = subprocess.run(
        [sys.executable, "tests/gpu/summarize.py", str(tmp_path), "--write", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r2.returncode == 0, r2.stderr
    res = json.loads(out.read_text())
    assert set(res) >= {"gpu", "driver", "torch", "date", "figures"}
    assert res["torch"] and res["date"]
    figs = res["figures"]
    failed = {k: v["error"][-500:] for k, v in figs.items() if "error" in v}
    assert not failed, failed
    assert len(figs) == 19, sorted(figs)
    # the speed figures carry ours, diffusers' from the same call and the ratio ours / theirs
    for name in ("dit_step_1p3b_bf16", "e2e_1p3b_50_steps", "e2e_1p3b_50_steps_step_cache"):
        f = figs[name]
        assert f["ours"] > 0 and f["diffusers"] > 0, (name, f)
        assert f["ratio"] == round(f["ours"] / f["diffusers"], 4) and isinstance(f["met"], bool)
    assert figs["dit_step_1p3b_fp8"]["velocity_error_vs_bf16"]["max_rel"] > 0
    assert figs["dit_step_1p3b_compile"]["compile_and_first_call_s"] > 0
    assert figs["e2e_1p3b_50_steps_step_cache"]["psnr_db_vs_uncached"] is None or (
        figs["e2e_1p3b_50_steps_step_cache"]["psnr_db_vs_uncached"] > 0
    )
    for name in ("vae_480p81_tiled", "vae_720p81_tiled"):
        assert figs[name]["ours"] > 0 and figs[name]["untiled"] > 0
    for name in ("dit_step_14b_swap32_pinned", "dit_step_14b_swap32_pageable"):
        assert figs[name]["ours"] > 0 and figs[name]["ratio"] > 0
    assert figs["e2e_14b_fast"]["ours"] > 0
    for name in ("plan_1p3b_8gb", "plan_14b_16gb", "plan_5b_12gb", "plan_5b_8gb", "plan_a14b_24gb"):
        p = figs[name]
        assert p["plan"] and p["seconds"] > 0 and p["predicted"] > 0, (name, p)
        assert p["ours"] is None and p["met"] is None  # no CUDA: no reserved peak
    ort = figs["ort_cuda"]  # on the CPU the tiny graphs run in ORT's CPU provider
    assert ort["device"] == "cpu" and max(ort["max_rel_error"].values()) < 1e-4
    print(r.stdout)
