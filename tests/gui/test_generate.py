"""The real window drives the real pipeline on a tiny model: a generation end to end with a live
preview every step, cancel within one step, a queue of three in order, a broken model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from tests.gui.conftest import click, fill_form


def _outputs(home: Path) -> list[str]:
    d = home / "outputs"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_generation_end_to_end_preview_every_step_file_history_and_reuse(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    assert w.windowTitle() == "Wan Desktop"
    # the picker found the model with the inspect logic, and the variant's defaults are in
    assert [m.variant for m in w.models] == ["t2v-1.3B"] and w.models[0].format == "official"
    assert "t2v-1.3B" in w.model_combo.currentText() and "fp32" in w.model_combo.currentText()
    assert w.negative_edit.toPlainText().startswith("色调艳丽")  # Wan's default negative prompt
    assert (w.width_spin.value(), w.height_spin.value(), w.frames_spin.value()) == (832, 480, 81)
    assert w.seconds_spin.value() == 5.0  # 81 frames at 16 fps
    qtbot.waitUntil(lambda: "CPU only" in w.system_label.text(), timeout=10_000)  # read async

    fill_form(w, qtbot, "a red fox in the snow", seed=1234)
    previews = []
    steps = []
    d.queue.preview.connect(lambda job_id, p: previews.append(p))
    d.queue.progress.connect(
        lambda p: steps.append(p.step) if p.stage == "denoise" and p.step else None
    )
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args

    # a preview for every step: 3 latent frames (9 video frames / 4 + 1) at 64/8 × 32/8
    assert [p.step for p in previews] == [1, 2, 3] and steps == [1, 2, 3]
    for p in previews:
        assert len(p.frames) == 3
        assert all((f.width(), f.height()) == (8, 4) for f in p.frames)
    assert w.preview_player.frames == previews[-1].frames
    # the preview changes as the prediction sharpens
    a, b = (np.frombuffer(p.frames[0].constBits(), np.uint8) for p in (previews[0], previews[-1]))
    assert not np.array_equal(a, b)

    # the file: what the player shows is the mp4 on disk
    out = Path(result.out)
    assert out.is_file() and out.parent == home / "outputs"
    video = iio.imread(out)
    assert video.shape == (9, 32, 64, 3)
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["request"]["seed"] == 1234 and side["request"]["prompt"] == "a red fox in the snow"
    assert side["request"]["steps"] == 3 and side["options"]["model"] == str(tiny.official)
    assert len(w.video_player.frames) == 9 and w.view_tabs.currentWidget() is w.video_player
    shown = w.video_player.frames[0].convertToFormat(w.video_player.frames[0].Format.Format_RGB888)
    row = np.frombuffer(shown.constBits(), np.uint8).reshape(32, shown.bytesPerLine())[:, : 64 * 3]
    assert np.array_equal(row.reshape(32, 64, 3), video[0])
    assert w.progress_bar.value() == w.progress_bar.maximum() == 3

    # history: in the window and on disk, with thumbnail, time taken and peak VRAM (CPU: None)
    assert w.history_list.count() == 1 and "seed 1234" in w.history_list.item(0).text()
    saved = json.loads((home / "history.json").read_text())["entries"]
    assert len(saved) == 1 and saved[0]["id"] == job_id and saved[0]["status"] == "done"
    assert saved[0]["out"] == str(out) and saved[0]["seconds"] > 0
    assert saved[0]["peak_vram_gb"] is None and Path(saved[0]["thumbnail"]).is_file()
    assert saved[0]["request"]["negative_prompt"].startswith("色调艳丽")  # resolved request
    assert json.loads((home / "queue.json").read_text())["jobs"] == []

    # Copy settings puts the reproducible settings on the clipboard
    click(qtbot, w.copy_settings_button)
    from PySide6.QtGui import QGuiApplication

    copied = json.loads(QGuiApplication.clipboard().text())
    assert copied["request"]["seed"] == 1234 and copied["out"] == str(out)

    # scrub and step through the finished video
    w.video_player.pause()
    w.video_player.seek(4)
    click(qtbot, w.video_player.next_button)
    assert w.video_player.index == 5 and w.video_player.counter.text() == "6 / 9"

    # Play from the history decodes the file again (off the GUI thread) into the player
    w.video_player.clear()
    w.history_list.setCurrentRow(0)
    click(qtbot, w.play_history_button)
    qtbot.waitUntil(lambda: len(w.video_player.frames) == 9, timeout=30_000)
    assert w.video_player.fps == 16

    # Reuse settings brings back prompt and (fixed) seed after the form was changed
    w.prompt_edit.setPlainText("something else")
    w.random_seed.setChecked(True)
    w.history_list.setCurrentRow(0)
    click(qtbot, w.reuse_button)
    assert w.prompt_edit.toPlainText() == "a red fox in the snow"
    assert w.seed_spin.value() == 1234 and not w.random_seed.isChecked()
    assert (w.width_spin.value(), w.height_spin.value(), w.steps_spin.value()) == (64, 32, 3)


def test_cancel_mid_run_stops_within_one_step_and_writes_nothing(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a long run", seed=5, steps=80)
    first_step = []
    d.queue.progress.connect(lambda p: first_step.append(p.step) if p.step else None)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(first_step), timeout=60_000)
    job_id = d.queue.running
    job = d.queue.job(job_id)
    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000):
        t_cancel = time.monotonic()
        click(qtbot, w.cancel_button)
    after = [s for t, j, s in d.service.step_log if j == job_id and t > t_cancel]
    done = [s for _t, j, s in d.service.step_log if j == job_id]
    print(f"cancel after step {done[-1] - len(after)}: {len(after)} step(s) finished after it")
    assert len(after) <= 1  # the step in flight may finish; the next check raises
    assert done[-1] < 80
    assert not Path(job.out).exists() and _outputs(home) == []  # nothing, not even a partial
    assert w.stage_label.text().startswith("Cancelled")
    assert d.queue.jobs == [] and d.queue.history[-1].status == "cancelled"


def test_queue_of_three_runs_in_order_after_reordering_and_cancels_a_queued_one(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    started = []
    d.queue.progress.connect(lambda p: started.append(p.job_id) if p.stage == "start" else None)
    ids = []
    for seed in (11, 22, 33, 44):
        fill_form(w, qtbot, f"job {seed}", seed=seed, steps=12 if seed == 11 else 2)
        click(qtbot, w.generate_button)
        ids.append(d.queue.jobs[-1].id)
    assert w.queue_list.count() == 4
    # move 33 above 22 (with the buttons), cancel 44 while it waits
    w.queue_list.setCurrentRow(2)
    click(qtbot, w.up_button)
    assert [j.seed for j in d.queue.jobs] == [11, 33, 22, 44]
    w.queue_list.setCurrentRow(3)
    click(qtbot, w.cancel_job_button)
    assert [j.seed for j in d.queue.jobs] == [11, 33, 22]
    saved = json.loads((home / "queue.json").read_text())["jobs"]
    assert [j["request"]["seed"] for j in saved] == [11, 33, 22]

    qtbot.waitUntil(
        lambda: len([e for e in d.queue.history if e.status == "done"]) == 3, timeout=90_000
    )
    assert started == [ids[0], ids[2], ids[1]]  # 44 never started
    done = [e for e in d.queue.history if e.status == "done"]
    assert [e.seed for e in done] == [11, 33, 22]
    for e in done:
        assert iio.imread(e.out).shape == (9, 32, 64, 3)
        assert json.loads(Path(e.out + ".json").read_text())["request"]["seed"] == e.seed
    assert [e.seed for e in d.queue.history if e.status == "cancelled"] == [44]
    assert len(_outputs(home)) == 6  # 3 × (mp4 + sidecar)
    assert w.queue_list.count() == 0 and w.history_list.count() == 4


def test_cancel_all_stops_the_running_job_and_empties_the_queue(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    first_step = []
    d.queue.progress.connect(lambda p: first_step.append(p.step) if p.step else None)
    for seed in (1, 2):
        fill_form(w, qtbot, f"job {seed}", seed=seed, steps=80)
        click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(first_step), timeout=60_000)
    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000):
        click(qtbot, w.cancel_all_button)
    qtbot.waitUntil(lambda: d.queue.running is None and not d.queue.jobs, timeout=10_000)
    assert [e.status for e in d.queue.history] == ["cancelled", "cancelled"]
    assert _outputs(home) == []


def test_broken_model_is_a_failure_badge_with_its_remedy_and_the_next_job_runs(
    make_desktop, tiny, broken, qtbot, home
):
    d = make_desktop([tiny.official, broken])
    w = d.window
    # a model whose tokenizer is damaged: its headers still parse, so the scan lists it and the
    # checks when the job is added pass, and the text encoder fails to load when it runs
    w.form.update(model=str(broken))
    fill_form(w, qtbot, "this will fail", seed=3)
    with qtbot.waitSignal(d.queue.failed, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    error = sig.args[1]
    assert error.title == "Bad model" and error.remedy and "broken-model" in error.message
    # a run-time failure takes no focus: no dialog; the history line wears a badge whose tooltip
    # says what happened and what to do, and the status bar says it
    assert w.error_box is None and w.last_error == error
    item = w.history_list.item(0)
    assert item.text().startswith("✖ failed") and not item.icon().isNull()
    assert item.toolTip() == f"Bad model: {error.message}\nWhat to do: {error.remedy}"
    assert error.message in w.statusBar().currentMessage()
    assert error.remedy in w.statusBar().currentMessage()
    assert d.queue.history[-1].status == "failed" and _outputs(home) == []

    # the app is still usable: the good model runs
    w.form.update(model=str(tiny.official))
    fill_form(w, qtbot, "this works", seed=4)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    assert Path(sig.args[1].out).is_file()
    assert [e.status for e in d.queue.history] == ["failed", "done"]


def test_bad_input_is_refused_when_added_with_the_field_marked_not_a_job(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    fill_form(w, qtbot, "a cat", seed=1, width=72)  # 72 is not a multiple of 16
    click(qtbot, w.generate_button)
    assert "multiple of 16" in w.last_error.message and w.error_box.isVisible()
    assert d.queue.jobs == [] and d.queue.history == [] and list(d.service.step_log) == []
    for spin in (w.width_spin, w.height_spin):  # the size's two fields wear the mark
        assert spin.property("invalid") is True and "multiple of 16" in spin.toolTip()
    assert not w.steps_spin.property("invalid") and not w.prompt_edit.property("invalid")
    w.error_box.close()
    w.prompt_edit.clear()
    click(qtbot, w.generate_button)  # empty prompt: refused before it is queued
    assert w.last_error.message == "the prompt is empty" and d.queue.jobs == []
    assert w.prompt_edit.property("invalid") is True and not w.width_spin.property("invalid")
    assert w.width_spin.toolTip() == ""  # the mark's tooltip went with it
    fill_form(w, qtbot, "a cat", seed=1)  # fixed: accepted, and no field is marked
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        click(qtbot, w.generate_button)
    assert not any(x.property("invalid") for ws in w._field_widgets().values() for x in ws)


def test_form_widgets_and_model_bind_both_ways(make_desktop, tiny, qtbot, home):
    from PySide6.QtCore import Qt

    d = make_desktop([tiny.official])
    w = d.window
    f = d.window.form
    # widget → model: duration in seconds becomes 4n+1 frames, a typed frame count snaps
    w.seconds_spin.setValue(2.0)
    assert f.state.frames == 33 and w.frames_spin.value() == 33
    w.frames_spin.lineEdit().selectAll()
    qtbot.keyClicks(w.frames_spin.lineEdit(), "30")
    qtbot.keyClick(w.frames_spin, Qt.Key.Key_Return)
    assert f.state.frames == 29 and w.frames_spin.value() == 29
    assert w.seconds_spin.value() == 1.75
    # presets of the variant, and back to "Custom" on a hand-typed size
    i = w.preset_combo.findText("480p portrait 480×832")
    w.preset_combo.setCurrentIndex(i)
    w.preset_combo.activated.emit(i)  # what a user's pick sends
    assert (f.state.width, f.state.height) == (480, 832)
    w.width_spin.setValue(512)
    assert w.preset_combo.currentText() == "Custom" and f.state.width == 512
    # model → widget
    f.update(steps=7, guidance=3.5, sampler="euler", vram_plan="12", precision="fp8")
    assert (w.steps_spin.value(), w.guidance_spin.value(), w.sampler_combo.currentText()) == (
        7,
        3.5,
        "euler",
    )
    assert w.vram_combo.currentText() == "12 GB" and w.precision_combo.currentData() == "fp8"
    # the dice gives a new fixed seed
    w.random_seed.setChecked(True)
    before = f.state.seed
    click(qtbot, w.dice_button)
    assert not f.state.random_seed and not w.random_seed.isChecked()
    assert w.seed_spin.value() == f.state.seed and w.seed_spin.isEnabled()
    assert f.state.seed != before or f.state.seed == 0
    # a T2V-only model: the image tasks are disabled, no drop zones
    tasks = {
        w.task_combo.itemData(k): w.task_combo.model().item(k).isEnabled()
        for k in range(w.task_combo.count())
    }
    assert tasks == {"t2v": True, "i2v": False, "flf2v": False, "ti2v": False, "v2v": True} | {
        f"vace:{u}": False for u in ("control", "inpaint", "outpaint", "extend", "reference")
    }  # V2V for any T2V model; the VACE uses need a VACE model
    assert not w.first_frame.isVisible() and not w.last_frame.isVisible()
    # a job made from the form carries the settings (VRAM plan 12 GB → the budget)
    qtbot.keyClicks(w.prompt_edit, "a lighthouse")
    job = f.make_job(w.settings)
    assert job.options["vram_budget_gb"] == 12.0 and job.options["precision"] == "fp8"
    assert job.request["frames"] == 29 and job.request["sampler"] == "euler"


def test_out_of_gpu_memory_is_a_readable_error_and_the_app_recovers(
    make_desktop, tiny, qtbot, home, monkeypatch
):
    import torch

    import wan_desktop.pipeline as pipeline
    from wan_desktop.errors import OutOfVram

    real = pipeline.generate_to_file

    def oom(*args, **kwargs):  # a CPU machine cannot run out of VRAM: raise what CUDA raises
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    d = make_desktop([tiny.official])
    w = d.window
    monkeypatch.setattr(pipeline, "generate_to_file", oom)
    fill_form(w, qtbot, "too big", seed=1)
    with qtbot.waitSignal(d.queue.failed, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    err = sig.args[1]
    assert err.title == "Out of GPU memory" and err.remedy == OutOfVram.remedy
    assert "Tried to allocate 20.00 GiB" in err.message and w.error_box is None  # no dialog
    tip = w.history_list.item(0).toolTip()
    assert tip == f"Out of GPU memory: {err.message}\nWhat to do: {OutOfVram.remedy}"
    assert "Tried to allocate 20.00 GiB" in w.statusBar().currentMessage()
    log = (home / "logs" / "wan-desktop.log").read_text()
    assert "out of GPU memory" in log  # the log folder has it too
    monkeypatch.setattr(pipeline, "generate_to_file", real)
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        click(qtbot, w.generate_button)
    assert [e.status for e in d.queue.history] == ["failed", "done"]


def test_an_image_dropped_on_the_first_frame_zone_goes_into_the_form(
    make_desktop, tiny, qtbot, home, tmp_path
):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent, QImage

    d = make_desktop([tiny.official])
    w = d.window
    img = tmp_path / "first.png"
    q = QImage(32, 16, QImage.Format.Format_RGB888)
    q.fill(Qt.GlobalColor.red)
    assert q.save(str(img))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(img))])
    ev = QDropEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    w.first_frame.dropEvent(ev)
    assert w.form.state.image == str(img) and w.first_frame.pixmap().height() == 64
    # a T2V model takes no image: the job does not carry it
    qtbot.keyClicks(w.prompt_edit, "a cat")
    assert w.form.make_job(w.settings).request["image"] is None


def test_a_paused_queue_keeps_its_jobs_until_resumed(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    click(qtbot, w.pause_button)
    assert w.pause_button.text() == "Resume"
    fill_form(w, qtbot, "later", seed=8)
    click(qtbot, w.generate_button)
    assert d.queue.running is None and [j.state for j in d.queue.jobs] == ["queued"]
    with qtbot.waitSignal(d.queue.finished, timeout=60_000):
        click(qtbot, w.pause_button)
    assert d.queue.history[-1].seed == 8 and w.pause_button.text() == "Pause"


def test_ti2v_from_a_dropped_first_frame_with_the_z48_preview(
    make_desktop, tiny_ti2v, qtbot, home, tmp_path
):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent, QImage

    d = make_desktop([tiny_ti2v.official])
    w = d.window
    assert w.models[0].variant == "ti2v-5B" and w.form.state.fps == 24
    assert w.frames_spin.value() == 121 and w.seconds_spin.value() == 5.0  # 121 frames at 24 fps
    w.task_combo.setCurrentIndex(w.task_combo.findData("ti2v"))
    assert w.form.state.task == "ti2v" and w.first_frame.isVisible()
    assert not w.last_frame.isVisible()
    img = tmp_path / "first.png"
    q = QImage(96, 64, QImage.Format.Format_RGB888)
    q.fill(Qt.GlobalColor.darkCyan)
    assert q.save(str(img))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(img))])
    w.first_frame.dropEvent(
        QDropEvent(
            QPointF(5, 5),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
    )
    fill_form(w, qtbot, "a boat on a lake", seed=21, width=64, height=64, frames=5, steps=2)
    previews = []
    d.queue.preview.connect(lambda _j, p: previews.append(p))
    with qtbot.waitSignal(d.queue.finished, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    job_id, result = sig.args
    # z=48 latents of the Wan2.2 VAE (16× spatial): 2 latent frames of 4×4 for 5 frames of 64×64
    assert [p.step for p in previews] == [1, 2]
    assert all(
        len(p.frames) == 2 and (p.frames[0].width(), p.frames[0].height()) == (4, 4)
        for p in previews
    )
    assert iio.imread(result.out).shape == (5, 64, 64, 3) and result.fps == 24
    side = json.loads(Path(str(result.out) + ".json").read_text())
    copy = home / "outputs" / "inputs" / job_id / "image.png"  # the job's own copy
    assert side["request"]["task"] == "ti2v" and side["request"]["image"] == str(copy)
    assert copy.read_bytes() == img.read_bytes()
    assert side["fps"] == 24
