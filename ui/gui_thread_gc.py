"""Python's cyclic garbage collection on the GUI thread only, while the desktop runs.

Automatic collection runs on whichever thread happens to allocate when a threshold is crossed.
On the GPU worker or a pool thread it may finalize the Python wrapper of a Qt object held in a
cycle (a closed dialog and the lambda connected to it) and so delete the C++ object off its
thread, which crashes the app (seen: a segfault "Garbage-collecting" inside the library scan on
the GPU thread). :class:`GuiThreadGc` turns automatic collection off and collects from a timer on
the GUI thread instead, the generation CPython would have picked from the same thresholds.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 200


class GuiThreadGc(QObject):
    """Collects on the GUI thread (``start`` / ``stop``; the desktop's lifetime)."""

    def __init__(self, parent: QObject | None = None, *, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.tick)
        self._was_enabled = False
        self.collections = [0, 0, 0]  # per generation, by this object (tests, logs)

    def start(self) -> None:
        if self._timer.isActive():
            return
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        """Automatic collection back as it was (after one last collection here)."""
        if not self._timer.isActive():
            return
        self._timer.stop()
        self.tick()
        if self._was_enabled:
            gc.enable()

    def collect_all(self) -> None:
        """A full collection now (the GPU thread's job or build ended: its garbage)."""
        gc.collect()
        self.collections[2] += 1

    def tick(self) -> int | None:
        """Collect the oldest generation whose count passed its threshold (None: none did)."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] <= thresholds[0]:
            return None
        generation = 0
        for g in (1, 2):  # a collection of g-1 would push generation g's count past its own
            if counts[g] + 1 > thresholds[g]:
                generation = g
            else:
                break
        gc.collect(generation)
        self.collections[generation] += 1
        return generation
