"""The window on a small laptop screen and from the keyboard: it fits 1024×600 with the Add button
in view; Ctrl+Enter adds, Delete cancels a queued job, Space plays / pauses the player (and types
a space in the prompt); the precision and memory-plan choices are labelled; the queue and history
lines name the model; a right-click menu on history entries; no stale preview after a cancel."""

from __future__ import annotations

import json
from pathlib import Path

from tests.gui.conftest import click, fill_form


def _activate(w, qtbot) -> None:
    """Shortcuts reach the active window only."""
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow, timeout=5000)


def _frames(n: int):
    from PySide6.QtGui import QColor, QImage

    out = []
    for i in range(n):
        img = QImage(16, 8, QImage.Format.Format_RGB888)
        img.fill(QColor(10 * i, 0, 0))
        out.append(img)
    return tuple(out)


# --------------------------------------------------------------------------- a 1024×600 screen


def test_the_window_fits_a_1024x600_screen_with_the_add_button_in_view(make_desktop, tiny, qtbot):
    from PySide6.QtCore import QPoint

    d = make_desktop([tiny.official])
    w = d.window
    screen = w.screen().availableGeometry()  # offscreen: 800×800
    assert w.width() <= screen.width() and w.height() <= screen.height()  # opens within it
    hint = w.minimumSizeHint()
    assert hint.width() <= 1024 and hint.height() <= 600, hint
    for task in ("t2v", "i2v"):  # the image row (i2v) makes the form taller: it scrolls
        w.form.update(task=task)
        assert w.minimumSizeHint().width() <= 1024 and w.minimumSizeHint().height() <= 600

        w.resize(1024, 600)
        qtbot.waitUntil(lambda: (w.width(), w.height()) == (1024, 600), timeout=5000)
        b = w.generate_button
        # the Add button is on screen, whole, and nothing covers its middle
        top_left = b.mapTo(w, QPoint(0, 0))
        assert top_left.x() >= 0 and top_left.x() + b.width() <= 1024
        assert top_left.y() >= 0 and top_left.y() + b.height() <= 600
        assert b.visibleRegion().boundingRect() == b.rect()
        assert w.childAt(b.mapTo(w, b.rect().center())) is b
        # the last field of the form can be scrolled into view
        w.form_scroll.ensureWidgetVisible(w.vram_combo)
        qtbot.waitUntil(lambda: not w.vram_combo.visibleRegion().isEmpty(), timeout=5000)
    w.form.update(task="t2v")


def test_the_form_scrolls_rather_than_growing_the_window(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    w.resize(1024, 600)
    qtbot.waitUntil(lambda: w.height() == 600, timeout=5000)
    w.resize(1024, 420)  # smaller still: the form scrolls, the window takes the size
    qtbot.waitUntil(lambda: w.height() == 420, timeout=5000)
    assert w.form_scroll.verticalScrollBar().maximum() > 0
    assert w.generate_button.visibleRegion().boundingRect() == w.generate_button.rect()


# --------------------------------------------------------------------------- keys


def test_ctrl_enter_in_the_prompt_adds_the_job(make_desktop, tiny, qtbot):
    from PySide6.QtCore import Qt

    d = make_desktop([tiny.official])
    w = d.window
    _activate(w, qtbot)
    fill_form(w, qtbot, "a kite over the dunes", seed=7)
    w.prompt_edit.setFocus()
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        qtbot.keyClick(w.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert w.prompt_edit.toPlainText() == "a kite over the dunes"  # no newline typed
    assert [e.prompt for e in d.queue.history] == ["a kite over the dunes"]
    # the keypad's Enter too, from any field
    w.steps_spin.setFocus()
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        qtbot.keyClick(
            w.steps_spin,
            Qt.Key.Key_Enter,
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.KeypadModifier,
        )
    assert len(d.queue.history) == 2


def test_delete_cancels_the_selected_queued_job_but_not_the_running_one(make_desktop, tiny, qtbot):
    from PySide6.QtCore import Qt

    d = make_desktop([tiny.official])
    w = d.window
    _activate(w, qtbot)
    started = []
    d.queue.progress.connect(lambda p: started.append(p.job_id) if p.step else None)
    fill_form(w, qtbot, "the long one", seed=1, steps=200)
    click(qtbot, w.generate_button)
    fill_form(w, qtbot, "the waiting one", seed=2)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(started), timeout=60_000)
    running, waiting = (j.id for j in d.queue.jobs)
    assert d.queue.running == running

    w.queue_list.setFocus()
    w.queue_list.setCurrentRow(0)  # the running job: Delete leaves it alone
    qtbot.keyClick(w.queue_list, Qt.Key.Key_Delete)
    assert d.queue.running == running and len(d.queue.jobs) == 2

    w.queue_list.setCurrentRow(1)
    qtbot.keyClick(w.queue_list, Qt.Key.Key_Delete)
    assert [j.id for j in d.queue.jobs] == [running]
    assert d.queue.history_entry(waiting).status == "cancelled"

    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000):
        click(qtbot, w.cancel_button)


