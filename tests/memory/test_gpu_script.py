"""tests/gpu/run_issue5.sh as a smoke test: ``TINY=1`` runs every one of its benches on tiny
configs on the CPU and summarizes them, so the script and its summary work before GPU time is
spent on them (the numbers mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs every bench of tests/gpu/run_issue5.sh on tiny configs (~40 s)

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_runs_every_bench_and_summarizes_them(tmp_path):
    env = {**os.environ, "TINY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        ["bash", "tests/gpu/run_issue5.sh", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = json.loads((tmp_path / "summary.json").read_text())
    failed = {k: v["error"][-500:] for k, v in rows.items() if "error" in v}
    assert not failed, failed
    assert len(rows) == 10
    assert rows["dit_1p3b_onepass"]["ours"]["dit_step_s"] > 0
    dit = rows["dit_1p3b"]
    assert dit["ours"]["dit_step_s"] > 0 and dit["diffusers"]["dit_step_s"] > 0
    assert dit["ratios"]["dit_step_speedup"] > 0 and isinstance(dit["time_ok"], bool)
    modes = rows["sweep_1p3b"]["modes"]
    assert {m["precision"] for m in modes} == {"bf16", "fp8", "int8"}
    assert all(m["error"] is None and m["dit_step_s"] > 0 for m in modes), modes
    assert rows["sweep_1p3b"]["fastest_fp8_step_s"] > 0
    for name in ("vae21_480p81", "vae22_704p121"):
        v = rows[name]
        assert v["tiled_s"] > 0 and v["tiled_peak_gb"] is None and v["memory_ok"] is None
    for name in ("plan_1p3b_8gb", "plan_14b_16gb", "plan_5b_12gb", "plan_a14b_24gb"):
        p = rows[name]
        assert p["plan"] and p["e2e_s"] > 0 and p["predicted_peak_gib"] > 0, (name, p)
    e2e = rows["e2e_1p3b"]
    assert e2e["ours"]["e2e_s"] > 0 and e2e["step_cache"]["e2e_s"] > 0
    print(r.stdout)
