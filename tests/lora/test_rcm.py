"""TurboDiffusion rCM checkpoints: sparse-linear attention (SLA), the Linear patch embedding, the
stochastic rCM update, and ``--preset turbo`` through the real CLI on a tiny model saved in
TurboDiffusion's key layout (thu-ml/TurboDiffusion@aaecff5: rcm/networks/wan2pt1.py, SLA/core.py,
inference/modify_model.py, inference/wan2.1_t2v_infer.py)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.fakes import fake_components
from wan_desktop.models import sla
from wan_desktop.pipeline import generate, initial_noise
from wan_desktop.presets import get_preset, rcm_sigmas
from wan_desktop.request import GenerationRequest
from wan_desktop.samplers import Sampler

SLA_SUFFIX = "self_attn.attn_op.local_attn.proj_l"


# ----------------------------------------------------------------------------- reference SLA


def ref_sla(q, k, v, proj_w, proj_b, topk, blkq=128, blkk=64):
    """SLA written out densely: block scores from explicit per-block means, the kept blocks as a
    token mask on the full softmax, the linear branch as the normalised kernel matrix φ(q)φ(k)ᵀ."""
    b, h, n, d = q.shape
    ks = k - k.mean(dim=2, keepdim=True)
    qblocks = [(s, min(s + blkq, n)) for s in range(0, n, blkq)]
    kblocks = [(s, min(s + blkk, n)) for s in range(0, n, blkk)]
    pq = torch.stack([q[:, :, a:e].mean(dim=2) for a, e in qblocks], dim=2)
    pk = torch.stack([ks[:, :, a:e].mean(dim=2) for a, e in kblocks], dim=2)
    score = pq @ pk.transpose(-1, -2)
    keep = max(1, min(len(kblocks), int(topk * len(kblocks))))
    chosen = torch.topk(score, keep, dim=-1).indices
    mask = torch.zeros(b, h, n, n, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for i, (qa, qe) in enumerate(qblocks):
                for j in chosen[bi, hi, i].tolist():
                    ka, ke = kblocks[j]
                    mask[bi, hi, qa:qe, ka:ke] = True
    s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    o_s = s.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
    a = q.softmax(dim=-1) @ k.softmax(dim=-1).transpose(-1, -2)  # [B, H, L, L] kernel matrix
    o_l = (a @ v) / (1e-5 + a.sum(dim=-1, keepdim=True))
    return o_s + o_l @ proj_w.T + proj_b


def _qkv(n, d=128, h=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, n, d, generator=g) for _ in range(3)]


def test_sparse_branch_with_every_block_is_full_attention():
    q, k, v = _qkv(300)  # 3 query blocks (last one short), 5 key blocks (last one short)
    blocks = sla.block_selection(q, k, 1.0)
    assert blocks.shape == (1, 2, 3, 5)
    got = sla.sparse_branch(q, k, v, blocks, scale=128**-0.5)
    full = F.scaled_dot_product_attention(q, k, v)
    assert (got - full).abs().max().item() < 1e-5
    # with 2 of 5 key blocks it is really sparse: far from full attention
    part = sla.sparse_branch(q, k, v, sla.block_selection(q, k, 0.4), scale=128**-0.5)
    assert (part - full).abs().max().item() > 1e-2


@pytest.mark.parametrize("topk", [0.1, 0.4, 1.0])
def test_sla_module_matches_dense_reference(topk):
    from wan_desktop.models.layers import Ops

    q, k, v = _qkv(300, seed=1)
    m = sla.SparseLinearAttention(128, topk, Ops)
    with torch.no_grad():
        m.proj_l.weight.copy_(torch.randn(128, 128) * 0.1)
        m.proj_l.bias.copy_(torch.randn(128) * 0.1)
        got = m(q, k, v, scale=128**-0.5)
    want = ref_sla(q, k, v, m.proj_l.weight, m.proj_l.bias, topk)
    assert (got - want).abs().max().item() < 1e-5


# ----------------------------------------------------------------------------- a TurboDiffusion file


@pytest.fixture(scope="module")
def turbo(tmp_path_factory):
    """A tiny Wan2.1 T2V saved as TurboDiffusion's .pth: official names, the patch embedding as a
    Linear [dim, 16·1·2·2], and a non-zero SLA proj_l per block; ComfyUI VAE / T5 beside it."""
    from tests.fixtures_models import build_tiny_model, official_dit_state

    tiny = build_tiny_model(tmp_path_factory.mktemp("rcm"), "t2v-1.3B")
    state = official_dit_state(tiny.refs["transformer"])
    conv = state["patch_embedding.weight"]
    state["patch_embedding.weight"] = conv.reshape(conv.shape[0], -1).clone()
    g = torch.Generator().manual_seed(7)
    hd = tiny.variant.dit.head_dim
    for b in range(tiny.variant.dit.num_layers):
        state[f"blocks.{b}.{SLA_SUFFIX}.weight"] = torch.randn(hd, hd, generator=g) * 0.05
        state[f"blocks.{b}.{SLA_SUFFIX}.bias"] = torch.randn(hd, generator=g) * 0.05
    path = tiny.comfy_dit.parent / "TurboWan2.1-T2V-tiny-480P.pth"
    torch.save(state, path)
    return tiny, path, state, conv


def test_turbo_file_is_detected_and_inspect_says_so(turbo):
    from wan_desktop.checkpoints.detect import detect_model

    tiny, path, _, _ = turbo
    files = detect_model(path)
    assert files.variant.name == "t2v-1.3B" and files.variant.dit.sla_topk == 0.1
    assert files.vae is not None and files.text_encoder is not None  # found beside it
    code, out, err = _cli(["inspect", path])
    assert code == 0, err
    info = json.loads(out)
    assert info["dit_config"]["sla_topk"] == 0.1
    assert any("TurboDiffusion rCM" in n and "sparse-linear" in n for n in info["notes"])
    # a plain checkpoint stays dense
    assert detect_model(tiny.comfy_dit).variant.dit.sla_topk is None


def _patchify_linear(x, weight, bias):
    """TurboDiffusion's patch embedding: 'b c (t kt) (h kh) (w kw) -> b (t h w) (c kt kh kw)' then a
    Linear — written with reshapes here."""
    b, c, t, h, w = x.shape
    p = x.reshape(b, c, t, 1, h // 2, 2, w // 2, 2).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return p.reshape(b, t * (h // 2) * (w // 2), c * 4) @ weight.T + bias


def _reference_dit(model, topk):
    """Our dense DiT with each block's attention kernel replaced by ref_sla on that block's proj_l."""
    for blk in model.blocks:
        attn = blk.self_attn
        w, bias = attn.attn_op.local_attn.proj_l.weight, attn.attn_op.local_attn.proj_l.bias

        class RefOps(attn.ops):  # type: ignore[misc, valid-type]
            attention = staticmethod(
                lambda q, k, v, *, scale=None, w=w, bias=bias: ref_sla(q, k, v, w, bias, topk)
            )

        attn.attn_op = None
        attn.ops = RefOps
    return model


def test_turbo_file_loads_and_forward_matches_reference(turbo):
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    tiny, path, state, conv = turbo
    files = detect_model(path)
    model = load_dit(files, dtype=torch.float32)
    assert torch.equal(model.patch_embedding.weight, conv)
    for b in range(tiny.variant.dit.num_layers):
        pl = model.blocks[b].self_attn.attn_op.local_attn.proj_l
        assert torch.equal(pl.weight, state[f"blocks.{b}.{SLA_SUFFIX}.weight"])
        assert pl.weight.dtype == torch.float32
    # flatten order: their Linear on (c, kt, kh, kw)-flattened patches == our Conv3d
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 3, 20, 36, generator=g)  # 3·10·18 = 540 tokens: 5 q / 9 k blocks
    with torch.no_grad():
        ours = model.patch_embedding(x).flatten(2).transpose(1, 2)
        theirs = _patchify_linear(x, state["patch_embedding.weight"], state["patch_embedding.bias"])
    assert (ours - theirs).abs().max().item() < 1e-5
    ctx = torch.randn(1, tiny.variant.dit.text_len, tiny.variant.dit.text_dim, generator=g)
    t = torch.tensor([987.0])
    with torch.no_grad():
        got = model(x, t, ctx)
        want = _reference_dit(load_dit(files, dtype=torch.float32), 0.1)(x, t, ctx)
        dense = load_dit(detect_model(tiny.comfy_dit), dtype=torch.float32)(x, t, ctx)
    err = (got - want).abs().max().item()
    print(f"SLA DiT vs dense-masked reference: max abs err {err:.1e}")
    assert err < 1e-5
    assert (got - dense).abs().max().item() > 1e-3  # SLA really changes the output


# ----------------------------------------------------------------------------- the rCM update


def test_turbo_preset_runs_the_stochastic_rcm_update():
    comps, parts = fake_components("t2v-1.3B")
    req = get_preset("turbo").apply(
        GenerationRequest(prompt="a cat", width=32, height=32, frames=5, seed=5), comps.variant
    )
    req = req.resolve(comps.variant)
    assert (req.steps, req.guidance, req.sampler) == (4, 1.0, Sampler.RCM)
    generate(comps, req)
    (den,) = parts["denoisers"]
    assert len(den.calls) == 4 and all(c["shape"][0] == 1 for c in den.calls)
    sig = [float(s) for s in torch.tensor(rcm_sigmas(4, 80.0), dtype=torch.float32)] + [0.0]
    # one CPU generator of the seed: the initial noise, then one ε per step (TurboDiffusion's order)
    gen = torch.Generator().manual_seed(5)
    shape = den.calls[0]["latents"].shape
    first = torch.randn(shape, generator=gen)
    assert torch.allclose(first * sig[0], initial_noise(shape, 5) * sig[0])
    for i in range(3):
        x = den.calls[i]["latents"]
        v = 0.5 * x + den.calls[i]["context"].float().mean()  # the fake's own velocity
        eps = torch.randn(shape, generator=gen)
        nxt = (x - sig[i] * v) * (1 - sig[i + 1]) + eps * sig[i + 1]
        assert torch.allclose(den.calls[i + 1]["latents"], nxt, atol=1e-5)


# ----------------------------------------------------------------------------- real CLI


def _cli(args):
    from wan_desktop.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_cli_turbo_preset_on_turbodiffusion_file(turbo, tmp_path, monkeypatch):
    from wan_desktop.models.dit import WanModel

    tiny, path, _, _ = turbo
    calls = []
    prepare = WanModel.prepare

    def counting(self, x, t, context, **kw):
        calls.append(
            (x.shape[0], float(t.reshape(-1)[0]), self.blocks[0].self_attn.attn_op is not None)
        )
        return prepare(self, x, t, context, **kw)

    monkeypatch.setattr(WanModel, "prepare", counting)
    common = [
        "generate",
        "--model",
        path,
        "--vae",
        tiny.comfy_vae,
        "--text-encoder",
        tiny.comfy_t5,
        "--prompt",
        "a red fox",
        "--size",
        "32x32",
        "--frames",
        "5",
        "--no-progress",
        "--preset",
        "turbo",
    ]
    outs = {}
    for name, extra in (
        ("a", ["--seed", "4"]),
        ("b", ["--seed", "4"]),
        ("c", ["--seed", "5"]),
        ("ode", ["--seed", "4", "--sampler", "euler"]),
    ):
        calls.clear()
        out = tmp_path / name
        code, _, err = _cli([*common, *extra, "--out", out])
        assert code == 0, err
        want_t = [s * 1000 for s in rcm_sigmas(4, 80.0)]
        assert [c[0] for c in calls] == [1, 1, 1, 1]  # 4 DiT calls, batch 1: no uncond pass
        assert [c[1] for c in calls] == pytest.approx(want_t, rel=1e-5)
        assert all(c[2] for c in calls)  # the SLA model ran
        outs[name] = [f.read_bytes() for f in sorted(out.glob("*.png"))]
        assert len(outs[name]) == 5
    meta = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert meta["request"]["sampler"] == "rcm" and meta["request"]["guidance"] == 1.0
    assert outs["a"] == outs["b"]  # same seed, same video (the re-noising is seeded)
    assert outs["a"] != outs["c"] and outs["a"] != outs["ode"]


def test_wan22_turbo_expert_pair_is_found_by_their_file_names(tmp_path):
    from tests.tiny import tiny_variant
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.models.dit import WanModel

    cfg = tiny_variant("i2v-A14B").dit
    torch.manual_seed(0)
    states = {}
    for which in ("high", "low"):
        state = {k: v.clone() for k, v in WanModel(cfg).state_dict().items()}
        pe = state["patch_embedding.weight"]
        state["patch_embedding.weight"] = pe.reshape(pe.shape[0], -1)
        for b in range(cfg.num_layers):
            state[f"blocks.{b}.{SLA_SUFFIX}.weight"] = torch.zeros(cfg.head_dim, cfg.head_dim)
            state[f"blocks.{b}.{SLA_SUFFIX}.bias"] = torch.zeros(cfg.head_dim)
        states[which] = state
        torch.save(state, tmp_path / f"TurboWan2.2-I2V-A14B-{which}-720P.pth")
    files = detect_model(tmp_path / "TurboWan2.2-I2V-A14B-low-720P.pth")
    assert files.variant.name == "i2v-A14B" and files.variant.dit.sla_topk == 0.1
    assert [e.files[0].name for e in files.experts] == [
        "TurboWan2.2-I2V-A14B-high-720P.pth",
        "TurboWan2.2-I2V-A14B-low-720P.pth",
    ]
    assert files.variant.dit.in_dim == 36  # 144 Linear inputs = 36 channels · 1·2·2


def test_turbo_quant_file_is_dequantized_at_load(turbo):
    """TurboDiffusion's -quant files (ops.Int8Linear): every block Linear but proj_l stored as
    ``int8_weight`` [out, in] with a float32 ``scale`` per 128×128 block (w ≈ int8 · scale)."""
    from wan_desktop.checkpoints.detect import detect_model
    from wan_desktop.checkpoints.load import load_dit

    _tiny, path, state, conv = turbo
    quant, want = {}, {}
    for k, v in state.items():
        base = k.removesuffix(".weight")
        if not (
            k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2 and "proj_l" not in k
        ):
            quant[k] = v
            want[k] = conv if k == "patch_embedding.weight" else v
            continue
        rows, cols = -(-v.shape[0] // 128), -(-v.shape[1] // 128)
        scale = torch.empty(rows, cols)
        q = torch.empty(v.shape, dtype=torch.int8)
        deq = torch.empty(v.shape)
        for i in range(rows):
            for j in range(cols):
                blk = v[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128]
                s = blk.abs().max() / 127
                scale[i, j] = s
                qb = torch.round(blk / s).clamp(-128, 127)
                q[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128] = qb.to(torch.int8)
                deq[i * 128 : (i + 1) * 128, j * 128 : (j + 1) * 128] = qb * s
        quant[base + ".int8_weight"], quant[base + ".scale"] = q, scale
        want[k] = deq
    qpath = path.with_name("TurboWan2.1-T2V-tiny-480P-quant.pth")
    torch.save(quant, qpath)
    files = detect_model(qpath)
    assert files.variant.dit.sla_topk == 0.1
    model = load_dit(files, dtype=torch.float32)
    got = model.state_dict()
    assert set(got) == set(want)
    for k, v in got.items():
        assert torch.equal(v, want[k]), k
    # the scales really matter: ffn.0 (320 rows = 2.5 blocks) has distinct per-block scales
    assert quant["blocks.0.ffn.0.scale"].unique().numel() > 1
