"""The real desktop app, offscreen, on a tiny random-weight model saved in the official layout.

Every test gets its own data dir (WAN_DESKTOP_HOME) and downloads dir (WAN_DESKTOP_MODELS), so
queue, history, settings and logs are the test's own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures_models import TinyModel, build_tiny_model
from tests.model_manager.conftest import hub, mm  # noqa: F401 (fixtures for the download test)

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

SMALL = dict(width=64, height=32, frames=9, steps=3)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("gui_t2v"), "t2v-1.3B")


@pytest.fixture(scope="session")
def broken(tiny, tmp_path_factory) -> Path:
    """The tiny model with a damaged tokenizer: every weight file's header reads (so the scan
    finds it usable and the picker lists it), but a run cannot load its text encoder."""
    root = tmp_path_factory.mktemp("gui_broken") / "broken-model"
    shutil.copytree(tiny.official, root)
    for name in ("tokenizer.json", "spiece.model"):
        (root / "google" / "umt5-xxl" / name).write_text("damaged")
    return root


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("WAN_DESKTOP_HOME", str(h))
    monkeypatch.setenv("WAN_DESKTOP_MODELS", str(tmp_path / "downloads"))
    return h


@pytest.fixture
def make_desktop(qtbot, home):
    """``make_desktop(model_dirs)`` builds and shows the app (first-run dialog off unless asked);
    every app made is shut down at the end of the test."""
    from wan_desktop.ui.app import setup_logging
    from wan_desktop.ui.desktop import Desktop
    from wan_desktop.ui.settings import AppSettings, load_settings

    made = []

    def make(
        model_dirs=(),
        *,
        first_run: bool = False,
        wait_models: bool = True,
        saved_settings: bool = False,
    ):
        """``saved_settings``: the Desktop reads settings.json itself, as the app does."""
        from dataclasses import replace

        setup_logging()
        if saved_settings:
            d = Desktop()
        else:
            settings = replace(
                load_settings(),
                model_dirs=tuple(str(p) for p in model_dirs),
                preview_interval_s=0.0,
            )  # a preview for every step
            if not isinstance(settings, AppSettings):
                raise TypeError(settings)
            d = Desktop(settings)
        made.append(d)
        qtbot.addWidget(d.window)
        if wait_models:
            with qtbot.waitSignal(d.window.models_changed, timeout=30_000):
                d.start(first_run_dialog=first_run)
        else:
            d.start(first_run_dialog=first_run)
        return d

    yield make
    for d in made:
        assert d.shutdown(10_000), "the GPU thread did not stop"
        d.window.close()


def fill_form(window, qtbot, prompt: str, *, seed: int | None = None, **values) -> None:
    """Type into the real widgets (the bindings carry it into the form model)."""
    window.prompt_edit.clear()
    qtbot.keyClicks(window.prompt_edit, prompt)
    v = {**SMALL, **values}
    window.width_spin.setValue(v["width"])
    window.height_spin.setValue(v["height"])
    window.frames_spin.setValue(v["frames"])
    window.steps_spin.setValue(v["steps"])
    if seed is not None:
        window.random_seed.setChecked(False)
        window.seed_spin.setValue(seed)


def click(qtbot, button) -> None:
    from PySide6.QtCore import Qt

    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture(scope="session")
def tiny_ti2v(tmp_path_factory) -> TinyModel:
    """Wan2.2 TI2V-5B at tiny size: the z=48 VAE, 24 fps, text or first-frame conditioning."""
    return build_tiny_model(tmp_path_factory.mktemp("gui_ti2v"), "ti2v-5B")


@pytest.fixture(scope="session")
def tiny_i2v(tmp_path_factory) -> TinyModel:
    """Wan2.1 I2V-14B at tiny size: CLIP image encoder, the first frame encoded by the VAE."""
    return build_tiny_model(tmp_path_factory.mktemp("gui_i2v"), "i2v-14B")


@pytest.fixture(scope="session")
def tiny_a14b(tmp_path_factory) -> TinyModel:
    """Wan2.2 T2V-A14B at tiny size: two experts (high-noise, low-noise) in their own folders."""
    return build_tiny_model(tmp_path_factory.mktemp("gui_a14b"), "t2v-A14B")
