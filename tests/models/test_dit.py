"""WanModel at tiny scale: every variant's shapes and keys, per-token timesteps, the fp32 islands
of a bf16 cast, input checks, and the real-valued RoPE against the official complex formulation."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.numerics import rel_err
from tests.tiny import tiny_variant
from wan_desktop.errors import ConfigError
from wan_desktop.models.dit import Modulation, WanModel
from wan_desktop.models.rope import apply_rope, rope_cos_sin, rope_dims
from wan_desktop.variants import VARIANTS

B, T, H, W = 2, 3, 4, 6  # latent size; patch grid 3 × 2 × 3 = 18 tokens
L = T * (H // 2) * (W // 2)


def _inputs(cfg, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cx = 16 if cfg.in_dim == 36 else cfg.in_dim  # i2v: 16 noisy + 20 conditioning channels
    x = torch.randn(B, cx, T, H, W, generator=g)
    y = torch.randn(B, cfg.in_dim - cx, T, H, W, generator=g) if cx != cfg.in_dim else None
    context = torch.zeros(B, cfg.text_len, cfg.text_dim)
    context[:, :7] = torch.randn(B, 7, cfg.text_dim, generator=g)  # 7 real tokens, zero padding
    clip = None
    if cfg.image_dim is not None:
        clip = torch.randn(B, cfg.image_pos_len or 5, cfg.image_dim, generator=g)
    return x, y, context, clip


def _model(name: str) -> WanModel:
    torch.manual_seed(0)
    return WanModel(tiny_variant(name).dit).eval()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_has_official_keys_and_output_shape(name):
    cfg = tiny_variant(name).dit
    model = _model(name)
    keys = model.state_dict().keys()
    per_block = [k for k in keys if k.startswith("blocks.0.")]
    assert len(per_block) == (32 if cfg.image_dim is not None else 27)  # spec §3.7
    assert ("img_emb.emb_pos" in keys) == (cfg.image_pos_len is not None)
    assert model.head.head.weight.shape == (4 * cfg.out_dim, cfg.dim)

    x, y, context, clip = _inputs(cfg)
    with torch.no_grad():
        out = model(x, torch.tensor([900.0, 100.0]), context, y=y, clip_fea=clip)
    assert out.shape == (B, cfg.out_dim, T, H, W) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.std() > 1e-3


@pytest.mark.parametrize("name", ["ti2v-5B", "t2v-1.3B"])
def test_constant_per_token_timesteps_equal_the_batch_path(name):
    model = _model(name)
    x, y, context, clip = _inputs(model.cfg)
    t = torch.tensor([999.0, 421.0])
    with torch.no_grad():
        ref = model(x, t, context, y=y, clip_fea=clip)
        per_token = model(x, t[:, None].expand(B, L), context, y=y, clip_fea=clip)
        first_clean = t[:, None].expand(B, L).clone()
        first_clean[:, : L // T] = 0.0  # TI2V: first latent frame's tokens at t = 0
        mixed = model(x, first_clean, context, y=y, clip_fea=clip)
    err = rel_err(per_token, ref)
    print(f"{name}: per-token constant t vs [B] t: rel err {err:.2e}")
    assert err <= 1e-6
    # the per-token values matter: changing frame 0's t changes the prediction
    assert rel_err(mixed, ref) > 1e-3


def test_prepare_blocks_finish_equals_forward_and_exposes_block0_input():
    model = _model("i2v-14B")
    x, y, context, clip = _inputs(model.cfg)
    t = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        ref = model(x, t, context, y=y, clip_fea=clip)
        s = model.prepare(
            x, t, context, y=y, clip_fea=clip, rope=rope_cos_sin((T, H // 2, W // 2), 128)
        )
        assert s.x.dtype == s.e0.dtype == torch.float32 and s.e0.shape == (B, 6, model.cfg.dim)
        assert s.context.shape == (B, 5 + model.cfg.text_len, model.cfg.dim)
        mod = model.blocks[0].modulated_input(s.x, s.e0)
        assert mod.shape == (B, L, model.cfg.dim) and mod.dtype == torch.float32
        h = s.x
        for block in model.blocks:
            h = block(h, s.e0, s.context, s.cos, s.sin)
        out = model.finish(h, s)
    assert torch.equal(out, ref)


def test_bf16_cast_keeps_fp32_modules_and_runs_close_to_fp32():
    model = _model("flf2v-14B")
    x, y, context, clip = _inputs(model.cfg)
    t = torch.tensor([999.0, 50.0])
    with torch.no_grad():
        ref = model(x, t, context, y=y, clip_fea=clip)
        model.cast_weights(torch.bfloat16)
        out = model(x, t, context, y=y, clip_fea=clip)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    for name in (
        "patch_embedding.weight",
        "time_embedding.0.weight",
        "time_projection.1.bias",
        "blocks.1.modulation",
        "blocks.0.norm3.weight",
        "head.modulation",
        "head.head.weight",
        "img_emb.proj.0.weight",
        "img_emb.proj.4.bias",
        "img_emb.emb_pos",
    ):
        assert dtypes[name] == torch.float32, name
    for name in (
        "text_embedding.0.weight",
        "blocks.0.self_attn.q.weight",
        "blocks.1.cross_attn.k_img.weight",
        "blocks.0.ffn.2.bias",
        "blocks.0.self_attn.norm_q.weight",
        "img_emb.proj.1.weight",
    ):
        assert dtypes[name] == torch.bfloat16, name
    assert model.compute_dtype == torch.bfloat16
    err = rel_err(out, ref)
    print(f"flf2v tiny, bf16 weights + fp32 islands vs fp32: rel err {err:.2e}")
    assert out.dtype == torch.float32 and 1e-5 < err < 3e-2


def test_input_shapes_are_checked_with_config_errors():
    i2v = _model("i2v-14B")
    x, y, context, clip = _inputs(i2v.cfg)
    t = torch.tensor([1.0, 2.0])
    with pytest.raises(ConfigError, match="36 input channels"):
        i2v(x, t, context, clip_fea=clip)  # y missing
    with pytest.raises(ConfigError, match="clip_fea"):
        i2v(x, t, context, y=y)
    with pytest.raises(ConfigError, match="timestep"):
        i2v(x, torch.ones(B, L + 1), context, y=y, clip_fea=clip)
    with pytest.raises(ConfigError, match="rows"):
        i2v(x, t, context[:, :100], y=y, clip_fea=clip)
    t2v = _model("t2v-1.3B")
    with pytest.raises(ConfigError, match="no CLIP"):
        t2v(x, t, context, clip_fea=clip)


# ---------------------------------------------------------------- RoPE


def _complex_rope_reference(x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The official formulation (wan/modules/model.py rope_params/rope_apply): 1024-position tables of
    complex multipliers per axis, adjacent pairs viewed as complex numbers, all in float64.
    x: [L, heads, D] -> [L, heads, D] float64."""
    d = x.shape[-1]
    c = d // 2

    def table(dim):
        freqs = 1.0 / torch.pow(10000.0, torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = torch.outer(torch.arange(1024, dtype=torch.float64), freqs)
        return torch.polar(torch.ones_like(angles), angles)

    ft, fh, fw = table(d - 4 * (d // 6)), table(2 * (d // 6)), table(2 * (d // 6))
    assert ft.shape[1] == c - 2 * (c // 3) and fh.shape[1] == c // 3
    f, h, w = grid
    mult = torch.cat(
        [
            ft[:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            fh[:h].view(1, h, 1, -1).expand(f, h, w, -1),
            fw[:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, c)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], c, 2))
    return torch.view_as_real(xc * mult).flatten(-2)


def test_rope_split_of_head_dim():
    assert rope_dims(128) == (44, 42, 42)
    assert rope_dims(64) == (24, 20, 20)


@pytest.mark.parametrize("grid", [(3, 2, 3), (21, 30, 52), (1, 64, 1)])
def test_real_rope_equals_complex_reference(grid):
    n = grid[0] * grid[1] * grid[2]
    x = torch.randn(n, 2, 128, dtype=torch.float64)
    ref = _complex_rope_reference(x, grid)  # [L, H, D]

    cos64, sin64 = rope_cos_sin(grid, 128, dtype=torch.float64)
    assert cos64.shape == (n, 64)
    err64 = rel_err(apply_rope(x[None], cos64, sin64, seq_dim=1)[0], ref)

    cos, sin = rope_cos_sin(grid, 128)
    assert cos.dtype == torch.float32
    xf = x.float()
    blhd = apply_rope(xf[None], cos, sin, seq_dim=1)[0]
    bhld = apply_rope(xf.transpose(0, 1)[None], cos, sin, seq_dim=2)[0].transpose(0, 1)
    err32 = rel_err(blhd, ref)
    print(f"rope grid {grid}: float64 rel err {err64:.1e}, float32 rel err {err32:.1e}")
    assert err64 <= 1e-12
    assert err32 <= 1e-6
    assert torch.equal(blhd, bhld) and blhd.dtype == torch.float32


@pytest.mark.parametrize("name", ["t2v-1.3B", "i2v-14B", "ti2v-5B"])
def test_token_chunks_give_the_unchunked_numbers(name, monkeypatch):
    """Long sequences run q/k norms + RoPE, the cross-attention q and the FFN a token chunk at a
    time (models/dit.py TOKEN_CHUNK); with chunks of 5 of the 18 tokens (the last one short) the
    velocity equals the one-pass forward — also with per-token timesteps (TI2V's gates)."""
    from wan_desktop.models import dit

    model = _model(name)
    x, y, context, clip = _inputs(model.cfg)
    t = torch.tensor([999.0, 421.0])
    per_token = t[:, None].expand(B, L).clone()
    per_token[:, : L // T] = 0.0
    with torch.no_grad():
        whole = [model(x, tt, context, y=y, clip_fea=clip) for tt in (t, per_token)]
        monkeypatch.setattr(dit, "TOKEN_CHUNK", 5)
        chunked = [model(x, tt, context, y=y, clip_fea=clip) for tt in (t, per_token)]
    for a, b in zip(whole, chunked, strict=True):
        print(f"{name}: chunked vs whole rel err {rel_err(b, a):.1e}")
        assert rel_err(b, a) <= 1e-6


def test_export_traces_keep_one_pass(monkeypatch):
    """Symbolic sizes (ONNX export) never chunk: the graph keeps one op per layer."""
    from wan_desktop.models import dit

    monkeypatch.setattr(dit, "TOKEN_CHUNK", 5)
    calls = []
    x = torch.randn(1, 18, 8)
    out = dit.by_tokens(lambda xs, a, b: calls.append((a, b)) or xs * 2, x)
    assert calls == [(0, 5), (5, 10), (10, 15), (15, 18)] and torch.equal(out, x * 2)

    class Twice(torch.nn.Module):
        def forward(self, x):
            return dit.by_tokens(lambda xs, a, b: xs * 2, x)

    tokens = torch.export.Dim("tokens", min=2, max=100_000)
    graph = torch.export.export(Twice(), (x,), dynamic_shapes=({1: tokens},)).graph
    muls = [n for n in graph.nodes if n.op == "call_function" and "mul" in str(n.target)]
    assert len(muls) == 1  # one pass over the symbolic sequence, no slices


def test_modulation_rows_are_the_table_plus_e0_for_the_asked_tokens():
    """The block's e[i] = modulation[i] + e0[i] (fp32): whole and broadcast over tokens for a [B]
    timestep; for per-token timesteps (TI2V) only the asked tokens' rows, the same numbers."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1, 6, 8, generator=g).to(torch.bfloat16)  # a bf16 table is summed in fp32
    per_sample, per_token = torch.randn(2, 6, 8, generator=g), torch.randn(2, 18, 6, 8, generator=g)
    whole = Modulation(table, per_sample)
    for i in range(6):
        want = (table.float() + per_sample)[:, None, i]  # [B, 1, dim]
        assert torch.equal(whole.at(i, 0, 18), want) and torch.equal(whole.at(i, 5, 10), want)
    rows = Modulation(table, per_token)
    for i, (a, b) in itertools.product(range(6), [(0, 18), (5, 10), (15, 18)]):
        got = rows.at(i, a, b)
        assert got.dtype == torch.float32 and got.shape == (2, b - a, 8)
        assert torch.equal(got, (table.float()[:, None] + per_token)[:, a:b, i])
