"""Which rank does what (wan_desktop/parallel/layout.py): the CFG split and the sequence-parallel
degree of N processes, and the one-line error naming the valid N when there is none."""

from __future__ import annotations

import pytest

from wan_desktop.errors import ConfigError
from wan_desktop.options import ParallelMode
from wan_desktop.parallel.layout import Layout, plan_layout

AUTO, CFG, SEQ = ParallelMode.AUTO, ParallelMode.CFG, ParallelMode.SEQUENCE


@pytest.mark.parametrize(
    ("world", "mode", "cfg_used", "cfg", "seq"),
    [
        (1, AUTO, True, 1, 1),
        (2, AUTO, True, 2, 1),  # auto: the CFG split first
        (4, AUTO, True, 2, 2),  # ... then sequence parallel across the rest
        (3, AUTO, True, 1, 3),  # odd: sequence parallel only
        (2, AUTO, False, 1, 2),  # guidance 1: no uncond half to split off
        (2, CFG, True, 2, 1),
        (6, SEQ, True, 1, 6),
    ],
)
def test_layouts_of_the_1_3b_model(world, mode, cfg_used, cfg, seq):
    layout = plan_layout(world, mode, cfg_used=cfg_used, heads=12)
    assert (layout.cfg, layout.seq) == (cfg, seq)


def test_ranks_of_cfg_plus_sequence():
    """r = cfg_index · seq + seq_rank: ranks 0, 1 compute cond, 2, 3 uncond; pairs (0, 2), (1, 3)
    exchange velocities; (0, 1) and (2, 3) share tokens."""
    layout = Layout(world=4, cfg=2, seq=2)
    assert [layout.cfg_index(r) for r in range(4)] == [0, 0, 1, 1]
    assert [layout.seq_rank(r) for r in range(4)] == [0, 1, 0, 1]
    assert layout.cfg_groups() == [[0, 2], [1, 3]]
    assert layout.seq_groups() == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    ("world", "mode", "heads", "valid"),
    [
        (5, SEQ, 12, "valid process counts: 2, 3, 4, 6, 12"),  # 1.3B: 12 heads
        (16, SEQ, 40, "valid process counts: 2, 4, 5, 8, 10, 20, 40"),  # 14B: 40 heads
        (
            10,
            AUTO,
            12,
            "over 5 sequence-parallel ranks (after the CFG split); valid process counts: 2, 3, 4, 6, 8, 12, 24",
        ),
    ],
)
def test_heads_that_do_not_divide_name_the_valid_counts(world, mode, heads, valid):
    with pytest.raises(ConfigError) as e:
        plan_layout(world, mode, cfg_used=True, heads=heads)
    assert f"--parallel {world}: the model's {heads} attention heads" in e.value.message
    assert valid in e.value.message
    assert e.value.field == "parallel"


def test_cfg_mode_needs_guidance_and_two_processes():
    with pytest.raises(ConfigError, match="needs classifier-free guidance"):
        plan_layout(2, CFG, cfg_used=False, heads=12)
    with pytest.raises(ConfigError, match="exactly 2 processes, got 4"):
        plan_layout(4, CFG, cfg_used=True, heads=12)
