"""``wan-desktop generate --print-plan``: the plan for a budget, printed without loading anything."""

from __future__ import annotations

import pytest
import torch

from wan_desktop import memory as M
from wan_desktop.cli import main
from wan_desktop.variants import VARIANTS


def test_print_plan_shows_the_plan_and_its_fallbacks(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    rc = main(
        [
            "generate",
            "--random-weights",
            "t2v-14B",
            "--size",
            "832x480",
            "--frames",
            "81",
            "--vram-budget",
            "16",
            "--print-plan",
            "--prompt",
            "a fox",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr()
    assert rc == 0 and not out.exists() and printed.err == ""
    want = M.plan_ladder(
        M.workload_for(VARIANTS["t2v-14B"], 832, 480, 81), 16, ram_gib=M.system_ram_gib()
    )
    assert printed.out.strip() == "\n".join(p.describe() for p in want)
    first = printed.out.splitlines()[0]
    assert first.startswith("plan 16gb (budget 16.0 GiB): predicted peak ")
    assert f"{want[0].dit.swap_blocks} blocks streamed" in printed.out


def test_print_plan_without_a_gpu_needs_a_budget(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("with a GPU its free memory is the budget")
    rc = main(
        [
            "generate",
            "--random-weights",
            "t2v-1.3B",
            "--print-plan",
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "v.mp4"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: planning without a CUDA GPU needs a VRAM budget")
    assert "--vram-budget 12" in err


def test_fp8_checkpoints_are_planned_as_fp8(tmp_path):
    """A DiT stored in fp8 (ComfyUI fp8 files run as stored) is recognised from the header, so
    its plan counts fp8 block bytes."""
    from safetensors.torch import save_file

    from wan_desktop.run import stored_precision

    class Files:
        def __init__(self, path):
            self.experts = (type("C", (), {"files": (path,)})(),)

    fp8 = tmp_path / "dit_fp8.safetensors"
    save_file(
        {
            "blocks.0.ffn.0.weight": torch.zeros(4, 4, dtype=torch.float8_e4m3fn),
            "blocks.0.ffn.0.bias": torch.zeros(4, dtype=torch.bfloat16),
        },
        str(fp8),
    )
    bf16 = tmp_path / "dit_bf16.safetensors"
    save_file(
        {"model.diffusion_model.blocks.0.ffn.0.weight": torch.zeros(4, 4, dtype=torch.bfloat16)},
        str(bf16),
    )
    assert stored_precision(Files(fp8)) == "fp8"
    assert stored_precision(Files(bf16)) is None
    assert stored_precision(None) is None
