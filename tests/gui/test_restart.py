"""A crash keeps the work: the app is killed (SIGKILL) in the middle of a job; the next start shows
the same queue (the interrupted job first, marked recovered) and history, and runs the queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imageio.v3 as iio

APP = textwrap.dedent("""
    import os, sys
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    from PySide6.QtCore import QObject
    from wan_desktop.ui.app import setup_logging
    from wan_desktop.ui.desktop import Desktop
    from wan_desktop.ui.settings import AppSettings
    setup_logging()
    d = Desktop(AppSettings(model_dirs=(sys.argv[1],), preview_interval_s=0.0))

    class Driver(QObject):  # a QObject, so the slot runs on the GUI thread
        def on_models(self, entries):
            for seed, steps in ((1, 2), (2, 100), (3, 2)):
                d.window.form.update(prompt=f"job {seed}", width=64, height=32, frames=9,
                                     steps=steps, seed=seed, random_seed=False)
                d.window.enqueue()

    driver = Driver()
    d.service.models_scanned.connect(driver.on_models)
    d.queue.progress.connect(lambda p: print("step", p.job_id, p.step, flush=True)
                             if p.step else None)
    d.queue.finished.connect(lambda j, r: print("finished", j, flush=True))
    d.start(first_run_dialog=False)
    app.exec()
""")


def test_killed_mid_job_restart_keeps_queue_and_history_and_reruns_the_job(
        make_desktop, tiny, qtbot, home):
    env = {**os.environ, "WAN_DESKTOP_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-c", APP, str(tiny.official)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    finished, running = [], None
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # blocks per line; the app prints every step
            parts = line.split()
            if parts[:1] == ["finished"]:
                finished.append(parts[1])
            elif parts[:1] == ["step"] and finished and int(parts[2]) >= 3:
                running = parts[1]  # the second job is denoising: kill the app now
                break
            assert time.monotonic() < deadline, "the app did not get to the second job"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert len(finished) == 1 and running is not None

    # on disk after the kill: the running job is still listed, as running
    saved = json.loads((home / "queue.json").read_text())["jobs"]
    assert [(j["id"], j["state"]) for j in saved][:1] == [(running, "running")]
    assert [j["request"]["seed"] for j in saved] == [2, 3]
    history = json.loads((home / "history.json").read_text())["entries"]
    assert [(e["id"], e["status"]) for e in history] == [(finished[0], "done")]
    assert not any(p.name.startswith(".") for p in (home / "outputs").iterdir())  # no partials

    # restart: same data dir, a new window
    d = make_desktop([tiny.official], wait_models=False)
    w = d.window
    assert [j.id for j in d.queue.jobs] == [j["id"] for j in saved]
    assert d.queue.jobs[0].recovered  # it was running when the app died
    assert w.queue_list.count() == 2 and "recovered" in w.queue_list.item(0).text()
    assert w.history_list.count() == 1 and "seed 1" in w.history_list.item(0).text()
    # ... and the queue runs again, the interrupted job first
    qtbot.waitUntil(lambda: len(d.queue.history) == 3, timeout=90_000)
    assert [(e.seed, e.status) for e in d.queue.history] == [(1, "done"), (2, "done"),
                                                             (3, "done")]
    assert iio.imread(d.queue.history[1].out).shape == (9, 32, 64, 3)
    assert json.loads((home / "queue.json").read_text())["jobs"] == []
    assert Path(d.queue.history[1].out).name.endswith(f"{running}.mp4")


def test_closing_the_app_mid_job_stops_it_and_the_next_start_runs_it(make_desktop, tiny, qtbot,
                                                                      home):
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


def test_the_wan_desktop_command_opens_the_app_and_runs_the_saved_queue(tiny, home):
    """`wan-desktop` with no arguments (offscreen): the real entry point finds the model from the
    saved settings and runs the job waiting in the saved queue."""
    from wan_desktop.ui.settings import AppSettings, save_settings
    from wan_desktop.ui.store import Job, JobStore

    home.mkdir(parents=True, exist_ok=True)
    save_settings(AppSettings(model_dirs=(str(tiny.official),)))
    out = home / "from-the-queue.mp4"
    request = {"prompt": "queued before start", "width": 64, "height": 32, "frames": 9,
               "steps": 2, "seed": 99}
    JobStore(home).save_queue([Job(id="q1", request=request,
                                   options={"model": str(tiny.official)}, out=str(out))])
    env = {**os.environ, "WAN_DESKTOP_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "wan_desktop.cli"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history = home / "history.json"
    try:
        deadline = time.monotonic() + 120
        while not (history.is_file() and "q1" in history.read_text()):
            assert time.monotonic() < deadline, "the queued job did not finish"
            try:  # the app never exits by itself: this only waits a little, and sees a crash
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"wan-desktop exited with {proc.returncode}: {proc.stderr.read()}")
    finally:
        proc.kill()
        proc.wait(30)
    entry = json.loads(history.read_text())["entries"][0]
    assert entry["status"] == "done" and entry["out"] == str(out)
    assert entry["request"]["seed"] == 99 and entry["request"]["sampler"] == "unipc"
    assert iio.imread(out).shape == (9, 32, 64, 3)
