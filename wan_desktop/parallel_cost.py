"""On paper: what one denoising step sends between GPUs in each multi-GPU mode, and what it
computes, so the README can set communication time against step time for real model sizes.

Pure arithmetic on the variant's DiT shape; nothing here runs a collective.

- **Ulysses sequence parallel** (``world`` ranks share the DiT's tokens): around each block's
  self-attention, four all-to-alls: q, k and v go from "my tokens, all heads" to "all tokens, my
  heads", and the attention output comes back. Each rank holds ``ceil(L / world)`` tokens (the
  last shard padded) of width ``dim``; an all-to-all keeps ``1/world`` of them and sends the rest,
  ``(world - 1) / world``. Cross-attention needs nothing: every rank has the whole text context.
  With guidance each rank runs its shard twice (cond and uncond), so ``passes=2``.
- **CFG-parallel** (two ranks, cond on one, uncond on the other): one all_gather of the velocity
  per step, the latent ``[z, T, h, w]`` in fp32; each rank sends its own half once.

Bytes are what ONE rank sends per step (a link is full duplex: it receives as much meanwhile), so
the time on a link is bytes / the link's one-way bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError
from .variants import DiTConfig, Variant

ALL_TO_ALLS_PER_BLOCK = 4  # q, k, v in; the attention output back
TEXT_TOKENS = 512  # the DiT pads the prompt's context to text_len


def check_heads(dit: DiTConfig, world: int) -> None:
    """Ulysses splits the attention heads over the ranks: ``world`` must divide them."""
    if world < 1 or dit.num_heads % world:
        valid = [n for n in range(1, dit.num_heads + 1) if dit.num_heads % n == 0]
        raise ConfigError(
            f"sequence parallel over {world} processes: the DiT's {dit.num_heads} attention "
            f"heads do not divide by {world}",
            remedy=f"Use one of {', '.join(map(str, valid))} processes, or --parallel-mode cfg.",
        )


def ulysses_bytes_per_step(
    dit: DiTConfig, tokens: int, world: int, *, passes: int = 2, elem_bytes: int = 2
) -> int:
    """Bytes one rank sends per denoising step in Ulysses sequence parallel: ``num_layers`` blocks
    × 4 all-to-alls × ``passes`` model calls, each sending ``world - 1`` of the ``world`` head
    groups of its ``ceil(tokens / world)`` local tokens (activations of ``elem_bytes``: bf16)."""
    check_heads(dit, world)
    local = math.ceil(tokens / world)
    per_all_to_all = local * (dit.dim // world) * (world - 1) * elem_bytes
    return dit.num_layers * ALL_TO_ALLS_PER_BLOCK * passes * per_all_to_all


def cfg_bytes_per_step(
    latent_shape: tuple[int, ...], *, world: int = 2, elem_bytes: int = 4
) -> int:
    """Bytes one rank sends per step in CFG-parallel: the all_gather of the velocity (the
    latent's shape, fp32), each rank's own tensor to the ``world - 1`` others (ring all_gather)."""
    return math.prod(latent_shape) * elem_bytes * (world - 1)


def dit_flops_per_pass(dit: DiTConfig, tokens: int, *, text_tokens: int = TEXT_TOKENS) -> float:
    """Multiply-adds × 2 of one DiT call over ``tokens`` (the blocks only; the patch embedding
    and head are < 0.1 %): per block the self-attention projections (q, k, v, o: 4 d²), the
    cross-attention's q and o on the video tokens (2 d²) and k, v on the text tokens (2 d²),
    the FFN (2 d·ffn), and the attention products (QKᵀ and AV: 2 L² d self, 2 L·text·d cross)."""
    d, L = dit.dim, tokens
    linear = L * (6 * d * d + 2 * d * dit.ffn_dim) + text_tokens * 2 * d * d
    attention = 2 * L * L * d + 2 * L * text_tokens * d
    return 2.0 * dit.num_layers * (linear + attention)


@dataclass(frozen=True, kw_only=True)
class StepCost:
    """One variant at one size: tokens, FLOPs of a step with guidance (cond + uncond), and the
    bytes one rank sends per step in each two-GPU mode."""

    variant: str
    width: int
    height: int
    frames: int
    tokens: int
    step_flops: float  # cond + uncond, one GPU
    ulysses_bytes: int  # two ranks, each running cond and uncond on half the tokens
    cfg_bytes: int  # two ranks, one model call each

    def step_seconds(self, reference: StepCost, reference_seconds: float) -> float:
        """This step's time scaled from a measured one by the FLOPs ratio (same GPU, same
        efficiency assumed)."""
        return reference_seconds * self.step_flops / reference.step_flops


def step_cost(
    variant: Variant, width: int, height: int, frames: int, *, world: int = 2
) -> StepCost:
    tokens = variant.seq_len(width, height, frames)
    return StepCost(
        variant=variant.name,
        width=width,
        height=height,
        frames=frames,
        tokens=tokens,
        step_flops=2 * dit_flops_per_pass(variant.dit, tokens),
        ulysses_bytes=ulysses_bytes_per_step(variant.dit, tokens, world, passes=2),
        cfg_bytes=cfg_bytes_per_step(variant.latent_shape(width, height, frames), world=world),
    )
