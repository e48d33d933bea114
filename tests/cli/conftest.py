"""Tiny random-weight models for the CLI tests, built once per session (official, diffusers and
ComfyUI layouts of the same weights), and an in-process runner for ``wan_desktop.cli.main``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.fixtures_models import TinyModel, build_tiny_model


@pytest.fixture(scope="session")
def t2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("cli_t2v"), "t2v-1.3B")


@pytest.fixture(scope="session")
def ti2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("cli_ti2v"), "ti2v-5B")


@pytest.fixture(scope="session")
def i2v(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("cli_i2v"), "i2v-14B")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@pytest.fixture
def cli(capsys):
    """``cli([...])`` runs ``main`` in-process; argparse's SystemExit becomes the exit code."""
    from wan_desktop.cli import main

    def run(args: list[str]) -> Result:
        capsys.readouterr()  # drop whatever fixtures printed (diffusers' save bars)
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run
