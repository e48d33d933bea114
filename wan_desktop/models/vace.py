# Port of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315 wan/modules/vace_model.py
# (Apache-2.0; VaceWanModel, VaceWanAttentionBlock, BaseWanAttentionBlock). The same class serves
# Wan2.1-VACE-1.3B / -14B and each expert of Wan2.2-VACE-Fun-A14B.
# Deviations:
#   - everything of models/dit.py (batched tensors, real RoPE, the written-out dtype policy);
#   - the hints are made in ``prepare`` (the official forward_vace also runs before the main
#     blocks) and added by the main block loop through ``DiTState.after_block``, so every block
#     runner (resident, streamed, compiled) injects them without knowing VACE;
#   - one context scale for every VACE layer (diffusers also takes one per layer).
#   - a VACE block whose weights stream from host memory runs through its ``stream`` hook.
"""VACE diffusion transformer: the Wan DiT plus a VACE branch (``vace_patch_embedding``,
``vace_blocks``) whose hints are added, times the context scale, after the main blocks listed in
``cfg.vace_layers``.

VACE block j (a Wan block with ``after_proj``; block 0 also has ``before_proj``) reads the running
VACE stream c: block 0 starts it from the VACE context tokens, ``c = before_proj(c) + x`` with x the
patch-embedded latents (the input of main block 0). Each block returns
``hint_j = after_proj(block(c))`` and passes ``block(c)`` on. Main block ``vace_layers[j]`` then
outputs ``x + scale · hint_j``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from torch import Tensor, nn

from ..errors import ConfigError
from ..variants import DiTConfig
from .dit import DiTState, WanAttentionBlock, WanModel, _activation_dtype
from .layers import Ops


class VaceWanAttentionBlock(WanAttentionBlock):
    """A Wan block of the VACE branch: ``before_proj`` (block 0 only) and ``after_proj``.

    ``stream``: set by a block swapper (engines/block_swap.py) while this block's weights live in
    host memory: ``vace`` then runs the block's copy in a device slot through it (None: itself).
    """

    stream: Callable[..., tuple[Tensor, Tensor]] | None = None

    def __init__(self, cfg: DiTConfig, ops: type[Ops], block_id: int) -> None:
        super().__init__(cfg, ops)
        self.block_id = block_id
        if block_id == 0:
            self.before_proj = ops.Linear(cfg.dim, cfg.dim)
        self.after_proj = ops.Linear(cfg.dim, cfg.dim)

    def vace(
        self, c: Tensor, x: Tensor, e0: Tensor, context: Tensor, cos: Tensor, sin: Tensor
    ) -> tuple[Tensor, Tensor]:
        """c: [B, L, dim] fp32 the VACE stream (block 0: the VACE context tokens); x: [B, L, dim]
        fp32 the input of main block 0 -> (hint [B, L, dim] compute dtype, c [B, L, dim] fp32)."""
        if self.stream is not None:
            return self.stream(c, x, e0, context, cos, sin)
        dtype = context.dtype
        if self.block_id == 0:
            c = self.before_proj(c.to(dtype)).float() + x
        c = self(c, e0, context, cos, sin)
        return self.after_proj(c.to(dtype)), c


class VaceWanModel(WanModel):
    """The Wan DiT with a VACE branch. ``forward`` / ``prepare`` take the VACE context
    ``vace [B, vace_in_dim, T, H, W]`` and its scale."""

    FP32_MODULES: tuple[str, ...] = (
        *WanModel.FP32_MODULES,
        "vace_patch_embedding",
        "vace_blocks.*.modulation",
        "vace_blocks.*.norm3",
    )

    def __init__(self, cfg: DiTConfig, ops: type[Ops] = Ops) -> None:
        if cfg.vace_in_dim is None:
            raise ConfigError("VaceWanModel needs a VACE config (vace_in_dim, vace_layers)")
        super().__init__(cfg, ops)
        self.vace_patch_embedding = ops.Conv3d(
            cfg.vace_in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.vace_blocks = nn.ModuleList(
            VaceWanAttentionBlock(cfg, ops, j) for j in range(len(cfg.vace_layers))
        )

    def prepare(  # the VACE context and its scale are extra inputs
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        *,
        vace: Tensor | None = None,
        vace_scale: float | Tensor = 1.0,
        **kwargs: Any,
    ) -> DiTState:
        """``WanModel.prepare`` plus the VACE hints (``state.hints``, scaled by ``vace_scale``, a
        number or a 0-d tensor). vace: [B, vace_in_dim, T, H, W], the latents' size; the other
        arguments are WanModel.prepare's."""
        state = super().prepare(x, t, context, **kwargs)
        cfg = self.cfg
        if vace is None:
            raise ConfigError("a VACE model needs its VACE context (control frames, mask)")
        if vace.dim() != 5 or vace.shape[0] != x.shape[0] or vace.shape[1] != cfg.vace_in_dim:
            raise ConfigError(
                f"VACE context must be [{x.shape[0]}, {cfg.vace_in_dim}, T, H, W], "
                f"got {tuple(vace.shape)}"
            )
        if vace.shape[2:] != x.shape[2:]:
            raise ConfigError(
                f"VACE context {tuple(vace.shape)} does not match the latents {tuple(x.shape)}"
            )
        # patchify the context: [B, vace_in_dim, T, H, W] -> [B, L, dim] fp32 (the latents' order)
        c = self.vace_patch_embedding(vace.to(_activation_dtype(self.vace_patch_embedding.weight)))
        c = c.flatten(2).transpose(1, 2).float()
        hints: dict[int, Tensor] = {}
        for layer, block in zip(cfg.vace_layers, self.vace_blocks, strict=True):
            blk = cast(VaceWanAttentionBlock, block)
            hint, c = blk.vace(c, state.x, state.e0, state.context, state.cos, state.sin)
            # scaled in fp32, kept in the compute dtype (the official stacks bf16 hints)
            hints[layer] = (hint.float() * vace_scale).to(hint.dtype)
        state.hints = hints
        return state

    def forward(  # type: ignore[override]  # the VACE context and its scale are extra inputs
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        y: Tensor | None = None,
        clip_fea: Tensor | None = None,
        vace: Tensor | None = None,
        vace_scale: float | Tensor = 1.0,
    ) -> Tensor:
        """``WanModel.forward`` with the VACE context ``vace`` [B, vace_in_dim, T, H, W] (16
        inactive + 16 reactive latent channels + the 64-channel mask) and its scale."""
        state = self.prepare(
            x, t, context, y=y, clip_fea=clip_fea, vace=vace, vace_scale=vace_scale
        )
        h = state.x
        for i, block in enumerate(self.blocks):
            h = state.after_block(i, block(h, state.e0, state.context, state.cos, state.sin))
        return self.finish(h, state)


def make_dit(cfg: DiTConfig, ops: type[Ops] = Ops) -> WanModel:
    """The DiT class a config needs: VaceWanModel for a VACE config, else WanModel."""
    return VaceWanModel(cfg, ops) if cfg.is_vace else WanModel(cfg, ops)


def vace_kwargs(vace: Tensor | None, vace_scale: float | Tensor) -> dict[str, object]:
    """Keyword arguments of ``prepare`` / ``forward`` for an optional VACE context (none: {})."""
    return {} if vace is None else {"vace": vace, "vace_scale": vace_scale}
