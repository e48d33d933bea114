"""The SkyReels-V2 Diffusion Forcing DiT as an ONNX graph: a timestep per latent frame
(``timestep [B, T]``, specs.dit_spec) and, for asynchronous runs, block-causal self-attention.

The causal block size and the fps are fixed when the graph is exported (a graph per setting, like
an engine per size): the block-causal mask is made inside the graph from the token index
(models/diffusion_forcing.block_causal_attention's traced form), so any frame count runs; the fps
embedding's term is a constant of the graph. Both are recorded in the graph's metadata
(``wan_desktop.causal_block_size``, ``wan_desktop.fps``) for the runtime to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from wan_desktop.export.onnx_export import dit_example, export_graph

if TYPE_CHECKING:
    from wan_desktop.variants import Variant


class _ForcingDitGraph(nn.Module):
    """One DF DiT forward with the spec's flat inputs (RoPE tables as inputs)."""

    varargs_at = 0  # forward(*args): torch.export sees one tuple argument

    def __init__(
        self, model: nn.Module, names: Sequence[str], *, causal_block_size: int, fps: int
    ) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.causal_block_size = causal_block_size
        self.fps = fps

    def forward(self, *args: Tensor) -> Tensor:
        kw = dict(zip(self.names, args, strict=True))
        m = self.model
        state = m.prepare(
            kw["latents"],
            kw["timestep"],
            kw["context"],
            rope=(kw["rope_cos"], kw["rope_sin"]),
            fps=self.fps,
            causal_block_size=self.causal_block_size,
        )
        h = state.x
        for block in m.blocks:
            h = block(h, state.e0, state.context, state.cos, state.sin, state.block_tokens)
        return m.finish(h, state)


def export_forcing_dit(
    module: nn.Module,
    variant: Variant,
    path: str | Path,
    *,
    causal_block_size: int = 1,
    fps: int = 24,
    latent: tuple[int, int, int] = (6, 10, 14),
    dynamic: bool = True,
    **kw: Any,
) -> Path:
    """A SkyReels-V2 DF DiT for one causal block size and fps. Example latent (T, H, W) =
    (6, 10, 14): 210 tokens, all dims distinct, T a multiple of the usual block sizes 1, 2, 3."""
    if variant.forcing is None:
        raise ValueError(f"{variant.name} is not a Diffusion Forcing model")
    spec, args = dit_example(variant, latent)
    names = [t.name for t in spec.inputs]
    graph = _ForcingDitGraph(module, names, causal_block_size=causal_block_size, fps=fps)
    meta = {"causal_block_size": str(causal_block_size), "fps": str(fps)}
    meta |= kw.pop("metadata", None) or {}
    return export_graph(graph, spec, args, path, dynamic=dynamic, metadata=meta, **kw)
