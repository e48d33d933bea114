"""Each rank of a parallel run plans its own GPU's memory for its share of the work
(run.plans_for_run(layout=...)): one CFG half (batch 1), its shard of the tokens, and, when the
whole DiT does not fit a rank but 1/N of its blocks does, FSDP2 shards before any block streams."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from wan_desktop import memory as M
from wan_desktop import run
from wan_desktop.options import ParallelMode
from wan_desktop.parallel.layout import plan_layout
from wan_desktop.request import GenerationRequest
from wan_desktop.variants import get_variant


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
    ],
)
def test_14b_720p_on_16_gb_per_rank(cli, tmp_path, flags, blocks, gib):
    assert _dit_line(cli, tmp_path, *flags) == (blocks, gib)


def _rank_plan(budget_gib: float, world: int) -> M.Plan:
    """The first plan of one rank: full-size 14B bf16, 480p 81 frames, CFG split over ``world``
    (run.plans_for_run with the parallel layout; ``world`` 1: one process)."""
    v = get_variant("t2v-14B")
    request = GenerationRequest(prompt="x", width=832, height=480, frames=81).resolve(v)
    layout = None
    if world > 1:
        layout = plan_layout(world, ParallelMode.CFG, cfg_used=True, heads=v.dit.num_heads)
    plans = run.plans_for_run(
        v, request, device=torch.device("cpu"), budget_gib=budget_gib, precision=None, layout=layout
    )
    return plans[0]


def test_14b_720p_on_4_x_16_gb_shards_the_blocks_over_the_ranks(cli, tmp_path):
    # a quarter of the blocks a rank (6.5 GiB) fits beside a quarter of the activations: no
    # block streams (one process: 33 blocks, 43.2 GiB a step)
    args = ["generate", "--random-weights", "t2v-14B", "--prompt", "x", "--size", "1280x720"]
    args += ["--frames", "81", "--vram-budget", "16", "--print-plan", "--parallel", "4"]
    r = cli([*args, "--out", tmp_path / "x.mp4"])
    assert r.code == 0, r.err
    first = r.out.split("\nplan ")[0]
    assert "DiT: bf16, blocks sharded over 4 ranks (FSDP2)" in first, r.out


def test_the_planner_shards_the_14b_over_2_ranks_when_half_of_it_fits_and_the_whole_does_not():
    v = get_variant("t2v-14B")
    whole = M.dit_nonblock_bytes(v.dit) + v.dit.num_layers * M.dit_block_bytes(v.dit, "bf16")
    whole /= M.GIB
    assert whole > M.usable_gib(24)  # 27.0 GiB of weights: not on one 24 GB card
    p = _rank_plan(24, 2)
    print(f"\n14B bf16 480p, 2 x 24 GB: {p.describe()}")
    assert (p.dit.fsdp_shards, p.dit.swap_blocks) == (2, 0)  # sharded, nothing streamed
    assert "DiT: bf16, blocks sharded over 2 ranks (FSDP2)" in p.describe()
    assert p.predicted.denoise_gib <= M.usable_gib(24)
    alone = _rank_plan(24, 1)  # one process on the same card streams blocks instead
    assert alone.dit.fsdp_shards == 1 and alone.dit.swap_blocks > 0


def test_on_2_x_16_gb_half_the_14b_does_not_fit_either_so_the_ranks_stream_blocks():
    # 13.1 GiB of shards + two whole blocks in flight (1.3) + the rest (0.8) > 14.3 usable
    p = _rank_plan(16, 2)
    assert p.dit.fsdp_shards == 1 and p.dit.swap_blocks == 27
    sharded = replace(p.dit, fsdp_shards=2, swap_blocks=0)
    w = M.workload_for(get_variant("t2v-14B"), 832, 480, 81, guidance=False, weight_shards=2)
    assert M.predict(w, p.text, sharded, p.vae, p.ram).denoise_gib > M.usable_gib(16)
