"""The memory planner streams a VACE model's VACE blocks with its blocks: whenever a plan streams
any block, the whole VACE branch's blocks leave the resident weights, count in the host-to-device
bytes of every step and in the pinned RAM, and the description says so; the branch's bytes equal
those of the full-size model built on the meta device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from wan_desktop import memory as M
from wan_desktop.checkpoints.materialize import weights_on_meta
from wan_desktop.models.vace import make_dit
from wan_desktop.variants import VARIANTS

GIB = M.GIB


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize(("name", "blocks"), [("vace-14B", 8), ("vace-1.3B", 15)])
def test_vace_block_bytes_equal_the_full_size_model_on_meta(name, blocks):
    cfg = VARIANTS[name].dit
    with weights_on_meta():
        m = make_dit(cfg).cast_weights(torch.bfloat16)  # the branch is never quantized
    assert len(m.vace_blocks) == blocks == M.streamed_vace_blocks(cfg, 1)
    assert M.dit_vace_blocks_bytes(cfg) == _bytes(m.vace_blocks)
    assert M.dit_vace_block_bytes(cfg, first=True) == _bytes(m.vace_blocks[0])  # + before_proj
    assert M.dit_vace_block_bytes(cfg) == _bytes(m.vace_blocks[1])
    # the whole model: the branch is in the non-block bytes (taken out again when it streams)
    whole = M.dit_nonblock_bytes(cfg) + cfg.num_layers * M.dit_block_bytes(cfg, "bf16")
    assert whole == _bytes(m)


def test_the_rule_vace_blocks_stream_whenever_any_block_streams():
    vace, t2v = VARIANTS["vace-14B"].dit, VARIANTS["t2v-14B"].dit
    assert [M.streamed_vace_blocks(vace, k) for k in (0, 1, 40)] == [0, 8, 8]
    assert M.streamed_vace_blocks(t2v, 5) == 0 and M.dit_vace_blocks_bytes(t2v) == 0
    # a slot holds the largest streamed block: VACE block 0, bf16 even when the blocks are fp8
    assert M.dit_slot_bytes(vace, "fp8", 1) == M.dit_vace_block_bytes(vace, first=True)
    assert M.dit_slot_bytes(vace, "fp8", 0) == M.dit_slot_bytes(t2v, "fp8", 1)
    assert M.dit_slot_bytes(t2v, "fp8", 1) == M.dit_block_bytes(t2v, "fp8")


def test_vace14b_480p_on_16gb_streams_the_vace_blocks_and_fits():
    v = VARIANTS["vace-14B"]
    cfg = v.dit
    w = M.workload_for(v, 832, 480, 81, task="vace")
    p = M.plan_ladder(w, 16.0, ram_gib=64.0)[0]
    d, pr = p.dit, p.predicted
    print(p.describe())
    assert (d.swap_blocks, p.vace_blocks, d.batch_cfg) == (33, 8, False)
    assert (
        f"DiT: bf16, 33 blocks streamed from pinned memory (+8 VACE blocks; {pr.h2d_gib_per_step:.1f} GiB a step)"
        in p.describe()
    )
    blk, vace = M.dit_block_bytes(cfg, "bf16"), M.dit_vace_blocks_bytes(cfg)
    vace0 = M.dit_vace_block_bytes(cfg, first=True)
    # per step: 33 main blocks and the 8 VACE blocks, for cond and uncond (CFG sequential)
    assert pr.h2d_gib_per_step == pytest.approx(2 * (33 * blk + vace) / GIB, rel=1e-12)
    assert p.ram.pinned_gib == pytest.approx((33 * blk + vace) / GIB, rel=1e-12)
    # resident: the non-block weights less the streamed VACE blocks, 7 main blocks, 2 slots
    weights = M.dit_nonblock_bytes(cfg) - vace + 7 * blk + 2 * vace0
    act = M.dit_activation_bytes(cfg, w.tokens, 1, per_token_t=False)
    z, t, h, wl = v.latent_shape(832, 480, 81)
    assert pr.denoise_gib == pytest.approx((weights + act + 8 * z * t * h * wl * 4) / GIB)
    assert pr.peak_gib <= M.usable_gib(16.0)
    # with the branch resident even all 40 blocks streamed would not fit (the plan before)
    resident_branch = M.dit_nonblock_bytes(cfg) + 2 * blk + act + 8 * z * t * h * wl * 4
    assert resident_branch / GIB > M.usable_gib(16.0)
    print(
        f"denoise {pr.denoise_gib:.2f} GiB (VACE branch resident, 40 blocks streamed: "
        f"{resident_branch / GIB:.2f}); usable {M.usable_gib(16.0):.2f}"
    )


def test_a_resident_plan_keeps_the_vace_branch_and_says_resident():
    v = VARIANTS["vace-1.3B"]
    w = M.workload_for(v, 832, 480, 81, task="vace")
    p = M.plan_ladder(w, 16.0, ram_gib=64.0)[0]
    assert p.dit.swap_blocks == 0 and p.vace_blocks == 0 and "DiT: bf16, resident" in p.describe()
    assert p.predicted.h2d_gib_per_step == 0 and p.ram.pinned_gib == 0
    # streaming one block moves the 15 VACE blocks out too: the weights drop by them and one
    # main block, less the two slots (each as large as VACE block 0)
    one = replace(p.dit, swap_blocks=1)
    a = M.predict(w, p.text, p.dit, p.vae, p.ram).denoise_gib
    b = M.predict(w, p.text, one, p.vae, p.ram).denoise_gib
    cfg = v.dit
    drop = M.dit_vace_blocks_bytes(cfg) + M.dit_block_bytes(cfg, "bf16")
    drop -= 2 * M.dit_vace_block_bytes(cfg, first=True)  # the two slots
    assert (a - b) * GIB == pytest.approx(drop, rel=1e-9)


def test_pageable_note_counts_the_vace_blocks():
    w = M.workload_for(VARIANTS["vace-14B"], 832, 480, 81, task="vace")
    p = M.plan_ladder(w, 16.0, ram_gib=32.0)[0]
    assert not p.ram.pin
    cfg = VARIANTS["vace-14B"].dit
    pinned = (33 * M.dit_block_bytes(cfg, "bf16") + M.dit_vace_blocks_bytes(cfg)) / GIB
    assert p.ram.pinned_gib == pytest.approx(pinned) and pinned > M.MAX_PINNED_RAM_SHARE * 32
    (note,) = p.notes
    assert note.startswith("streaming 33 blocks (+8 VACE blocks) from pageable memory")
    assert f"their {pinned:.1f} GiB of 32 GiB RAM" in note
    assert note.endswith("--precision fp8 halves the main blocks' (the VACE blocks stay bf16)")
