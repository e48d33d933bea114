"""A parallel run's memory-plan ladder (wan_desktop/parallel/ladder.py): every rank runs the
ladder of the most constrained GPU, and a CUDA out-of-memory error on any rank moves every rank
to the next plan together, the video then equal to the one-process run's. Ranks are processes
started as torchrun starts them, so a test controls each one (tests/spawn_gloo.run_ranks); the
only double is the denoiser that raises torch's CUDA OOM error, which the CPU cannot produce."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.parallel_runs import generate, ladder_rank, named_plan, psnr
from tests.spawn_gloo import run_ranks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("ladder-t2v"), "t2v-1.3B")


@pytest.fixture(scope="module")
def one_process(t2v, tmp_path_factory) -> np.ndarray:
    return generate(t2v, tmp_path_factory.mktemp("ladder-one") / "v", review=False).frames


def _frames(out) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])


LADDER = [named_plan("a"), named_plan("b", swap_blocks=1)]  # a: resident, b: one block streamed


@pytest.mark.parametrize("oom_rank", [0, 1])
def test_an_oom_on_any_rank_moves_every_rank_to_the_next_plan(t2v, tmp_path, one_process, oom_rank):
    out = tmp_path / "v"
    # only rank 0 planned (rank 1's CPU has no ladder): both run rank 0's
    seen = run_ranks(2, ladder_rank, str(t2v.official), str(out), {0: LADDER}, {oom_rank: 1})
    print(f"\nOOM on rank {oom_rank}: {seen}")
    assert [s["error"] for s in seen] == [None, None]
    assert [s["plan"] for s in seen] == ["b", "b"]
    assert seen[oom_rank]["ooms"] == 1  # its first call, under plan a; none under b
    assert seen[0]["warnings"] == [
        f"out of GPU memory on rank {oom_rank} with plan a (predicted peak "
        f"{LADDER[0].predicted.peak_gib:.1f} GiB); every rank retries with plan b (predicted "
        f"peak {LADDER[1].predicted.peak_gib:.1f} GiB)"
    ]
    assert seen[1]["warnings"] == []  # rank 0 alone speaks
    db = psnr(one_process, _frames(out))
    print(f"2 ranks after the move to plan b vs one process: PSNR {db:.1f} dB")
    assert db >= 60.0


def test_the_ranks_run_the_ladder_of_the_most_constrained_gpu(t2v, tmp_path, one_process):
    roomy = [named_plan("roomy", peak_gib=20.0), named_plan("roomy-2", peak_gib=12.0)]
    tight = [named_plan("tight", peak_gib=9.0, swap_blocks=1)]
    out = tmp_path / "v"
    seen = run_ranks(2, ladder_rank, str(t2v.official), str(out), {0: roomy, 1: tight}, {})
    assert [s["plan"] for s in seen] == ["tight", "tight"]
    assert psnr(one_process, _frames(out)) >= 60.0


def test_an_oom_under_the_last_plan_ends_every_rank_with_out_of_vram(t2v, tmp_path):
    out = tmp_path / "v"
    only = [named_plan("a")]
    seen = run_ranks(2, ladder_rank, str(t2v.official), str(out), {0: only, 1: only}, {1: 1})
    for s in seen:
        assert s["error_type"] == "OutOfVram"
        assert s["error"] == (
            "out of GPU memory on rank 1: CUDA out of memory. Tried to allocate 9.00 GiB (with "
            f"the tightest plan, a, predicted peak {only[0].predicted.peak_gib:.1f} GiB a rank)"
        )
    assert not out.exists()


def test_an_oom_inside_an_unguarded_exchange_ends_every_rank_within_the_timeout(
    t2v, tmp_path, monkeypatch
):
    # a model's first two calls of an attempt are guarded (a store sync before each exchange);
    # rank 1 running out at its third call leaves rank 0 inside the all_gather, which can only
    # time out (here 5 s): the run ends on both, saying why it cannot move to plan b
    monkeypatch.setenv("WAN_DESKTOP_PARALLEL_TIMEOUT", "5")
    out = tmp_path / "v"
    t0 = time.monotonic()
    seen = run_ranks(2, ladder_rank, str(t2v.official), str(out), {0: LADDER}, {1: 3})
    took = time.monotonic() - t0
    print(f"\nunguarded OOM on rank 1: both ranks ended after {took:.0f} s: {seen}")
    for s in seen:
        assert s["error_type"] == "OutOfVram"
        assert s["error"].startswith("out of GPU memory on rank 1: CUDA out of memory.")
        assert (
            "inside an exchange with it, so the run cannot move to a tighter memory plan"
            in (s["error"])
        )
    assert seen[0]["warnings"] == [] and not out.exists()
    assert took < 60


def test_rank_1_builds_only_what_it_runs(t2v, tmp_path):
    # the launched worker builds with lead=False (no umT5, CLIP or VAE encoder: rank 0 runs them)
    seen = run_ranks(2, ladder_rank, str(t2v.official), str(tmp_path / "v"), {}, {})
    assert [s["leads"] for s in seen] == [[True], [False]]
