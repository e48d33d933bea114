"""The model dialog (ui/first_run.py) never calls a download verified that nothing was checked
against: a file without a published hash shows as "unverified"."""

from __future__ import annotations

from tests.gui.conftest import click


def test_a_download_without_a_published_hash_shows_unverified(qtbot, hub, mm, home):
    from wan_desktop.ui.first_run import ModelsDialog
    from wan_desktop.ui.settings import AppSettings

    hub.no_hash.add("diffusion_pytorch_model.safetensors")  # the mirror lists no hash for it
    dlg = ModelsDialog(AppSettings(), manager=mm, vram_gb=None)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.select("tiny-official")
    with qtbot.waitSignal(dlg.folder_added, timeout=60_000):
        click(qtbot, dlg.download_button)
    status = dlg.status.text()
    print(status)
    assert status.startswith("Installed tiny-official in ")
    assert "1 file(s) UNVERIFIED" in status and "diffusion_pytorch_model.safetensors" in status
    row = next(i for i, st in enumerate(dlg.rows) if st.release.name == "tiny-official")
    cell = dlg.table.item(row, 5)
    assert cell.text() == "unverified" and "no published hash" in cell.toolTip()
