"""Closing the window while a job runs asks first (issue 16, item 5): finish it, then close; stop
it and keep it queued; or cancel it ("Don't close" and Escape keep the window). A start that finds
jobs left from the last session says "resumed N queued jobs" in the status bar, not in a dialog."""

from __future__ import annotations

import json

import pytest

from tests.gui.conftest import click, fill_form


def _saved_queue(home) -> list[tuple[str, str]]:
    return [(j["id"], j["state"]) for j in json.loads((home / "queue.json").read_text())["jobs"]]


def _run_long_job(d, qtbot, *, steps: int = 200) -> str:
    """Add a job and wait until its first step is done; its id."""
    done = []
    d.queue.progress.connect(lambda p: done.append(p.step) if p.step else None)
    fill_form(d.window, qtbot, "a slow pan over a city", seed=6, steps=steps)
    click(qtbot, d.window.generate_button)
    qtbot.waitUntil(lambda: bool(done), timeout=60_000)
    assert d.queue.running is not None
    return d.queue.running


def _close_and_answer(w, qtbot, answer: str) -> None:
    w.close()
    box = w.close_question
    assert box is not None and box.isVisible() and w.isVisible()  # asked; not closed yet
    assert [b.text() for b in box.choices.values()] == [
        "Finish it, then close",
        "Stop, keep it queued",
        "Cancel the job",
        "Don't close",
    ]
    click(qtbot, box.choices[answer])


def test_closing_with_nothing_running_asks_nothing(make_desktop, tiny, qtbot):
    w = make_desktop([tiny.official]).window
    w.close()
    assert not w.isVisible() and w.close_question is None


def test_dont_close_keeps_the_window_and_the_job_running(make_desktop, tiny, qtbot):
    d = make_desktop([tiny.official])
    job_id = _run_long_job(d, qtbot)
    _close_and_answer(d.window, qtbot, "stay")
    assert d.window.isVisible() and d.queue.running == job_id and not d.queue.closing


@pytest.mark.slow  # two app starts, and the kept job runs again
def test_stop_and_keep_queues_the_job_and_the_next_start_says_it_resumed_it(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    job_id = _run_long_job(d, qtbot, steps=60)
    _close_and_answer(d.window, qtbot, "keep")
    assert not d.window.isVisible()
    assert d.shutdown(10_000)
    assert _saved_queue(home) == [(job_id, "queued")] and d.queue.history == []

    d2 = make_desktop([tiny.official], wait_models=False)
    w2 = d2.window
    assert w2.queue_label.text().startswith("resumed 1 queued job · ")
    assert w2.close_question is None and w2.error_box is None  # the status bar, no dialog
    with qtbot.waitSignal(d2.queue.finished, timeout=120_000) as sig:
        pass
    assert sig.args[0] == job_id


def test_cancel_the_job_puts_it_in_the_history_and_leaves_nothing_queued(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    job_id = _run_long_job(d, qtbot)
    _close_and_answer(d.window, qtbot, "cancel")
    assert not d.window.isVisible()
    assert d.shutdown(10_000)
    assert _saved_queue(home) == []
    assert [(e.id, e.status) for e in d.queue.history] == [(job_id, "cancelled")]
    assert not (home / "outputs").exists() or list((home / "outputs").iterdir()) == []


@pytest.mark.slow  # a job of 100 steps runs to its end
def test_finish_first_closes_when_the_job_is_done_and_keeps_the_waiting_ones(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w = d.window
    job_id = _run_long_job(d, qtbot, steps=100)
    fill_form(w, qtbot, "waiting", seed=7, steps=2)
    click(qtbot, w.generate_button)
    waiting = d.queue.jobs[1].id
    _close_and_answer(w, qtbot, "finish")
    assert w.isVisible() and d.queue.paused  # open until the job is done; nothing else starts
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=120_000)
    assert [(e.id, e.status) for e in d.queue.history] == [(job_id, "done")]
    assert d.shutdown(10_000)
    assert _saved_queue(home) == [(waiting, "queued")]
