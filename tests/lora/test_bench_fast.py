"""``wan-desktop bench --preset fast`` — the command that measures the distilled 4-step figure on a
GPU (T2V-14B 832×480×81) — runs its CPU path on tiny configs with exactly 4 DiT calls, batch 1."""

from __future__ import annotations

import argparse
import json

import pytest
from wan_desktop.engines.torch_backend import TorchDenoiser

from wan_desktop import bench
from wan_desktop.cli import build_parser


def _args(*argv: str) -> argparse.Namespace:
    """``wan-desktop bench ARGV`` parsed by the real command line."""
    return build_parser().parse_args(["bench", *argv])


@pytest.mark.parametrize("variant", ["t2v-14B"])
def test_bench_fast_preset_runs_4_uncond_free_dit_calls(variant, capsys, monkeypatch):
    calls: list[tuple[int, float]] = []
    original = TorchDenoiser.__call__

    def counting(self, latents, timestep, context, **kw):
        calls.append((latents.shape[0], float(timestep.reshape(-1)[0])))
        return original(self, latents, timestep, context, **kw)

    monkeypatch.setattr(TorchDenoiser, "__call__", counting)
    assert (
        bench.run(
            _args(
                "--tiny",
                "--no-diffusers",
                "--variant",
                variant,
                "--preset",
                "fast",
                "--tiny-vae",
                "random",
            )
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["preset"], out["steps"], out["guidance"]) == ("fast", 4, 1.0)
    assert (out["dit_calls"], out["dit_batch"]) == (4, 1)
    assert out["ours"]["e2e_s"] > 0 and out["ours"]["vae_decode_s"] > 0
    assert out["tiny_vae"] == "random"
    # the bench's own timing calls use its batch-2 inputs; the generation is the batch-1 calls
    e2e = [t for b, t in calls if b == 1]
    assert [round(t, 1) for t in e2e] == [1000.0, 937.5, 833.3, 625.0]
