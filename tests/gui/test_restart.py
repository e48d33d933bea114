"""A crash keeps the work: the app is killed (SIGKILL) in the middle of a job; the next start shows
the same queue (the interrupted job first, marked recovered) and history, and runs the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import pytest

pytestmark = (
    pytest.mark.slow
)  # GUI restarts: the app runs in subprocesses, killed and started again


def _job(job_id: str, seed: int, steps: int, model: Path, home: Path):
    from wan_desktop.ui.store import Job

    request = {
        "prompt": f"job {seed}",
        "width": 64,
        "height": 32,
        "frames": 9,
        "steps": steps,
        "seed": seed,
    }
    return Job(
        id=job_id,
        request=request,
        options={"model": str(model)},
        out=str(home / "outputs" / f"{job_id}.mp4"),
    )


def _queue(home: Path) -> list[dict]:
    try:
        return json.loads((home / "queue.json").read_text())["jobs"]
    except (FileNotFoundError, ValueError):  # not written yet / being replaced
        return []


def _history(home: Path) -> list[dict]:
    try:
        return json.loads((home / "history.json").read_text())["entries"]
    except (FileNotFoundError, ValueError):
        return []


def test_killed_mid_job_restart_keeps_queue_and_history_and_reruns_the_job(
    make_desktop, tiny, qtbot, home
):
    """The real `wan-desktop` command (offscreen) runs a saved queue of three; SIGKILL while the
    second runs; a new window on the same data dir has the history, and the queue with the
    interrupted job first, and runs it again."""
    from wan_desktop.ui.settings import AppSettings, save_settings
    from wan_desktop.ui.store import JobStore

    (home / "outputs").mkdir(parents=True)
    save_settings(AppSettings(model_dirs=(str(tiny.official),)))
    JobStore(home).save_queue(
        [
            _job("a", 1, 2, tiny.official, home),
            _job("b", 2, 50, tiny.official, home),
            _job("c", 3, 2, tiny.official, home),
        ]
    )
    env = {**os.environ, "WAN_DESKTOP_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    t_start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan_desktop.cli"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        # wait until the first job is in the history and the second one runs
        while not (
            [e["id"] for e in _history(home)] == ["a"]
            and [(j["id"], j["state"]) for j in _queue(home)][:1] == [("b", "running")]
        ):
            assert time.monotonic() < deadline, "the app did not get to the second job"
            try:  # waits a little; an exit here is a crash of the app
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"wan-desktop exited with {proc.returncode}: {proc.stderr.read()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    print(f"killed {time.monotonic() - t_start:.1f} s after start")
    # on disk after the kill: the running job is still listed as running, the history is kept
    saved = _queue(home)
    assert [(j["id"], j["state"]) for j in saved] == [("b", "running"), ("c", "queued")], (
        "the second job finished before the kill (this machine is very slow): rerun"
    )
    history = _history(home)
    assert [(e["id"], e["status"]) for e in history] == [("a", "done")]
    assert iio.imread(history[0]["out"]).shape == (9, 32, 64, 3)
    assert sorted(p.name for p in (home / "outputs").iterdir()) == ["a.mp4", "a.mp4.json"]

    # restart: same data dir, a new window
    d = make_desktop([tiny.official], wait_models=False)
    w = d.window
    assert [j.id for j in d.queue.jobs] == ["b", "c"]
    assert d.queue.jobs[0].recovered  # it was running when the app died
    assert w.queue_list.count() == 2 and "recovered" in w.queue_list.item(0).text()
    assert w.history_list.count() == 1 and "seed 1" in w.history_list.item(0).text()
    # ... and the queue runs again, the interrupted job first
    qtbot.waitUntil(lambda: len(d.queue.history) == 3, timeout=90_000)
    assert [(e.id, e.status) for e in d.queue.history] == [
        ("a", "done"),
        ("b", "done"),
        ("c", "done"),
    ]
    assert iio.imread(d.queue.history[1].out).shape == (9, 32, 64, 3)
    assert _queue(home) == []
    print("seconds per job:", [e.seconds for e in d.queue.history])


def test_closing_the_app_mid_job_stops_it_and_the_next_start_runs_it(
    make_desktop, tiny, qtbot, home
):
    from tests.gui.conftest import click, fill_form

    d = make_desktop([tiny.official])
    fill_form(d.window, qtbot, "interrupted", seed=6, steps=80)
    steps = []
    d.queue.progress.connect(lambda p: steps.append(p.step) if p.step else None)
    click(qtbot, d.window.generate_button)
    qtbot.waitUntil(lambda: bool(steps), timeout=60_000)
    job_id = d.queue.running
    t0 = time.monotonic()
    assert d.shutdown(10_000)  # the GPU thread ends within a step, never killed
    print(f"GPU thread stopped {time.monotonic() - t0:.2f} s after close")
    d.window.close()
    saved = json.loads((home / "queue.json").read_text())["jobs"]
    assert [(j["id"], j["state"], j["recovered"]) for j in saved] == [(job_id, "queued", False)]
    assert not (home / "outputs").exists() or list((home / "outputs").iterdir()) == []

    d2 = make_desktop([tiny.official], wait_models=False)
    assert d2.window.queue_list.count() == 1
    assert "recovered" not in d2.window.queue_list.item(0).text()
    with qtbot.waitSignal(d2.queue.finished, timeout=90_000) as sig:
        pass
    assert sig.args[0] == job_id and Path(sig.args[1].out).is_file()
