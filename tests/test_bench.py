"""``wan-desktop bench --tiny`` runs end to end on the CPU and prints JSON with every key."""

from __future__ import annotations

import argparse
import json

import pytest

from wan_desktop import bench
from wan_desktop.cli import build_parser, main

OUR_KEYS = {
    "build_s",
    "t5_encode_s",
    "dit_first_call_s",
    "dit_step_s",
    "vae_decode_s",
    "e2e_s",
    "peak_allocated_gb",
    "peak_reserved_gb",
    "device_used_gb",
    "phases_gb",
}


def _args(*argv: str) -> argparse.Namespace:
    """``wan-desktop bench ARGV`` parsed by the real command line."""
    return build_parser().parse_args(["bench", *argv])


def test_tiny_bench_prints_json_with_all_keys(tmp_path, capsys):
    pytest.importorskip("diffusers")
    out = tmp_path / "b.json"
    assert bench.run(_args("--tiny", "--json", str(out))) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    ours, theirs = printed["ours"], printed["diffusers_components"]
    assert OUR_KEYS | {"velocity_error_vs_bf16_sdpa", "step_cache_stats"} <= set(ours)
    assert set(theirs) >= OUR_KEYS
    for side in (ours, theirs):
        for key in ("t5_encode_s", "dit_step_s", "vae_decode_s", "e2e_s"):
            assert side[key] > 0, key
    assert set(printed["ratios"]) == {
        "t5_encode_speedup",
        "dit_step_speedup",
        "vae_decode_speedup",
        "e2e_speedup",
        "peak_allocated_ratio",
    }
    assert printed["tokens"] == 16 and printed["latent"] == [16, 2, 4, 8]
    print({k: round(v, 4) for k, v in ours.items() if k.endswith("_s")})


def test_tiny_bench_fast_modes(capsys):
    assert (
        bench.run(
            _args(
                "--tiny",
                "--no-diffusers",
                "--precision",
                "fp8",
                "--swap-blocks",
                "1",
                "--step-cache",
                "1e9",
                "--steps",
                "4",
            )
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    ours = printed["ours"]
    err = ours["velocity_error_vs_bf16_sdpa"]
    print("tiny fp8 + swap velocity error vs fp32 weights:", err)
    assert 1e-3 < err["rel_l2"] < 0.05
    cache = ours["step_cache_stats"]
    assert cache["per_expert"][0]["skipped_steps"] == [1, 2]
    assert printed["diffusers_components"] is None and printed["ratios"] is None


def test_tiny_sweep_through_the_command_line(capsys):
    assert main(["bench", "--tiny", "--sweep"]) == 0  # cli.main dispatches to bench.run
    rows = json.loads(capsys.readouterr().out)["sweep"]
    assert [(r["precision"], r["attention"]) for r in rows] == [
        ("bf16", "sdpa"),
        ("fp8", "sdpa"),
        ("int8", "sdpa"),
    ]
    assert all("error" not in r and r["dit_step_s"] > 0 for r in rows)
    assert rows[0]["velocity_error"]["rel_l2"] == 0.0  # the reference itself
    assert rows[1]["velocity_error"]["rel_l2"] > rows[2]["velocity_error"]["rel_l2"] > 0


@pytest.mark.gpu
def test_gpu_bench_small(capsys):
    """The real path on a GPU at a small size: CUDA events, memory figures, fp8."""
    assert (
        bench.run(
            _args(
                "--size",
                "320x192",
                "--frames",
                "9",
                "--steps",
                "3",
                "--repeat",
                "2",
                "--no-diffusers",
                "--precision",
                "fp8",
                "--step-cache",
                "0.1",
            )
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["ours"]["peak_allocated_gb"] > 1.0
    print(json.dumps(printed["ours"], indent=1))
