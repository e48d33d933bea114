"""A tiny umT5-like tokenizer trained offline, for tests that need real token ids.

``make_tiny_tokenizer(folder)`` trains a sentencepiece Unigram model (T5 ids: pad 0, eos 1, unk 2,
no bos) on a few English and Chinese sentences — every character of Wan's negative prompts is in the
vocabulary, so they tokenize without <unk> — and writes ``spiece.model``; with ``tokenizer_json=True``
also the equivalent ``tokenizer.json`` (converted by transformers, a test-only dependency).
The vocabulary has at most ``vocab_size`` pieces (``hard_vocab_limit=False``: fewer when the text
has fewer), so ids always fit ``TINY_T5.vocab_size``.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

from tests.tiny import TINY_T5
from wan_desktop.variants import NEGATIVE_PROMPT

TRAINING_TEXT = (
    "A cat walks on the grass, realistic style.",
    "Two anthropomorphic cats in comfy boxing gear fight intensely on a spotlighted stage.",
    "The camera pans slowly across a snowy mountain at sunrise, cinematic lighting.",
    "A red panda eats bamboo in a quiet forest while a small river flows nearby.",
    "Close-up of a woman's face, soft light, shallow depth of field, 4k, highly detailed.",
    "Numbers 0123456789 and punctuation: ! ? ; ' \" ( ) - _ / @ # % * & < > =",
    "镜头晃动，" + NEGATIVE_PROMPT,
    "镜头切换，镜头晃动，" + NEGATIVE_PROMPT,
    "一只猫在草地上走，阳光明媚，电影感镜头。",
)


def make_tiny_tokenizer(
    folder: str | Path,
    vocab_size: int = TINY_T5.vocab_size,
    *,
    tokenizer_json: bool = False,
    spiece: bool = True,
) -> Path:
    """Write ``spiece.model`` (and/or ``tokenizer.json``) into ``folder``; returns the folder."""
    import sentencepiece as spm

    if vocab_size > TINY_T5.vocab_size:
        raise ValueError(f"vocab_size {vocab_size} exceeds TINY_T5.vocab_size {TINY_T5.vocab_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT * 4),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    model = buf.getvalue()
    if tokenizer_json:
        from transformers import T5Tokenizer

        # transformers 5 converts spiece.model through from_pretrained (the vocab_file= constructor
        # argument alone builds an empty vocabulary).
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "spiece.model").write_bytes(model)
            tok = T5Tokenizer.from_pretrained(tmp, extra_ids=0, legacy=False)
            out = Path(tmp) / "out"
            tok.save_pretrained(out)
            shutil.copy(out / "tokenizer.json", folder / "tokenizer.json")
    if spiece:
        (folder / "spiece.model").write_bytes(model)
    return folder
