"""The first-run model dialog (catalog, what fits this GPU, a real download from a local fake Hub
with progress, Add folder…) and the engines dialog."""

from __future__ import annotations

from pathlib import Path

from tests.gui.conftest import click


def test_first_run_opens_the_model_dialog_and_add_folder_finds_the_model(
        make_desktop, tiny, qtbot, home, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from wan_desktop.catalog import CATALOG
    from wan_desktop.model_manager import detect_vram_gb

    d = make_desktop([], first_run=True)
    qtbot.waitUntil(lambda: d.models_dialog is not None and d.models_dialog.isVisible(),
                    timeout=10_000)
    dlg = d.models_dialog
    assert dlg.table.rowCount() == len(CATALOG)
    titles = {dlg.table.item(i, 0).text() for i in range(dlg.table.rowCount())}
    assert titles == {r.title for r in CATALOG.values()}
    sizes = [dlg.table.item(i, 2).text() for i in range(dlg.table.rowCount())]
    assert all(s.endswith(" GB") for s in sizes)
    if detect_vram_gb() is None:  # this CPU machine: said plainly, in the label and every row
        assert "CPU only" in dlg.gpu_label.text()
        assert {dlg.table.item(i, 4).text() for i in range(dlg.table.rowCount())} == {"CPU only"}

    # "Add folder…" with models the user already has
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: str(tiny.official)))
    with qtbot.waitSignal(d.window.models_changed, timeout=30_000):
        click(qtbot, dlg.add_folder_button)
    assert not dlg.isVisible()
    qtbot.waitUntil(lambda: d.window.form.state.model == str(tiny.official), timeout=10_000)
    from wan_desktop.ui.settings import load_settings

    assert load_settings().model_dirs == (str(tiny.official),)  # remembered for the next start


def test_download_from_the_dialog_with_progress_then_it_is_installed(qtbot, hub, mm, home):
    from wan_desktop.ui.first_run import ModelsDialog
    from wan_desktop.ui.settings import AppSettings

    dlg = ModelsDialog(AppSettings(), manager=mm, vram_gb=None)
    qtbot.addWidget(dlg)
    dlg.show()
    names = [st.release.name for st in dlg.rows]
    assert sorted(names) == ["tiny-comfy-a", "tiny-comfy-b", "tiny-official"]
    dlg.select("tiny-official")
    values = []
    dlg.progress.valueChanged.connect(values.append)
    with qtbot.waitSignal(dlg.folder_added, timeout=60_000) as sig:
        click(qtbot, dlg.download_button)
    folder = Path(sig.args[0])
    assert folder == mm.models_dir / "test-org--Tiny-Wan2.1-T2V"
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    assert dlg.installed.complete
    # progress moved forward in several steps and ended full
    assert len(values) >= 3 and values == sorted(values)
    assert values[-1] == dlg.progress.maximum() > 0
    row = next(i for i, st in enumerate(dlg.rows) if st.release.name == "tiny-official")
    assert dlg.table.item(row, 5).text() == "installed"
    assert dlg.download_button.isEnabled() and not dlg.cancel_button.isEnabled()
    assert "Installed tiny-official" in dlg.status.text()


def test_download_error_is_shown_with_its_remedy(qtbot, mm, home, monkeypatch):
    from wan_desktop.ui.first_run import ModelsDialog
    from wan_desktop.ui.settings import AppSettings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the manager refuses with a remedy
    dlg = ModelsDialog(AppSettings(), manager=mm, vram_gb=12.0)
    qtbot.addWidget(dlg)
    dlg.select("tiny-official")
    click(qtbot, dlg.download_button)
    qtbot.waitUntil(lambda: dlg.error is not None, timeout=30_000)
    assert dlg.error.title == "Download failed" and "offline" in dlg.error.message
    assert "HF_HUB_OFFLINE" in dlg.error.remedy and dlg.download_button.isEnabled()
    fits = {dlg.table.item(i, 4).text() for i in range(dlg.table.rowCount())}
    assert fits and all(f.startswith(("fits", "★", "too big")) for f in fits)


def test_engines_dialog_lists_what_exists_and_never_breaks_the_window(make_desktop, tiny, qtbot,
                                                                      home):
    d = make_desktop([tiny.official])
    w = d.window
    w.engines_action.trigger()
    dlg = w.engines_dialog
    assert dlg.isVisible() and dlg.table.rowCount() == 0  # no engine built yet
    assert "t2v-1.3B" in dlg.findChildren(type(dlg.stage))[0].text()
    dlg.close()
    # no engine for this model: only PyTorch is offered
    assert [w.backend_combo.itemData(i) for i in range(w.backend_combo.count())] == ["torch"]
