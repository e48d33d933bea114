"""LoRAs in the torch backend (engines/torch_backend.py): merged as a DiT is read, before any
runtime quantization; no copy of the base weights kept; a change of LoRAs reads the DiT again
(exact); Wan2.2's one-expert-in-RAM plan works with LoRAs. Tiny random-weight models, CPU fp32."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from tests.tiny import tiny_variant
from wan_desktop.lora import LoraSpec, load_loras, merge_loras, param_shapes
from wan_desktop.models.dit import WanModel
from wan_desktop.models.lowrank import has_lowrank

MODULES = ("self_attn.q", "self_attn.o", "cross_attn.v", "ffn.0", "ffn.2")


def _lora_file(path, cfg, seed, rank=4):
    g = torch.Generator().manual_seed(seed)
    shapes = param_shapes(WanModel(cfg))
    t = {}
    for b in range(cfg.num_layers):
        for mod in MODULES:
            o, i = shapes[f"blocks.{b}.{mod}.weight"]
            k = f"diffusion_model.blocks.{b}.{mod}"
            t[f"{k}.lora_down.weight"] = torch.randn(rank, i, generator=g) / math.sqrt(i)
            t[f"{k}.lora_up.weight"] = torch.randn(o, rank, generator=g) * 0.5
    save_file(t, str(path))
    return path


def _build(name, loras=(), **kw):
    from wan_desktop.engines.torch_backend import build_torch_components

    return build_torch_components(
        tiny_variant(name), None, device=torch.device("cpu"), dtype=torch.float32, loras=loras, **kw
    )


def _inputs(cfg):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.in_dim, 2, 4, 4, generator=g)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    return x, torch.tensor([637.0]), ctx


def _count_rebuilds(den):
    calls = []
    read = den.rebuild

    def rebuild(pairs):
        calls.append([s for _, s in pairs])
        return read(pairs)

    den.rebuild = rebuild
    return calls


def test_a_lora_change_reads_the_dit_again_and_keeps_no_copy(tmp_path):
    cfg = tiny_variant("t2v-1.3B").dit
    path = _lora_file(tmp_path / "a.safetensors", cfg, seed=7)
    den = _build("t2v-1.3B", [f"{path}:1.0"]).denoisers[0]
    base = _build("t2v-1.3B").denoisers[0]
    (pairs,) = [load_loras(base.model, [LoraSpec(path=str(path))])]
    lora = pairs[0][0]

    def merged(strength):
        m = copy.deepcopy(base.model)
        merge_loras(m, [(lora, strength)])
        return m

    x, t, ctx = _inputs(cfg)
    with torch.no_grad():
        base_out = base(x, t, ctx)
        assert den.lora is None  # no LoraMerge holding originals
        assert torch.equal(den(x, t, ctx), merged(1.0)(x, t, ctx))
        calls = _count_rebuilds(den)
        den.set_loras([(lora, 0.5)])
        assert calls == [[0.5]] and den.lora is None
        assert torch.equal(den(x, t, ctx), merged(0.5)(x, t, ctx))
        den.set_loras([(lora, 0.5)])  # the same pairs: nothing to do
        assert calls == [[0.5]]
        den.set_loras([])
        assert calls == [[0.5], []]
        assert torch.equal(den(x, t, ctx), base_out)  # the base weights, bit for bit
    assert all(
        torch.equal(v, base.model.state_dict()[k]) for k, v in den.model.state_dict().items()
    )


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_loras_merge_before_the_runtime_quantization(tmp_path, precision):
    """--precision int8/fp8 with a LoRA: one rounding of the merged weights. A LoRA given to
    weights already quantized never requantizes them: it runs unmerged beside them
    (models/lowrank.py), which is as close to the fp32 merge (closer: its LoRA part is exact)."""
    from wan_desktop.engines.torch_ops import quantize_linears

    cfg = tiny_variant("t2v-1.3B").dit
    path = _lora_file(tmp_path / "q.safetensors", cfg, seed=8)
    den = _build("t2v-1.3B", [str(path)], precision=precision).denoisers[0]
    fp32 = _build("t2v-1.3B").denoisers[0].model
    pairs = load_loras(fp32, [LoraSpec(path=str(path))])
    once = copy.deepcopy(fp32)
    merge_loras(once, pairs)
    exact = copy.deepcopy(once)
    quantize_linears(once, precision)
    unmerged = copy.deepcopy(fp32)
    quantize_linears(unmerged, precision)
    merge_loras(unmerged, pairs)
    assert has_lowrank(unmerged.get_submodule("blocks.0.ffn.0"))
    name = "blocks.0.ffn.0"
    got = den.model.get_submodule(name)
    assert torch.equal(got.weight, once.get_submodule(name).weight)
    x, t, ctx = _inputs(cfg)
    with torch.no_grad():
        ref = exact(x, t, ctx)
        err_once = float((den(x, t, ctx) - ref).norm() / ref.norm())
        err_unmerged = float((unmerged(x, t, ctx) - ref).norm() / ref.norm())
    print(
        f"{precision} + LoRA velocity rel. err vs fp32 merge: merged then quantized {err_once:.2e}, "
        f"quantized + LoRA unmerged {err_unmerged:.2e}"
    )
    assert err_unmerged < err_once


@pytest.mark.slow  # six Wan2.2 generations, experts read again from disk
@pytest.mark.parametrize("expert", ["high", "low"])
def test_wan22_one_expert_in_ram_works_with_loras(tmp_path, expert):
    """The RAM plan's one expert at a time with a LoRA on one expert: the second expert is read
    (with its LoRA) only after the first left RAM; the video equals both experts in RAM."""
    from wan_desktop.engines.residency import apply_plan

    from tests.plans import changed_plan
    from wan_desktop.pipeline import generate
    from wan_desktop.request import GenerationRequest

    v = tiny_variant("t2v-A14B")
    path = _lora_file(tmp_path / "w.safetensors", v.dit, seed=9)
    spec = [LoraSpec(path=str(path), strength=0.8, expert=expert)]
    eager, lazy = (
        _build("t2v-A14B", spec, load=False),
        _build("t2v-A14B", spec, load=False, lazy_experts=True),
    )
    high, low = lazy.denoisers
    assert low.released and all(p.is_meta for p in low.model.parameters())
    assert [len(d.loras) for d in lazy.denoisers] == ([1, 0] if expert == "high" else [0, 1])
    seen = []
    for me, other in ((high, low), (low, high)):

        def rebuild(pairs, read=me.rebuild, other=other, me=me):
            seen.append((me is high, other.released, len(pairs)))
            return read(pairs)

        me.rebuild = rebuild
    plan = changed_plan(variant="t2v-A14B", text={"where": "cpu"}, dit={"experts_resident": 1})
    plan = replace(plan, ram=replace(plan.ram, experts_in_ram=1))
    req = GenerationRequest(
        prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=1
    ).resolve(v)
    plain = generate(apply_plan(_build("t2v-A14B", load=False), plan, "cpu"), req, device="cpu")
    videos = [generate(apply_plan(c, plan, "cpu"), req, device="cpu") for c in (eager, lazy)]
    n_low, n_high = (0, 1) if expert == "high" else (1, 0)
    assert seen == [(False, True, n_low)]  # the low expert, read with its LoRA after high left
    assert torch.equal(videos[0], videos[1])
    assert not torch.equal(videos[0], plain)  # the LoRA changed the video
    generate(apply_plan(lazy, plan, "cpu"), req, device="cpu")  # high is read again, with its LoRA
    assert seen[1] == (True, True, n_high)
