"""A job's input files are copied into its folder on Qt's thread pool, never on the GUI thread:
the queue shows "copying inputs…" meanwhile and the job starts once they are copied; a copy that
cannot be written fails the job with the reason (ui/media_inputs.InputCopier)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from tests.gui.conftest import click, fill_form


def _frames(folder: Path, n: int = 9) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)).save(
            folder / f"{i:05d}.png"
        )
    return folder


def _v2v_form(w, qtbot, src: Path) -> None:
    fill_form(w, qtbot, "a fox", seed=11, steps=2)
    w.task_combo.setCurrentIndex(w.task_combo.findData("v2v"))
    w.vace_panel.video.choose(str(src))


def test_inputs_are_copied_off_the_gui_thread_while_the_job_says_so(
    make_desktop, tiny, qtbot, home, tmp_path, monkeypatch
):
    from wan_desktop.ui import media_inputs

    gui = threading.current_thread()
    threads: list[threading.Thread] = []
    release = threading.Event()
    copy_one = media_inputs._copy_one

    def slow_copy(src, folder, stem):  # a large video: the copy takes until released
        threads.append(threading.current_thread())
        assert release.wait(30)
        return copy_one(src, folder, stem)

    monkeypatch.setattr(media_inputs, "_copy_one", slow_copy)
    d = make_desktop([tiny.official])
    w = d.window
    src = _frames(tmp_path / "source")
    _v2v_form(w, qtbot, src)
    finished = []
    d.queue.finished.connect(lambda j, r: finished.append((j, r)))
    click(qtbot, w.generate_button)  # returns at once: the copy waits on the pool
    qtbot.waitUntil(lambda: bool(threads))
    (job,) = d.queue.jobs
    assert job.state == "copying" and d.queue.running is None
    assert w.queue_list.item(0).text().startswith("copying inputs…")
    assert job.request["video"] == str(src)  # the original, until copied
    qtbot.wait(200)  # the window stays live meanwhile
    assert not finished and d.queue.jobs[0].state == "copying"
    release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    assert threads and all(t is not gui for t in threads)
    job_id, result = finished[0]
    copy = home / "outputs" / "inputs" / job_id / "video"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in src.iterdir())
    assert d.queue.history[-1].request["video"] == str(copy) and Path(result.out).is_file()


def test_a_copy_that_cannot_be_written_fails_the_job_with_the_reason(
    make_desktop, tiny, qtbot, tmp_path, monkeypatch
):
    from wan_desktop.ui import media_inputs

    def full_disk(src, folder, stem):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(media_inputs, "_copy_one", full_disk)
    d = make_desktop([tiny.official])
    w = d.window
    _v2v_form(w, qtbot, _frames(tmp_path / "source"))
    with qtbot.waitSignal(d.queue.failed, timeout=10_000) as sig:
        click(qtbot, w.generate_button)
    assert "No space left on device" in sig.args[1].message
    assert d.queue.jobs == [] and d.queue.running is None
    (entry,) = d.queue.history
    assert entry.status == "failed" and "cannot copy" in (entry.error or "")
