"""Each rank of a parallel run plans its own GPU's memory for its share of the work
(run.plans_for_run(layout=...)): one CFG half (batch 1), its shard of the tokens."""

from __future__ import annotations

import re

import pytest


def _dit_line(cli, tmp_path, *flags: str) -> tuple[int, float]:
    args = ["generate", "--random-weights", "t2v-14B", "--prompt", "x", "--size", "1280x720"]
    args += ["--frames", "81", "--vram-budget", "16", "--print-plan", *flags]
    r = cli([*args, "--out", tmp_path / "x.mp4"])
    assert r.code == 0, r.err
    m = re.search(
        r"DiT: bf16, (\d+) blocks streamed from pinned memory \(([\d.]+) GiB a step\)", r.out
    )
    assert m, r.out
    return int(m.group(1)), float(m.group(2))


@pytest.mark.parametrize(
    ("flags", "blocks", "gib"),
    [
        ((), 33, 43.2),  # one process: cond and uncond one after the other, every block twice
        (("--parallel", "2", "--parallel-mode", "cfg"), 33, 21.6),  # one half a rank: once
        (("--parallel", "2", "--parallel-mode", "sequence"), 33, 21.6),  # half the tokens, batched
        (("--parallel", "4"), 28, 18.3),  # both: activations of a quarter, fewer blocks streamed
    ],
)
def test_14b_720p_on_16_gb_per_rank(cli, tmp_path, flags, blocks, gib):
    assert _dit_line(cli, tmp_path, *flags) == (blocks, gib)
