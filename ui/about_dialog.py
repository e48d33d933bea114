"""Help → About: the app's version, the GPU, the runtimes installed, the data folder and the log
file (paths to copy, for a bug report). The facts that take time (nvidia-smi, package metadata)
are gathered on Qt's thread pool; the dialog opens at once with "…" in their place. The pool's
callable holds nothing of the dialog: its result goes out through the application's courier
QObject, connected to the dialog, so a dialog closed and deleted first is simply not called."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QThreadPool, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from wan_desktop import __version__

from . import system_info
from .path_dialog import PathField
from .paths import data_dir, log_dir

PENDING = "…"
NOT_INSTALLED = "not installed"


def log_file() -> Path:
    """The file the app logs to (the handler app.setup_logging installed), else the log folder."""
    for h in logging.getLogger("wan_desktop").handlers:
        if getattr(h, "_wan_desktop_gui", False) and hasattr(h, "baseFilename"):
            return Path(h.baseFilename)
    return log_dir()


class _Courier(QObject):
    """Carries facts from the pool thread to the GUI thread (a queued call). One lives as long
    as the application, a child of it: nothing on a pool thread ever holds, or drops the last
    reference to, a QObject that could be deleted there."""

    ready = Signal(int, object)  # (the asking dialog's ticket, AboutFacts)


_tickets = itertools.count(1)


def _courier() -> _Courier:
    app = QCoreApplication.instance()
    found = app.findChild(_Courier) if app is not None else None
    return found if found is not None else _Courier(app)


class AboutDialog(QDialog):
    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        gather: Callable[[], system_info.AboutFacts] = system_info.about_facts,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Wan Desktop")
        self.facts: system_info.AboutFacts | None = None
        title = QLabel(f"<b>Wan Desktop {__version__}</b><br>Wan2.1 / Wan2.2 video generation")
        self.version_label = QLabel(__version__)
        self.gpu_label = QLabel(PENDING)
        self.torch_label = QLabel(PENDING)
        self.ort_label = QLabel(PENDING)
        self.trt_rtx_label = QLabel(PENDING)
        self.trt_label = QLabel(PENDING)
        self.python_label = QLabel(PENDING)
        self.data_field = PathField(data_dir())
        self.log_field = PathField(log_file())
        self.form = QFormLayout()
        self.form.addRow("Version", self.version_label)
        self.form.addRow("GPU", self.gpu_label)
        self.form.addRow("PyTorch", self.torch_label)
        self.form.addRow("ONNX Runtime", self.ort_label)
        self.form.addRow("TensorRT for RTX", self.trt_rtx_label)
        self.form.addRow("TensorRT", self.trt_label)
        self.form.addRow("Python", self.python_label)
        self.form.addRow("Data folder", self.data_field)
        self.form.addRow("Log file", self.log_field)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(title)
        lay.addLayout(self.form)
        lay.addWidget(buttons)
        self.resize(620, self.sizeHint().height())
        # the pool's callable holds the app's courier, the ticket and ``gather``: never the
        # dialog, whose connection Qt drops when it is deleted
        courier, ticket = _courier(), next(_tickets)
        self._ticket = ticket
        courier.ready.connect(self._on_facts)
        QThreadPool.globalInstance().start(lambda: courier.ready.emit(ticket, gather()))

    def _on_facts(self, ticket: int, facts: system_info.AboutFacts) -> None:
        if ticket == self._ticket:  # the courier carries every dialog's facts
            self._show_facts(facts)

    def _show_facts(self, facts: system_info.AboutFacts) -> None:
        self.facts = facts
        self.gpu_label.setText(facts.gpu)
        self.torch_label.setText(facts.torch or NOT_INSTALLED)
        self.ort_label.setText(facts.onnxruntime or NOT_INSTALLED)
        self.trt_rtx_label.setText(facts.tensorrt_rtx or NOT_INSTALLED)
        self.trt_label.setText(facts.tensorrt or NOT_INSTALLED)
        self.python_label.setText(facts.python)
