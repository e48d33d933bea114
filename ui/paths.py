"""Where the desktop app keeps its files: one user data dir (``WAN_DESKTOP_HOME`` overrides it, for
tests and portable installs) holding settings, the job queue, the history, thumbnails and logs."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

HOME_ENV = "WAN_DESKTOP_HOME"


def data_dir() -> Path:
    """The app's data folder, created on first use."""
    env = os.environ.get(HOME_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        from wan_desktop.model_manager import user_data_dir

        root = user_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


def log_dir() -> Path:
    d = data_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def thumbnails_dir() -> Path:
    d = data_dir() / "thumbnails"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a crash or
    kill at any moment leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per process and thread: two writers never share (and truncate) one temp file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, default: Any) -> Any:
    """The file's JSON, or ``default`` when it is missing or unreadable (a damaged file is kept
    beside as ``<name>.bad`` so nothing the user had is silently lost)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".bad"))
        return default
