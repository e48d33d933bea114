"""The model dialog (first run, and File → Download models…): the known releases with download
size and VRAM need, which fit this GPU, a cancellable download with progress in a worker thread,
or "Add folder…" for models the user already has."""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from wan_desktop.cancel import CancelToken
from wan_desktop.errors import Cancelled, WanError

from .settings import AppSettings

log = logging.getLogger(__name__)


def _gb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e9:.1f} GB"


def _unverified_text(inst: Any) -> str:
    """Which files of an install could not be checked against a published hash."""
    files = [f.path for f in inst.unverified]
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (
        f"{len(files)} file(s) UNVERIFIED: no published hash to check them against "
        f"(only size and format were checked): {shown}"
    )


class DownloadWorker(QObject):
    """Runs ModelManager.download on its own thread (not the GPU one: a download may run while
    the GPU generates)."""

    progress = Signal(object)  # DownloadProgress
    done = Signal(object)  # InstalledModel
    failed = Signal(object)  # UserError
    cancelled = Signal()
    _start = Signal(str)

    def __init__(self, manager: Any) -> None:
        super().__init__()
        self.manager = manager
        self.token = CancelToken()
        self._start.connect(self._run)

    def start(self, name: str) -> None:
        self._start.emit(name)

    def cancel(self) -> None:
        self.token.cancel("download cancelled")

    @Slot(str)
    def _run(self, name: str) -> None:
        from .service import UserError

        try:
            inst = self.manager.download(name, progress=self.progress.emit, cancel=self.token)
        except Cancelled:
            self.cancelled.emit()
        except WanError as e:
            self.failed.emit(UserError.from_wan(e))
        except Exception as e:
            log.exception("download of %s failed", name)
            self.failed.emit(
                UserError(
                    "Download failed",
                    f"{type(e).__name__}: {e}",
                    "See the log (Help → Open log folder).",
                )
            )
        else:
            self.done.emit(inst)


class ModelsDialog(QDialog):
    folder_added = Signal(str)  # a folder (or ComfyUI file) to add to the model picker

    COLUMNS = ("Model", "Variant", "Download", "VRAM needed", "This GPU", "State")

    def __init__(
        self,
        settings: AppSettings,
        parent: Any = None,
        *,
        manager: Any = None,
        vram_gb: float | str | None = "detect",
    ) -> None:
        super().__init__(parent)
        from wan_desktop.model_manager import ModelManager, detect_vram_gb

        self.setWindowTitle("Models")
        self.resize(860, 460)
        self.settings = settings
        self.manager = manager or ModelManager()
        self.vram_gb = detect_vram_gb() if vram_gb == "detect" else vram_gb
        self.thread: QThread | None = None
        self.worker: DownloadWorker | None = None
        self.installed: Any = None
        self.error: Any = None

        if self.vram_gb is None:
            gpu = (
                "No NVIDIA GPU found: this machine runs on the CPU only. Every model would be "
                "very slow here; the list shows what each needs on a GPU."
            )
        else:
            gpu = f"This GPU has {self.vram_gb:.1f} GB of memory; the best fit is marked ★."
        self.gpu_label = QLabel(gpu)
        self.gpu_label.setWordWrap(True)
        intro = (
            QLabel(
                "No model is set up yet. Download one of the official releases, or add a "
                "folder holding Wan models you already have (official, diffusers or "
                "ComfyUI files)."
            )
            if not settings.model_dirs
            else QLabel("Download another model, or add a folder of models.")
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.download_button = QPushButton("Download")
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        self.add_folder_button = QPushButton("Add folder…")
        self.close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addStretch(1)
        for b in (self.download_button, self.cancel_button, self.close_button):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        for w in (intro, self.gpu_label, self.table, self.progress, self.status):
            lay.addWidget(w)
        lay.addLayout(buttons)

        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button.clicked.connect(self.cancel_download)
        self.add_folder_button.clicked.connect(self._add_folder_dialog)
        self.close_button.clicked.connect(self.reject)
        self.fill()

    def fill(self) -> None:
        try:
            self.rows = self.manager.list_models(self.vram_gb)
        except WanError as e:
            self.rows = []
            self.status.setText(e.one_line())
        self.table.setRowCount(len(self.rows))
        for i, st in enumerate(self.rows):
            r = st.release
            need = min((gb for _p, gb in r.vram_gb), default=None)
            if self.vram_gb is None:
                fit = "CPU only"
            elif st.plan is None:
                fit = "too big"
            else:
                fit = ("★ " if st.recommended else "") + f"fits ({st.plan.value})"
            vram = "—" if need is None else f"{need:.1f} GB"
            cells = (r.title, r.variant, _gb(r.download_bytes), vram, fit, st.state)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, r.name)
                self.table.setItem(i, c, item)
            if st.state == "unverified":
                self.table.item(i, 5).setToolTip(_unverified_text(st.installed))
        if self.rows:
            best = next((i for i, st in enumerate(self.rows) if st.recommended), 0)
            self.table.selectRow(best)

    def selected_name(self) -> str | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.ItemDataRole.UserRole) if items else None

    def select(self, name: str) -> None:
        for i, st in enumerate(self.rows):
            if st.release.name == name:
                self.table.selectRow(i)

    def download_selected(self) -> None:
        name = self.selected_name()
        if name is None or self.worker is not None:
            return
        self.thread = QThread(self)
        self.worker = DownloadWorker(self.manager)
        self.worker.moveToThread(self.thread)
        self.worker.progress.connect(self._on_progress)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self.worker.cancelled.connect(self._on_cancelled)
        self.thread.start()
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Downloading {name}…")
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker.start(name)

    def cancel_download(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Cancelling… (the partial download is kept and resumes later)")

    def _on_progress(self, p: Any) -> None:
        if p.total:
            # QProgressBar is int32: count in kB
            self.progress.setRange(0, max(1, p.total // 1000))
            self.progress.setValue(p.done // 1000)
        self.status.setText(f"{p.stage}: {p.file} — {_gb(p.done)} of {_gb(p.total)}")

    def _stop_worker(self) -> None:
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait(5000)
        self.thread = None
        self.worker = None
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_done(self, inst: Any) -> None:
        self._stop_worker()
        self.installed = inst
        text = f"Installed {inst.name} in {inst.folder}"
        if inst.unverified:
            text += f" — {_unverified_text(inst)}"
        self.status.setText(text)
        self.progress.setValue(self.progress.maximum())
        self.fill()
        self.folder_added.emit(str(inst.model_path))

    def _on_failed(self, error: Any) -> None:
        self._stop_worker()
        self.error = error
        self.status.setText(f"{error.title}: {error.message} — {error.remedy}")

    def _on_cancelled(self) -> None:
        self._stop_worker()
        self.progress.setVisible(False)
        self.status.setText("Download cancelled; the partial files resume next time.")
        self.fill()

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of models")
        if folder:
            self.folder_added.emit(folder)
            self.accept()

    def done(self, result: int) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self._stop_worker()
        super().done(result)
