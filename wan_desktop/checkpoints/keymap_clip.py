"""transformers ``CLIPVisionModel(WithProjection)`` tensors -> official Wan ``visual.*`` tensors.

For diffusers ``image_encoder/`` folders (laion/CLIP-ViT-H-14-laion2B-s32B-b79K, the same ViT-H/14 as
Wan's open-clip tower) and ComfyUI ``clip_vision_h.safetensors`` (also transformers names). Keys may
carry the ``vision_model.`` prefix (``CLIPVisionModelWithProjection``, transformers 4 files) or not
(``CLIPVisionModel`` saved by transformers 5).

Most tensors are a rename (``official_key``). Three need the tensors themselves (``hf_recipes``):
``to_qkv`` is the concatenation q|k|v of ``{q,k,v}_proj`` along the output dim; ``class_embedding``
[dim] and ``position_embedding.weight`` [L, dim] gain leading unit dims ([1, 1, dim], [1, L, dim]);
``head`` [dim, out] is ``visual_projection.weight`` [out, dim] transposed (open-clip computes
``x @ head``). Files without ``visual_projection`` have no ``head``, which Wan never uses.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ..models.clip import ClipVisionEncoder
    from ..models.layers import Ops
    from ..variants import ClipConfig

_VM = "vision_model."
_TOP = {
    "embeddings.patch_embedding.weight": "visual.patch_embedding.weight",
    "pre_layrnorm.weight": "visual.pre_norm.weight",
    "pre_layrnorm.bias": "visual.pre_norm.bias",
    "post_layernorm.weight": "visual.post_norm.weight",
    "post_layernorm.bias": "visual.post_norm.bias",
}
_LAYER = {
    "layer_norm1": "norm1",
    "self_attn.out_proj": "attn.proj",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
}
_LAYER_RE = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_QKV_RE = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_RESHAPED = {
    "embeddings.class_embedding": "visual.cls_embedding",
    "embeddings.position_embedding.weight": "visual.pos_embedding",
}
_PROJECTION = "visual_projection.weight"
# Present in some files, unused: the position-ids buffer of older transformers, and the text tower /
# scale of a full CLIPModel file.
_IGNORED_PREFIXES = ("text_model.",)
_IGNORED = ("embeddings.position_ids", "text_projection.weight", "logit_scale")


def _strip(hf_key: str) -> str:
    return hf_key[len(_VM) :] if hf_key.startswith(_VM) else hf_key


def is_ignored_hf_key(hf_key: str) -> bool:
    k = _strip(hf_key)
    return k in _IGNORED or hf_key in _IGNORED or hf_key.startswith(_IGNORED_PREFIXES)


def official_key(hf_key: str) -> str:
    """The official key of an HF key that maps one-to-one (same values, maybe another shape).

    KeyError for q/k/v projections (they are concatenated: see ``hf_recipes``), for ignored keys
    and for keys that are not part of a CLIP vision tower.
    """
    k = _strip(hf_key)
    if k in _TOP:
        return _TOP[k]
    if k in _RESHAPED:
        return _RESHAPED[k]
    if hf_key == _PROJECTION:
        return "visual.head"
    m = _LAYER_RE.match(k)
    if m and m.group(2) in _LAYER:
        return f"visual.transformer.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}"
    if _QKV_RE.match(k):
        raise KeyError(f"{hf_key!r} is one third of an official to_qkv tensor; use hf_recipes")
    raise KeyError(f"unknown CLIP vision key {hf_key!r}")


Op = Literal["copy", "cat", "unsqueeze", "transpose"]


@dataclass(frozen=True)
class HfRecipe:
    """How one official tensor is made from HF tensors."""

    sources: tuple[str, ...]  # HF keys, in order
    op: Op
    shape: tuple[int, ...]  # official shape

    def build(self, tensors: Sequence[Tensor]) -> Tensor:
        """tensors: the ``sources`` tensors, same order -> the official tensor."""
        import torch

        if self.op == "cat":
            return torch.cat(list(tensors), dim=0)
        (t,) = tensors
        if self.op == "unsqueeze":
            return t.reshape(self.shape)
        if self.op == "transpose":
            return t.t().contiguous()
        return t


def hf_recipes(hf_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, HfRecipe]:
    """Official key -> recipe for every HF tensor of a file (given by key -> shape); ignored keys
    are skipped. KeyError naming the keys that belong to no CLIP vision tower, or a to_qkv part
    whose siblings are missing."""
    recipes: dict[str, HfRecipe] = {}
    qkv: dict[tuple[str, str], dict[str, str]] = {}
    unknown = []
    for key, shape in hf_shapes.items():
        if is_ignored_hf_key(key):
            continue
        m = _QKV_RE.match(_strip(key))
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = key
            continue
        try:
            new = official_key(key)
        except KeyError:
            unknown.append(key)
            continue
        shape = tuple(shape)
        if new == "visual.head":
            recipes[new] = HfRecipe((key,), "transpose", (shape[1], shape[0]))
        elif new == "visual.cls_embedding":
            recipes[new] = HfRecipe((key,), "unsqueeze", (1, 1, *shape))
        elif new == "visual.pos_embedding":
            recipes[new] = HfRecipe((key,), "unsqueeze", (1, *shape))
        else:
            recipes[new] = HfRecipe((key,), "copy", shape)
    for (layer, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            unknown.extend(parts.values())
            continue
        srcs = (parts["q"], parts["k"], parts["v"])
        first = tuple(hf_shapes[srcs[0]])
        recipes[f"visual.transformer.{layer}.attn.to_qkv.{leaf}"] = HfRecipe(
            srcs, "cat", (3 * first[0], *first[1:])
        )
    if unknown:
        shown = ", ".join(sorted(unknown)[:4]) + (
            f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        )
        raise KeyError(f"not CLIP vision tensors (or incomplete q/k/v): {shown}")
    return recipes


def official_shapes_from_hf(hf_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """{official key: shape} of the tensors an HF CLIP vision file yields (headers only)."""
    return {k: r.shape for k, r in hf_recipes(hf_shapes).items()}


def convert_hf_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A whole HF CLIP vision state dict -> official ``visual.*`` state dict."""
    recipes = hf_recipes({k: tuple(v.shape) for k, v in state.items()})
    return {k: r.build([state[s] for s in r.sources]) for k, r in recipes.items()}