def test_space_plays_and_pauses_the_player_but_is_a_space_in_the_prompt(make_desktop, tiny, qtbot):
    from PySide6.QtCore import Qt

    d = make_desktop([tiny.official])
    w = d.window
    _activate(w, qtbot)
    player = w.video_player
    w.view_tabs.setCurrentWidget(player)
    player.set_frames(_frames(5), fps=16, play=False)
    assert not player.playing

    click(qtbot, player.view)  # a click on the video gives it the keys
    qtbot.waitUntil(player.view.hasFocus, timeout=5000)
    qtbot.keyClick(player.view, Qt.Key.Key_Space)
    assert player.playing
    qtbot.keyClick(player.view, Qt.Key.Key_Space)
    assert not player.playing

    w.prompt_edit.setPlainText("two")
    w.prompt_edit.setFocus()
    w.prompt_edit.moveCursor(w.prompt_edit.textCursor().MoveOperation.End)
    qtbot.waitUntil(w.prompt_edit.hasFocus, timeout=5000)
    qtbot.keyClick(w.prompt_edit, Qt.Key.Key_Space)
    qtbot.keyClicks(w.prompt_edit, "cats")
    assert w.prompt_edit.toPlainText() == "two cats" and not player.playing


def test_precision_and_memory_plan_choices_are_labelled_and_explained(make_desktop, qtbot):
    from PySide6.QtWidgets import QLabel

    d = make_desktop([])
    w = d.window
    labels = {lab.buddy(): lab for lab in w.findChildren(QLabel) if lab.buddy() is not None}
    for combo, name, words in (
        (w.precision_combo, "Precision", ("BF16", "FP8", "INT8")),
        (w.vram_combo, "Memory", ("VRAM", "Auto")),
    ):
        assert combo in labels and labels[combo].text() == name and labels[combo].isVisible()
        assert all(word in combo.toolTip() for word in words), combo.toolTip()
    assert "Engines" in w.backend_combo.toolTip()
    assert "Ctrl+Enter" in w.generate_button.toolTip()


# --------------------------------------------------------------------------- queue and history


def test_queue_lines_show_steps_and_model_and_history_lines_the_model(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    name = w.models[0].name
    assert name
    click(qtbot, w.pause_button)  # the job waits, so its queue line can be read
    fill_form(w, qtbot, "a lighthouse at dusk", seed=11, steps=3)
    click(qtbot, w.generate_button)
    line = w.queue_list.item(0).text()
    assert "3 steps" in line and name in line and "a lighthouse at dusk" in line
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        click(qtbot, w.pause_button)  # resume
    assert name in w.history_list.item(0).text()


def _right_click_history(w, row: int):
    """A real context-menu event on the history's row; returns the menu it opened."""
    from PySide6.QtGui import QContextMenuEvent
    from PySide6.QtWidgets import QApplication

    vp = w.history_list.viewport()
    pos = w.history_list.visualItemRect(w.history_list.item(row)).center()
    QApplication.sendEvent(
        vp, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, pos, vp.mapToGlobal(pos))
    )
    menu = w.history_menu
    assert menu.isVisible()
    return menu, {a.text(): a for a in menu.actions() if a.text()}


