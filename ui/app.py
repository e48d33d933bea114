"""The desktop app's composition root: logging, the GPU service on its thread, the queue and the
main window. ``wan-desktop`` with no arguments calls :func:`main`.

Importing this module is cheap (no Qt, no torch): :func:`main` first checks that PySide6 is
installed and that there is a display, because Qt aborts the process without one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main_window import MainWindow
    from .service import GpuService
    from .settings import AppSettings
    from .viewmodels import QueueModel

log = logging.getLogger("wan_desktop.ui")

# Qt platform plugins that need no window system
_HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb", "vkkhrdisplay")
LOG_BYTES = 2_000_000
LOG_BACKUPS = 3


def display_problem(env: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why Qt could not open a window here, or None. Linux only: Windows and macOS always have a
    window system for a logged-in user."""
    env = dict(os.environ) if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if qpa in _HEADLESS_PLATFORMS:
        return None
    if qpa.startswith("wayland"):
        return None if env.get("WAYLAND_DISPLAY") else "QT_QPA_PLATFORM is wayland but " \
            "WAYLAND_DISPLAY is not set"
    if qpa == "xcb":
        return None if env.get("DISPLAY") else "QT_QPA_PLATFORM is xcb but DISPLAY is not set"
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def setup_logging() -> None:
    """A rotating log file in the data dir (Help → Open log folder shows it)."""
    from logging.handlers import RotatingFileHandler

    from .paths import log_dir

    root = logging.getLogger("wan_desktop")
    if any(getattr(h, "_wan_desktop_gui", False) for h in root.handlers):
        return
    handler = RotatingFileHandler(log_dir() / "wan-desktop.log", maxBytes=LOG_BYTES,
                                  backupCount=LOG_BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._wan_desktop_gui = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class Desktop:
    """Everything the running app holds, built and torn down in one place (tests build it too)."""

    def __init__(self, settings: AppSettings | None = None) -> None:
        from PySide6.QtCore import QThread

        from .main_window import MainWindow
        from .paths import data_dir
        from .service import GpuService
        from .settings import load_settings
        from .store import JobStore
        from .viewmodels import QueueModel

        self.settings = settings or load_settings()
        self.thread = QThread()
        self.thread.setObjectName("gpu")
        self.service: GpuService = GpuService(preview_interval_s=self.settings.preview_interval_s)
        self.service.moveToThread(self.thread)
        self.thread.start()
        self.queue: QueueModel = QueueModel(self.service, JobStore(data_dir()))
        self.window: MainWindow = MainWindow(self.service, self.queue, self.settings)
        self._first_scan = True
        self.service.models_scanned.connect(self._after_first_scan)
        self.models_dialog: Any = None

    def start(self, *, show: bool = True, first_run_dialog: bool = True) -> None:
        self._want_first_run = first_run_dialog
        if show:
            self.window.show()
        self.queue.pump()  # recovered jobs run again

    def _after_first_scan(self, entries: Any) -> None:
        if not self._first_scan:
            return
        self._first_scan = False
        if getattr(self, "_want_first_run", False) and not any(e.ok for e in entries):
            log.info("no usable model found: opening the first-run model dialog")
            self.window.open_models_dialog()
            self.models_dialog = self.window.models_dialog

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything, stop the GPU thread; True when it ended in time."""
        self.queue.shutdown()
        self.service.cancel_all()
        self.thread.quit()
        ok = self.thread.wait(timeout_ms)
        if not ok:
            log.warning("the GPU thread did not stop within %d ms; exiting anyway", timeout_ms)
        return bool(ok)


def main(argv: list[str] | None = None) -> int:
    if importlib.util.find_spec("PySide6") is None:
        print("error: the desktop app needs PySide6, which is not installed "
              "(pip install 'wan-desktop[gui]'; the command line works without it)", file=sys.stderr)
        return 2
    problem = display_problem()
    if problem:
        print(f"error: cannot open the desktop app: {problem} (run it in a desktop session, or "
              "use `wan-desktop generate` on a headless machine)", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    setup_logging()
    app = QApplication.instance() or QApplication(sys.argv[:1] + list(argv or []))
    app.setApplicationName("Wan Desktop")
    desktop = Desktop()
    app.aboutToQuit.connect(desktop.shutdown)
    desktop.start()
    log.info("Wan Desktop started")
    return int(app.exec())


if __name__ == "__main__":
    sys.exit(main())
