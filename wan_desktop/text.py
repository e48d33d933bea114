"""Prompt cleaning and the umT5 tokenizer, without transformers at run time (spec §2.4).

Port of Wan-Video/Wan2.1@9737cba9c1c3c4d04b33fcad41c111989865d315 wan/modules/tokenizers.py
(``HuggingfaceTokenizer`` with ``clean='whitespace'``), which calls transformers'
``AutoTokenizer(<ckpt>/google/umt5-xxl)(texts, padding='max_length', truncation=True, max_length=512,
add_special_tokens=True)``. Here:

- a folder's ``tokenizer.json`` runs through the ``tokenizers`` package — the very pipeline
  transformers' fast tokenizer runs (normalizer, pre-tokenizer, Unigram model, ``$A </s>`` template);
- a folder with only ``spiece.model`` (or the ``spiece_model`` tensor ComfyUI embeds in its umT5
  files) runs through ``sentencepiece``; literal ``<pad>`` / ``</s>`` / ``<unk>`` in a prompt become
  those ids, as transformers' added tokens do, and ``</s>`` is appended. Deviation: transformers
  would also turn ``<extra_id_N>`` text into sentinel ids when its config adds them.

Both give ids and mask equal to transformers' for the prompts in tests/models/test_text.py: EOS
appended, right padding with the pad id (0), truncation that keeps EOS as the last token.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

TEXT_LEN = 512  # wan_shared_cfg.text_len

# Wan collapses whitespace with the third-party ``regex`` module, whose \s is exactly Unicode
# White_Space; Python's re \s also matches U+001C..U+001F. Spelled out so both agree.
_WHITESPACE = re.compile(
    "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
)


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8 (None: it can). Python keeps the bytes of a command
    line or file name that are not UTF-8 as lone surrogates U+DC80..U+DCFF ("surrogateescape");
    such a prompt would be cut to pieces by the tokenizer and break the settings file at the end."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02x} at character {e.start + 1}"
        return f"lone surrogate U+{code:04X} at character {e.start + 1}"
    return None


def check_prompt(text: str, what: str = "prompt") -> None:
    """ConfigError unless ``text`` (a prompt, negative prompt, ...) is valid UTF-8 text."""
    problem = utf8_problem(text)
    if problem is not None:
        raise ConfigError(
            f"{what} is not valid UTF-8 text ({problem})",
            remedy="Write the prompt as UTF-8 text (retype the characters that show "
            "as \ufffd or ?), or remove them.",
        )


def clean_prompt(text: str) -> str:
    """Wan's ``whitespace_clean(basic_clean(text))``: ftfy.fix_text → html.unescape twice → strip →
    every whitespace run to one space → strip."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class TokenBatch:
    """Tokenizer output for B prompts, padded to ``max_length``."""

    ids: Tensor  # [B, max_length] int64
    mask: Tensor  # [B, max_length] int64, 1 on real tokens (EOS included)
    lengths: tuple[int, ...]  # real tokens per prompt (= mask.sum(1))
    truncated: tuple[bool, ...]  # whether a prompt was cut to fit max_length

    @property
    def any_truncated(self) -> bool:
        return any(self.truncated)


class _JsonBackend:
    """``tokenizer.json`` through the ``tokenizers`` package."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _Tok

        try:
            self.tok = _Tok.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception type for bad files
            raise CheckpointError(f"{path}: not a valid tokenizer.json ({e})") from None
        self.tok.no_padding()
        self.tok.no_truncation()
        pad = self.tok.token_to_id("<pad>")
        self.pad_id = 0 if pad is None else pad
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int) -> tuple[list[int], bool]:
        # The tokenizer's own truncation leaves room for the template's EOS and keeps it last.
        self.tok.enable_truncation(max_length)
        enc = self.tok.encode(text, add_special_tokens=True)
        return list(enc.ids), len(enc.overflowing) > 0


class _SpieceBackend:
    """A serialized sentencepiece model (``spiece.model`` or ComfyUI's ``spiece_model`` tensor)."""

    def __init__(self, data: bytes, where: str) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(data)
        except Exception as e:  # RuntimeError / OSError from the C++ side
            raise CheckpointError(f"{where}: not a valid sentencepiece model ({e})") from None
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id = self._id("<pad>", self.sp.pad_id())
        self.eos_id = self._id("</s>", self.sp.eos_id())
        if self.eos_id < 0:
            raise CheckpointError(f"{where}: the sentencepiece model has no </s> token")
        specials = {p: i for p in ("<pad>", "</s>", "<unk>") if (i := self._id(p, -1)) >= 0}
        self.specials = specials
        self.split = re.compile("(" + "|".join(re.escape(p) for p in specials) + ")")

    def _id(self, piece: str, default: int) -> int:
        i = self.sp.piece_to_id(piece)
        return i if 0 <= i < self.vocab_size and self.sp.id_to_piece(i) == piece else default

    def encode(self, text: str, max_length: int) -> tuple[list[int], bool]:
        ids: list[int] = []
        for part in self.split.split(text) if self.specials else [text]:
            if part in self.specials:
                ids.append(self.specials[part])
            elif part:
                ids.extend(self.sp.encode(part))
        truncated = len(ids) > max_length - 1
        return [*ids[: max_length - 1], self.eos_id], truncated


class _ByteBackend:
    """UTF-8 bytes as token ids, for random-weight benchmark models that ship no tokenizer: the
    same sequence lengths and id ranges as real text, no vocabulary needed."""

    pad_id = 0

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str, max_length: int) -> tuple[list[int], bool]:
        ids = [3 + b % (self.vocab_size - 3) for b in text.encode("utf-8")]
        cut = len(ids) + 1 > max_length
        return [*ids[: max_length - 1], 1], cut  # EOS = 1 as in T5


