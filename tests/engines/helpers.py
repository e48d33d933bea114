"""Shared fixtures of the engine tests: a tiny random DiT (fp32, CPU) and its inputs."""

from __future__ import annotations

import torch

from tests.tiny import tiny_variant


def tiny_dit(num_layers: int = 2, seed: int = 3, ops=None, name: str = "t2v-1.3B"):
    """A tiny WanModel with every weight random (randomize: N(0, 1/fan_in), norms 1, tables N(0, .02))."""
    from dataclasses import replace

    from wan_desktop.engines.torch_backend import randomize
    from wan_desktop.engines.torch_ops import Fp8Ops

    from wan_desktop.checkpoints.materialize import weights_on_meta
    from wan_desktop.models.dit import WanModel

    cfg = replace(tiny_variant(name).dit, num_layers=num_layers)
    with weights_on_meta():
        model = WanModel(cfg, ops or Fp8Ops)
    return randomize(model, dtype=torch.float32, device="cpu", seed=seed)


def dit_inputs():
    """A cond+uncond batch: x [2, 16, 3, 8, 16] (48 tokens), t [2], context [2, 512, 32]."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 3, 8, 16, generator=g)
    t = torch.tensor([900.0, 900.0])
    ctx = torch.zeros(2, 512, 32)
    ctx[:, :20] = torch.randn(2, 20, 32, generator=g)
    return x, t, ctx
