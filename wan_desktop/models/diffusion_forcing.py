# SkyReels-V2 Diffusion Forcing additions to the Wan DiT (SkyworkAI/SkyReels-V2
# skyreels_v2_infer/modules/transformer.py; diffusers 0.42.1 transformer_skyreels_v2.py).
# Deviations: the block-causal attention runs one SDPA per causal block of queries over the keys
# it may see (a prefix of the sequence) instead of an [L, L] boolean mask (diffusers, official
# flex-attention): the same softmax, without the L² mask (L is 200k tokens at 540P).
"""Per-frame timesteps, the fps embedding and block-causal attention of SkyReels-V2 DF models.

models/dit.py calls these from small hooks; the numbers are diffusers' SkyReelsV2Transformer3DModel
with ``enable_diffusion_forcing=True``:

* a timestep per latent frame, ``t: [B, F']``, gives per-frame modulation ``e0: [B, F', 6, dim]``,
  kept per frame (``[B, F', 1, 6, dim]``) and widened to tokens only a token chunk at a time
  (``frame_modulation``), and a per-frame head (``WanModel.finish``);
* ``inject_sample_info`` models add ``fps_projection(fps_embedding(i))`` to every frame's ``e0``
  (``i = 0`` for 16 fps, else 1: the pipelines' mapping, ``fps_index``);
* ``causal_block_size`` > 1: tokens of latent-frame block b attend to blocks ≤ b only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Ops


def fps_index(fps: int) -> int:
    """The fps embedding row a frame rate selects: 0 for 16 fps, 1 for anything else (SkyReels'
    and diffusers' pipelines: ``0 if fps == 16 else 1``)."""
    return 0 if fps == 16 else 1


def fps_modules(dim: int, ops: type[Ops]) -> tuple[nn.Embedding, nn.Sequential]:
    """(fps_embedding, fps_projection) with the official key names: an Embedding(2, dim) and
    Linear(dim, dim) → SiLU → Linear(dim, 6·dim) (diffusers: FeedForward "linear-silu")."""
    embedding = ops.Embedding(2, dim)
    projection = nn.Sequential(ops.Linear(dim, dim), nn.SiLU(), ops.Linear(dim, 6 * dim))
    return embedding, projection


def fps_term(embedding: nn.Module, projection: nn.Module, index: int, batch: int) -> Tensor:
    """[B, 6, dim] fp32: what the fps adds to every token's time projection (the fps Linears
    run in fp32 like the time projection they add to)."""
    emb = cast(nn.Embedding, embedding)
    lin0, act, lin2 = cast(nn.Sequential, projection)
    idx = torch.full((batch,), index, dtype=torch.long, device=emb.weight.device)
    h = emb(idx).float()
    h = F.linear(h, cast(Tensor, lin0.weight).float(), cast(Tensor, lin0.bias).float())
    h = F.linear(act(h), cast(Tensor, lin2.weight).float(), cast(Tensor, lin2.bias).float())
    return h.unflatten(-1, (6, -1))


def frame_modulation(table: Tensor, e0: Tensor, tokens: int, i: int, a: int, b: int) -> Tensor:
    """Modulation vector i of tokens a:b from per-frame ``e0`` [B, F', 1, 6, dim] (a sequence of
    ``tokens`` tokens, F'·H'·W', frame-major): ``table[i] + e0[frame(token), i]`` as
    [B, b − a, dim] fp32, made for the frames that chunk touches only."""
    f = e0.shape[1]
    hw = tokens // f
    fa, fb = a // hw, -(-b // hw)
    m = table[:, i].float() + e0[:, fa:fb, 0, i]  # [B, nf, dim]
    m = m[:, :, None].expand(-1, -1, hw, -1).flatten(1, 2)  # [B, nf·hw, dim]
    return m[:, a - fa * hw : b - fa * hw]


def block_causal_attention(
    attention: Callable[..., Tensor],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    block_tokens: int,
    scale: float,
) -> Tensor:
    """q/k/v [B, H, L, D] -> [B, H, L, D]: the queries of each block of ``block_tokens`` tokens
    (causal_block_size latent frames) attend to the keys of their own and earlier blocks only —
    diffusers' mask ``block(q) >= block(k)`` — as one attention call per block over a key prefix."""
    n = q.shape[2]
    if not isinstance(n, int) or torch.compiler.is_exporting():
        # a traced graph (ONNX export: symbolic token count): diffusers' boolean mask, made in
        # the graph from the token index, so any frame count runs
        block = torch.arange(n, device=q.device) // block_tokens
        mask = block[:, None] >= block[None, :]  # [L, L]: key block ≤ query block
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = []
    for s in range(0, n, block_tokens):
        e = min(s + block_tokens, n)
        out.append(attention(q[:, :, s:e], k[:, :, :e], v[:, :, :e], scale=scale))
    return torch.cat(out, dim=2)


def per_frame(t: Tensor, grid: tuple[int, int, int]) -> bool:
    """Whether timestep ``t`` gives one value per latent frame ([B, F'] with F' ≠ F'·H'·W'; with a
    1×1 patch grid per frame the two forms are the same numbers)."""
    f, h, w = grid
    return t.dim() == 2 and t.shape[1] == f and f != f * h * w