class Tokenizer:
    """The umT5 tokenizer of a model folder; ``tok(texts)`` -> ``TokenBatch``."""

    def __init__(
        self,
        backend: _JsonBackend | _SpieceBackend | _ByteBackend,
        source: str,
        max_length: int = TEXT_LEN,
    ) -> None:
        self._backend = backend
        self.source = source
        self.max_length = max_length

    @classmethod
    def from_folder(cls, folder: str | Path, max_length: int = TEXT_LEN) -> Tokenizer:
        """Read ``tokenizer.json`` (preferred, as transformers does) or ``spiece.model``."""
        folder = Path(folder)
        json_file, spm_file = folder / "tokenizer.json", folder / "spiece.model"
        if json_file.is_file():
            return cls(_JsonBackend(json_file), str(json_file), max_length)
        if spm_file.is_file():
            try:
                data = spm_file.read_bytes()
            except OSError as e:
                raise CheckpointError(f"{spm_file}: cannot read ({e.strerror or e})") from None
            return cls(_SpieceBackend(data, str(spm_file)), str(spm_file), max_length)
        what = (
            "has neither tokenizer.json nor spiece.model" if folder.is_dir() else "is not a folder"
        )
        raise CheckpointError(
            f"tokenizer folder {folder} {what}",
            remedy="Point to the model's umT5 tokenizer folder (google/umt5-xxl in official Wan "
            "checkpoints, tokenizer/ in diffusers ones).",
        )

    @classmethod
    def from_spiece_bytes(
        cls, data: bytes, source: str = "spiece_model", max_length: int = TEXT_LEN
    ) -> Tokenizer:
        """From a serialized sentencepiece model (ComfyUI files: the uint8 ``spiece_model`` tensor,
        ``bytes(t.numpy())``)."""
        return cls(_SpieceBackend(data, source), source, max_length)

    @classmethod
    def for_random_weights(cls, vocab_size: int, max_length: int = TEXT_LEN) -> Tokenizer:
        """Byte-level ids for ``--random-weights`` models (benchmarks): no files needed."""
        return cls(_ByteBackend(vocab_size), "bytes (random weights)", max_length)

    @property
    def pad_id(self) -> int:
        return self._backend.pad_id

    @property
    def vocab_size(self) -> int:
        return self._backend.vocab_size

    def __call__(self, texts: str | Sequence[str], *, clean: bool = True) -> TokenBatch:
        """Tokenize like transformers' ``tok(texts, padding='max_length', truncation=True,
        max_length=max_length, add_special_tokens=True)``; ``clean`` applies ``clean_prompt`` first
        (Wan always does)."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        L = self.max_length
        rows, lengths, truncated = [], [], []
        for i, text in enumerate(texts):
            ids, cut = self._backend.encode(clean_prompt(text) if clean else text, L)
            if cut:  # the caller warns the user once (TokenBatch.truncated); here: the log
                log.debug("prompt %d is longer than %d tokens; the end is cut off", i, L)
            rows.append(ids + [self.pad_id] * (L - len(ids)))
            lengths.append(len(ids))
            truncated.append(cut)
        ids_t = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), L)
        mask = (torch.arange(L)[None, :] < torch.tensor(lengths, dtype=torch.int64)[:, None]).long()
        return TokenBatch(ids=ids_t, mask=mask, lengths=tuple(lengths), truncated=tuple(truncated))
