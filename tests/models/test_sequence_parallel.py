"""Ulysses sequence parallel (models/sequence_parallel.py) on 2 and 4 gloo processes: the velocity
every rank gets equals the single-process forward of the same tiny DiT (max abs diff ≤ 1e-5,
fp32) for T2V, I2V (CLIP tokens), TI2V (per-token timesteps), Wan2.2's I2V expert, VACE hints,
SkyReels DF (per-frame timesteps, fps, block-causal attention) and token counts that do not
divide by the ranks; heads that do not divide are refused naming the valid sizes; the bytes the
all-to-alls send are parallel_cost's count."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.distributed as dist

from tests.spawn_gloo import run_gloo
from tests.tiny import tiny_variant
from wan_desktop.errors import ConfigError
from wan_desktop.models.sequence_parallel import TokenShards, sequence_parallel_forward
from wan_desktop.models.vace import make_dit
from wan_desktop.parallel_cost import ulysses_bytes_per_step
from wan_desktop.variants import DiTConfig

TOL = 1e-5


def _cfg(name: str, heads: int = 4, **kw: Any) -> DiTConfig:
    """The tiny DiT of ``name`` with ``heads`` heads of the real head dim 128."""
    return replace(tiny_variant(name).dit, dim=128 * heads, num_heads=heads, **kw)


def _case(
    name: str, cfg: DiTConfig, b: int, size: tuple[int, int, int], **kw: Any
) -> tuple[str, DiTConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(name, cfg, weights, forward arguments) with random inputs of latent size (T, H, W)."""
    g = torch.Generator().manual_seed(len(name))
    torch.manual_seed(3)
    model = make_dit(cfg).eval()
    cx = 16 if cfg.in_dim == 36 else cfg.in_dim  # i2v: 16 noisy + 20 conditioning channels
    args: dict[str, Any] = {
        "x": torch.randn(b, cx, *size, generator=g),
        "t": torch.tensor([900.0, 100.0][:b]),
        "context": torch.zeros(b, cfg.text_len, cfg.text_dim),
    }
    args["context"][:, :7] = torch.randn(b, 7, cfg.text_dim, generator=g)
    if cx != cfg.in_dim:
        args["y"] = torch.randn(b, cfg.in_dim - cx, *size, generator=g)
    if cfg.image_dim is not None:
        args["clip_fea"] = torch.randn(b, cfg.image_pos_len or 6, cfg.image_dim, generator=g)
    if cfg.vace_in_dim is not None:
        args["vace"] = torch.randn(b, cfg.vace_in_dim, *size, generator=g)
        args["vace_scale"] = 0.7
    args |= kw
    return name, cfg, model.state_dict(), args


