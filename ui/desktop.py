"""The composition root of the GUI: the GPU service moved to its long-lived QThread (the one thread
that touches the GPU: generations and engine builds share its queue), the persistent queue, the main
window, and the first-run model dialog when no model is found. The model downloads of the first-run
dialog run on a thread of their own: network and disk only, never CUDA."""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject, QThread

from .gpu_selector import GpuQuery
from .gui_thread_gc import GuiThreadGc
from .main_window import MainWindow
from .paths import data_dir, prepare_data_dir
from .service import GpuService
from .settings import AppSettings, read_settings
from .store import JobStore
from .viewmodels import QueueModel

log = logging.getLogger(__name__)


class Desktop(QObject):
    """Everything the running app holds, built and torn down in one place (tests build it too).

    A QObject living on the GUI thread, so the service's signals reach its slots queued there
    (a plain Python callable would run on the emitting GPU thread)."""

    def __init__(
        self,
        settings: AppSettings | None = None,
        *,
        store: JobStore | None = None,
        gpus: GpuQuery | None = None,  # the device list; None: nvidia-smi's (system_info)
    ) -> None:
        super().__init__()
        # a data dir that cannot be written: this session saves nothing (a dialog says so); a
        # damaged data file: moved aside, the app starts without it (the status bar says so)
        self.data_problem = prepare_data_dir()
        # cyclic garbage (Qt objects among it) is collected on this thread only, from now until
        # shutdown: the GPU thread's first library scan starts with the window
        self.gc = GuiThreadGc(self)
        self.gc.start()
        notes: list[str] = []
        if settings is None:
            settings, found = read_settings()
            notes += found
        self.settings = settings
        self.thread = QThread()
        self.thread.setObjectName("gpu")
        self.service = GpuService(
            preview_interval_s=self.settings.preview_interval_s,
            preview_decoder=self.settings.preview_decoder,
        )
        self.service.moveToThread(self.thread)
        self.thread.start()
        try:
            if store is None:
                store = JobStore(None if self.data_problem else data_dir())
            self.store = store
            self.queue = QueueModel(self.service, store)
            self.window = MainWindow(self.service, self.queue, self.settings, gpus=gpus)
        except BaseException:
            # never leave a running QThread behind an exception: Qt aborts the process (SIGABRT)
            # when it is destroyed while running
            self.thread.quit()
            self.thread.wait()
            self.gc.stop()
            raise
        self.window.show_data_notes([*notes, *store.notes])
        self.models_dialog: Any = None
        self._first_scan = True
        self._want_first_run = False
        # the window's own signal, on the GUI thread: the scan it started in its constructor cannot
        # be delivered before this connection exists (the event loop has not run yet)
        self.window.models_changed.connect(self._after_first_scan)
        self.service.garbage.connect(self.gc.collect_all)  # queued: on this thread

    def start(self, *, show: bool = True, first_run_dialog: bool = True) -> None:
        self._want_first_run = first_run_dialog
        if show:
            self.window.show()
        if self.data_problem is not None:
            self.window.show_data_dir_problem(self.data_problem)
        self.queue.pump()  # jobs recovered from the last session run again

    def _after_first_scan(self) -> None:
        if not self._first_scan:
            return
        self._first_scan = False
        if self._want_first_run and not any(e.ok for e in self.window.models):
            log.info("no usable model found: opening the first-run model dialog")
            self.window.open_models_dialog()
            self.models_dialog = self.window.models_dialog

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and stop the GPU thread (never killed); True when it ended in time."""
        self.queue.shutdown()
        self.service.cancel_all()
        self.thread.quit()
        ok = self.thread.wait(timeout_ms)
        if not ok:
            log.warning("the GPU thread did not stop within %d ms; exiting anyway", timeout_ms)
        self.gc.stop()
        return bool(ok)
