"""Tools → Engines…: the ONNX / TensorRT engines built for the selected model, whether each fits
this GPU (the cache's own check and reason), and a background build with progress, log and cancel.

The export toolchain (``wan_desktop.export.job``) and the engine cache (``wan_desktop.engines.cache``)
are imported lazily: the dialog works, and says so, when they are not installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
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

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, WanError

from .library import ModelEntry
from .settings import AppSettings

log = logging.getLogger(__name__)

COMPONENTS = ("t5", "dit", "vae")
PRESETS = ("480p", "720p")
ENGINE_KINDS = {"onnx": "onnxruntime", "tensorrt": "tensorrt"}  # export kind -> backend name


@dataclass(frozen=True)
class EngineRow:
    name: str
    component: str
    variant: str
    precision: str
    presets: str
    kind: str  # "onnx" | "tensorrt"
    ok: bool
    reason: str
    path: str


def _field(obj: Any, *names: str, default: Any = "") -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(getattr(value, "value", value))


def list_engine_rows(root: Path, entry: ModelEntry | None = None) -> list[EngineRow]:
    """The engines under ``root`` as table rows (empty when the cache module is not installed or
    the folder does not exist); ``check`` answers whether each runs here."""
    try:
        from wan_desktop.engines import cache
    except ImportError:
        return []
    if not Path(root).is_dir():
        return []
    rows = []
    for e in cache.list_engines(Path(root)):
        manifest = _field(e, "manifest", default=e)
        ok, reason = _check(e)
        kind = _text(_field(manifest, "engine", "kind", "runtime", default="onnx"))
        rows.append(EngineRow(
            name=Path(str(_field(e, "path", "folder", default=""))).name or str(e),
            component=_text(_field(manifest, "component", "components")),
            variant=_text(_field(manifest, "variant")),
            precision=_text(_field(manifest, "precision")),
            presets=_text(_field(manifest, "presets", "profiles", "profile")),
            kind="tensorrt" if "tensorrt" in kind or "trt" in kind else "onnx",
            ok=bool(ok), reason=str(reason),
            path=str(_field(e, "path", "folder", default=""))))
    if entry is not None and entry.variant:
        rows = [r for r in rows if not r.variant or r.variant == entry.variant]
    return rows


def _check(e: Any) -> tuple[bool, str]:
    check = getattr(e, "check", None)
    if not callable(check):
        return True, ""
    try:
        result = check()
    except TypeError:  # a check that needs arguments we cannot supply here
        return True, "not checked"
    except WanError as err:
        return False, err.message
    if isinstance(result, tuple):
        ok, reason = (*result, "")[:2]
        return bool(ok), str(reason or "")
    return bool(result), ""


def usable_engine_backends(root: Path, entry: ModelEntry) -> list[str]:
    """Backends (onnxruntime / tensorrt) with at least one engine that passes its check."""
    kinds = {r.kind for r in list_engine_rows(root, entry) if r.ok}
    return [ENGINE_KINDS[k] for k in ("onnx", "tensorrt") if k in kinds]


class ExportWorker(QObject):
    progress = Signal(str, float)  # stage, fraction 0..1
    log_line = Signal(str)
    done = Signal(object)  # Path
    failed = Signal(str)
    cancelled = Signal()
    _start = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.token = CancelToken()
        self._start.connect(self._run)

    def start(self, job: Any) -> None:
        self._start.emit(job)

    @Slot(object)
    def _run(self, job: Any) -> None:
        try:
            from wan_desktop.export.job import run_export

            out = run_export(job, progress=self.progress.emit, log=self.log_line.emit,
                             cancel=self.token)
        except Cancelled:
            self.cancelled.emit()
        except WanError as e:
            self.failed.emit(e.one_line())
        except Exception as e:
            log.exception("engine build failed")
            self.failed.emit(f"{type(e).__name__}: {e} (see the log)")
        else:
            self.done.emit(out)


def export_available() -> bool:
    try:
        from wan_desktop.export.job import ExportJob, run_export  # noqa: F401
    except ImportError:
        return False
    return True


class EnginesDialog(QDialog):
    COLUMNS = ("Engine", "Component", "Precision", "Presets", "Kind", "Fits this GPU")

    def __init__(self, settings: AppSettings, entry: ModelEntry | None, parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Engines")
        self.resize(820, 560)
        self.settings = settings
        self.entry = entry
        self.thread: QThread | None = None
        self.worker: ExportWorker | None = None
        self.result_path: Path | None = None
        self.error = ""

        model = (f"{Path(entry.path).name} ({entry.variant})" if entry and entry.variant
                 else "no model selected")
        head = QLabel(f"Model: {model}\nEngine folder: {settings.engines}")
        head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(5, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)

        build = QGroupBox("Build engines for this model")
        self.component_boxes = {c: QCheckBox(c.upper()) for c in COMPONENTS}
        for c, box in self.component_boxes.items():
            box.setChecked(c == "dit")
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
        if not export_available():
            self.build_button.setEnabled(False)
            self.stage.setText("The export toolchain is not installed "
                               "(pip install 'wan-desktop[export]').")
        elif entry is None or not entry.ok:
            self.build_button.setEnabled(False)
            self.stage.setText("Pick a usable model first.")
        self.refresh()

    def refresh(self) -> None:
        try:
            self.rows = list_engine_rows(self.settings.engines, self.entry)
        except Exception as e:  # a damaged manifest: say so, keep the dialog usable
            log.exception("listing engines failed")
            self.rows = []
            self.stage.setText(f"Cannot list engines: {e}")
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            fits = "yes" if r.ok else f"no — {r.reason}"
            for c, text in enumerate((r.name, r.component, r.precision, r.presets, r.kind, fits)):
                item = QTableWidgetItem(text)
                if c == 5:
                    item.setToolTip(r.reason)
                self.table.setItem(i, c, item)

    def make_job(self) -> Any:
        from wan_desktop.export.job import ExportJob

        from wan_desktop.variants import Precision

        assert self.entry is not None
        kind = self.kind_combo.currentData()
        comps = tuple(c for c, b in self.component_boxes.items() if b.isChecked())
        presets = tuple(p for p, b in self.preset_boxes.items() if b.isChecked())
        out = self.settings.engines / f"{Path(self.entry.path).name}-{kind}"
        return ExportJob(model=Path(self.entry.path), out=out, components=comps,
                         precision=Precision.parse(self.precision_combo.currentText()),
                         presets=presets, engine=kind)

    def build(self) -> None:
        if self.worker is not None:
            return
        try:
            job = self.make_job()
        except (WanError, TypeError, ValueError) as e:
            self.stage.setText(f"Cannot build: {e}")
            return
        self.log_view.clear()
        self.thread = QThread(self)
        self.worker = ExportWorker()
        self.worker.moveToThread(self.thread)
        self.worker.progress.connect(self._on_progress)
        self.worker.log_line.connect(self.log_view.appendPlainText)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.thread.start()
        self.build_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.stage.setText("Building…")
        self.worker.start(job)

    def cancel_build(self) -> None:
        if self.worker is not None:
            self.worker.token.cancel("build cancelled")
            self.stage.setText("Cancelling…")

    def _on_progress(self, stage: str, fraction: float) -> None:
        self.stage.setText(stage)
        self.progress.setValue(round(max(0.0, min(1.0, fraction)) * 1000))

    def _stop(self) -> None:
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait(10000)
        self.thread = None
        self.worker = None
        self.build_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh()

    def _on_done(self, path: Any) -> None:
        self.result_path = Path(path)
        self.stage.setText(f"Built: {path}")
        self.progress.setValue(1000)
        self._stop()

    def _on_failed(self, message: str) -> None:
        self.error = message
        self.stage.setText(f"Failed: {message}")
        self._stop()

    def _on_cancelled(self) -> None:
        self.stage.setText("Cancelled.")
        self._stop()

    def done(self, result: int) -> None:
        if self.worker is not None:
            self.worker.token.cancel("dialog closed")
            self._stop()
        super().done(result)
