"""Paths the user needs to reach: Open file / Open folder / Help → Open log folder open the desktop's
app, and where there is none (a bare window manager, VNC, the offscreen platform here) a dialog
shows the path to copy instead of failing silently; Help → About tells the version, the GPU, the
runtimes, the data folder and the log file, gathered off the GUI thread."""

from __future__ import annotations

import os
import shutil
import stat
import time
from importlib import metadata
from pathlib import Path

from tests.gui.conftest import click, fill_form


def _clipboard() -> str:
    from PySide6.QtGui import QGuiApplication

    return QGuiApplication.clipboard().text()


def _path_without(program: str) -> str:
    """PATH minus every folder that holds ``program``."""
    keep = [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / program).exists()
    ]
    return os.pathsep.join(keep)


def _fake_nvidia_smi(folder: Path, *, delay_s: float, line: str) -> None:
    """A real executable named nvidia-smi that answers the status query like the driver's tool
    (name, MiB used, MiB total), after ``delay_s``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nsleep {delay_s}\necho '{line}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# --------------------------------------------------------------------------- no file manager


def test_open_log_folder_without_a_file_manager_shows_the_path_to_copy(make_desktop, qtbot, home):
    d = make_desktop([])
    w = d.window
    assert w.path_dialog is None
    w.log_action.trigger()
    dlg = w.path_dialog
    assert dlg is not None and dlg.isVisible()
    assert dlg.windowTitle() == "Open log folder" and "cannot be opened" in dlg.message.text()
    assert dlg.field.text() == str(home / "logs") and (home / "logs").is_dir()
    assert dlg.field.edit.isReadOnly()  # selectable, not editable
    click(qtbot, dlg.field.copy_button)
    assert _clipboard() == str(home / "logs")


def test_open_log_folder_with_a_file_manager_opens_it_and_shows_no_dialog(
    make_desktop, qtbot, home
):
    """A desktop whose file manager answers (a URL handler for file:// stands in for it)."""
    from PySide6.QtCore import QObject, QUrl, Slot
    from PySide6.QtGui import QDesktopServices

    class FileManager(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.opened: list[str] = []

        @Slot(QUrl)
        def show(self, url: QUrl) -> None:
            self.opened.append(url.toLocalFile())

    fm = FileManager()
    QDesktopServices.setUrlHandler("file", fm, "show")
    try:
        d = make_desktop([])
        d.window.log_action.trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    assert fm.opened == [str(home / "logs")]
    assert d.window.path_dialog is None


def test_open_file_and_open_folder_of_a_finished_video_fall_back_to_its_path(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a paper boat", seed=3)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    out = Path(sig.args[1].out)
    assert out.is_file()

    click(qtbot, w.open_folder_button)
    folder_dialog = w.path_dialog
    assert folder_dialog.isVisible() and folder_dialog.windowTitle() == "Open folder"
    assert folder_dialog.field.text() == str(out.parent) == str(home / "outputs")

    click(qtbot, w.open_file_button)  # the folder's dialog gives way to the video's
    assert not folder_dialog.isVisible()
    assert w.path_dialog.isVisible() and w.path_dialog.windowTitle() == "Open video"
    assert w.path_dialog.field.text() == str(out)
    click(qtbot, w.path_dialog.field.copy_button)
    assert _clipboard() == str(out)


# --------------------------------------------------------------------------- Help → About


def test_installed_versions_come_from_package_metadata():
    from wan_desktop.ui.system_info import installed_version

    assert installed_version("torch") == metadata.version("torch")
    assert installed_version("no_such_module_here") is None
    # an import name provided by a differently named wheel (tensorrt_rtx <- tensorrt_rtx_cu12)
    dists = metadata.packages_distributions().get("tensorrt_rtx")
    if dists:
        assert installed_version("tensorrt_rtx") == metadata.version(dists[0])


def test_about_without_a_gpu_shows_version_runtimes_data_folder_and_log_file(
    make_desktop, qtbot, home, monkeypatch
):
    import wan_desktop

    monkeypatch.setenv("PATH", _path_without("nvidia-smi"))
    d = make_desktop([])
    w = d.window
    w.about_action.trigger()
    dlg = w.about_dialog
    assert dlg.isVisible() and dlg.windowTitle() == "About Wan Desktop"
    qtbot.waitUntil(lambda: dlg.facts is not None, timeout=10_000)
    assert dlg.version_label.text() == wan_desktop.__version__ == "0.1.0"
    assert dlg.gpu_label.text() == "no CUDA GPU"
    assert dlg.torch_label.text() == metadata.version("torch")

    def shown(module: str) -> str:
        dists = metadata.packages_distributions().get(module)
        return metadata.version(dists[0]) if dists else "not installed"

    assert dlg.ort_label.text() == shown("onnxruntime")
    assert dlg.trt_rtx_label.text() == shown("tensorrt_rtx")
    assert dlg.trt_label.text() == shown("tensorrt")
    # the paths a bug report needs, to copy: the data folder and the very file the log goes to
    assert dlg.data_field.text() == str(home)
    log_file = home / "logs" / "wan-desktop.log"
    assert dlg.log_field.text() == str(log_file) and log_file.is_file()
    assert dlg.log_field.edit.isReadOnly()
    click(qtbot, dlg.log_field.copy_button)
    assert _clipboard() == str(log_file)


def test_about_opens_at_once_and_reads_the_gpu_off_the_gui_thread(
    make_desktop, qtbot, home, tmp_path, monkeypatch
):
    """nvidia-smi can take seconds (a GPU waking up): the dialog must not wait for it."""
    fake = tmp_path / "driver-bin"
    _fake_nvidia_smi(fake, delay_s=1.5, line="NVIDIA GeForce RTX 4060 Laptop GPU, 812, 8188")
    d = make_desktop([])
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake), _path_without("nvidia-smi")]))
    assert shutil.which("nvidia-smi") == str(fake / "nvidia-smi")
    t0 = time.monotonic()
    d.window.about_action.trigger()
    opened_s = time.monotonic() - t0
    dlg = d.window.about_dialog
    assert opened_s < 1.0 and dlg.isVisible()
    assert dlg.gpu_label.text() == "…"  # nvidia-smi is still sleeping
    qtbot.waitUntil(lambda: dlg.facts is not None, timeout=10_000)
    gpu = dlg.gpu_label.text()
    assert gpu.startswith("NVIDIA GeForce RTX 4060 Laptop GPU · 8.0 GB VRAM")  # 8188 MiB
    # a CPU-only PyTorch cannot use the card: said, not hidden
    assert ("no CUDA" in gpu) == metadata.version("torch").endswith("+cpu")


