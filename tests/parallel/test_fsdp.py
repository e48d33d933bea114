"""FSDP2 over gloo (wan_desktop/parallel/fsdp.py): a DiT whose blocks are fully_shard'ed over 2
processes gives the velocity of the whole model, and each rank keeps half of the blocks' weights;
a 2-process run under a plan with FSDP shards (memory.DiTPlan.fsdp_shards, applied by
session.Ranks.shard) makes the one-process video."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from wan_desktop.engines.factory import EngineFactory

from tests.fixtures_models import build_tiny_model
from tests.parallel_runs import generate, psnr
from tests.spawn_gloo import run_gloo
from tests.tiny import tiny_variant
from wan_desktop import memory as M
from wan_desktop import run
from wan_desktop.models.dit import WanModel
from wan_desktop.options import RunOptions
from wan_desktop.parallel.fsdp import shard_blocks
from wan_desktop.request import GenerationRequest


def _inputs(cfg):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, cfg.in_dim, 2, 8, 8, generator=g)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    return x, torch.tensor([700.0]), ctx


def _velocity_sharded(rank: int, world: int) -> dict[str, object]:
    cfg = tiny_variant("t2v-1.3B").dit
    torch.manual_seed(0)
    model = WanModel(cfg).eval()
    whole = sum(p.numel() for b in model.blocks for p in b.parameters())
    x, t, ctx = _inputs(cfg)
    with torch.no_grad():
        ref = model(x, t, ctx)
    shard_blocks(model)
    local = sum(p.to_local().numel() for b in model.blocks for p in b.parameters())
    with torch.inference_mode():  # as the torch denoiser calls it
        out = model(x, t, ctx)
    return {"diff": float((out - ref).abs().max()), "local": local, "whole": whole}


@pytest.mark.slow
def test_fully_sharded_blocks_give_the_whole_models_velocity():
    results = run_gloo(2, _velocity_sharded)
    for r in results:
        share = r["local"] / r["whole"]
        print(f"\nFSDP2 x2: velocity max abs diff {r['diff']:.2e}, block weights kept {share:.3f}")
        assert r["diff"] <= 1e-6
        assert share <= 0.51  # half each (a tensor whose first dim does not split stays whole)


class _SeenFactory(EngineFactory):
    """The real factory, noting the class of a DiT block's weights when a run's placed
    components are released (DTensor: the blocks were sharded)."""

    weights: tuple[str, ...] = ()

    def release(self, components) -> None:
        self.weights = tuple(
            type(next(d.model.blocks[0].parameters())).__name__ for d in components.denoisers
        )
        super().release(components)


@pytest.mark.slow
def test_a_two_process_run_under_an_fsdp_plan_makes_the_one_process_video(tmp_path):
    t2v = build_tiny_model(tmp_path / "model", "t2v-1.3B")
    one = generate(t2v, tmp_path / "one", review=False)
    factory = _SeenFactory(prompt_cache_dir=tmp_path / "cache")
    request = dict(prompt="a red fox", width=64, height=32, frames=5, steps=3, seed=4, guidance=5.0)
    options = RunOptions(
        model=str(t2v.official), device="cpu", dtype="float32", parallel=2, parallel_mode="cfg"
    )
    prepared = run.prepare(
        GenerationRequest(**request), options, out=tmp_path / "two", factory=factory
    )
    p = M.plan_for(M.workload_for(tiny_variant("t2v-1.3B"), 64, 32, 5), 24)
    plan = replace(
        p,
        name="fsdp",
        text=replace(p.text, where="cpu", cache=False),
        dit=replace(p.dit, fsdp_shards=2),
    )
    prepared = replace(prepared, plans=(plan,))  # rank 1 (no plans on the CPU) follows rank 0
    cache = run.ComponentCache(factory)
    result = run.execute(prepared, components=cache)
    frames = np.stack([np.asarray(Image.open(f)) for f in sorted(result.out.glob("*.png"))])
    db = psnr(one.frames, frames)
    print(f"\nFSDP2 x2 (cfg) run vs one process: PSNR {db:.1f} dB, blocks {factory.weights}")
    assert result.plan is not None and "sharded over 2 ranks (FSDP2)" in result.plan.describe()
    assert factory.weights == ("DTensor",)  # rank 0's blocks were sharded
    assert frames.shape == one.frames.shape and db >= 60.0
    run.execute(replace(prepared, out=tmp_path / "again"), components=cache)
    assert cache.builds == 2  # sharded components are tied to their run's group: built anew
