"""Block streaming of a GGUF DiT moves the quantized bytes: the streamed forward equals the resident
one bit for bit, a streamed block is the size of its quantized weights, and blocks whose GGML types
differ are refused (their bytes alone do not say how to read them)."""

from __future__ import annotations

import pytest
import torch
from wan_desktop.engines.block_swap import BlockSwap

from tests.engines.helpers import dit_inputs, tiny_dit
from tests.gguf_files import write_gguf
from wan_desktop.checkpoints.detect import detect_model
from wan_desktop.checkpoints.load import load_dit
from wan_desktop.errors import EngineError
from wan_desktop.models.layers import Ops
from wan_desktop.models.quant_linear import QuantLinear

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def gguf_dit(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "wan2.1-t2v-tiny-Q4_K.gguf"
    state = {k: v.contiguous() for k, v in tiny_dit(num_layers=4, ops=Ops).state_dict().items()}
    write_gguf(path, state, "Q4_K")
    return path


def test_streamed_gguf_blocks_equal_resident(gguf_dit):
    resident = load_dit(detect_model(gguf_dit))
    streamed = load_dit(detect_model(gguf_dit))
    sw = BlockSwap(streamed, 3)
    sw.load("cpu")
    x, t, ctx = dit_inputs()
    with torch.no_grad():
        want = resident(x, t, ctx)
        got = sw(x, t, ctx)
    assert torch.equal(got, want)
    block = resident.blocks[0]
    quant = sum(m.qweight.numel() for m in block.modules() if isinstance(m, QuantLinear))
    floats = sum(p.numel() * p.element_size() for p in block.parameters())
    # a block moves its Q4_K/Q8_0 bytes (+ fp32 biases, norms, modulation, 256-byte alignment)
    assert quant <= sw.bytes_per_block <= quant + floats + 256 * 40
    dense = sum(
        m.in_features * m.out_features * 4 for m in block.modules() if isinstance(m, QuantLinear)
    )
    assert sw.bytes_per_block < 0.2 * dense  # vs the same weights in fp32


def test_blocks_of_other_ggml_types_are_refused(gguf_dit):
    model = load_dit(detect_model(gguf_dit))
    q = model.blocks[3].self_attn.q
    assert isinstance(q, QuantLinear) and q.qtype == "Q4_K"
    q.qtype = "Q4_0"  # same bytes per 256-value row (144), another layout
    with pytest.raises(EngineError, match="GGUF quant types"):
        BlockSwap(model, 2).load("cpu")