def test_about_closed_and_deleted_before_its_facts_arrive_is_not_called(qtbot, home):
    """The facts come from a pool thread; a dialog closed and deleted meanwhile must be gone at
    once (nothing on the pool thread keeps it) and the late facts must reach nothing."""
    import gc
    import threading
    import weakref

    from PySide6.QtCore import QThreadPool
    from wan_desktop.ui import system_info
    from wan_desktop.ui.about_dialog import PENDING, AboutDialog

    gate, delivered = threading.Event(), threading.Event()

    def gather() -> system_info.AboutFacts:  # the real facts, once the test says so
        assert gate.wait(10)
        facts = system_info.about_facts()
        delivered.set()
        return facts

    dlg = AboutDialog(gather=gather)
    deleted: list[str] = []
    dlg.gpu_label.destroyed.connect(lambda: deleted.append("label"))
    dlg.open()
    assert dlg.gpu_label.text() == PENDING
    gone = weakref.ref(dlg)
    dlg.close()
    del dlg
    gc.collect()
    assert gone() is None and deleted == ["label"]  # deleted now, facts still on their way
    gate.set()
    assert delivered.wait(10)
    assert QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.wait(100)  # the queued call, were there one, would run here

    # the next dialog still gets its facts
    again = AboutDialog(gather=system_info.about_facts)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.facts is not None, timeout=10_000)
    assert again.python_label.text() == again.facts.python != PENDING
