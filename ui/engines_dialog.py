"""Tools → Engines…: the ONNX / TensorRT engines built for the selected model, whether each fits
this GPU (the cache's own check and reason, from engine_folders.py), and a build with progress,
log and cancel that runs in the GPU service's queue (ONNX export, FP8/INT8 calibration and TensorRT
builds use the GPU, which has one thread; the dialog only talks to the service). Widgets only: the
cache, the checkpoints and the exporter are reached through engine_folders.py and the service.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from wan_desktop.errors import WanError

from .engine_folders import (
    COMPONENTS,
    PRESETS,
    export_available,
    list_engine_rows,
    make_export_job,
)
from .library import ModelEntry
from .settings import AppSettings

if TYPE_CHECKING:
    from .service import GpuService, UserError

log = logging.getLogger(__name__)


class EnginesDialog(QDialog):
    """The build runs in the GPU service's queue (``GpuService.submit_export``), never on a thread
    of its own: a build queued while a generation runs waits for it ("Waiting…"), and a generation
    queued during a build waits for the build. The dialog only sends requests and shows the
    ``export_*`` signals of its own build id."""

    COLUMNS = ("Engine folder", "Components", "Precision", "Presets", "Backend", "Fits here")
    # a build finished (the engine folder): the main window offers its backend in "Run on" at once
    built = Signal(str)

    def __init__(
        self,
        settings: AppSettings,
        entry: ModelEntry | None,
        service: GpuService,
        parent: Any = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Engines")
        self.resize(820, 560)
        self.settings = settings
        self.entry = entry
        self.service = service
        self.build_id: str | None = None  # the build this dialog waits for, queued or running
        self.started = False  # the service began it (until then it waits for the running job)
        self.result_path: Path | None = None
        self.error: UserError | None = None

        model = (
            f"{Path(entry.path).name} ({entry.variant})"
            if entry and entry.variant
            else "no model selected"
        )
        head = QLabel(f"Model: {model}\nEngine folder: {settings.engines}")
        head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)

        build = QGroupBox("Build engines for this model")
        self.component_boxes = {c: QCheckBox(c.upper()) for c in COMPONENTS}
        for box in self.component_boxes.values():  # what a run loads from an engine folder
            box.setChecked(True)
        self.preset_boxes = {p: QCheckBox(p) for p in PRESETS}
        self.preset_boxes["480p"].setChecked(True)
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["bf16", "fp16", "fp8", "int8", "fp32"])
        self.kind_combo = QComboBox()
        self.kind_combo.addItem("ONNX Runtime", "onnx")
        self.kind_combo.addItem("TensorRT", "tensorrt")
        comp_row = QHBoxLayout()
        for box in self.component_boxes.values():
            comp_row.addWidget(box)
        preset_row = QHBoxLayout()
        for box in self.preset_boxes.values():
            preset_row.addWidget(box)
        bform = QFormLayout(build)
        bform.addRow("Components", comp_row)
        bform.addRow("Presets", preset_row)
        bform.addRow("Precision", self.precision_combo)
        bform.addRow("Engine", self.kind_combo)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.stage = QLabel("")
        self.stage.setWordWrap(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.build_button = QPushButton("Build")
        self.cancel_button = QPushButton("Cancel build")
        self.cancel_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.build_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(head)
        lay.addWidget(self.table, 1)
        lay.addWidget(build)
        lay.addWidget(self.stage)
        lay.addWidget(self.progress)
        lay.addWidget(self.log_view, 1)
        lay.addLayout(buttons)
        self.build_button.clicked.connect(self.build)
        self.cancel_button.clicked.connect(self.cancel_build)
        self.close_button.clicked.connect(self.reject)
        # the service lives on the GPU thread: these arrive queued, on this (GUI) thread
        service.export_started.connect(self._on_started)
        service.export_progress.connect(self._on_progress)
        service.export_log.connect(self._on_log)
        service.export_finished.connect(self._on_done)
        service.export_failed.connect(self._on_failed)
        service.export_cancelled.connect(self._on_cancelled)
        if not export_available():
            self.build_button.setEnabled(False)
            self.stage.setText(
                "The export toolchain is not installed (pip install 'wan-desktop[export]')."
            )
        elif entry is None or not entry.ok:
            self.build_button.setEnabled(False)
            self.stage.setText("Pick a usable model first.")
        self.refresh()

    def refresh(self) -> None:
        try:
            self.rows = list_engine_rows(self.settings.engines, self.entry)
        except Exception as e:  # a damaged engine folder: say so, keep the dialog usable
            log.exception("listing engines failed")
            self.rows = []
            self.stage.setText(f"Cannot list engines: {e}")
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            fits = "yes" if r.ok else f"no — {r.reason}"
            cells = (r.name, r.components, r.precision, r.presets, ", ".join(r.backends), fits)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(r.path if c == 0 else r.reason if c == 5 else text)
                self.table.setItem(i, c, item)

    def make_job(self) -> Any:
        assert self.entry is not None
        return make_export_job(
            self.settings.engines,
            self.entry,
            components=tuple(c for c, b in self.component_boxes.items() if b.isChecked()),
            presets=tuple(n for n, b in self.preset_boxes.items() if b.isChecked()),
            precision=self.precision_combo.currentText(),
            engine=self.kind_combo.currentData(),
        )

    def build(self) -> None:
        if self.build_id is not None:
            return
        try:
            job = self.make_job()
        except WanError as e:
            self.stage.setText(f"Cannot build: {e.one_line()}")
            return
        except ValueError as e:
            self.stage.setText(f"Cannot build: {e}")
            return
        self.settings.engines.mkdir(parents=True, exist_ok=True)
        self.log_view.clear()
        self.progress.setValue(0)
        self.result_path, self.error = None, None
        self.build_id, self.started = f"build-{uuid.uuid4().hex[:12]}", False
        self.build_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        # replaced by the first stage as soon as the GPU thread takes it (at once when idle)
        self.stage.setText("Waiting for the running job to finish…")
        self.service.submit_export(self.build_id, job)

    def cancel_build(self) -> None:
        if self.build_id is None:
            return
        self.service.cancel(self.build_id)  # thread-safe: only sets the build's token
        if self.started:
            self.stage.setText("Cancelling…")
        else:  # still queued: the service will drop it unstarted (its token is checked first)
            self._end("Cancelled.")

    def _mine(self, build_id: str) -> bool:
        return build_id == self.build_id

    def _on_started(self, build_id: str) -> None:
        if self._mine(build_id):
            self.started = True
            self.stage.setText("Building…")

    def _on_progress(self, build_id: str, stage: str, fraction: float) -> None:
        if self._mine(build_id):
            self.stage.setText(stage)
            self.progress.setValue(round(max(0.0, min(1.0, fraction)) * 1000))

    def _on_log(self, build_id: str, line: str) -> None:
        if self._mine(build_id):
            self.log_view.appendPlainText(line)

    def _end(self, text: str) -> None:
        self.stage.setText(text)
        self.build_id, self.started = None, False
        self.build_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh()

    def _on_done(self, build_id: str, path: str) -> None:
        if self._mine(build_id):
            self.result_path = Path(path)
            self.progress.setValue(1000)
            self._end(f"Built: {path}")
            self.built.emit(path)

    def _on_failed(self, build_id: str, error: UserError) -> None:
        if self._mine(build_id):
            self.error = error
            self.log_view.appendPlainText(error.text())
            self._end(f"Failed: {error.title}: {error.message}\nWhat to do: {error.remedy}")

    def _on_cancelled(self, build_id: str) -> None:
        if self._mine(build_id):
            self._end("Cancelled.")

    def done(self, result: int) -> None:
        if self.build_id is not None:  # closing the dialog stops its build
            self.service.cancel(self.build_id)
            self._end("Cancelled.")
        super().done(result)
