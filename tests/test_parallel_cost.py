"""parallel_cost: the bytes each multi-GPU mode sends per step, against hand counts."""

from __future__ import annotations

import pytest

from wan_desktop.errors import ConfigError
from wan_desktop.parallel_cost import (
    cfg_bytes_per_step,
    dit_flops_per_pass,
    step_cost,
    ulysses_bytes_per_step,
)
from wan_desktop.variants import DiTConfig, get_variant

T2V_13B = get_variant("t2v-1.3B")
T2V_14B = get_variant("t2v-14B")


def tiny_dit(**kw) -> DiTConfig:
    fields = dict(
        model_type="t2v", dim=8, ffn_dim=8, num_heads=2, num_layers=1, in_dim=4, out_dim=4
    )
    return DiTConfig(**{**fields, **kw})  # type: ignore[arg-type]


def test_ulysses_480p_1p3b_on_two_ranks_is_the_hand_count():
    # 832×480×81: latent 21×60×104, patches 1×2×2 -> 21·30·52 = 32 760 tokens, 16 380 per rank.
    # An all-to-all keeps the rank's own 6 heads and sends the other 6 (768 of 1536 channels):
    # 16 380 × 768 × 2 B = 25 159 680 B; × 4 per block × 30 blocks × 2 passes (cond, uncond).
    assert T2V_13B.seq_len(832, 480, 81) == 32_760
    sent = ulysses_bytes_per_step(T2V_13B.dit, 32_760, 2)
    assert sent == 25_159_680 * 4 * 30 * 2 == 6_038_323_200


def test_ulysses_sends_world_minus_one_over_world_of_the_local_tokens():
    # 14B at 720p over 4 ranks: 75 600 tokens, 18 900 per rank; 3/4 of 18 900 × 5120 × 2 B
    local = 75_600 // 4
    per_all_to_all = local * 5120 * 2 * 3 // 4
    assert ulysses_bytes_per_step(T2V_14B.dit, 75_600, 4, passes=1) == per_all_to_all * 4 * 40


def test_ulysses_pads_the_last_shard():
    # 7 tokens on 2 ranks: 4 per rank (one padding token); 4 × (8/2) channels × 1 peer × 2 B
    assert ulysses_bytes_per_step(tiny_dit(), 7, 2, passes=1) == 4 * 4 * 1 * 2 * 4
    assert ulysses_bytes_per_step(tiny_dit(), 8, 2, passes=1) == 4 * 4 * 1 * 2 * 4


def test_one_rank_sends_nothing():
    assert ulysses_bytes_per_step(T2V_13B.dit, 32_760, 1) == 0
    assert cfg_bytes_per_step((16, 21, 60, 104), world=1) == 0


def test_heads_that_do_not_divide_name_the_valid_counts():
    with pytest.raises(ConfigError, match="12 attention heads do not divide by 5") as e:
        ulysses_bytes_per_step(T2V_13B.dit, 32_760, 5)
    assert "1, 2, 3, 4, 6, 12" in e.value.remedy
    with pytest.raises(ConfigError) as e:
        ulysses_bytes_per_step(T2V_14B.dit, 75_600, 3)
    assert "1, 2, 4, 5, 8, 10, 20, 40" in e.value.remedy


def test_cfg_parallel_gathers_one_fp32_velocity_per_step():
    # the latent of 832×480×81: 16 × 21 × 60 × 104 floats, each rank sends its own once
    assert cfg_bytes_per_step(T2V_13B.latent_shape(832, 480, 81)) == 16 * 21 * 60 * 104 * 4
    assert cfg_bytes_per_step((16, 21, 90, 160)) == 16 * 21 * 90 * 160 * 4 == 19_353_600


def test_flops_of_one_pass_by_hand():
    # dim 4, ffn 8, one block, 3 video tokens, 2 text tokens:
    # linear 3·(6·16 + 2·4·8) + 2·2·16 = 544; attention 2·9·4 + 2·3·2·4 = 120; × 2 (mul + add)
    dit = tiny_dit(dim=4, ffn_dim=8)
    assert dit_flops_per_pass(dit, 3, text_tokens=2) == 2 * (544 + 120)


def test_linear_flops_are_two_per_parameter_per_token():
    # the blocks' weights are ~all of the 1.3B model's 1.42 B parameters (measured count in
    # /work/shared/gpu-baseline.json): without attention, FLOPs ≈ 2 × params × tokens
    linear_only = dit_flops_per_pass(T2V_13B.dit, 1, text_tokens=0) - 2 * 30 * 2 * 1536
    assert linear_only / 2 == pytest.approx(1.42e9, rel=0.15)


def test_step_cost_scales_the_reference_step_by_flops():
    ref = step_cost(T2V_13B, 832, 480, 81)
    big = step_cost(T2V_14B, 1280, 720, 81)
    assert ref.tokens == 32_760 and big.tokens == 75_600
    assert ref.step_seconds(ref, 1.215) == 1.215
    assert big.step_seconds(ref, 1.215) == pytest.approx(1.215 * big.step_flops / ref.step_flops)
    # 720p 14B: ~2.3× the tokens, attention quadratic in them, ~12× the width² → > 20× the work
    assert big.step_seconds(ref, 1.215) > 20 * 1.215
