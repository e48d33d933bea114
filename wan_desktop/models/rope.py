# Port of the 3D RoPE of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315
# wan/modules/model.py (rope_params, rope_apply; identical in Wan-Video/Wan2.2@42bf4cf) (Apache-2.0).
# Deviations: real cos/sin instead of complex multipliers (ONNX/TensorRT have no complex type); the
# rotation runs in float32 instead of float64; no per-sample loop and no pass-through of padding tokens
# (we never pad the token sequence).
"""3D rotary position embedding of the Wan DiT, in real arithmetic.

The head dim ``d`` is split into a temporal part ``d - 4·(d//6)`` and height / width parts
``2·(d//6)`` each (44 / 42 / 42 for d = 128). Each part rotates adjacent pairs ``(x[2j], x[2j+1])``
by ``pos · θ^(-2j / d_axis)`` with θ = 10000, where ``pos`` is the integer index of the token on that
axis of the patch grid (frame, row, column; from 0). Token order is frame-major, then row, then column,
as produced by the patch embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor

THETA = 10000.0


def rope_dims(head_dim: int) -> tuple[int, int, int]:
    """Real sub-dimensions (temporal, height, width) of one head; they sum to ``head_dim``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(n: int, axis_dim: int, theta: float, device: torch.device | None) -> Tensor:
    """[n, axis_dim/2] float64 angles pos·θ^(-2j/axis_dim) for pos = 0..n-1."""
    j = torch.arange(0, axis_dim, 2, dtype=torch.float64, device=device)
    freqs = 1.0 / torch.pow(theta, j / axis_dim)
    pos = torch.arange(n, dtype=torch.float64, device=device)
    return torch.outer(pos, freqs)


def rope_angles(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    theta: float = THETA,
    device: torch.device | None = None,
) -> Tensor:
    """Rotation angle of every (token, pair) of a (F', H', W') grid: [F'·H'·W', head_dim/2] float64."""
    f, h, w = grid
    dt, dh, dw = rope_dims(head_dim)
    at = _axis_angles(f, dt, theta, device)  # [F', dt/2]
    ah = _axis_angles(h, dh, theta, device)  # [H', dh/2]
    aw = _axis_angles(w, dw, theta, device)  # [W', dw/2]
    angles = torch.cat(
        [
            at[:, None, None, :].expand(f, h, w, -1),
            ah[None, :, None, :].expand(f, h, w, -1),
            aw[None, None, :, :].expand(f, h, w, -1),
        ],
        dim=-1,
    )  # [F', H', W', head_dim/2]
    return angles.reshape(f * h * w, head_dim // 2)


def rope_cos_sin(
    grid: tuple[int, int, int],
    head_dim: int,
    *,
    theta: float = THETA,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotation angles for a (F', H', W') grid, each [F'·H'·W', head_dim/2].

    Angles and cos/sin are computed in float64 (like the official table) and cast to ``dtype`` once.
    Depends only on the grid, so callers may cache the result across steps; an exported graph takes
    it as an input rather than computing float64 inside.
    """
    a = rope_angles(grid, head_dim, theta=theta, device=device)
    return a.cos().to(dtype), a.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, *, seq_dim: int = 1) -> Tensor:
    """Rotate adjacent pairs of the last dim of ``x`` by the angles whose cos/sin are given.

    x: [B, L, H, D] (seq_dim=1) or [B, H, L, D] (seq_dim=2); cos, sin: [L, D/2].
    The rotation runs in the dtype of cos/sin (float32) and the result is cast back to x.dtype.
    """
    shape = [1] * x.dim()
    shape[seq_dim] = cos.shape[0]
    shape[-1] = cos.shape[1]
    cos = cos.view(shape)
    sin = sin.view(shape)
    pairs = x.to(cos.dtype).unflatten(-1, (-1, 2))  # [..., D/2, 2]
    x1, x2 = pairs[..., 0], pairs[..., 1]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (re, im) of x·e^{iθ}
    return out.flatten(-2).to(x.dtype)
