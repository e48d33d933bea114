"""More than one GPU, in the window: the form's "GPUs" selector (how many processes, one per GPU,
run the job, and how they share it: RunOptions.parallel / parallel_mode), and the VRAM of each GPU
in the status bar.

The device list comes from a query (``system_info.visible_gpus``: nvidia-smi, no CUDA in this
process) run on Qt's thread pool every few seconds, never on the GUI thread; tests inject their
own list. The selector shows only when two or more devices are visible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

if TYPE_CHECKING:
    from .system_info import GpuMemory
    from .viewmodels import FormModel, FormState

log = logging.getLogger(__name__)

GpuQuery = Callable[[], Sequence["GpuMemory"]]

# wan_desktop.options.ParallelMode values, as the form shows them
MODES = (
    ("auto", "Auto", "The CFG split when the guidance is above 1 and the GPU count is even, "
     "sequence parallel across the rest"),
    ("cfg", "CFG split", "Cond and uncond on different GPUs: one small exchange per step; each "
     "GPU holds the whole model"),
    ("sequence", "Sequence (Ulysses)", "The video's tokens split across the GPUs: four "
     "exchanges per block, fast only over a fast link (NVLink)"),
)  # fmt: skip
COUNT_TIP = (
    "How many GPUs run this job, one process each. 1: this app's own GPU thread, as always. "
    "Two cards pay most with the CFG split (README: More than one GPU)."
)


class GpuPoller(QObject):
    """Reads the device list with ``query`` on Qt's thread pool, now and every ``interval_ms``;
    ``gpus_read`` arrives on the GUI thread. ``gpus`` is the last list (None before the first)."""

    gpus_read = Signal(object)  # tuple[GpuMemory, ...]
    _read = Signal(object)  # thread pool -> GUI thread (queued: this object lives there)

    def __init__(self, query: GpuQuery, *, interval_ms: int = 3000) -> None:
        super().__init__()
        self.query = query
        self.gpus: tuple[GpuMemory, ...] | None = None
        self._busy = False  # one query at a time: a slow nvidia-smi never piles up
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)
        self._read.connect(self._on_read)

    def start(self) -> None:
        self.poll()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def poll(self) -> None:
        if self._busy:
            return
        self._busy = True
        QThreadPool.globalInstance().start(self._query)

    def _query(self) -> None:
        try:
            gpus = tuple(self.query())
        except Exception:  # the status bar must not stop updating for a bad read
            log.exception("reading the GPU list failed")
            gpus = ()
        self._read.emit(gpus)

    @Slot(object)
    def _on_read(self, gpus: tuple[GpuMemory, ...]) -> None:
        self._busy = False
        self.gpus = gpus
        self.gpus_read.emit(gpus)


class GpuSelector(QWidget):
    """The form's GPUs row: the process count (1…N visible devices) and the parallel mode, bound
    both ways to ``form.state.parallel`` / ``parallel_mode``. ``available`` says whether the row
    should show (two or more devices); a count above the devices present is brought down."""

    available = Signal(bool)

    def __init__(self, form: FormModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.form = form
        self.devices: int | None = None  # None: not read yet
        self.count_combo = QComboBox()
        self.count_combo.setToolTip(COUNT_TIP)
        self.mode_combo = QComboBox()
        for value, label, tip in MODES:
            self.mode_combo.addItem(label, value)
            self.mode_combo.setItemData(
                self.mode_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole
            )
        self.mode_combo.setToolTip("How the GPUs share the job")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.count_combo)
        lay.addWidget(self.mode_combo, 1)
        self._fill_counts(1)
        self.count_combo.currentIndexChanged.connect(
            lambda _i: form.update(parallel=self.count_combo.currentData() or 1)
        )
        self.mode_combo.currentIndexChanged.connect(
            lambda _i: form.update(parallel_mode=self.mode_combo.currentData())
        )
        form.changed.connect(self._render)
        self._render(form.state)

    def set_gpus(self, gpus: Sequence[GpuMemory]) -> None:
        n = len(gpus)
        if n == self.devices:
            return
        self.devices = n
        self._fill_counts(max(1, n))
        self.available.emit(n >= 2)
        self._render(self.form.state)

    def _fill_counts(self, n: int) -> None:
        self.count_combo.blockSignals(True)
        self.count_combo.clear()
        for k in range(1, n + 1):
            self.count_combo.addItem("1 GPU" if k == 1 else f"{k} GPUs", k)
        self.count_combo.blockSignals(False)

    def _render(self, s: FormState) -> None:
        if self.devices is not None and s.parallel > max(1, self.devices):
            self.form.update(parallel=max(1, self.devices))  # renders again, within range
            return
        for combo, value in ((self.count_combo, s.parallel), (self.mode_combo, s.parallel_mode)):
            i = combo.findData(value)
            if i >= 0 and i != combo.currentIndex():
                combo.blockSignals(True)
                combo.setCurrentIndex(i)
                combo.blockSignals(False)
        self.mode_combo.setEnabled(s.parallel > 1)


class VramStatus(QWidget):
    """The status bar's VRAM of each GPU, used / total, one label per device (shown with two or
    more: the status line already names a single GPU)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.labels: list[QLabel] = []
        self._lay = QHBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self.setVisible(False)

    def show_gpus(self, gpus: Sequence[GpuMemory]) -> None:
        while len(self.labels) > len(gpus):
            self.labels.pop().deleteLater()
        while len(self.labels) < len(gpus):
            label = QLabel()
            self._lay.addWidget(label)
            self.labels.append(label)
        for label, g in zip(self.labels, gpus, strict=True):
            label.setText(g.text())
            label.setToolTip(f"{g.name}: {g.used_gb:.2f} GB of {g.total_gb:.2f} GB in use")
        self.setVisible(len(gpus) >= 2)
