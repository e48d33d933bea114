"""Prompt cleaning and the tokenizer: equal to Wan's cleaning and to transformers' tokenizers."""

from __future__ import annotations

import html

import pytest
import torch

from tests.fixtures_text import make_tiny_tokenizer
from tests.tiny import TINY_T5
from wan_desktop.errors import CheckpointError, ConfigError
from wan_desktop.text import TEXT_LEN, Tokenizer, check_prompt, clean_prompt, utf8_problem
from wan_desktop.variants import NEGATIVE_PROMPT

LONG = " ".join(
    ["A red panda eats bamboo in a quiet forest while a small river flows nearby."] * 40
)
PROMPTS = [
    "A cat walks on the grass, realistic style.",
    "   leading and trailing spaces, \t tabs\nand   runs   ",
    NEGATIVE_PROMPT,
    "镜头晃动，" + NEGATIVE_PROMPT,
    LONG,
    "",
    "literal specials </s> and <pad> and <unk>",
    "Zebra 🙂 ＡＢＣ① unknown characters",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tok")
    spm = make_tiny_tokenizer(root / "spm")
    js = make_tiny_tokenizer(root / "json", tokenizer_json=True, spiece=False)
    return spm, js


# --------------------------------------------------------------------------- clean_prompt


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  a   cat \t walks\n\n ", "a cat walks"),
        ("Tom &amp;amp; Jerry &lt;3", "Tom & Jerry <3"),  # unescaped twice
        ("SchÃ¶ne GrÃ¼ÃŸe", "Schöne Grüße"),  # mojibake repaired by ftfy
        ("a\u3000b\u00a0c\u2009d", "a b c d"),  # Unicode spaces collapse too
        ("“quoted”", '"quoted"'),  # ftfy's default uncurls quotes, as in Wan
        # ftfy's fix_character_width turns the full-width commas of the negative prompt into ","
        (NEGATIVE_PROMPT, NEGATIVE_PROMPT.replace("，", ",")),
    ],
)
def test_clean_prompt_examples(raw, clean):
    assert clean_prompt(raw) == clean


def test_clean_prompt_equals_wan_recipe():
    """Against Wan's recipe spelled out with the ``regex`` module it uses (whose \\s differs from
    Python's re on U+001C..U+001F)."""
    ftfy = pytest.importorskip("ftfy")
    regex = pytest.importorskip("regex")

    def wan(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip()

    samples = [
        *PROMPTS,
        "x\x1cy\x1f z",
        "\x1c lead",
        "a\u200bb\u2028c\x85d",
        "&amp;nbsp;x&nbsp;y",
        "Ã©tÃ© &#x27;21 \r\n end",
    ]
    for s in samples:
        assert clean_prompt(s) == wan(s), repr(s)


# --------------------------------------------------------------------------- tokenizer


def _hf(folder):
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(folder, extra_ids=0, legacy=False)


@pytest.mark.parametrize("kind", ["spiece.model", "tokenizer.json"])
def test_tokenizer_equals_transformers(folders, kind):
    folder = folders[0] if kind == "spiece.model" else folders[1]
    ours = Tokenizer.from_folder(folder)
    assert ours.source.endswith(kind)
    ref = _hf(folder)(
        PROMPTS,
        padding="max_length",
        truncation=True,
        max_length=TEXT_LEN,
        add_special_tokens=True,
        return_tensors="pt",
    )
    got = ours(PROMPTS, clean=False)
    assert got.ids.shape == (len(PROMPTS), TEXT_LEN) and got.ids.dtype == torch.int64
    assert torch.equal(got.ids, ref["input_ids"])
    assert torch.equal(got.mask, ref["attention_mask"])
    assert got.lengths == tuple(ref["attention_mask"].sum(1).tolist())
    # only the long prompt was cut, and it still ends with EOS
    assert got.truncated == tuple(p is LONG for p in PROMPTS)
    i = PROMPTS.index(LONG)
    assert got.lengths[i] == TEXT_LEN and got.ids[i, -1] == 1
    # EOS after the real tokens, pad 0 after that; the Chinese prompt has no <unk> (id 2)
    j = PROMPTS.index(NEGATIVE_PROMPT)
    n = got.lengths[j]
    assert (
        got.ids[j, n - 1] == 1 and (got.ids[j, n:] == 0).all() and not (got.ids[j, :n] == 2).any()
    )
    assert int(got.ids.max()) < TINY_T5.vocab_size
    assert got.lengths[PROMPTS.index("")] == 1  # EOS only


def test_clean_is_applied_by_default(folders):
    tok = Tokenizer.from_folder(folders[0])
    raw = "  Tom &amp;amp; Jerry \n"
    assert torch.equal(tok(raw).ids, tok(clean_prompt(raw), clean=False).ids)
    assert not torch.equal(tok(raw).ids, tok(raw, clean=False).ids)


def test_both_backends_agree_and_truncation_is_reported_not_warned(folders, caplog):
    """Truncation is reported in the batch; the text encoder that called the tokenizer warns the
    user once (its ``warn``), so the tokenizer itself logs no warning (it printed a second line)."""
    a, b = Tokenizer.from_folder(folders[0]), Tokenizer.from_folder(folders[1])
    with caplog.at_level("DEBUG", logger="wan_desktop.text"):
        ta, tb = a(PROMPTS), b(PROMPTS)
    assert torch.equal(ta.ids, tb.ids) and ta.truncated == tb.truncated and ta.any_truncated
    cut = [r for r in caplog.records if "longer than 512 tokens" in r.message]
    assert len(cut) == 2 and all(r.levelname == "DEBUG" for r in cut)


def test_from_spiece_bytes_and_max_length(folders):
    data = (folders[0] / "spiece.model").read_bytes()
    tok = Tokenizer.from_spiece_bytes(data, max_length=16)
    out = tok(["a cat", LONG])
    assert out.ids.shape == (2, 16) and out.truncated == (False, True)
    assert out.ids[1, -1] == 1 and out.mask[1].all()
    ref = Tokenizer.from_folder(folders[0])(["a cat"])
    assert torch.equal(out.ids[0], ref.ids[0, :16])


def test_missing_or_broken_tokenizer_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"neither tokenizer\.json nor spiece\.model") as e:
        Tokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(CheckpointError, match="is not a folder"):
        Tokenizer.from_folder(tmp_path / "nope")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"tokenizer\.json"):
        Tokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "spiece.model").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="sentencepiece"):
        Tokenizer.from_folder(tmp_path)


def test_prompts_must_be_valid_utf8():
    """Python keeps undecodable command-line bytes as lone surrogates U+DC80..U+DCFF."""
    assert utf8_problem("a cat, 猫, émoji 🐈") is None and check_prompt("ok") is None
    assert utf8_problem("ab\udcff") == "byte 0xff at character 3"
    assert utf8_problem("\ud800x") == "lone surrogate U+D800 at character 1"
    with pytest.raises(ConfigError, match=r"negative prompt is not valid UTF-8 text \(byte 0xfe"):
        check_prompt("bad \udcfe", "negative prompt")
