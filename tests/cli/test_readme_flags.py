"""The README's list of `generate` flags is argparse's: every flag, every choice, nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from wan_desktop.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_flags() -> dict[str, tuple[str, ...] | None]:
    text = README.read_text()
    span = re.search(r"`generate` takes `(.*?)`", text, flags=re.S)
    assert span, "README: the sentence '`generate` takes `...`' is missing"
    flags: dict[str, tuple[str, ...] | None] = {}
    words = span.group(1).split()
    for i, word in enumerate(words):
        if word.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            flags[word] = tuple(nxt.split("|")) if "|" in nxt else None
    return flags


def _argparse_flags() -> dict[str, tuple[str, ...] | None]:
    parser = build_parser()
    sub = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    generate = sub.choices["generate"]
    return {
        a.option_strings[-1]: tuple(a.choices) if a.choices else None
        for a in generate._actions
        if a.option_strings and a.option_strings[-1] != "--help"
    }


def test_the_readme_lists_every_generate_flag_with_its_choices():
    assert _readme_flags() == _argparse_flags()
