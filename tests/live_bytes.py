"""Exact tensor memory of a computation, counted on the meta device: every op's outputs are
tracked by storage until their last reference dies, so ``peak`` is what the CUDA caching
allocator would report as ``max_memory_allocated`` for the same ops (less its 512-byte rounding
and kernel workspaces) — at full model size, in milliseconds, without a GPU."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """``with LiveBytes() as m: ...`` -> ``m.peak`` / ``m.current`` bytes of tensors made inside
    (tensors made before are not counted) and ``m.peak_op``, the op at which the peak was hit."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self.peak_op = ""

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= self.size.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st._cdata  # one StorageImpl: views share it and count once
            if key not in self.refs:
                self.refs[key] = 0
                self.size[key] = st.nbytes()
                self.current += st.nbytes()
                if self.current > self.peak:
                    self.peak, self.peak_op = self.current, str(func)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def flash_like_attention(q, k, v, *, scale=None):
    """What a flash / cuDNN attention kernel allocates: its output and, during the kernel, the
    fp32 logsumexp (no L×L scores: the meta device would otherwise trace the math fallback)."""
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    del lse
    return out
