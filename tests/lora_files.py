"""LoRA files for the tiny t2v-1.3B DiT: random low-rank pairs on the linears a Wan LoRA touches,
written in the official (ComfyUI / musubi-tuner ``diffusion_model.`` + ``lora_down``/``lora_up``)
layout. Shared by the LoRA tests (tests/lora) and the GUI's LoRA tests (tests/gui)."""

from __future__ import annotations

import math

import torch
from safetensors.torch import save_file

from tests.tiny import tiny_variant
from wan_desktop.lora import param_shapes
from wan_desktop.models.dit import WanModel

CFG = tiny_variant("t2v-1.3B").dit
RANK = 4
# official module -> diffusers module, for the layers a Wan LoRA touches
TARGETS = {
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}  # fmt: skip


def lowrank(seed: int, *, rank: int = RANK, bias: bool = False):
    """{(block, official module): (down [r, in], up [out, r], diff_b [out] | None)}."""
    g = torch.Generator().manual_seed(seed)
    shapes = param_shapes(WanModel(CFG))
    out = {}
    for b in range(CFG.num_layers):
        for mod in TARGETS:
            o, i = shapes[f"blocks.{b}.{mod}.weight"]
            down = torch.randn(rank, i, generator=g) / math.sqrt(i)
            up = torch.randn(o, rank, generator=g) * 0.5
            out[(b, mod)] = (down, up, torch.randn(o, generator=g) * 0.1 if bias else None)
    return out


def save(tmp_path, name, tensors):
    p = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(p))
    return p


def official_layout(pairs, alpha=None, prefix="diffusion_model."):
    t = {}
    for (b, mod), (down, up, diff_b) in pairs.items():
        k = f"{prefix}blocks.{b}.{mod}"
        t[f"{k}.lora_down.weight"], t[f"{k}.lora_up.weight"] = down, up
        if alpha is not None:
            t[f"{k}.alpha"] = torch.tensor(float(alpha))
        if diff_b is not None:
            t[f"{k}.diff_b"] = diff_b
    return t
