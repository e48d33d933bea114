"""Entry point of the desktop app: ``wan-desktop`` with no arguments calls :func:`main`, which sets
up logging and runs the composition root (desktop.py: the GPU service on its thread, the queue, the
main window).

Importing this module is cheap (no Qt, no torch): :func:`main` first checks that PySide6 is
installed and that there is a display, because Qt aborts the process without one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

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
        return (
            None
            if env.get("WAYLAND_DISPLAY")
            else "QT_QPA_PLATFORM is wayland but WAYLAND_DISPLAY is not set"
        )
    if qpa == "xcb":
        return None if env.get("DISPLAY") else "QT_QPA_PLATFORM is xcb but DISPLAY is not set"
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"


def setup_logging() -> None:
    """A rotating log file in the data dir (Help → Open log folder shows it)."""
    from logging.handlers import RotatingFileHandler

    from .paths import log_dir, prepare_data_dir

    prepare_data_dir()  # a data dir that cannot be written: the log goes to the session folder
    root = logging.getLogger("wan_desktop")
    path = log_dir() / "wan-desktop.log"
    for h in list(root.handlers):
        if getattr(h, "_wan_desktop_gui", False):
            if Path(h.baseFilename) == path:
                return
            root.removeHandler(h)  # the data dir changed (tests, a portable install moved)
            h.close()
    handler = RotatingFileHandler(
        path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._wan_desktop_gui = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    if importlib.util.find_spec("PySide6") is None:
        print(
            "error: the desktop app needs PySide6, which is not installed "
            "(pip install 'wan-desktop[gui]'; the command line works without it)",
            file=sys.stderr,
        )
        return 2
    problem = display_problem()
    if problem:
        print(
            f"error: cannot open the desktop app: {problem} (run it in a desktop session, or "
            "use `wan-desktop generate` on a headless machine)",
            file=sys.stderr,
        )
        return 2
    from PySide6.QtWidgets import QApplication

    from .paths import prepare_data_dir

    prepare_data_dir()  # never raises: an unusable data dir gives a session folder (logged)
    try:
        setup_logging()
    except OSError as e:  # a log file that cannot be opened: log to stderr only
        print(f"warning: no log file ({e}); logging to stderr", file=sys.stderr)
        logging.basicConfig(level=logging.INFO)
    app = QApplication.instance() or QApplication(sys.argv[:1] + list(argv or []))
    app.setApplicationName("Wan Desktop")
    from .desktop import Desktop

    desktop = Desktop()
    desktop.start()
    log.info("Wan Desktop started")
    code = int(app.exec())
    if not desktop.shutdown(5000):
        # the GPU thread is inside a step that cannot be interrupted (a VAE decode, a CUDA
        # kernel): never kill it; leave without running Qt's destructors, which would abort on a
        # running QThread. The queue file already holds the job for the next start.
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
