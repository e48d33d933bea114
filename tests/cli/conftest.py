"""Tiny random-weight models for the CLI tests, built once per session (official, diffusers and
ComfyUI layouts of the same weights). The in-process ``cli`` runner is in tests/conftest.py."""

from __future__ import annotations

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
