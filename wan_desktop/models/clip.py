# Port of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315 wan/modules/clip.py (Apache-2.0),
# the visual tower (``VisionTransformer``, pool_type 'token', pre_norm, exact GELU) and the image
# preprocessing of ``CLIPModel.visual``. Deviations:
#   - visual tower only: the XLM-RoBERTa text tower and ``log_scale`` of the checkpoint are not built
#     (``visual_state`` drops them); no position-embedding interpolation (Wan never uses it);
#   - ``forward`` runs the first ``cfg.tap_layers`` blocks (Wan: ``use_31_block=True``); the remaining
#     block(s), ``post_norm`` and ``head`` are kept so the official keys load strictly, but Wan never
#     runs them;
#   - dtype policy written out instead of ``torch.cuda.amp.autocast(fp16)``: linears and attention in
#     the weights' dtype, LayerNorms in fp32 (as the official ``LayerNorm`` subclass does);
#   - attention through ``ops.attention`` (SDPA by default) instead of flash-attn.
"""CLIP ViT-H/14 image encoder of Wan2.1 I2V / FLF2V, module names equal to the official keys.

``ClipVisionEncoder`` holds the tower as ``.visual``, so its state dict keys are exactly the ``visual.*``
keys of ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from ..variants import ClipConfig
from .layers import Ops

log = logging.getLogger(__name__)

_COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
T = TypeVar("T")


def _activation_dtype(weight: Tensor) -> torch.dtype:
    return weight.dtype if weight.dtype in _COMPUTE_DTYPES else torch.bfloat16


def _layer_norm_fp32(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm computed in fp32, cast back to x's dtype (the official ``LayerNorm`` subclass)."""
    w = norm.weight.float() if norm.weight is not None else None
    b = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x.float(), norm.normalized_shape, w, b, norm.eps).to(x.dtype)


def preprocess(images: Tensor, cfg: ClipConfig) -> Tensor:
    """Wan's CLIP input: images [N, 3, H, W] in [-1, 1], any size -> [N, 3, S, S] fp32, S = image_size.

    Bicubic resize (align_corners=False, no antialias, aspect ratio not kept, no crop, no clamp), then
    to [0, 1] and normalised with the CLIP mean / std — unlike diffusers' CLIPImageProcessor
    (shortest-side resize + centre crop).
    """
    size = (cfg.image_size, cfg.image_size)
    x = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class SelfAttention(nn.Module):
    """Fused q|k|v projection (with bias), softmax scale 1/√head_dim, output projection."""

    def __init__(self, dim: int, num_heads: int, ops: type[Ops]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.ops = ops
        self.to_qkv = ops.Linear(dim, dim * 3)
        self.proj = ops.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, dim] -> [B, L, dim]."""
        qkv = self.to_qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # [B, L, 3, H, D]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D]
        out = self.ops.attention(q, k, v, scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).flatten(2))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)); x + mlp(norm2(x)), exact GELU."""

    def __init__(self, cfg: ClipConfig, ops: type[Ops]) -> None:
        super().__init__()
        hidden = cfg.mlp_width  # read from the weights (checkpoints/detect.clip_config)
        self.norm1 = ops.LayerNorm(cfg.dim, eps=cfg.eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads, ops)
        self.norm2 = ops.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = nn.Sequential(
            ops.Linear(cfg.dim, hidden), nn.GELU(), ops.Linear(hidden, cfg.dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(_layer_norm_fp32(x, self.norm1))
        return x + self.mlp(_layer_norm_fp32(x, self.norm2))


class VisionTransformer(nn.Module):
    """ViT with a class token, learned positions, pre_norm (so the patch conv has no bias)."""

    def __init__(self, cfg: ClipConfig, ops: type[Ops] = Ops) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ConfigError(
                f"CLIP image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}"
            )
        if not 0 < cfg.tap_layers <= cfg.num_layers:
            raise ConfigError(
                f"CLIP tap_layers must be in 1..{cfg.num_layers}, got {cfg.tap_layers}"
            )
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = ops.Conv2d(
            3, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.cls_embedding = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.num_patches + 1, dim) * dim**-0.5)
        self.pre_norm = ops.LayerNorm(dim, eps=cfg.eps)
        self.transformer = nn.Sequential(*(AttentionBlock(cfg, ops) for _ in range(cfg.num_layers)))
        # Never run by Wan; here for strict loading of the official keys.
        self.post_norm = ops.LayerNorm(dim, eps=cfg.eps)
        self.head = nn.Parameter(torch.randn(dim, cfg.out_dim) * dim**-0.5)

    def forward(self, x: Tensor, num_blocks: int | None = None) -> Tensor:
        """x: normalised pixels [N, 3, S, S] -> tokens [N, 1 + (S/p)², dim] after the first
        ``num_blocks`` blocks (default ``cfg.tap_layers``), before post_norm; compute dtype."""
        cfg = self.cfg
        if tuple(x.shape[-2:]) != (cfg.image_size, cfg.image_size):
            raise ConfigError(
                f"CLIP input must be {cfg.image_size}×{cfg.image_size} (use preprocess), "
                f"got {tuple(x.shape[-2:])}"
            )
        dtype = _activation_dtype(cast(AttentionBlock, self.transformer[0]).attn.to_qkv.weight)
        # patchify: [N, 3, S, S] -> [N, dim, S/p, S/p] -> [N, (S/p)², dim]
        w = self.patch_embedding.weight
        x = self.patch_embedding(x.to(_activation_dtype(w))).flatten(2).transpose(1, 2).to(dtype)
        cls = self.cls_embedding.to(dtype).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embedding.to(dtype)  # [N, L, dim]
        x = _layer_norm_fp32(x, self.pre_norm)
        n = cfg.tap_layers if num_blocks is None else num_blocks
        for block in list(self.transformer)[:n]:
            x = block(x)
        return x


class ClipVisionEncoder(nn.Module):
    """Wan's CLIP image encoder: ``encoder(pixels)`` -> features [N, 257, 1280] (real config)."""

    BLOCK_TYPE = "AttentionBlock"

    def __init__(self, cfg: ClipConfig, ops: type[Ops] = Ops) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual = VisionTransformer(cfg, ops)

    @property
    def compute_dtype(self) -> torch.dtype:
        first = cast(AttentionBlock, self.visual.transformer[0])
        return _activation_dtype(first.attn.to_qkv.weight)

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels: [N, 3, S, S] from ``preprocess`` -> [N, 1 + num_patches, dim], the output of
        the first ``cfg.tap_layers`` blocks (Wan: 31 of 32), compute dtype."""
        return self.visual(pixels)

    def encode(self, images: Tensor) -> Tensor:
        """images [N, 3, H, W] in [-1, 1], any size -> features (preprocess + forward)."""
        return self.forward(preprocess(images, self.cfg))


def visual_state(state: Mapping[str, T], where: str = "CLIP checkpoint") -> dict[str, T]:
    """The ``visual.*`` entries of an official ``XLMRobertaCLIP`` state dict (``textual.*`` and
    ``log_scale`` are dropped); CheckpointError if there are none."""
    out = {k: v for k, v in state.items() if k.startswith("visual.")}
    if not out:
        raise CheckpointError(f"{where}: no visual.* tensors (not an open-clip CLIP checkpoint)")
    return out
