"""Review before decode in the real window on a tiny model: the job waits after denoising on its
last preview with a Decode / Discard bar while the window stays live and the queue waits behind
it; Decode writes the very video a run without review writes, Discard writes nothing and the
history says "discarded"; Cancel and closing the app while it waits leave nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tests.gui.conftest import click, fill_form
from tests.taehv_files import random_tae_file


def _outputs(home: Path) -> list[str]:
    d = home / "outputs"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _wait_for_review(d, qtbot, prompt: str, seed: int = 5):
    """Fill the form with review on, add the job, and wait until it waits at review."""
    w = d.window
    fill_form(w, qtbot, prompt, seed=seed)
    w.review_check.setChecked(True)  # the checkbox's binding carries it into the form
    assert w.form.state.review
    with qtbot.waitSignal(d.queue.review, timeout=60_000) as sig:
        click(qtbot, w.generate_button)
    return sig.args


@pytest.mark.slow
def test_review_then_decode_gives_the_plain_runs_video_and_the_queue_waits_behind(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    job_id, preview = _wait_for_review(d, qtbot, "a fox at dusk", seed=77)

    # the bar under the preview, with the last preview (linear map: 3 latent frames of 8×4)
    assert w.review_bar.isVisible() and w.review_bar.job_id == job_id
    assert "step 3/3" in w.review_bar.label.text() and "latent preview" in w.review_bar.label.text()
    assert (preview.step, preview.total, preview.decoder) == (3, 3, "linear")
    assert [(f.width(), f.height()) for f in preview.frames] == [(8, 4)] * 3
    assert w.preview_player.frames == preview.frames
    assert w.view_tabs.currentWidget() is w.preview_player
    assert d.queue.reviewing == job_id and "review" in w.stage_label.text()
    assert w.cancel_button.isEnabled()

    # the window stays live: a second job, the same seed without review, waits behind it
    w.review_check.setChecked(False)
    assert not w.form.state.review
    click(qtbot, w.generate_button)
    qtbot.wait(500)  # time enough for the worker to start it, were it not waiting
    assert [(j.id == job_id, j.state, j.review) for j in d.queue.jobs] == [
        (True, "running", True),
        (False, "queued", False),
    ]
    assert _outputs(home) == [] and d.queue.reviewing == job_id

    finished = []
    d.queue.finished.connect(lambda j, r: finished.append((j, r)))
    click(qtbot, w.review_bar.decode_button)
    assert not w.review_bar.isVisible() and d.queue.reviewing is None
    qtbot.waitUntil(lambda: len(finished) == 2, timeout=60_000)

    # the reviewed job first, then the plain one: the same frames (decoded back from the mp4s)
    (first, reviewed), (second, plain) = finished
    assert first == job_id and second != job_id
    a, b = iio.imread(reviewed.out), iio.imread(plain.out)
    assert a.shape == (9, 32, 64, 3) and np.array_equal(a, b)
    assert reviewed.seconds < 60  # the time spent waiting is not the run's
    saved = json.loads((home / "history.json").read_text())["entries"]
    assert [(e["id"], e["status"]) for e in saved] == [(first, "done"), (second, "done")]
    assert w.history_list.count() == 2 and w.history_list.item(1).text().startswith("✔")


def test_review_then_discard_writes_nothing_and_history_says_discarded(
    make_desktop, tiny, qtbot, home, tmp_path
):
    tae = tmp_path / "taew2_1.safetensors"
    random_tae_file(tae, z=16, patch=1, seed=3)
    d = make_desktop([tiny.official])
    w = d.window
    d.service.set_preview_decoder(str(tae))  # a tiny VAE: the review shows the video's frames
    job_id, preview = _wait_for_review(d, qtbot, "a fox in the rain")
    assert preview.decoder == "tiny-vae" and "tiny-VAE preview" in w.review_bar.label.text()
    assert [(f.width(), f.height()) for f in preview.frames] == [(64, 32)] * 9

    with qtbot.waitSignal(d.queue.discarded, timeout=30_000) as sig:
        click(qtbot, w.review_bar.discard_button)
    assert sig.args == [job_id]
    assert _outputs(home) == []  # no video, no settings sidecar
    assert not w.review_bar.isVisible() and d.queue.running is None and d.queue.jobs == []
    assert w.stage_label.text() == "Discarded — nothing was written"
    saved = json.loads((home / "history.json").read_text())["entries"]
    assert [(e["id"], e["status"], e["out"]) for e in saved] == [(job_id, "discarded", None)]
    assert w.history_list.item(0).text().startswith("⊘ discarded")
    assert json.loads((home / "queue.json").read_text())["jobs"] == []


def test_cancel_while_waiting_for_review_writes_nothing(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    job_id, _preview = _wait_for_review(d, qtbot, "a fox on a hill")
    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000) as sig:
        click(qtbot, w.cancel_button)
    assert sig.args == [job_id] and _outputs(home) == []
    assert not w.review_bar.isVisible() and d.queue.running is None
    saved = json.loads((home / "history.json").read_text())["entries"]
    assert [(e["id"], e["status"]) for e in saved] == [(job_id, "cancelled")]
    # a late answer to a job that is gone does nothing
    d.queue.decode(job_id)
    assert not d.service.decide(job_id, decode=True)


def test_closing_and_keeping_the_job_while_it_waits_for_review_writes_nothing(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    job_id, _preview = _wait_for_review(d, qtbot, "a fox by the sea")
    w.close()  # asked first, as for any running job
    assert w.close_question is not None and w.isVisible()
    with qtbot.waitSignal(d.queue.cancelled, timeout=30_000):
        click(qtbot, w.close_question.choices["keep"])
    assert not w.isVisible() and _outputs(home) == []
    assert d.shutdown(10_000), "the GPU thread did not stop after a job waited at review"
    jobs = json.loads((home / "queue.json").read_text())["jobs"]
    # the next start runs it again, and it waits for review again
    assert [(j["id"], j["state"], j["review"]) for j in jobs] == [(job_id, "queued", True)]


def test_finish_then_close_waits_for_the_review_and_closes_after_a_discard(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    job_id, _preview = _wait_for_review(d, qtbot, "a fox in the fog")
    w.close()
    click(qtbot, w.close_question.choices["finish"])
    assert w.isVisible() and w.review_bar.isVisible()  # the user can still answer
    with qtbot.waitSignal(d.queue.discarded, timeout=30_000) as sig:
        click(qtbot, w.review_bar.discard_button)
    assert sig.args == [job_id]
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)
    assert _outputs(home) == [] and d.queue.history[-1].status == "discarded"


def test_review_is_for_single_window_videos(make_desktop, tiny, qtbot):
    """Past one sliding window the checkbox is disabled with the reason; ticked beforehand it
    stays enabled (to untick it) and Add to queue refuses the job, marking it."""
    from wan_desktop.ui.review_bar import REVIEW_TIP, SINGLE_WINDOW_TIP

    d = make_desktop([tiny.official])
    w = d.window
    check = w.review_check
    fill_form(w, qtbot, "a long walk", seed=3, frames=9)
    assert check.isEnabled() and check.toolTip() == REVIEW_TIP
    w.frames_spin.setValue(97)  # the model's 81-frame windows: 2 of them
    assert w.long_panel.duration_label.text().endswith("2 windows")
    assert not check.isEnabled() and check.toolTip() == SINGLE_WINDOW_TIP
    w.frames_spin.setValue(9)
    assert check.isEnabled()
    check.setChecked(True)
    w.frames_spin.setValue(97)
    assert check.isEnabled() and check.isChecked()  # it can be unticked
    d.queue.set_paused(True)
    click(qtbot, w.generate_button)
    assert d.queue.jobs == []  # refused at add time, not skipped when it runs
    assert check.property("invalid") and "single-window videos" in check.toolTip()
    check.setChecked(False)
    assert not check.isEnabled()
    click(qtbot, w.generate_button)
    assert [j.review for j in d.queue.jobs] == [False]


def test_reuse_settings_restores_review_before_decode(make_desktop, tiny, qtbot, home):
    d = make_desktop([tiny.official])
    w = d.window
    d.queue.set_paused(True)  # the jobs wait; cancelled, each leaves a history entry
    for review in (True, False):
        fill_form(w, qtbot, f"review {review}", seed=4)
        w.review_check.setChecked(review)
        click(qtbot, w.generate_button)
        d.queue.cancel(d.queue.jobs[-1].id)
    assert [(e.prompt, e.review) for e in d.queue.history] == [
        ("review True", True),
        ("review False", False),
    ]
    saved = json.loads((home / "history.json").read_text())["entries"]
    assert [e["review"] for e in saved] == [True, False]  # kept across a restart
    seen = []
    for row in (0, 1, 0):
        w.history_list.setCurrentRow(row)
        entry = d.queue.history_entry(w.history_list.currentItem().data(256))
        click(qtbot, w.reuse_button)
        assert w.form.state.prompt == entry.prompt
        assert w.review_check.isChecked() is w.form.state.review is entry.review
        seen.append(entry.review)
    assert sorted(seen) == [False, True, True] or sorted(seen) == [False, False, True]