def _run(d, w, qtbot, prompt: str, seed: int) -> Path:
    fill_form(w, qtbot, prompt, seed=seed)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    return Path(sig.args[1].out)


def test_history_right_click_menu_reuses_opens_and_deletes(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    out = _run(d, w, qtbot, "a red tram", seed=21)
    sidecar = out.with_name(out.name + ".json")
    thumb = Path(d.queue.history[0].thumbnail)
    assert out.is_file() and sidecar.is_file() and thumb.is_file()

    menu, actions = _right_click_history(w, 0)
    assert list(actions) == [
        "Reuse settings",
        "Continue this video",
        "Open",
        "Open folder",
        "Delete…",
    ]
    assert actions["Continue this video"].isEnabled()  # a finished video can be continued
    w.prompt_edit.setPlainText("something else")
    actions["Reuse settings"].trigger()
    menu.close()
    assert w.prompt_edit.toPlainText() == "a red tram" and w.seed_spin.value() == 21

    menu, actions = _right_click_history(w, 0)
    actions["Open folder"].trigger()  # no file manager here: its path, to copy
    menu.close()
    assert w.path_dialog.field.text() == str(home / "outputs")
    menu, actions = _right_click_history(w, 0)
    actions["Open"].trigger()
    menu.close()
    assert w.path_dialog.field.text() == str(out)

    # Delete… asks; "Keep the video" removes the entry (and its thumbnail) only
    menu, actions = _right_click_history(w, 0)
    actions["Delete…"].trigger()
    menu.close()
    box = w.delete_box
    assert box.isVisible() and "a red tram" in box.text()
    buttons = {b.text(): b for b in box.buttons()}
    assert {"Delete the video too", "Keep the video"} <= set(buttons)
    click(qtbot, buttons["Keep the video"])
    assert d.queue.history == [] and w.history_list.count() == 0
    assert json.loads((home / "history.json").read_text())["entries"] == []
    assert out.is_file() and sidecar.is_file() and not thumb.exists()

    # "Delete the video too": the mp4 and its settings file go
    out2 = _run(d, w, qtbot, "a blue tram", seed=22)
    sidecar2 = out2.with_name(out2.name + ".json")
    menu, actions = _right_click_history(w, 0)
    actions["Delete…"].trigger()
    menu.close()
    buttons = {b.text(): b for b in w.delete_box.buttons()}
    click(qtbot, buttons["Delete the video too"])
    assert d.queue.history == [] and not out2.exists() and not sidecar2.exists()
    assert out.is_file()  # the other video is untouched
    assert w.video_player.frames == ()  # it was the one shown
    assert not w.open_file_button.isEnabled()

    # Cancel keeps everything
    _run(d, w, qtbot, "a green tram", seed=23)
    menu, actions = _right_click_history(w, 0)
    actions["Delete…"].trigger()
    menu.close()
    from PySide6.QtWidgets import QMessageBox

    click(qtbot, w.delete_box.button(QMessageBox.StandardButton.Cancel))
    assert len(d.queue.history) == 1


def test_a_failed_entry_offers_reuse_and_delete_but_nothing_to_open(
    make_desktop, tiny, broken, qtbot
):
    d = make_desktop([broken])
    w = d.window
    fill_form(w, qtbot, "never made", seed=4)
    with qtbot.waitSignal(d.queue.failed, timeout=60_000):
        click(qtbot, w.generate_button)
    menu, actions = _right_click_history(w, 0)
    menu.close()
    assert actions["Reuse settings"].isEnabled() and actions["Delete…"].isEnabled()
    assert not actions["Open"].isEnabled() and not actions["Open folder"].isEnabled()


# --------------------------------------------------------------------------- cancel


def test_the_last_preview_clears_after_a_cancel(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    previews = []
    d.queue.preview.connect(lambda _job, p: previews.append(p))
    fill_form(w, qtbot, "a long run", seed=5, steps=200)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(previews), timeout=60_000)
    assert w.preview_player.frames and w.preview_player.view.image() is not None
    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000):
        click(qtbot, w.cancel_button)
    assert w.preview_player.frames == () and w.preview_player.view.image() is None
    assert w.preview_player.view.text() == "The live preview appears here while a job runs"
    assert not w.preview_player.playing
