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
# manifest runtime -> GUI backend (RunOptions.backend)
BACKEND_OF_RUNTIME = {"onnxruntime": "onnxruntime", "tensorrt_rtx": "tensorrt", "tensorrt": "tensorrt"}
_RUNTIME_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
                          "tensorrt_rtx": ("tensorrt_rtx_cu12", "tensorrt-rtx-cu12-bindings",
                                           "tensorrt_rtx_cu13", "tensorrt-rtx"),
                          "tensorrt": ("tensorrt", "tensorrt-cu12")}


@dataclass(frozen=True)
class EngineRow:
    """One engine folder as the dialog lists it."""

    path: str
    variant: str
    components: str  # "t5, dit, vae_decoder_first, ..."
    precision: str
    presets: str  # profile names, "any size" for plain ONNX graphs
    backends: tuple[str, ...]  # RunOptions backends the folder serves
    ok: bool
    reason: str  # why it does not fit this model / GPU / runtime ("" when ok)

    @property
    def name(self) -> str:
        return Path(self.path).name


def installed_runtime_version(runtime: str) -> str | None:
    """The installed version of an engine runtime, from package metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in _RUNTIME_DISTRIBUTIONS.get(runtime, (runtime,)):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def gpu_compute_capability() -> str | None:
    """"8.9" for GPU 0 from nvidia-smi (the GUI thread never initialises CUDA); None: no GPU."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        return out.splitlines()[0].strip() or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _model_records(model_path: str) -> list[dict[str, Any]] | None:
    """Name + size of the checkpoint files, as the engine manifest records them (no hashing)."""
    from wan_desktop.engines.cache import model_file_records

    from wan_desktop.checkpoints.detect import detect_model

    try:
        files = detect_model(model_path)
    except WanError:
        return None
    paths = [p for c in (*files.experts, files.vae, files.text_encoder, files.image_encoder)
             if c is not None for p in c.files]
    return model_file_records(paths, hash_files=False)


def list_engine_rows(root: Path, entry: ModelEntry | None = None, *,
                     compute_capability: str | bool | None = True) -> list[EngineRow]:
    """Every engine folder under ``root`` with the cache's verdict for ``entry`` on this machine.

    ``compute_capability`` True: ask nvidia-smi. The cache's ``check_entry`` gives the reason a
    folder must be refused (file missing or changed, other model files, GPU, runtime version)."""
    from wan_desktop.engines import cache

    cc = gpu_compute_capability() if compute_capability is True else compute_capability or None
    records = _model_records(entry.path) if entry is not None and entry.ok else None
    rows = []
    for folder in cache.list_engines(Path(root)):
        m = folder.manifest
        if m is None:
            rows.append(EngineRow(str(folder.path), "?", "", "", "", (), False,
                                  folder.error or "unreadable manifest"))
            continue
        runtimes = sorted({e.runtime for e in m.entries})
        backends = tuple(sorted({BACKEND_OF_RUNTIME.get(r, r) for r in runtimes}))
        profiles = sorted({str(p.get("name", "?")) for e in m.entries for p in e.profiles})
        reason = ""
        if entry is not None and entry.variant and m.variant.name != entry.variant:
            reason = f"made for {m.variant.name}, the model is {entry.variant}"
        for e in m.entries:
            if reason:
                break
            if e.runtime != "onnxruntime" and cc is None:
                reason = f"{e.component}: a {e.runtime} engine needs an NVIDIA GPU (none found)"
                break
            have = installed_runtime_version(e.runtime)
            if have is None:
                reason = f"{e.runtime} is not installed"
                break
            refusal = cache.check_entry(
                folder.path, m, e, runtime_version=have, compute_capability=cc,
                model_files=records if e.component == "dit" else None)
            if refusal is not None:
                reason = refusal.reason
        rows.append(EngineRow(
            path=str(folder.path), variant=m.variant.name,
            components=", ".join(dict.fromkeys(e.component for e in m.entries)),
            precision=", ".join(sorted({e.precision for e in m.entries})),
            presets=", ".join(profiles) or "any size", backends=backends, ok=not reason,
            reason=reason))
    return rows


def usable_engines(root: Path, entry: ModelEntry) -> dict[str, str]:
    """backend -> the first engine folder that fits ``entry`` here, for each engine backend."""
    out: dict[str, str] = {}
    for row in list_engine_rows(root, entry):
        if row.ok:
            for b in row.backends:
                out.setdefault(b, row.path)
    return out


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
    COLUMNS = ("Engine folder", "Components", "Precision", "Presets", "Backend", "Fits here")

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
        from wan_desktop.export.job import ExportJob

        from wan_desktop.specs import profile_presets
        from wan_desktop.variants import VARIANTS

        assert self.entry is not None
        kind = self.kind_combo.currentData()
        comps = tuple(c for c, b in self.component_boxes.items() if b.isChecked())
        if not comps:
            raise ValueError("choose at least one component")
        variant = VARIANTS[self.entry.variant]
        presets = tuple(p for name, b in self.preset_boxes.items() if b.isChecked()
                        for p in profile_presets(variant, name))
        precision = self.precision_combo.currentText()
        out = self.settings.engines / f"{Path(self.entry.path).name}-{kind}-{precision}"
        return ExportJob(out=str(out), model=self.entry.path, components=comps,
                         precision=precision, presets=presets, engine=kind,
                         profile=next((n for n, b in self.preset_boxes.items() if b.isChecked()),
                                      None))

    def build(self) -> None:
        if self.worker is not None:
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
