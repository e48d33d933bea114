"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for a DiT that does not fit one card: each of
the DiT's blocks is sharded over the ranks (a rank keeps 1/N of every block's weights); a block's
forward all-gathers its weights first and frees them after (``reshard_after_forward``), so a rank
holds its shards plus about one whole block at a time.

Only the blocks are sharded (for the 14B, 40 blocks are 97 % of the weights): the torch denoiser
runs ``prepare`` / the blocks / ``finish`` rather than the root ``forward``, which is where FSDP
would gather the root's own parameters. Every rank must call the DiT the same number of times
(a parallel run's ranks do: each computes its CFG half and its tokens' share).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def shard_blocks(
    model: Any,
    group: Any = None,
    device_type: str | None = None,
    guard: Callable[[], None] | None = None,
) -> int:
    """``fully_shard`` every block of ``model.blocks`` (and ``model.vace_blocks``) over ``group``
    (None: the default group) on ``device_type`` (None: where the weights are; a model still on
    the CPU goes to the rank's GPU shard by shard); returns the number of blocks sharded.
    ``guard``: called before each block's weights are gathered (ahead of FSDP's own hook)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    weight = next(model.parameters())
    group = group if group is not None else dist.group.WORLD
    mesh = DeviceMesh.from_group(group, device_type or weight.device.type)
    blocks = list(model.blocks) + list(getattr(model, "vace_blocks", None) or [])
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
        if guard is not None:
            block.register_forward_pre_hook(lambda *_: guard(), prepend=True)
    return len(blocks)
