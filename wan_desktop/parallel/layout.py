"""Which rank does what: the CFG split and the sequence-parallel degree of N processes.

Ranks are numbered ``r = cfg_index · seq + seq_rank``: with the CFG split, ranks 0 … seq−1
compute the prompt's (cond) velocity and seq … 2·seq−1 the negative prompt's (uncond); within
each half, the DiT's tokens are sharded over ``seq`` ranks (Ulysses, over the attention heads).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import ParallelMode


@dataclass(frozen=True, kw_only=True)
class Layout:
    world: int  # processes
    cfg: int  # 2: cond and uncond on different ranks; 1: every rank computes both
    seq: int  # ranks sharing one model call's tokens (1: none)

    def __post_init__(self) -> None:
        assert self.cfg in (1, 2) and self.cfg * self.seq == self.world, self

    def cfg_index(self, rank: int) -> int:
        """0: this rank computes the cond velocity, 1: the uncond (with the CFG split)."""
        return rank // self.seq

    def seq_rank(self, rank: int) -> int:
        return rank % self.seq

    def cfg_groups(self) -> list[list[int]]:
        """The rank pairs that exchange cond / uncond velocities (one per sequence rank)."""
        return [[s + c * self.seq for c in range(self.cfg)] for s in range(self.seq)]

    def seq_groups(self) -> list[list[int]]:
        """The ranks sharding one model call's tokens (one group per CFG half)."""
        return [[c * self.seq + s for s in range(self.seq)] for c in range(self.cfg)]

    def describe(self) -> str:
        parts = []
        if self.cfg == 2:
            parts.append("CFG split (cond / uncond)")
        if self.seq > 1:
            parts.append(f"sequence parallel over {self.seq}")
        return f"{self.world} processes: " + (" + ".join(parts) or "no split")


def plan_layout(world: int, mode: ParallelMode, *, cfg_used: bool, heads: int) -> Layout:
    """The layout of ``world`` processes in ``mode``, or a ConfigError naming the valid counts.

    ``cfg_used``: whether any step runs classifier-free guidance (guidance ≠ 1); ``heads``: the
    DiT's attention heads, which the sequence-parallel ranks divide between them."""
    if world < 1:
        raise ConfigError(f"--parallel must be at least 1, got {world}", field="parallel")
    if world == 1:
        return Layout(world=1, cfg=1, seq=1)
    if mode is ParallelMode.CFG:
        if not cfg_used:
            raise ConfigError(
                "--parallel-mode cfg needs classifier-free guidance (guidance > 1): with "
                "guidance 1 there is no uncond half to run elsewhere",
                remedy="Use --parallel-mode sequence (or auto), or a guidance above 1.",
                field="parallel",
            )
        if world != 2:
            raise ConfigError(
                f"--parallel-mode cfg splits cond and uncond over exactly 2 processes, got {world}",
                remedy="Use --parallel 2, or --parallel-mode auto to add sequence parallelism.",
                field="parallel",
            )
        return Layout(world=2, cfg=2, seq=1)
    layout = _split(world, mode, cfg_used=cfg_used)
    if heads % layout.seq:
        valid = [n for n in range(2, 2 * heads + 1) if heads % _split(n, mode, cfg_used).seq == 0]
        what = f"{layout.seq} sequence-parallel ranks" + (
            " (after the CFG split)" if layout.cfg == 2 else ""
        )
        raise ConfigError(
            f"--parallel {world}: the model's {heads} attention heads do not divide over {what}; "
            f"valid process counts: {', '.join(map(str, valid[:12]))}",
            remedy="Choose one of the valid process counts.",
            field="parallel",
        )
    return layout


def _split(world: int, mode: ParallelMode, cfg_used: bool) -> Layout:
    """SEQUENCE: every rank shards tokens; AUTO: the CFG split first when it applies."""
    cfg = 2 if mode is ParallelMode.AUTO and cfg_used and world % 2 == 0 else 1
    return Layout(world=world, cfg=cfg, seq=world // cfg)
