"""A paused queue is plain to see (issue 16, item 7): the queue's header, its status-bar line and
the Pause button say "paused" and how many jobs wait, and the progress line never says "Done in …"
while jobs wait on a pause."""

from __future__ import annotations

import pytest

from tests.gui.conftest import click, fill_form


@pytest.mark.parametrize(
    ("running", "waiting", "paused", "text"),
    [
        (False, 0, False, ""),
        (True, 0, False, "▶ running"),
        (True, 2, False, "▶ running · 2 waiting"),
        (False, 0, True, "⏸ paused"),
        (True, 1, True, "⏸ paused · ▶ running · 1 waiting"),
        (False, 3, True, "⏸ paused · 3 waiting"),
    ],
)
def test_the_queue_summary_names_the_pause_the_running_job_and_the_waiting_ones(
    running, waiting, paused, text
):
    from wan_desktop.ui.viewmodels import queue_summary

    assert queue_summary(running=running, waiting=waiting, paused=paused) == text


def _shown(w) -> tuple[str, str]:
    label = w.queue_label.text() if w.queue_label.isVisibleTo(w) else ""
    return w.queue_box.title(), label


@pytest.mark.slow  # two jobs run
def test_pause_shows_in_the_queue_header_and_status_bar_and_done_is_not_said_while_jobs_wait(
    make_desktop, tiny, qtbot
):
    d = make_desktop([tiny.official])
    w, q = d.window, d.queue
    assert _shown(w) == ("Queue", "")
    click(qtbot, w.pause_button)
    assert _shown(w) == ("Queue — ⏸ paused", "⏸ paused")
    assert w.pause_button.isChecked() and w.pause_button.text() == "Resume"
    for seed in (1, 2):
        fill_form(w, qtbot, f"job {seed}", seed=seed, steps=6)
        click(qtbot, w.generate_button)
    assert _shown(w) == ("Queue — ⏸ paused · 2 waiting", "⏸ paused · 2 waiting")
    assert q.running is None
    assert w.stage_label.text() == "⏸ Paused · 2 waiting (Resume to go on)"

    click(qtbot, w.pause_button)  # resume: the first starts ...
    assert _shown(w) == ("Queue — ▶ running · 1 waiting", "▶ running · 1 waiting")
    with qtbot.waitSignal(q.finished, timeout=60_000):
        click(qtbot, w.pause_button)  # ... and pause while it runs: it finishes, none starts
        assert _shown(w)[0] == "Queue — ⏸ paused · ▶ running · 1 waiting"
    assert q.running is None and [j.request["seed"] for j in q.jobs] == [2]
    assert _shown(w) == ("Queue — ⏸ paused · 1 waiting", "⏸ paused · 1 waiting")
    assert w.stage_label.text() == "⏸ Paused · 1 waiting (Resume to go on)"

    with qtbot.waitSignal(q.finished, timeout=60_000):
        click(qtbot, w.pause_button)  # resume: the last one runs; then the queue is empty
    assert _shown(w) == ("Queue", "") and w.stage_label.text().startswith("Done in")
    assert not w.pause_button.isChecked() and w.pause_button.text() == "Pause"


def test_cancelling_the_running_job_of_a_paused_queue_puts_it_in_the_history(
    make_desktop, tiny, qtbot
):
    """A pause is not a close: the running job cancelled while paused is cancelled (before, a
    paused queue kept it queued as if the app were closing)."""
    d = make_desktop([tiny.official])
    w, q = d.window, d.queue
    fill_form(w, qtbot, "long", seed=9, steps=200)
    steps = []
    q.progress.connect(lambda p: steps.append(p.step) if p.step else None)
    click(qtbot, w.generate_button)
    qtbot.waitUntil(lambda: bool(steps), timeout=60_000)
    job_id = q.running
    click(qtbot, w.pause_button)
    with qtbot.waitSignal(q.cancelled, timeout=60_000):
        click(qtbot, w.cancel_button)
    assert q.jobs == [] and [(e.id, e.status) for e in q.history] == [(job_id, "cancelled")]
    assert _shown(w) == ("Queue — ⏸ paused", "⏸ paused")


def test_the_paused_note_goes_when_the_waiting_jobs_are_cancelled(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    w = d.window
    click(qtbot, w.pause_button)
    fill_form(w, qtbot, "never", seed=1)
    click(qtbot, w.generate_button)
    assert w.stage_label.text() == "⏸ Paused · 1 waiting (Resume to go on)"
    click(qtbot, w.cancel_all_button)
    assert w.stage_label.text() == "Idle" and _shown(w) == ("Queue — ⏸ paused", "⏸ paused")
    assert [e.status for e in d.queue.history] == ["cancelled"]
