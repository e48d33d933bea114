"""More than one GPU in the app: the form's GPUs selector (shown with two or more visible devices)
sets the job's RunOptions.parallel / parallel_mode, which the saved queue keeps across a restart;
the status bar shows the VRAM of each GPU. The device list is injected (Desktop(gpus=...)), as
nvidia-smi would give it; the real query's parsing is checked on nvidia-smi's text."""

from __future__ import annotations

import json

import pytest

from tests.gui.conftest import click, fill_form

pytest.importorskip("PySide6")

# nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total --format=csv,noheader,nounits
SMI = (
    "0, GPU-aaaa1111, NVIDIA GeForce RTX 4090, 1024, 24564\n"
    "1, GPU-bbbb2222, NVIDIA GeForce RTX 4090, 20480, 24564\n"
    "2, GPU-cccc3333, NVIDIA RTX A4000, 512, 16376\n"
)


class FakeGpus:
    """The injected device query: whatever list the test sets, read on Qt's thread pool."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def __call__(self):
        from wan_desktop.ui.system_info import parse_gpus

        self.calls += 1
        return parse_gpus(self.text, None)


def smi(n: int) -> str:
    return "".join(SMI.splitlines(keepends=True)[:n])


@pytest.fixture
def desktop(qtbot, home, tiny):
    """``desktop(gpus)``: the app on the tiny model with an injected device list, shown, its
    first device read done; shut down at the end."""
    from dataclasses import replace

    from wan_desktop.ui.app import setup_logging
    from wan_desktop.ui.desktop import Desktop
    from wan_desktop.ui.settings import load_settings

    made = []

    def make(gpus, *, start: bool = True):
        setup_logging()
        settings = replace(load_settings(), model_dirs=(str(tiny.official),))
        d = Desktop(settings, gpus=gpus)
        made.append(d)
        qtbot.addWidget(d.window)
        if start:
            with qtbot.waitSignal(d.window.models_changed, timeout=30_000):
                d.start(first_run_dialog=False)
        qtbot.waitUntil(lambda: d.window.gpu_poller.gpus is not None, timeout=10_000)
        return d

    yield make
    for d in made:
        assert d.shutdown(10_000), "the GPU thread did not stop"
        d.window.close()


def test_nvidia_smi_lines_become_the_devices_cuda_shows_this_process():
    from wan_desktop.ui.system_info import GpuMemory, parse_gpus

    all3 = parse_gpus(SMI, None)
    assert [g.name for g in all3] == ["NVIDIA GeForce RTX 4090"] * 2 + ["NVIDIA RTX A4000"]
    assert all3[1] == GpuMemory(index=1, name="NVIDIA GeForce RTX 4090", used_gb=20.0,
                                total_gb=24564 / 1024)  # fmt: skip
    assert all3[1].text() == "GPU 1  20.0 / 24.0 GB"
    # CUDA_VISIBLE_DEVICES renumbers from 0 in its own order; a UUID prefix names a device too
    two = parse_gpus(SMI, "2,GPU-aaaa")
    assert [(g.index, g.name, g.used_gb) for g in two] == [
        (0, "NVIDIA RTX A4000", 0.5),
        (1, "NVIDIA GeForce RTX 4090", 1.0),
    ]
    assert parse_gpus(SMI, "") == ()  # no device for this process
    assert len(parse_gpus(SMI, "1,7,0")) == 1  # CUDA stops at the first invalid entry
    assert parse_gpus("No devices were found\n", None) == ()


@pytest.mark.parametrize("n", [0, 1])
def test_the_selector_is_hidden_with_no_gpu_or_one(desktop, qtbot, n):
    d = desktop(FakeGpus(smi(n)))
    w = d.window
    assert len(w.gpu_poller.gpus) == n
    assert not w.gpu_selector.isVisible() and not w.gpu_selector.isVisibleTo(w)
    assert w.form.state.parallel == 1
    assert not w.vram_status.isVisible()  # one GPU: the status line already names it
    # a job from this form runs in this process, as always
    w.pause_button.setChecked(True)
    fill_form(w, qtbot, "one gpu", seed=1)
    click(qtbot, w.generate_button)
    assert d.queue.jobs[-1].options["parallel"] == 1


def test_two_gpus_the_chosen_count_and_mode_reach_the_job_and_survive_a_restart(
    desktop, qtbot, home
):
    from wan_desktop.options import ParallelMode, RunOptions

    gpus = FakeGpus(smi(2))
    d = desktop(gpus)
    w = d.window
    sel = w.gpu_selector
    qtbot.waitUntil(sel.isVisible, timeout=5000)
    assert [sel.count_combo.itemText(i) for i in range(sel.count_combo.count())] == [
        "1 GPU",
        "2 GPUs",
    ]
    assert [sel.mode_combo.itemData(i) for i in range(sel.mode_combo.count())] == [
        m.value for m in ParallelMode
    ]
    assert not sel.mode_combo.isEnabled()  # one process: no mode to choose

    w.pause_button.setChecked(True)  # the job waits in the queue (it is what the test reads)
    fill_form(w, qtbot, "two gpus", seed=7)
    sel.count_combo.setCurrentIndex(1)
    assert w.form.state.parallel == 2 and sel.mode_combo.isEnabled()
    sel.mode_combo.setCurrentIndex(sel.mode_combo.findData("sequence"))
    assert w.form.state.parallel_mode == "sequence"
    click(qtbot, w.generate_button)
    job = d.queue.jobs[-1]
    assert (job.options["parallel"], job.options["parallel_mode"]) == (2, "sequence")
    assert "2 GPUs (sequence)" in w.queue_list.item(w.queue_list.count() - 1).text()
    # what the GPU worker hands to run.prepare / run.execute (service._generate)
    options = RunOptions.from_dict(job.options)
    assert (options.parallel, options.parallel_mode) == (2, ParallelMode.SEQUENCE)
    saved = json.loads((home / "queue.json").read_text())["jobs"]
    assert [(j["options"]["parallel"], j["options"]["parallel_mode"]) for j in saved] == [
        (2, "sequence")
    ]
    assert d.shutdown(10_000)
    d.window.close()

    # the next start: the saved queue has the job with its GPUs, and Reuse puts them in the form
    d2 = desktop(FakeGpus(smi(2)), start=False)
    (again,) = [j for j in d2.queue.jobs if j.id == job.id]
    assert (again.options["parallel"], again.options["parallel_mode"]) == (2, "sequence")
    d2.window.form.load_settings(again.request, again.options)
    assert d2.window.gpu_selector.count_combo.currentData() == 2
    assert d2.window.gpu_selector.mode_combo.currentData() == "sequence"


def test_a_count_above_the_devices_present_comes_down(desktop, qtbot):
    """A job reused from a 3-GPU machine on a 2-GPU one: the form asks for 2; and for 1 (the
    selector hidden) when a GPU goes away."""
    gpus = FakeGpus(smi(2))
    d = desktop(gpus)
    w = d.window
    w.form.update(parallel=3, parallel_mode="cfg")
    assert w.form.state.parallel == 2 and w.gpu_selector.count_combo.currentData() == 2
    gpus.text = smi(1)
    w.gpu_poller.poll()
    qtbot.waitUntil(lambda: len(w.gpu_poller.gpus) == 1, timeout=5000)
    assert w.form.state.parallel == 1 and not w.gpu_selector.isVisible()


def test_the_status_bar_shows_the_vram_of_each_gpu_and_follows_it(desktop, qtbot):
    gpus = FakeGpus(smi(3))
    d = desktop(gpus)
    w = d.window
    vram = w.vram_status
    qtbot.waitUntil(vram.isVisible, timeout=5000)
    assert vram.parent() is not None and w.statusBar().isAncestorOf(vram)
    assert [label.text() for label in vram.labels] == [
        "GPU 0  1.0 / 24.0 GB",
        "GPU 1  20.0 / 24.0 GB",
        "GPU 2  0.5 / 16.0 GB",
    ]
    assert "RTX A4000" in vram.labels[2].toolTip()
    # the next reading (the timer's, every 3 s; here asked at once) updates the same labels
    gpus.text = SMI.replace("20480", "4096")
    calls = gpus.calls
    w.gpu_poller.poll()
    qtbot.waitUntil(lambda: vram.labels[1].text() == "GPU 1  4.0 / 24.0 GB", timeout=5000)
    assert gpus.calls == calls + 1 and len(vram.labels) == 3
    assert w.gpu_poller.timer.isActive() and w.gpu_poller.timer.interval() == 3000
    # the selector offers up to the three
    assert w.gpu_selector.count_combo.count() == 3


@pytest.mark.slow  # two gloo processes load the tiny model
def test_a_two_gpu_job_runs_on_two_processes_and_makes_the_single_process_video(
    desktop, qtbot, home, monkeypatch
):
    """The GPU worker hands the job's options to run.execute, which runs it on two processes (on
    --device cpu: gloo, as here); the video equals the one process makes from the same seed."""
    import imageio.v3 as iio
    import numpy as np

    from wan_desktop.parallel import launch

    launched = []  # the real launcher, its calls recorded: (world,) per parallel run

    def recording(job, world, *args, **kw):
        launched.append(world)
        return real(job, world, *args, **kw)

    real = launch.launch
    monkeypatch.setattr(launch, "launch", recording)
    d = desktop(FakeGpus(smi(2)))
    w = d.window
    qtbot.waitUntil(w.gpu_selector.isVisible, timeout=5000)
    outs = {}
    for count in (2, 1):
        fill_form(w, qtbot, "a red fox in the snow", seed=99)
        w.gpu_selector.count_combo.setCurrentIndex(count - 1)
        w.gpu_selector.mode_combo.setCurrentIndex(w.gpu_selector.mode_combo.findData("cfg"))
        with qtbot.waitSignal(d.queue.finished, timeout=240_000) as done:
            click(qtbot, w.generate_button)
        job_id, result = done.args
        (entry,) = [e for e in d.queue.history if e.id == job_id]
        assert entry.options["parallel"] == count
        outs[count] = iio.imread(result.out).astype(np.float64)
        assert launched == [2]  # the two-GPU job started one more process; the other none
    mse = float(np.mean((outs[2] - outs[1]) ** 2))
    assert outs[2].shape == outs[1].shape
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 60  # identical here (mse 0)


def test_the_status_line_is_read_off_the_gui_thread_and_names_two_gpus_once(
    desktop, qtbot, monkeypatch
):
    import threading

    from wan_desktop.ui import system_info

    gui = threading.current_thread()
    threads: list[threading.Thread] = []

    class Recording(FakeGpus):
        def __call__(self):
            threads.append(threading.current_thread())
            return super().__call__()

    def no_smi_here():  # the old synchronous nvidia-smi read must not run at all
        threads.append(threading.current_thread())
        raise AssertionError("nvidia-smi read for the status line")

    monkeypatch.setattr(system_info, "_gpu", no_smi_here)
    query = Recording(smi(2))
    d = desktop(query)
    w = d.window
    qtbot.waitUntil(lambda: "2 GPUs" in w.system_label.text(), timeout=10_000)
    calls = query.calls
    w.refresh_status()  # the timer's work: a new read, on the pool
    qtbot.waitUntil(lambda: query.calls > calls, timeout=10_000)
    assert threads and all(t is not gui for t in threads)
    # GPU 0 once: the status line gives the count, the VRAM labels one line per device
    texts = [w.system_label.text(), *(label.text() for label in w.vram_status.labels)]
    assert sum(t.count("GPU 0") for t in texts) == 1 and sum("GPU 1" in t for t in texts) == 1
    assert "RTX 4090" not in w.system_label.text()
    assert w.status_timer.isActive() and w.status_timer.interval() == 3000


def test_closing_the_window_waits_for_a_gpu_read_in_flight(desktop, qtbot):
    """A read on Qt's thread pool emits into the poller, which goes with the window: closing waits
    for it (a read that outlived the window crashed the process now and then)."""
    import threading
    import time

    gpus = FakeGpus(smi(2))
    d = desktop(gpus)
    started, done = threading.Event(), []

    def slow():
        started.set()
        time.sleep(0.5)
        done.append(time.monotonic())
        return gpus()

    d.window.gpu_poller.query = slow
    d.window.gpu_poller._busy = False
    d.window.gpu_poller.poll()
    assert started.wait(5)
    assert d.shutdown(10_000)
    d.window.close()
    closed = time.monotonic()
    assert done and done[0] <= closed  # the read ended before close() returned
