"""The VRAM planner's arithmetic and decisions (wan_desktop/memory.py): exact parameter counts,
the calibration against measured peaks, per-budget decisions, monotonicity, the fallback order."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop.errors import ConfigError
from wan_desktop.variants import VAE21, VAE22, VARIANTS


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_equal_the_full_size_models_built_on_meta():
    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.clip import ClipVisionEncoder
    from wan_desktop.models.t5 import T5Encoder
    from wan_desktop.models.vace import make_dit
    from wan_desktop.models.vae21 import WanVAE21
    from wan_desktop.models.vae22 import WanVAE22

    seen = set()
    for name, v in VARIANTS.items():
        if v.dit in seen:  # t2v-A14B's experts are t2v-14B's architecture
            continue
        seen.add(v.dit)
        with weights_on_meta():
            m = make_dit(v.dit)  # VACE variants: with their VACE branch
        assert M.dit_params(v.dit) == _n(m), name
        assert M.dit_block_params(v.dit) == _n(m.blocks[0]), name
        linears = sum(
            x.weight.numel() for x in m.blocks[0].modules() if isinstance(x, torch.nn.Linear)
        )
        assert M.dit_block_linear_weights(v.dit) == linears, name
    with weights_on_meta():
        t5 = T5Encoder(VARIANTS["t2v-14B"].t5)
        clip = ClipVisionEncoder(VARIANTS["i2v-14B"].clip)
        vae21, vae22 = WanVAE21(VAE21), WanVAE22(VAE22)
    assert M.t5_params(VARIANTS["t2v-14B"].t5) == _n(t5) == 5_680_910_336
    assert M.clip_params(VARIANTS["i2v-14B"].clip) == _n(clip) == 632_076_800
    assert M.vae_params(VAE21) == _n(vae21) == 126_892_531
    assert M.vae_params(VAE22) == _n(vae22) == 704_688_668
    # the figures quoted in the baseline JSON and wan-spec.md
    assert M.dit_params(VARIANTS["t2v-1.3B"].dit) == 1_418_996_800
    assert M.dit_params(VARIANTS["t2v-14B"].dit) == 14_288_491_584


@pytest.mark.parametrize("name", ["t2v-1.3B", "ti2v-5B"])
def test_vae_cache_size_equals_a_real_decode(name):
    """The causal cache after two decode steps holds exactly the predicted elements per pixel
    (tiny channels, real depth: the formula is linear in the widths)."""
    from wan_desktop.engines.torch_backend import _vae_class

    from wan_desktop.models.vae21 import CausalCache

    v = tiny_variant(name)
    vae = _vae_class(v)(v.vae).eval()
    z = torch.randn(1, v.vae.z_dim, 2, 3, 5)
    cache = CausalCache()
    with torch.inference_mode():
        out = vae.decode_step(z[:, :, :1], cache)
        vae.decode_step(z[:, :, 1:], cache)
    px = out.shape[-1] * out.shape[-2]
    assert sum(s.numel() for s in cache.slots) == pytest.approx(
        M.vae_cache_elements_per_pixel(v.vae) * px, rel=1e-12
    )
    # full size: the numbers measured once on a real decode (64×96 output pixels)
    assert M.vae_cache_elements_per_pixel(VAE21) == 2364.5
    assert M.vae_cache_elements_per_pixel(VAE22) == 1784.375


def test_vae_prediction_matches_the_measured_untiled_decodes():
    """Untiled bf16 decodes (diffusers keeps the decoded video on the GPU: 2 copies, bf16)."""
    for cfg, (w, h, f), peak in ((VAE21, (832, 480, 81), 4.81), (VAE22, (1280, 704, 121), 11.91)):
        video = 2 * 3 * f * w * h * 2
        predicted = (M.vae_params(cfg) * 2 + M.vae_decode_bytes(cfg, w * h) + video) / M.GIB
        print(f"VAE {cfg.version} {w}x{h}x{f}: predicted {predicted:.2f} GiB, measured {peak}")
        assert predicted == pytest.approx(peak, rel=0.06)


def _work(name, w, h, f, task="t2v", precision=None):
    return M.workload_for(VARIANTS[name], w, h, f, task=task, precision=precision)


# The targets: (variant, size, frames, task, budget GiB, the peak to stay under)
_TARGETS = [
    ("t2v-1.3B", 832, 480, 81, "t2v", 8, 6.5),
    ("t2v-14B", 832, 480, 81, "t2v", 16, 15.0),
    ("t2v-A14B", 1280, 720, 81, "t2v", 24, 22.0),
    ("ti2v-5B", 1280, 704, 121, "ti2v", 12, 12.0 - M.CONTEXT_GIB),
]


@pytest.mark.parametrize(("name", "w", "h", "f", "task", "budget", "target"), _TARGETS)
def test_plans_predict_peaks_within_the_targets(name, w, h, f, task, budget, target):
    plan = M.plan_for(_work(name, w, h, f, task), budget, ram_gib=64)
    print(plan.describe())
    assert plan.predicted.peak_gib <= target
    assert plan.predicted.peak_gib <= M.usable_gib(budget)


# Decisions per budget: (variant, task, size, frames, budget) -> expected decisions
_DECISIONS = [
    # 1.3B at 480p: int8 T5 fits 8 GB next to nothing else; the DiT stays whole, CFG batched
    (
        "t2v-1.3B",
        "t2v",
        (832, 480),
        81,
        8,
        dict(text=("gpu", "int8"), swap=0, batch_cfg=True, experts=1, tiled=False),
    ),
    (
        "t2v-1.3B",
        "t2v",
        (832, 480),
        81,
        24,
        dict(text=("gpu", "bf16"), swap=0, batch_cfg=True, experts=1, tiled=False, keep_dit=True),
    ),
    # 14B on 16 GB: bf16 T5 then released; most blocks streamed; batched CFG kept
    (
        "t2v-14B",
        "t2v",
        (832, 480),
        81,
        16,
        dict(text=("gpu", "bf16"), swap=(25, 39), batch_cfg=True, experts=1),
    ),
    # 14B on 8 GB: int8 T5 (6.3 GiB alone), everything streamed, CFG sequential
    (
        "t2v-14B",
        "t2v",
        (832, 480),
        81,
        8,
        dict(text=("gpu", "int8"), swap=(36, 40), batch_cfg=False, experts=1),
    ),
    # ... and on 6 GB the T5 goes to the CPU
    (
        "t2v-14B",
        "t2v",
        (832, 480),
        81,
        6,
        dict(text=("cpu", "bf16"), swap=40, batch_cfg=False, experts=1),
    ),
    # Wan2.2 A14B at 720p on 24 GB: never both experts; blocks streamed
    ("t2v-A14B", "t2v", (1280, 720), 81, 24, dict(text=("gpu", "bf16"), swap=(20, 40), experts=1)),
    # ... and both experts resident only when both fit whole (a large card)
    (
        "t2v-A14B",
        "t2v",
        (832, 480),
        81,
        80,
        dict(text=("gpu", "bf16"), swap=0, batch_cfg=True, experts=2),
    ),
    # TI2V-5B at 720p on 12 GB: int8 T5, streamed blocks, a tiled Wan2.2 decode
    (
        "ti2v-5B",
        "ti2v",
        (1280, 704),
        121,
        12,
        dict(text=("gpu", "int8"), swap=(1, 30), experts=1, tiled=True),
    ),
]


@pytest.mark.parametrize(("name", "task", "size", "frames", "budget", "want"), _DECISIONS)
def test_plan_decisions_per_budget(name, task, size, frames, budget, want):
    p = M.plan_for(_work(name, *size, frames, task), budget, ram_gib=64)
    assert (p.text.where, p.text.precision) == want["text"]
    swap = want["swap"]
    if isinstance(swap, tuple):
        assert swap[0] <= p.dit.swap_blocks <= swap[1], p.dit
    else:
        assert p.dit.swap_blocks == swap
    if "batch_cfg" in want:
        assert p.dit.batch_cfg is want["batch_cfg"]
    assert p.dit.experts_resident == want["experts"]
    if "tiled" in want:
        assert (p.vae.tile is not None) is want["tiled"]
    if "keep_dit" in want:
        assert p.dit.release_before_decode is not want["keep_dit"]


@pytest.mark.parametrize(
    "name,task", [("i2v-14B", "i2v"), ("flf2v-14B", "flf2v"), ("i2v-A14B", "i2v")]
)
def test_the_720p_conditioning_encode_is_tiled_when_whole_frames_overflow(name, task):
    """Encoding the 81-frame conditioning video at 1280x720 in whole frames needs ~9.9 GiB, more
    than an 8 GB card; in the planner's tiles the encode phase fits (at 720p the 14B DiT's own
    activations then decide whether the whole run fits: they do not on 8 GB)."""
    w = _work(name, 1280, 720, 81, task)
    p = M.plan_for(w, 8, ram_gib=64)
    print(p.describe())
    assert p.vae.encode_tile is not None
    untiled = M.predict(
        w, M.TextPlan(where="cpu", precision="bf16"), p.dit, replace(p.vae, encode_tile=None), p.ram
    )
    assert untiled.encode_gib > M.usable_gib(8) >= p.predicted.encode_gib
    assert "conditioning encode in tiles" in p.describe()
    # the denoise phase does not depend on how the conditioning was encoded
    assert untiled.denoise_gib == pytest.approx(p.predicted.denoise_gib)
    # a card that fits the whole-frame encode keeps it; text-to-video never tiles an encode
    assert M.plan_for(w, 16, ram_gib=64).vae.encode_tile is None
    assert M.plan_for(_work("t2v-14B", 1280, 720, 81), 8, ram_gib=64).vae.encode_tile is None


def test_image_conditioning_does_not_change_the_dit_activations():
    """The I2V denoise phase predicts the DiT's activations, as text-to-video does (a VAE figure
    once replaced them)."""
    args = ("i2v-14B", 832, 480, 81)
    t2v, i2v = M.plan_for(_work(*args, "t2v"), 24), M.plan_for(_work(*args, "i2v"), 24)
    v = VARIANTS["i2v-14B"]
    act = M.dit_activation_bytes(v.dit, v.seq_len(832, 480, 81), 2, per_token_t=False) / M.GIB
    assert i2v.dit == t2v.dit
    assert i2v.predicted.denoise_gib == pytest.approx(t2v.predicted.denoise_gib)
    assert act > 3 and i2v.predicted.denoise_gib > act


_WORKLOADS = [
    ("t2v-1.3B", 832, 480, 81, "t2v"),
    ("t2v-14B", 1280, 720, 81, "t2v"),
    ("i2v-14B", 832, 480, 81, "i2v"),
    ("t2v-A14B", 1280, 720, 81, "t2v"),
    ("ti2v-5B", 1280, 704, 121, "ti2v"),
    ("i2v-14B", 1280, 720, 81, "i2v"),
]


@pytest.mark.parametrize("work", _WORKLOADS, ids=lambda w: w[0])
def test_a_smaller_budget_never_predicts_a_larger_peak(work):
    w = _work(*work)
    budgets = [float(b) for b in range(3, 81)]  # 3 .. 80 GiB
    peaks = [M.plan_for(w, b).predicted.peak_gib for b in budgets]
    for (b1, p1), (b2, p2) in itertools.pairwise(zip(budgets, peaks, strict=True)):
        assert p1 <= p2 + 1e-9, f"{b1} GiB predicts {p1:.3f} > {b2} GiB's {p2:.3f}"
    # whenever any plan fits, the chosen one does
    for b, p in zip(budgets, peaks, strict=True):
        if M.plan_for(w, 3.0).predicted.peak_gib <= M.usable_gib(b):
            assert p <= M.usable_gib(b) + 1e-9


@pytest.mark.parametrize("work", _WORKLOADS, ids=lambda w: w[0])
@pytest.mark.parametrize("budget", [8, 12, 16, 24])
def test_fallback_ladder_only_tightens(work, budget):
    w = _work(*work)
    ladder = M.plan_ladder(w, budget)
    assert ladder[0].dit == M.plan_for(w, budget).dit
    assert len(ladder) >= 2
    text_rank = {("gpu", "bf16"): 0, ("gpu", "int8"): 1, ("cpu", "bf16"): 2}
    for a, b in itertools.pairwise(ladder):
        assert b.predicted.peak_gib <= a.predicted.peak_gib + 1e-9
        assert (a.text, a.dit, a.vae) != (b.text, b.dit, b.vae)  # every fallback changes something
        assert (
            text_rank[(b.text.where, b.text.precision)]
            >= text_rank[(a.text.where, a.text.precision)]
        )
        assert b.predicted.denoise_gib <= a.predicted.denoise_gib + 1e-9
    last = ladder[-1]
    assert last.dit.swap_blocks == w.variant.dit.num_layers and not last.dit.batch_cfg


def test_fp8_halves_the_streamed_bytes_and_the_weights():
    v = VARIANTS["t2v-14B"]
    assert M.dit_block_bytes(v.dit, "fp8") / M.dit_block_bytes(v.dit, "bf16") == pytest.approx(
        0.5, abs=0.01
    )
    bf16 = M.plan_for(_work("t2v-14B", 832, 480, 81), 16)
    fp8 = M.plan_for(_work("t2v-14B", 832, 480, 81, precision="fp8"), 16)
    assert fp8.dit.swap_blocks < bf16.dit.swap_blocks
    assert fp8.predicted.peak_gib <= M.usable_gib(16)


def test_streamed_blocks_are_not_page_locked_when_that_would_starve_the_ram():
    """T2V-14B at 480p on 16 GB streams 32 blocks (20.9 GiB): page-locked with 64 GB of RAM,
    pageable with 32 GB (more than 60 % of it), and the plan says so."""
    w = _work("t2v-14B", 832, 480, 81)
    roomy, tight = M.plan_for(w, 16, ram_gib=64), M.plan_for(w, 16, ram_gib=32)
    assert roomy.dit == tight.dit and roomy.dit.swap_blocks > 0
    assert roomy.ram.pin and not tight.ram.pin
    assert tight.ram.pinned_gib > M.MAX_PINNED_RAM_SHARE * 32
    assert "pageable memory" in tight.describe() and "pageable" not in roomy.describe()


def test_ram_plan_keeps_one_wan22_expert_in_32_gb():
    w = _work("t2v-A14B", 1280, 720, 81, precision="fp8")
    small = M.plan_for(w, 24, ram_gib=32)
    big = M.plan_for(w, 24, ram_gib=128)
    assert small.ram.experts_in_ram == 1 and big.ram.experts_in_ram == 2
    assert small.predicted.ram_gib < 0.8 * 32 < big.predicted.ram_gib
    assert any("one Wan2.2 expert" in n for n in small.notes)


def test_describe_prints_the_plan_and_its_peak():
    p = M.plan_for(_work("t2v-14B", 832, 480, 81), 16, ram_gib=32)
    text = p.describe()
    assert f"predicted peak {p.predicted.peak_gib:.2f} GiB" in text
    assert f"{p.dit.swap_blocks} blocks streamed" in text and "text encoder: gpu bf16" in text
    assert p.to_dict()["dit"]["swap_blocks"] == p.dit.swap_blocks


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_budget_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        M.plan_ladder(_work("t2v-1.3B", 832, 480, 81), bad)


def test_vae_tiles_fit_the_frame():
    v = VARIANTS["ti2v-5B"]
    opts = M.vae_tile_options(v, 1280, 704)
    assert opts[0].tile is None
    for o in opts[1:]:
        assert o.tile[0] <= 44 and o.tile[1] <= 80 and o.overlap == 4
    sizes = [o.tile[0] * o.tile[1] for o in opts[1:]]
    assert sizes == sorted(sizes, reverse=True)
    assert replace(opts[1], overlap=0) != opts[1]
