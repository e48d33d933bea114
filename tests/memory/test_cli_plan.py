"""``wan-desktop generate --print-plan``: the plan for a budget, printed without loading anything."""

from __future__ import annotations

import pytest
import torch

from wan_desktop import memory as M
from wan_desktop.cli import main
from wan_desktop.variants import VARIANTS


def test_print_plan_shows_the_plan_and_its_fallbacks(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    rc = main(["generate", "--random-weights", "t2v-14B", "--size", "832x480", "--frames", "81",
               "--vram-budget", "16", "--print-plan", "--prompt", "a fox", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0 and not out.exists() and printed.err == ""
    want = M.plan_ladder(M.workload_for(VARIANTS["t2v-14B"], 832, 480, 81), 16,
                         ram_gib=M.system_ram_gib())
    assert printed.out.strip() == "\n".join(p.describe() for p in want)
    first = printed.out.splitlines()[0]
    assert first.startswith("plan 16gb (budget 16.0 GiB): predicted peak ")
    assert f"{want[0].dit.swap_blocks} blocks streamed" in printed.out


def test_print_plan_without_a_gpu_needs_a_budget(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("with a GPU its free memory is the budget")
    rc = main(["generate", "--random-weights", "t2v-1.3B", "--print-plan", "--prompt", "x",
               "--out", str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: --print-plan") and "--vram-budget 12" in err
