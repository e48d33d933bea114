"""Where the desktop app keeps its files: one user data dir (``WAN_DESKTOP_HOME`` overrides it, for
tests and portable installs) holding settings, the job queue, the history, thumbnails and logs.

The data files are read defensively: a file that is not JSON, or JSON of the wrong shape or types,
is moved aside to ``<name>.bad`` (an older ``.bad`` is kept: ``<name>.2.bad``, ...) and the app
starts without it. A data dir that cannot be written (read-only, or a file of that name) is
replaced for the session by a temporary folder; :func:`prepare_data_dir` says why."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import tempfile
import threading
import time
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOME_ENV = "WAN_DESKTOP_HOME"
STALE_TMP_S = 600.0  # a temp file of a live writer exists for milliseconds: older is left over


@dataclass(frozen=True, kw_only=True)
class DataDirProblem:
    """The configured data dir cannot be used; this session runs from ``fallback`` instead."""

    folder: Path
    reason: str
    fallback: Path

    @property
    def message(self) -> str:
        return (
            f"Wan Desktop cannot save its files in {self.folder}: {self.reason}. It runs "
            "without saving: the queue, the history and changed settings last until the app "
            f"closes. Videos, thumbnails and the log of this session go to {self.fallback}."
        )

    @property
    def remedy(self) -> str:
        return (
            f"Make {self.folder} a writable folder (or set {HOME_ENV} to one), then start "
            "Wan Desktop again."
        )


# configured data dir -> the problem found with it; runtime state of this process only, keyed by
# the folder so that a process that changes WAN_DESKTOP_HOME (tests) gets the folder it names
_problems: dict[Path, DataDirProblem] = {}
_problems_lock = threading.Lock()


def configured_data_dir() -> Path:
    """The data folder the user chose (or the platform's default), created or not."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    from wan_desktop.model_manager import user_data_dir

    return user_data_dir()


def _fall_back(root: Path, reason: str) -> DataDirProblem:
    with _problems_lock:
        found = _problems.get(root)
        if found is None:
            tmp = Path(tempfile.mkdtemp(prefix="wan-desktop-session-"))
            found = _problems[root] = DataDirProblem(folder=root, reason=reason, fallback=tmp)
            log.warning("%s (%s)", found.message, found.remedy)
        return found


def data_dir() -> Path:
    """The app's data folder, created on first use; the session's temporary folder when it
    cannot be used (never raises)."""
    root = configured_data_dir()
    found = _problems.get(root)
    if found is not None:
        return found.fallback
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fall_back(root, _os_reason(e, root)).fallback
    if not root.is_dir():
        return _fall_back(root, "it is a file, not a folder").fallback
    return root


def data_dir_problem() -> DataDirProblem | None:
    """Why this session does not use the configured data dir (None when it does)."""
    return _problems.get(configured_data_dir())


def prepare_data_dir() -> DataDirProblem | None:
    """Called once at start by the composition root: check that the data dir can be written
    (else switch this session to a temporary folder and return why) and remove the temporary
    files that a killed process left there."""
    root = data_dir()
    found = data_dir_problem()
    if found is not None:
        return found
    probe = root / f".write-test.{os.getpid()}.{threading.get_ident()}.tmp"  # cleaned if left
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink()
        return _fall_back(root, _os_reason(e, root))
    removed = remove_stale_temp_files(root)
    if removed:
        log.info(
            "removed %d temporary file(s) left by a stopped process: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return None


def _os_reason(e: OSError, root: Path) -> str:
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return "a file of that name is in the way (it is not a folder)"
    if isinstance(e, PermissionError):
        return "it is read-only (permission denied)"
    return e.strerror or type(e).__name__


def log_dir() -> Path:
    d = data_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def thumbnails_dir() -> Path:
    d = data_dir() / "thumbnails"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ----------------------------------------------------------------------------- atomic JSON files


def _tmp_name(path: Path) -> Path:
    # unique per process and thread: two writers never share (and truncate) one temp file
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a crash or
    kill at any moment leaves either the old file or the new one, never half of one (and at most
    a temporary file, which :func:`remove_stale_temp_files` removes at the next start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool | None:
    """Whether process ``pid`` runs (None: cannot tell)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if handle:
            kernel32.CloseHandle(handle)
            return True
        return ctypes.get_last_error() == 5  # type: ignore[attr-defined]  # denied: it exists
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def remove_stale_temp_files(root: Path, *, now: float | None = None) -> list[Path]:
    """Delete ``.<name>.<pid>.<thread>.tmp`` files (:func:`write_json_atomic`) of processes that
    no longer run, or older than ``STALE_TMP_S`` whoever wrote them. Returns what was deleted."""
    now = time.time() if now is None else now
    removed = []
    for p in root.glob(".*.tmp"):
        parts = p.name[1 : -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue  # not ours
        try:
            old = now - p.stat().st_mtime > STALE_TMP_S
            if old or _pid_alive(int(parts[1])) is False:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


class DataFileError(Exception):
    """A data file exists but cannot be used (unreadable, not JSON)."""


def read_json(path: Path, default: Any) -> Any:
    """The file's JSON, or ``default`` when it is missing. Raises DataFileError when it cannot be
    read or is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except UnicodeDecodeError:
        raise DataFileError("is not text (UTF-8)") from None
    except OSError as e:
        raise DataFileError(f"cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise DataFileError(f"is not valid JSON ({e})") from None
    except RecursionError:
        raise DataFileError("is not valid JSON (nested too deeply)") from None


def bad_name(path: Path) -> Path:
    """A free name beside ``path`` to keep a damaged file under: ``<name>.bad``, else
    ``<name>.2.bad``, ``<name>.3.bad``..."""
    cand = path.with_name(path.name + ".bad")
    n = 2
    while cand.exists() or cand.is_symlink():
        cand = path.with_name(f"{path.name}.{n}.bad")
        n += 1
    return cand


def set_aside(path: Path, why: str, then: str = "the app started without it") -> str:
    """Move a damaged data file to :func:`bad_name` so nothing the user had is silently lost;
    return the one line the status bar and the log show: what was wrong, where the file went, and
    ``then`` (what the app did instead)."""
    bad = bad_name(path)
    try:
        os.replace(path, bad)
    except OSError as e:
        note = (
            f"{path.name} {why}: it could not be moved aside "
            f"({e.strerror or type(e).__name__}), {then}"
        )
    else:
        note = f"{path.name} {why}: moved to {bad.name}, {then}"
    log.warning("%s: %s", path.parent, note)
    return note


# ----------------------------------------------------------------------------- JSON value types


def json_type_problem(value: Any, hint: Any) -> str | None:
    """Why the JSON ``value`` cannot stand for a field annotated ``hint`` (None when it can):
    str, int (not bool), float (int accepted), bool, None, tuple[X, ...] / list[X] (a JSON list),
    dict[...] (an object), an Enum (its name, a string), unions of these, Any."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        problems = [json_type_problem(value, h) for h in typing.get_args(hint)]
        return None if any(p is None for p in problems) else problems[0]
    if hint is type(None):
        return None if value is None else f"expected null, got {_json_kind(value)}"
    if origin in (tuple, list):
        if not isinstance(value, list):
            return f"expected a list, got {_json_kind(value)}"
        item = typing.get_args(hint)[0] if typing.get_args(hint) else Any
        for i, v in enumerate(value):
            p = json_type_problem(v, item)
            if p is not None:
                return f"item {i}: {p}"
        return None
    if origin is dict or hint is dict:
        return None if isinstance(value, dict) else f"expected an object, got {_json_kind(value)}"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        hint = str
    want = {str: (str,), bool: (bool,), int: (int,), float: (int, float)}.get(hint)
    if want is None:
        raise TypeError(f"no JSON check for {hint!r}")
    if isinstance(value, want) and (hint is bool or not isinstance(value, bool)):
        return None
    return f"expected {'a number' if hint is float else _KINDS[hint]}, got {_json_kind(value)}"


_KINDS = {str: "a string", bool: "true or false", int: "an integer"}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:20]!r}"
    return "a list" if isinstance(value, list) else "an object"


def field_problems(cls: type, data: dict[str, Any]) -> dict[str, str]:
    """{field: why} for every key of ``data`` that names a field of the dataclass ``cls`` with a
    value of the wrong JSON type (keys it does not know are ignored)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if f.name in data:
            p = json_type_problem(data[f.name], hints[f.name])
            if p is not None:
                out[f.name] = p
    return out
