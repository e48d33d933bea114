"""What an exported SkyReels-V2 DF DiT graph was made for, checked before a run uses it.

export/onnx_forcing.py fixes the causal block size and the fps of each graph and records them in
its metadata (``wan_desktop.causal_block_size``, ``wan_desktop.fps``); a run asking for another
block size, or (models with the fps embedding) another fps row, is refused with the remedy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from wan_desktop.errors import EngineError

META = "wan_desktop."


@cache
def graph_settings(path: Path) -> tuple[int, int]:
    """(causal_block_size, fps) a DF graph was exported with (1, 24 when not recorded: a graph
    exported by the plain DiT exporter is synchronous, at the pipelines' default fps)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return int(meta.get(META + "causal_block_size", 1)), int(meta.get(META + "fps", 24))


def check_graph(
    path: Path, *, causal_block_size: int, fps: int | None, has_fps_embedding: bool
) -> None:
    """Raise EngineError unless the graph at ``path`` runs this block size (and fps row)."""
    block, graph_fps = graph_settings(Path(path))
    check_settings(
        Path(path).name,
        block,
        graph_fps,
        causal_block_size=causal_block_size,
        fps=fps,
        has_fps_embedding=has_fps_embedding,
    )


def check_settings(
    name: str,
    block: int,
    graph_fps: int,
    *,
    causal_block_size: int,
    fps: int | None,
    has_fps_embedding: bool,
) -> None:
    """Raise EngineError unless a graph (or an engine built from it: its manifest entry records
    the graph's settings) of ``block`` / ``graph_fps`` runs this block size and fps row."""
    if block != causal_block_size:
        raise EngineError(
            f"{name} was exported for causal block size {block}, the run asks for "
            f"{causal_block_size}",
            remedy=f"Use --causal-block-size {block}, or export the DiT again for "
            f"{causal_block_size} (or use the PyTorch backend).",
        )
    row = 0 if graph_fps == 16 else 1
    if has_fps_embedding and fps is not None and (0 if fps == 16 else 1) != row:
        raise EngineError(
            f"{name} was exported for {graph_fps} fps, the run asks for {fps} "
            "(the model's fps embedding tells 16 fps from the others)",
            remedy=f"Use --fps {graph_fps}, or export the DiT again (or use the PyTorch backend).",
        )
