"""ui/gui_thread_gc.py: while the desktop runs, cyclic garbage is collected on the GUI thread
only. Garbage made (and thresholds crossed) on another thread — the GPU worker's library scan,
where a collection once finalized a Qt wrapper and crashed the app — is collected by the GUI
thread's timer; a job's end (the service's ``garbage`` signal) collects everything there."""

from __future__ import annotations

import gc
import threading
from typing import ClassVar

from wan_desktop.ui.gui_thread_gc import GuiThreadGc


class Cycle:
    """Garbage in a reference cycle that notes the thread its finalizer ran on."""

    threads: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        Cycle.threads.append(threading.current_thread().name)


def _make_garbage_on_a_thread(n: int) -> None:
    def work() -> None:
        for _ in range(n):
            Cycle()
            [[] for _ in range(50)]  # allocations: the thresholds are crossed here

    t = threading.Thread(target=work, name="worker")
    t.start()
    t.join()


def test_garbage_made_on_a_worker_thread_is_collected_on_the_gui_thread(qtbot):
    Cycle.threads = []
    gc.collect()
    collector = GuiThreadGc(interval_ms=20)
    collector.start()
    try:
        assert not gc.isenabled()
        _make_garbage_on_a_thread(2000)
        assert Cycle.threads == []  # nothing collected on the worker
        qtbot.waitUntil(lambda: len(Cycle.threads) > 0, timeout=5000)
        collector.collect_all()
        assert len(Cycle.threads) == 2000
        assert set(Cycle.threads) == {threading.main_thread().name}
        assert collector.collections[0] > 0
    finally:
        collector.stop()
    assert gc.isenabled()


def test_without_it_the_worker_thread_collects(qtbot):
    # the hazard the desktop avoids: automatic collection runs on the allocating thread
    Cycle.threads = []
    gc.collect()
    assert gc.isenabled()
    _make_garbage_on_a_thread(2000)
    assert "worker" in set(Cycle.threads)


def test_the_desktop_collects_on_its_thread_and_gives_automatic_collection_back(
    make_desktop, qtbot
):
    d = make_desktop(wait_models=False)
    assert not gc.isenabled()
    Cycle.threads = []
    Cycle()
    threading.Thread(target=d.service.garbage.emit, name="gpu").start()  # a job ended there
    qtbot.waitUntil(lambda: Cycle.threads == [threading.main_thread().name], timeout=5000)
    assert d.shutdown(10_000)
    assert gc.isenabled()