def is_hf_layout(keys: Iterable[str]) -> bool:
    """Whether a key set uses transformers names (else: official ``visual.*``)."""
    return any(_strip(k).startswith(("embeddings.", "encoder.layers.")) for k in keys)


def load_clip_visual(
    files: Sequence[str | Path],
    cfg: ClipConfig,
    *,
    dtype: torch.dtype | None = None,
    ops: type[Ops] | None = None,
) -> ClipVisionEncoder:
    """Build ``ClipVisionEncoder(cfg)`` without allocating, then fill it one tensor at a time from an
    official ``.pth`` (its ``textual.*`` / ``log_scale`` are ignored) or transformers-named files.

    A file without ``visual.head`` (HF ``CLIPVisionModel``) keeps a zero head: Wan never uses it.
    Any other missing / unexpected / misshapen tensor is a CheckpointError.
    """
    import torch

    from ..errors import CheckpointError
    from ..models.clip import ClipVisionEncoder
    from ..models.layers import Ops as DefaultOps
    from .load import check_float_weights
    from .materialize import TensorSource, materialize, weights_on_meta
    from .reader import StateReader

    reader = StateReader([Path(f) for f in files])
    keys = reader.keys()
    with weights_on_meta():
        model = ClipVisionEncoder(cfg, ops or DefaultOps)
    sources: dict[str, TensorSource] = {}

    def src(key: str) -> TensorSource:
        info = reader.info(key)
        return TensorSource(
            info.shape, info.dtype, info.file, functools.partial(reader.get, key), key
        )

    def built(r: HfRecipe) -> Callable[[], Tensor]:
        return lambda: r.build([reader.get(s) for s in r.sources])

    if is_hf_layout(keys):
        try:
            recipes = hf_recipes({k: reader.info(k).shape for k in keys})
        except KeyError as e:
            raise CheckpointError(f"{reader.files[0]}: {e.args[0]}") from None
        for new, r in recipes.items():
            first = reader.info(r.sources[0])
            sources[new] = TensorSource(
                r.shape,
                first.dtype,
                first.file,
                built(r),
                "+".join(r.sources),
            )
    else:
        sources = {k: src(k) for k in keys if k.startswith("visual.")}
        if not sources:
            raise CheckpointError(
                f"{reader.files[0]}: no visual.* tensors (not an open-clip CLIP checkpoint)"
            )
    if "visual.head" not in sources:
        shape = tuple(model.visual.head.shape)
        sources["visual.head"] = TensorSource(
            shape, "float32", reader.files[0], lambda: torch.zeros(shape), "(none: zero head)"
        )
    check_float_weights(model, sources, {}, "CLIP image encoder")
    return materialize(
        model,
        sources,
        what=f"CLIP image encoder {reader.files[0].name}",
        dtype=dtype or torch.float32,
    )
