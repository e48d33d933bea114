"""``wan-desktop bench`` memory figures on tiny configs (CPU): the VAE decode tiled vs untiled and
the whole generation under a memory plan. The GPU script (tests/gpu/measure_gpu_figures.sh) runs the same
code at full size."""

from __future__ import annotations

import json

from wan_desktop import bench
from wan_desktop.cli import build_parser


def _run(capsys, *argv: str) -> dict:
    assert bench.run(build_parser().parse_args(["bench", "--tiny", "--no-diffusers", *argv])) == 0
    return json.loads(capsys.readouterr().out)


def test_vae_only_reports_tiled_and_untiled(capsys):
    out = _run(capsys, "--vae-only", "--vae-tile", "5x3", "--frames", "1")
    v = out["vae_tiling"]
    assert "ours" not in out
    assert v["tile"] == [3, 5] and v["overlap"] == 1
    assert v["untiled_s"] > 0 and v["tiled_s"] > 0
    assert v["untiled_peak_gb"] is None  # no CUDA: no peak figures
    assert 10 < v["psnr_db_tiled_vs_untiled"] < 60 and v["max_levels_tiled_vs_untiled"] > 0
    assert v["predicted_tiled_gib"] < v["predicted_untiled_gib"]


def test_plan_mode_runs_the_generation_under_the_plan(capsys):
    out = _run(capsys, "--plan", "--vram-budget", "8", "--steps", "2")
    p = out["planned"]
    assert p["budget_gb"] == 8.0 and p["plan"]["name"] == "8gb" and p["warnings"] == []
    assert [a["plan"] for a in p["attempts"]] == ["8gb"] and p["e2e_s"] > 0
    assert p["plan_text"].startswith("plan 8gb (budget 8.0 GiB)")
    assert set(p["predicted_phases_gib"]) == {"encode", "denoise", "decode"}
