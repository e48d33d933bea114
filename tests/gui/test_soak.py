"""Soak of the app's queue (issue 15, item 9): 30 jobs through the GPU service with pause,
reorder and cancel (queued and running jobs) interleaved, through the window's own buttons.
Every job that finished is a readable video; the rest are in the history as cancelled; the jobs
ran in the queue's order as it stood when they started."""

from __future__ import annotations

import imageio.v3 as iio
import pytest

from tests.gui.conftest import click, fill_form

pytestmark = pytest.mark.slow


def test_thirty_queued_jobs_with_pause_reorder_and_cancel_interleaved(
    make_desktop, tiny, qtbot, home
):
    d = make_desktop([tiny.official])
    w, q = d.window, d.queue
    started: list[int] = []
    q.progress.connect(
        lambda p: started.append(q.job(p.job_id).seed) if p.stage == "start" else None
    )

    def seeds() -> list[int]:
        return [j.seed for j in q.jobs]

    def select(seed: int) -> None:
        w.queue_list.setCurrentRow(seeds().index(seed))

    click(qtbot, w.pause_button)  # queue everything first
    for seed in range(100, 130):
        fill_form(w, qtbot, f"soak {seed}", seed=seed, steps=60 if seed == 125 else 2)
        click(qtbot, w.generate_button)
    assert seeds() == list(range(100, 130)) and q.running is None
    select(105)
    click(qtbot, w.up_button)  # 105 before 104
    select(120)
    click(qtbot, w.up_button)
    click(qtbot, w.up_button)  # 120 before 118
    for seed in (110, 111):
        select(seed)
        click(qtbot, w.cancel_job_button)
    first = seeds()
    assert first[4:6] == [105, 104] and first.index(120) == first.index(119) - 2
    assert 110 not in first and 111 not in first and len(first) == 28

    click(qtbot, w.pause_button)  # resume
    qtbot.waitUntil(lambda: len(started) >= 6, timeout=120_000)
    click(qtbot, w.pause_button)  # pause: the running job finishes, no other starts
    qtbot.waitUntil(lambda: q.running is None, timeout=60_000)
    assert started == first[: len(started)]
    # while paused: move the last job to the front, cancel one more queued job
    last = seeds()[-1]
    for _ in range(len(seeds()) - 1):
        select(last)
        click(qtbot, w.up_button)
    select(seeds()[3])
    cancelled_while_paused = seeds()[3]
    click(qtbot, w.cancel_job_button)
    second = seeds()
    assert second[0] == last and cancelled_while_paused not in second
    click(qtbot, w.pause_button)  # resume; cancel 125 (60 steps) while it runs
    # started on the GPU thread (the queue marks a job running before the service takes it up)
    qtbot.waitUntil(lambda: 125 in started, timeout=120_000)
    running_seed = 125
    with qtbot.waitSignal(q.cancelled, timeout=60_000):
        select(running_seed)
        click(qtbot, w.cancel_job_button)
    qtbot.waitUntil(lambda: q.running is None and not q.jobs, timeout=240_000)

    assert started[len(started) - len(second) :] == second  # the queue's order after the pause
    done = [e for e in q.history if e.status == "done"]
    cancelled = sorted(e.seed for e in q.history if e.status == "cancelled")
    assert cancelled == sorted([110, 111, cancelled_while_paused, running_seed])
    assert sorted(e.seed for e in done) == sorted(set(range(100, 130)) - set(cancelled))
    assert len(done) == 26 and [e.seed for e in done] == [s for s in started if s != running_seed]
    for e in done:
        assert iio.imread(e.out).shape == (9, 32, 64, 3), e.out
    print(f"soak: {len(done)} done, {len(cancelled)} cancelled, started order {started}")
