"""Key names of diffusers' ``WanTransformer3DModel`` -> official Wan DiT keys (spec §3.9).

The inverse of diffusers' ``scripts/convert_wan_to_diffusers.py`` (huggingface/diffusers@58eb52c),
written as an explicit table per key position rather than ordered substring replacement, so that a key
we do not know raises instead of slipping through half-renamed. Pure string work; no torch.

Note the swap: diffusers ``blocks.N.norm2`` (affine, pre-cross-attention) is official ``norm3``;
diffusers ``norm3`` / ``norm1`` / ``norm_out`` have no parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

# Top-level modules: diffusers prefix -> official prefix (followed by ".weight" / ".bias").
_TOP = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
    "proj_out": "head.head",
    # SkyReels-V2 (SkyReelsV2Transformer3DModel, inject_sample_info): the fps embedding
    "fps_embedding": "fps_embedding",
    "fps_projection.net.0.proj": "fps_projection.0",
    "fps_projection.net.2": "fps_projection.2",
}
# Whole parameters (no .weight/.bias suffix).
_TOP_PARAMS = {
    "scale_shift_table": "head.modulation",
    "condition_embedder.image_embedder.pos_embed": "img_emb.emb_pos",
}
# Inside blocks.N: diffusers sub-prefix -> official sub-prefix.
_BLOCK = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "attn2.norm_added_k": "cross_attn.norm_k_img",
    "norm2": "norm3",  # the affine pre-cross-attention LayerNorm
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_BLOCK_PARAMS = {"scale_shift_table": "modulation"}

# Keys some diffusers files carry that have no official counterpart and that diffusers itself ignores
# on load (``_keys_to_ignore_on_load_unexpected``); a converter should drop them.
DIFFUSERS_IGNORED = ("norm_added_q",)

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
# VACE (diffusers WanVACETransformer3DModel): vace_blocks.N are blocks plus proj_in / proj_out,
# the official before_proj / after_proj; vace_patch_embedding keeps its name.
_VACE_RE = re.compile(r"^vace_blocks\.(\d+)\.(.+)$")
_VACE_BLOCK = {**_BLOCK, "proj_in": "before_proj", "proj_out": "after_proj"}
_TOP["vace_patch_embedding"] = "vace_patch_embedding"
_SUFFIXES = (".weight", ".bias")


def _split_suffix(key: str) -> tuple[str, str] | None:
    for s in _SUFFIXES:
        if key.endswith(s):
            return key[: -len(s)], s
    return None


def official_key(diffusers_key: str) -> str:
    """The official Wan key of a diffusers ``WanTransformer3DModel`` key; KeyError if unknown."""
    m = _BLOCK_RE.match(diffusers_key)
    prefix, rest, table, params = "", diffusers_key, _TOP, _TOP_PARAMS
    if m:
        prefix, rest, table, params = f"blocks.{m.group(1)}.", m.group(2), _BLOCK, _BLOCK_PARAMS
    elif m := _VACE_RE.match(diffusers_key):
        prefix, rest = f"vace_blocks.{m.group(1)}.", m.group(2)
        table, params = _VACE_BLOCK, _BLOCK_PARAMS
    if rest in params:
        return prefix + params[rest]
    split = _split_suffix(rest)
    if split is not None and split[0] in table:
        return prefix + table[split[0]] + split[1]
    raise KeyError(f"unknown diffusers Wan transformer key {diffusers_key!r}")


def is_ignored_diffusers_key(diffusers_key: str) -> bool:
    """Keys a diffusers file may hold that the model does not use (dropped, as diffusers does)."""
    return any(part in DIFFUSERS_IGNORED for part in diffusers_key.split("."))


KeyLayout = Literal["official", "diffusers", "unknown"]

# One key each layout always has (every variant), and never the other.
_OFFICIAL_MARKERS = ("head.modulation", "time_projection.1.weight")
_DIFFUSERS_MARKERS = ("proj_out.weight", "condition_embedder.time_proj.weight")


def key_layout(keys: Iterable[str]) -> KeyLayout:
    """Whether a DiT key set uses official Wan names, diffusers names, or neither.

    Keys may carry a prefix (ComfyUI files use ``model.diffusion_model.``); markers match as suffixes
    on a "." boundary.
    """

    def has(marker: str) -> bool:
        return any(k == marker or k.endswith("." + marker) for k in keyset)

    keyset = set(keys)
    official = any(has(m) for m in _OFFICIAL_MARKERS)
    diffusers = any(has(m) for m in _DIFFUSERS_MARKERS)
    if official and not diffusers:
        return "official"
    if diffusers and not official:
        return "diffusers"
    return "unknown"


def diffusers_module_names(num_blocks: int, num_vace_blocks: int = 0) -> dict[str, str]:
    """{diffusers module / parameter path: official one} for a model with ``num_blocks`` blocks
    (and ``num_vace_blocks`` VACE blocks; LoRA files name modules, not tensors)."""
    out = {**_TOP, **_TOP_PARAMS}
    for i in range(num_blocks):
        out.update(
            {f"blocks.{i}.{d}": f"blocks.{i}.{o}" for d, o in {**_BLOCK, **_BLOCK_PARAMS}.items()}
        )
    for i in range(num_vace_blocks):
        out.update(
            {
                f"vace_blocks.{i}.{d}": f"vace_blocks.{i}.{o}"
                for d, o in {**_VACE_BLOCK, **_BLOCK_PARAMS}.items()
            }
        )
    return out
