"""The memory planner counts a VACE GGUF DiT's branch at the file's bits per weight (its linears
stay quantized, like the main blocks'), close to what the loaded model holds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.fixtures_models import official_dit_state
from tests.gguf_files import write_gguf
from tests.vace_models import build_tiny_vace_model
from wan_desktop import memory as M
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.load import load_dit
from wan_desktop.run import stored_precision
from wan_desktop.variants import VARIANTS

pytest.importorskip("gguf")
pytest.importorskip("diffusers")


def _dit_bytes(cfg, precision: str) -> float:
    return M.dit_nonblock_bytes(cfg, precision) + cfg.num_layers * M.dit_block_bytes(cfg, precision)


def test_a_vace_gguf_counts_its_branch_quantized():
    vace, base = VARIANTS["vace-14B"].dit, VARIANTS["t2v-14B"].dit
    branch = _dit_bytes(vace, "gguf:4.50") - _dit_bytes(base, "gguf:4.50")
    # 3.05 G parameters of VACE branch, nearly all in linears: ~4.5 bits each
    assert 1.6e9 < branch < 1.9e9
    assert branch < 0.3 * (_dit_bytes(vace, "bf16") - _dit_bytes(base, "bf16"))


def test_planner_figure_matches_a_loaded_vace_gguf_dit(tmp_path):
    m = build_tiny_vace_model(tmp_path / "m", "vace-1.3B")
    path = tmp_path / "Wan2.1-VACE-1.3B-Q4_K.gguf"
    write_gguf(path, official_dit_state(m.refs["transformer"]), "Q4_K")
    files = detect_model(path, vae=m.comfy_vae, text_encoder=m.comfy_t5)
    precision = stored_precision(files)
    assert precision is not None and precision.startswith("gguf:")
    model = load_dit(files, dtype=torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    cfg = files.variant.dit
    predicted = _dit_bytes(cfg, precision)
    plain = _dit_bytes(replace(cfg, vace_in_dim=None, vace_layers=()), precision)
    print(
        f"tiny VACE Q4_K: held {held} B, planned {predicted:.0f} B ({plain:.0f} B without the "
        "VACE branch)"
    )
    assert predicted == pytest.approx(held, rel=0.15)
    assert plain < 0.7 * held  # the branch is a third of this tiny model
