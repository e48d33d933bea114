"""The memory planner counts a GGUF DiT's quantized bytes: the file's bits per block-linear weight
("gguf:<bits>", run.stored_precision), its non-block linears quantized too."""

from __future__ import annotations

import pytest
import torch

from tests.engines.helpers import tiny_dit
from tests.gguf_files import write_gguf
from wan_desktop import memory as M
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.load import load_dit
from wan_desktop.errors import ConfigError
from wan_desktop.models.layers import Ops
from wan_desktop.request import GenerationRequest
from wan_desktop.run import plans_for_run, stored_precision
from wan_desktop.variants import VARIANTS

pytest.importorskip("gguf")
GB = 1e9


def _dit_bytes(cfg, precision: str) -> float:
    return M.dit_nonblock_bytes(cfg, precision) + cfg.num_layers * M.dit_block_bytes(cfg, precision)


def test_t2v_14b_q4_k_is_about_8_gb():
    cfg = VARIANTS["t2v-14B"].dit
    q4 = _dit_bytes(cfg, "gguf:4.50")
    assert 7.8 * GB < q4 < 8.6 * GB  # 8.14 GB: 14.05 G block weights at 4.5 bits + the rest
    assert q4 < 0.6 * _dit_bytes(cfg, "fp8") and q4 < 0.3 * _dit_bytes(cfg, "bf16")
    assert _dit_bytes(cfg, "gguf:8.50") == pytest.approx(15.27 * GB, rel=0.01)


def test_a_q4_k_14b_streams_fewer_blocks_than_bf16_on_a_12_gb_card():
    v = VARIANTS["t2v-14B"]
    plans = {
        p: M.plan_ladder(M.workload_for(v, 832, 480, 81, precision=p), 12.0)[0]
        for p in ("bf16", "gguf:4.50")
    }
    assert plans["gguf:4.50"].dit.precision == "gguf:4.50"
    assert plans["gguf:4.50"].dit.swap_blocks < plans["bf16"].dit.swap_blocks
    with pytest.raises(ConfigError, match="unknown DiT precision"):
        M.workload_for(v, 832, 480, 81, precision="gguf:lots")


def test_planner_figure_matches_a_loaded_gguf_dit(tmp_path):
    path = tmp_path / "wan2.1-t2v-tiny-Q4_K.gguf"
    state = {k: v.contiguous() for k, v in tiny_dit(num_layers=4, ops=Ops).state_dict().items()}
    write_gguf(path, state, "Q4_K")
    files = detect_model(path)
    precision = stored_precision(files)
    assert precision is not None and precision.startswith("gguf:")
    bits = float(precision.removeprefix("gguf:"))
    # tiny dims: Q4_K (4.5 bits) rows of 256, ffn.2's 320-wide rows Q8_0 (8.5)
    assert 4.5 < bits < 8.5
    model = load_dit(files, dtype=torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    predicted = _dit_bytes(files.variant.dit, precision)
    assert predicted == pytest.approx(held, rel=0.15)
    request = GenerationRequest(prompt="x", width=64, height=32, frames=9).resolve(files.variant)
    plans = plans_for_run(
        files.variant, request, device=torch.device("cpu"), budget_gib=4.0, precision=precision
    )
    assert plans[0].dit.precision == precision
