"""Sparse-linear attention (SLA) of TurboDiffusion's rCM Wan checkpoints, in plain torch.

SLA (Zhang et al. 2025, arXiv:2509.24006) as TurboDiffusion runs it (thu-ml/TurboDiffusion@aaecff5
``turbodiffusion/SLA/core.py`` SparseLinearAttention, block map from thu-ml/SLA
``sparse_linear_attention/utils.py`` get_block_map):

* block map: queries mean-pooled over blocks of ``blkq`` tokens, keys minus their sequence mean
  ("smooth-k") mean-pooled over blocks of ``blkk`` (a short last block is averaged over its real
  tokens); each query block keeps the ``min(K, int(topk·K))`` key blocks of highest pooled score;
* sparse branch: softmax attention (scale 1/√D) of each query over the tokens of its kept blocks only;
* linear branch over *all* keys (their code; the paper writes it over the dropped blocks):
  φ = softmax over the head dim, ``o_l = φ(q)·(φ(k)ᵀv) / (1e-5 + φ(q)·Σφ(k))``;
* output ``o_s + proj_l(o_l)`` — ``proj_l`` is the only SLA weight in the checkpoint.

Ours differs in two places, both outside what a checkpoint can tell: the branches run in the model's
compute dtype (theirs casts to bf16), and at least one key block is kept when ``topk·K < 1`` (their
kernel would attend to nothing). The sparse branch is gathered per query block and processed in
chunks, so its memory is bounded by ``_CHUNK_ELEMS`` instead of the dense L×L score matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Ops

# TurboDiffusion's inference defaults: --sla_topk 0.1 and SLA(BLKQ=128, BLKK=64) (modify_model.py).
DEFAULT_TOPK = 0.1
BLOCK_Q = 128
BLOCK_K = 64
_CHUNK_ELEMS = 1 << 26  # gathered key elements per chunk of query blocks (256 MiB in fp32)


def _block_mean(x: Tensor, blk: int) -> Tensor:
    """[B, H, L, D] -> [B, H, ceil(L/blk), D]: mean of each block of ``blk`` tokens (real ones)."""
    n = x.shape[2]
    nb = -(-n // blk)
    pad = nb * blk - n
    sums = F.pad(x, (0, 0, 0, pad)).unflatten(2, (nb, blk)).sum(dim=3)
    counts = torch.full((nb,), float(blk), dtype=x.dtype, device=x.device)
    counts[-1] = blk - pad
    return sums / counts[:, None]


def block_selection(
    q: Tensor, k: Tensor, topk: float, blkq: int = BLOCK_Q, blkk: int = BLOCK_K
) -> Tensor:
    """Indices [B, H, Mq, n] of the key blocks each query block keeps (n = kept blocks)."""
    pooled_q = _block_mean(q, blkq)
    pooled_k = _block_mean(k - k.mean(dim=2, keepdim=True), blkk)
    score = pooled_q @ pooled_k.transpose(-1, -2)  # [B, H, Mq, Mk]
    mk = score.shape[-1]
    n = max(1, min(mk, int(topk * mk)))
    return torch.topk(score, n, dim=-1, sorted=False).indices


def sparse_branch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    blocks: Tensor,
    *,
    scale: float,
    blkq: int = BLOCK_Q,
    blkk: int = BLOCK_K,
) -> Tensor:
    """Softmax attention of every query over the tokens of its block's kept key blocks.

    q: [B, H, Lq, D]; k, v: [B, H, Lk, D]; blocks: [B, H, Mq, n] -> [B, H, Lq, D]."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    mq, n = blocks.shape[2], blocks.shape[3]
    mk = -(-lk // blkk)
    kb = F.pad(k, (0, 0, 0, mk * blkk - lk)).unflatten(2, (mk, blkk))  # [B, H, Mk, blkk, D]
    vb = F.pad(v, (0, 0, 0, mk * blkk - lk)).unflatten(2, (mk, blkk))
    valid = (torch.arange(mk * blkk, device=q.device) < lk).view(mk, blkk)
    qb = F.pad(q, (0, 0, 0, mq * blkq - lq)).unflatten(2, (mq, blkq))  # [B, H, Mq, blkq, D]
    out = torch.empty_like(qb)
    step = max(1, _CHUNK_ELEMS // max(1, b * h * n * blkk * d))
    for s in range(0, mq, step):
        idx = blocks[:, :, s : s + step]  # [B, H, c, n]
        c = idx.shape[2]
        gather = idx.reshape(b, h, c * n, 1, 1).expand(b, h, c * n, blkk, d)
        ks = torch.gather(kb, 2, gather).reshape(b, h, c, n * blkk, d)
        vs = torch.gather(vb, 2, gather).reshape(b, h, c, n * blkk, d)
        mask = valid[idx].reshape(b, h, c, 1, n * blkk)  # padded key rows never count
        out[:, :, s : s + c] = F.scaled_dot_product_attention(
            qb[:, :, s : s + c], ks, vs, attn_mask=mask, scale=scale
        )
    return out.flatten(2, 3)[:, :, :lq]


def linear_branch(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Linear attention with the softmax feature map over all keys: [B, H, L, D] -> [B, H, L, D]."""
    fq = q.softmax(dim=-1)
    fk = k.softmax(dim=-1)
    kv = fk.transpose(-1, -2) @ v  # [B, H, D, D]
    ksum = fk.sum(dim=2, keepdim=True)  # [B, H, 1, D]
    return (fq @ kv) / (1e-5 + (fq * ksum).sum(dim=-1, keepdim=True))


class SparseLinearAttention(nn.Module):
    """SLA with TurboDiffusion's parameter name (``proj_l``): [B, H, L, D] q/k/v -> [B, H, L, D]."""

    def __init__(
        self,
        head_dim: int,
        topk: float,
        ops: type[Ops],
        *,
        blkq: int = BLOCK_Q,
        blkk: int = BLOCK_K,
    ) -> None:
        super().__init__()
        self.topk = topk
        self.blkq = blkq
        self.blkk = blkk
        self.proj_l = ops.Linear(head_dim, head_dim)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, scale: float) -> Tensor:
        blocks = block_selection(q, k, self.topk, self.blkq, self.blkk)
        o_s = sparse_branch(q, k, v, blocks, scale=scale, blkq=self.blkq, blkk=self.blkk)
        return o_s + self.proj_l(linear_branch(q, k, v))


class SlaAttnOp(nn.Module):
    """Holder so the weights sit at TurboDiffusion's key ``self_attn.attn_op.local_attn.proj_l``."""

    def __init__(self, head_dim: int, topk: float, ops: type[Ops]) -> None:
        super().__init__()
        self.local_attn = SparseLinearAttention(head_dim, topk, ops)
