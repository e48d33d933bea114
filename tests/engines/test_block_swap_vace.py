"""Block swapping a VACE model: whenever any block streams, the whole VACE branch streams too
(engines/block_swap.py), and the forward still equals the resident one bit for bit (CPU: the same
code path, inline copies); the VACE blocks' weights stay in the packed host buffers between calls."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from wan_desktop.engines.block_swap import BlockSwap, _nbytes
from wan_desktop.engines.torch_backend import TorchDenoiser, randomize
from wan_desktop.engines.torch_ops import Fp8Ops, quantize_linears

from tests.engines.helpers import dit_inputs
from tests.tiny import tiny_variant
from wan_desktop.checkpoints.materialize import weights_on_meta
from wan_desktop.memory import streamed_vace_blocks
from wan_desktop.models.vace import VaceWanModel

VACE_LAYERS = (0, 2, 4)  # three VACE blocks: block 0 (with before_proj) and two of the other layout


def _tiny_vace() -> VaceWanModel:
    """A tiny VACE DiT (5 blocks, 3 VACE blocks), every weight random, the same on every call."""
    cfg = replace(
        tiny_variant("t2v-1.3B").dit, num_layers=5, vace_in_dim=96, vace_layers=VACE_LAYERS
    )
    with weights_on_meta():
        m = VaceWanModel(cfg, Fp8Ops)
    return randomize(m, dtype=torch.float32, device="cpu", seed=3)


@pytest.fixture(scope="module")
def model():
    return _tiny_vace()


def vace_inputs():
    x, t, ctx = dit_inputs()
    vace = torch.randn(2, 96, *x.shape[2:], generator=torch.Generator().manual_seed(1))
    return x, t, ctx, {"vace": vace, "vace_scale": 0.7}


@pytest.fixture(scope="module")
def resident(model):
    x, t, ctx, kw = vace_inputs()
    with torch.inference_mode():
        return model(x, t, ctx, **kw)


def _in_host_buffer(block: torch.nn.Module, buf: torch.Tensor) -> bool:
    """Whether every tensor of ``block`` is a view of the packed host buffer ``buf``."""
    lo = buf.untyped_storage().data_ptr()
    return all(p.untyped_storage().data_ptr() == lo for p in block.parameters())


@pytest.mark.parametrize("swap", [1, 2, 5])
def test_vace_blocks_stream_and_forward_equals_resident(model, resident, swap):
    m = copy.deepcopy(model)
    sw = BlockSwap(m, swap)
    sw.load("cpu")
    x, t, ctx, kw = vace_inputs()
    with torch.inference_mode():
        first = sw(x, t, ctx, **kw)
        second = sw(x, t, ctx, **kw)  # the slots were primed by the first call
    assert torch.equal(first, resident) and torch.equal(second, resident)
    # streamed: the 3 VACE blocks, then the last ``swap`` main blocks, through 2 device slots
    assert sw.n_vace == 3 and len(sw._host) == 3 + swap and len(sw._slot_bufs) == 2
    assert sw.n_vace == streamed_vace_blocks(m.cfg, swap)  # the planner's rule
    for j, block in enumerate(m.vace_blocks):
        assert _in_host_buffer(block, sw._host[j])  # its weights live in host memory
    # a slot holds the largest layout: VACE block 0 (its before_proj) outweighs a main block
    vace0 = sum(p.numel() * p.element_size() for p in m.vace_blocks[0].parameters())
    main = sum(p.numel() * p.element_size() for p in m.blocks[-1].parameters())
    assert vace0 > main and sw.bytes_per_block >= vace0
    # the forward really reads the streamed copies: change VACE block 1's host bytes
    sw._host[1].zero_()
    sw.invalidate()
    with torch.inference_mode():
        assert not torch.equal(sw(x, t, ctx, **kw), resident)


def test_fp8_main_blocks_and_bf16_vace_blocks_share_the_slots(model):
    """fp8 main blocks (weights + scales) and the bf16 VACE blocks (never quantized) stream through
    the same slots, each slot sized for the largest: VACE block 0."""
    m = copy.deepcopy(model).cast_weights(torch.bfloat16)
    quantize_linears(m, "fp8")
    x, t, ctx, kw = vace_inputs()
    with torch.inference_mode():
        ref = m(x, t, ctx, **kw)
    sw = BlockSwap(m, 3)
    sw.load("cpu")
    with torch.inference_mode():
        assert torch.equal(sw(x, t, ctx, **kw), ref) and torch.equal(sw(x, t, ctx, **kw), ref)
    sizes = [_nbytes(layout) for layout in sw._layouts]  # main, VACE block 0, other VACE blocks
    assert sizes[0] < sizes[2] < sizes[1] == sw.bytes_per_block


def test_no_swap_keeps_the_vace_branch_resident(model, resident):
    m = copy.deepcopy(model)
    sw = BlockSwap(m, 0)
    sw.load("cpu")
    x, t, ctx, kw = vace_inputs()
    with torch.inference_mode():
        assert torch.equal(sw(x, t, ctx, **kw), resident)
    assert sw.n_vace == 0 and sw._host == [] and m.vace_blocks[0].stream is None


def test_denoiser_streams_vace_between_calls_and_unloads(model, resident):
    m = copy.deepcopy(model)
    den = TorchDenoiser(m, swap_blocks=2)
    den.load(torch.device("cpu"))
    x, t, ctx, kw = vace_inputs()
    for _ in range(2):
        assert torch.equal(den(x, t, ctx, **kw), resident)
        swap = den._swap
        assert swap is not None
        for j, block in enumerate(m.vace_blocks):  # between calls: still only in host memory
            assert block.stream is not None and _in_host_buffer(block, swap._host[j])
    den.unload()
    # unloaded: the hooks are gone and the model runs on its own (packed) CPU weights
    assert all(b.stream is None for b in m.vace_blocks)
    with torch.inference_mode():
        assert torch.equal(m(x, t, ctx, **kw), resident)


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_vace_blocks_stay_off_the_device(model):
    m = copy.deepcopy(model).cast_weights(torch.bfloat16)
    x, t, ctx, kw = vace_inputs()
    x, t, ctx = x.cuda(), t.cuda(), ctx.cuda()
    kw = {"vace": kw["vace"].cuda(), "vace_scale": kw["vace_scale"]}
    with torch.inference_mode():
        ref = copy.deepcopy(m).cuda()(x, t, ctx, **kw)
    sw = BlockSwap(m, 2)
    sw.load("cuda")
    with torch.inference_mode():
        outs = [sw(x, t, ctx, **kw) for _ in range(3)]
    for out in outs:
        assert torch.equal(out, ref)
    for block in m.vace_blocks:
        assert all(p.device.type == "cpu" and p.is_pinned() for p in block.parameters())


def test_skipped_steps_keep_the_stream_in_order(model):
    """A step cache that skips the block stack (engines/step_cache.py) still runs the VACE branch:
    the streamed VACE blocks fetch their own slots, and every step equals the resident one."""
    x, _, ctx, kw = vace_inputs()
    steps = [999.0, 990.0, 980.0, 970.0, 960.0, 500.0]
    outs = []
    for swap in (0, 2):
        den = TorchDenoiser(copy.deepcopy(model), swap_blocks=swap, step_cache=10.0)
        den.load(torch.device("cpu"))
        den.begin(steps)
        outs.append([den(x, torch.full((2,), s), ctx, **kw) for s in steps])
        stats = den.cache_stats
        assert stats is not None and stats["skipped"] > 0
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def _sequence_parallel_worker(rank: int, world: int) -> list[torch.Tensor]:
    """One rank of a gloo group: the tiny VACE model's velocity in one process, then sequence
    parallel, resident and with 2 blocks (and so the VACE branch) streamed."""
    import torch.distributed as dist

    m = _tiny_vace()
    x, t, ctx, kw = vace_inputs()
    with torch.inference_mode():
        outs = [copy.deepcopy(m)(x, t, ctx, **kw)]  # one process's resident forward, made here
    for swap in (0, 2):
        den = TorchDenoiser(copy.deepcopy(m), swap_blocks=swap)
        den.load(torch.device("cpu"))
        den.sequence_group = dist.group.WORLD
        outs.append(den(x, t, ctx, **kw))
        if swap:  # the VACE blocks ran from the slots: their weights are the host buffers'
            assert den._swap is not None and den._swap.n_vace == len(VACE_LAYERS)
    return outs


@pytest.mark.slow
def test_sequence_parallel_runs_the_streamed_vace_blocks():
    """The sequence-parallel forward (models/sequence_parallel.py) runs the VACE branch itself;
    through the blocks' ``stream`` hook it runs the streamed copies, and the slots take the
    blocks' Ulysses hook (main blocks too: without it they attended over their shard only):
    equal to its resident run."""
    from tests.spawn_gloo import run_gloo

    for rank, (resident, plain, streamed) in enumerate(run_gloo(2, _sequence_parallel_worker)):
        assert torch.equal(streamed, plain), (rank, (streamed - plain).abs().max())
        err = (plain - resident).abs().max()
        assert torch.allclose(plain, resident, rtol=0, atol=1e-4), (rank, err)
