"""Key names of transformers' ``UMT5EncoderModel`` -> official Wan T5 encoder keys (spec §2.5).

Used for diffusers ``text_encoder/`` folders and ComfyUI ``umt5_xxl_*.safetensors`` files. ComfyUI's
umT5 (comfy/text_encoders/t5.py, ``T5`` with ``model_type="umt5"``) names its tensors exactly as
transformers does: ``shared.weight`` + ``encoder.block.N.layer.{0,1}.…`` + ``encoder.final_layer_norm``;
its files may also carry ``spiece_model`` (the serialized sentencepiece tokenizer as a uint8 tensor,
see ``wan_desktop.text.Tokenizer.from_spiece_bytes``) and, for fp8 files, ``scaled_fp8`` /
``*.scale_weight`` side tensors (handled by the loader before renaming). Pure string work; no torch.

Rule for the tied embedding: ``shared.weight`` and ``encoder.embed_tokens.weight`` are one tensor in
transformers (``_tied_weights_keys``). ``official_key`` maps ``shared.weight`` to ``token_embedding.weight``
and returns None (ignore) for ``encoder.embed_tokens.weight``; ``make_renamer`` uses
``encoder.embed_tokens.weight`` instead for a file that lacks ``shared.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_EMBED = "shared.weight"
_EMBED_TIED = "encoder.embed_tokens.weight"

_TOP = {
    _EMBED: "token_embedding.weight",
    "encoder.final_layer_norm.weight": "norm.weight",
}
# Inside encoder.block.N.
_BLOCK = {
    "layer.0.layer_norm.weight": "norm1.weight",
    "layer.0.SelfAttention.q.weight": "attn.q.weight",
    "layer.0.SelfAttention.k.weight": "attn.k.weight",
    "layer.0.SelfAttention.v.weight": "attn.v.weight",
    "layer.0.SelfAttention.o.weight": "attn.o.weight",
    "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
    "layer.1.layer_norm.weight": "norm2.weight",
    "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
    "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
    "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight",
}
_BLOCK_RE = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")

# Keys with no tensor of their own in the encoder: the tied embedding copy, ComfyUI's embedded
# tokenizer, and the decoder / LM head of a full (encoder-decoder) umT5 checkpoint.
_IGNORED = (_EMBED_TIED, "spiece_model", "lm_head.weight")
_IGNORED_PREFIXES = ("decoder.",)


def is_ignored_hf_key(hf_key: str) -> bool:
    """Keys a transformers / ComfyUI umT5 file may hold that the encoder does not use."""
    return hf_key in _IGNORED or hf_key.startswith(_IGNORED_PREFIXES)


def official_key(hf_key: str) -> str | None:
    """The official key of a transformers ``UMT5EncoderModel`` key; None for an ignored key
    (``is_ignored_hf_key``); KeyError for a key that is not part of a umT5 encoder."""
    if hf_key in _TOP:
        return _TOP[hf_key]
    m = _BLOCK_RE.match(hf_key)
    if m and m.group(2) in _BLOCK:
        return f"blocks.{m.group(1)}.{_BLOCK[m.group(2)]}"
    if is_ignored_hf_key(hf_key):
        return None
    raise KeyError(f"unknown umT5 encoder key {hf_key!r}")


def make_renamer(keys: Iterable[str]) -> Callable[[str], str | None]:
    """``official_key`` for one file's key set: a file without ``shared.weight`` takes its token
    embedding from ``encoder.embed_tokens.weight``."""
    keyset = set(keys)
    tied_only = _EMBED not in keyset and _EMBED_TIED in keyset

    def rename(hf_key: str) -> str | None:
        if tied_only and hf_key == _EMBED_TIED:
            return _TOP[_EMBED]
        return official_key(hf_key)

    return rename


def hf_key(official: str) -> str:
    """The transformers name of an official key (the inverse of ``official_key``); KeyError if unknown."""
    for hf, off in _TOP.items():
        if off == official:
            return hf
    m = re.match(r"^blocks\.(\d+)\.(.+)$", official)
    if m:
        for hf, off in _BLOCK.items():
            if off == m.group(2):
                return f"encoder.block.{m.group(1)}.{hf}"
    raise KeyError(f"unknown official T5 key {official!r}")