def _cases() -> list[tuple[str, DiTConfig, dict[str, torch.Tensor], dict[str, Any]]]:
    ti2v = _cfg("ti2v-5B")
    t, h, w = 3, 4, 8  # 3 × 2 × 4 = 24 tokens: divides by 2 and 4
    per_token = torch.full((1, t * (h // 2) * (w // 2)), 900.0)
    per_token[:, : (h // 2) * (w // 2)] = 0.0  # TI2V: the image's first frame is clean
    df = _cfg("t2v-1.3B", inject_sample_info=True)
    per_frame = torch.tensor([[0.0, 400.0, 800.0]])  # 3 frames × 2 × 3 = 18 tokens
    return [
        _case("t2v", _cfg("t2v-1.3B"), 2, (t, h, w)),
        _case("i2v", _cfg("i2v-14B"), 2, (t, h, w)),
        _case("ti2v", ti2v, 1, (t, h, w), t=per_token),
        _case("padded", _cfg("t2v-1.3B"), 1, (3, 2, 6)),  # 9 tokens
        _case("i2v-A14B-padded", _cfg("i2v-A14B"), 2, (3, 2, 6)),
        _case("vace", _cfg("vace-1.3B"), 1, (t, h, w)),
        _case("df", df, 1, (3, 4, 6), t=per_frame, fps=16),
        _case("df-causal", df, 1, (3, 4, 6), t=per_frame, fps=24, causal_block_size=2),
        _case("3-heads", _cfg("t2v-1.3B", heads=3), 1, (t, h, w)),
    ]


def _worker(rank: int, world: int, cases: list) -> dict[str, Any]:
    """Every case's sequence-parallel velocity on this rank (or its ConfigError), and the bytes
    this rank's all-to-alls sent."""
    sent = [0]
    all_to_all = dist.all_to_all_single

    def counted(out: torch.Tensor, inp: torch.Tensor, *a: Any, **k: Any) -> Any:
        sent[0] += inp.numel() * inp.element_size() * (world - 1) // world  # all but my slice
        return all_to_all(out, inp, *a, **k)

    dist.all_to_all_single = counted  # type: ignore[assignment]  # count, then send for real
    results: dict[str, Any] = {}
    for name, cfg, state, args in cases:
        model = make_dit(cfg).eval()
        model.load_state_dict(state)
        sent[0] = 0
        try:
            with torch.no_grad():
                results[name] = sequence_parallel_forward(model, None, **args)
        except ConfigError as e:
            results[name] = e.one_line()
        results[f"{name}.bytes"] = sent[0]
    return results


def _reference(cfg: DiTConfig, state: dict, args: dict[str, Any]) -> torch.Tensor:
    model = make_dit(cfg).eval()
    model.load_state_dict(state)
    args = dict(args)
    x, t, context = args.pop("x"), args.pop("t"), args.pop("context")
    with torch.no_grad():
        return model(x, t, context, **args)


@pytest.fixture(scope="module")
def cases():
    return {c[0]: c for c in _cases()}


_RUNS: dict[int, list[dict[str, Any]]] = {}


def _ranks(world: int, cases: dict) -> list[dict[str, Any]]:
    if world not in _RUNS:
        _RUNS[world] = run_gloo(world, _worker, list(cases.values()))
    return _RUNS[world]


EQUAL = ["t2v", "i2v", "ti2v", "padded", "i2v-A14B-padded", "vace", "df", "df-causal"]
WORLDS = [2, pytest.param(4, marks=pytest.mark.slow)]


@pytest.mark.slow
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("name", EQUAL)
def test_sequence_parallel_velocity_equals_one_process(world, name, cases):
    _, cfg, state, args = cases[name]
    want = _reference(cfg, state, args)
    diffs = []
    for rank, got in enumerate(_ranks(world, cases)):
        assert isinstance(got[name], torch.Tensor), got[name]
        assert got[name].shape == want.shape, rank
        diffs.append(float((got[name] - want).abs().max()))
    print(
        f"{name} on {world} ranks: max abs diff {max(diffs):.2e} (|v| max {want.abs().max():.2f})"
    )
    assert max(diffs) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("world", WORLDS)
def test_heads_that_do_not_divide_are_refused_naming_the_valid_sizes(world, cases):
    for got in _ranks(world, cases):  # every rank refuses before any collective
        msg = got["3-heads"]
        assert isinstance(msg, str), msg
        assert f"3 attention heads do not divide by {world}" in msg and "1, 3" in msg


@pytest.mark.slow
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize(("name", "tokens", "passes"), [("t2v", 24, 2), ("padded", 9, 1)])
def test_all_to_all_bytes_are_the_paper_count(world, name, tokens, passes, cases):
    # a batch of 2 (cond + uncond in one call) is 2 passes; fp32 activations
    want = ulysses_bytes_per_step(cases[name][1], tokens, world, passes=passes, elem_bytes=4)
    got = [r[f"{name}.bytes"] for r in _ranks(world, cases)]
    print(f"{name} on {world} ranks: {got[0]} bytes sent a rank, paper {want}")
    assert got == [want] * world


@pytest.mark.parametrize(
    ("tokens", "world", "align", "size", "starts"),
    [
        (24, 4, 1, 6, [0, 6, 12, 18]),
        (9, 2, 1, 5, [0, 5]),  # one padding token on rank 1
        (18, 4, 6, 6, [0, 6, 12, 18]),  # whole frames of 6 tokens; rank 3 is all padding
        (18, 2, 6, 12, [0, 12]),
    ],
)
def test_token_shards_are_equal_and_padded_at_the_end(tokens, world, align, size, starts):
    x = torch.arange(1, tokens + 1, dtype=torch.float32)[None, :, None]  # [1, L, 1], no zeros
    parts = []
    for rank in range(world):
        s = TokenShards(tokens=tokens, world=world, rank=rank, align=align)
        assert (s.size, s.start) == (size, starts[rank])
        parts.append(s.take(x))
    whole = torch.cat(parts, dim=1)[0, :, 0]
    assert whole.shape == (size * world,)
    assert torch.equal(whole[:tokens], x[0, :, 0]) and bool((whole[tokens:] == 0).all())
    frames = torch.arange(1, tokens // align + 1, dtype=torch.float32)[None]  # per frame [1, F']
    if align > 1:  # frame rows follow their tokens
        got = [TokenShards(tokens=tokens, world=world, rank=r, align=align) for r in range(world)]
        rows = torch.cat([s.take(frames, unit=align) for s in got], dim=1)[0]
        assert torch.equal(rows[: frames.shape[1]], frames[0])
        assert bool((rows[frames.shape[1] :] == 0).all())
