"""sha256 of large files (checkpoints, graphs, engines), computed once per version of a file.

Hashing a 14B checkpoint takes minutes, so a hash is kept in a small JSON file in the user cache
dir (``$WAN_DESKTOP_CACHE``, else the platform's, shared with engines/residency's prompt cache) and
reused while the file is unchanged: same resolved path, size, mtime_ns, ctime_ns and inode. The
mtime alone is not enough: ``cp -p`` and ``rsync -t`` copy another file's mtime, while the ctime
changes on every write and cannot be set by a user. The cache file is written atomically (a temp
file, then a rename); a corrupt or foreign one is ignored and rewritten; a cache dir that cannot be
written only costs hashing again (a warning in the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_FILE = "file-hashes.json"
FORMAT = "wan-desktop-file-hashes"
FORMAT_VERSION = 1
MAX_ENTRIES = 10_000  # a few hundred bytes each; the oldest go first
_CHUNK = 1 << 22


def cache_root() -> Path:
    """$WAN_DESKTOP_CACHE, else the user cache dir (XDG on Linux, %LOCALAPPDATA% on Windows)."""
    env = os.environ.get("WAN_DESKTOP_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "wan-desktop" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wan-desktop"


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes (reads the whole file; HashCache.sha256 reads it once)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stamp(st: os.stat_result) -> dict[str, int]:
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
    }


def _valid_record(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    sha = rec.get("sha256")
    return (
        isinstance(sha, str)
        and len(sha) == 64
        and all(c in "0123456789abcdef" for c in sha)
        and all(type(rec.get(k)) is int for k in ("size", "mtime_ns", "ctime_ns", "inode"))
    )


class HashCache:
    """The hashes of ``path`` (None: ``cache_root()/file-hashes.json``), read on first use.

    ``sha256(file)`` returns the stored hash while the file is unchanged, else hashes the file and
    stores the result; ``cached(file)`` never reads the file (None when unknown or stale)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_root() / CACHE_FILE
        self._files: dict[str, dict[str, Any]] | None = None

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("hash cache %s ignored (%s); it will be rewritten", self.path, e)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("version") != FORMAT_VERSION
            or not isinstance(data.get("files"), dict)
        ):
            log.warning(
                "hash cache %s ignored (not this app's format); it will be rewritten", self.path
            )
            return {}
        return {k: v for k, v in data["files"].items() if isinstance(k, str) and _valid_record(v)}

    def _entries(self) -> dict[str, dict[str, Any]]:
        if self._files is None:
            self._files = self._read()
        return self._files

    @staticmethod
    def _key_and_stamp(file: str | Path) -> tuple[str, dict[str, int]]:
        resolved = Path(file).resolve()
        return str(resolved), _stamp(resolved.stat())

    def cached(self, file: str | Path) -> str | None:
        """The stored sha256 of ``file`` if it is still valid; never reads the file's bytes."""
        try:
            key, stamp = self._key_and_stamp(file)
        except OSError:
            return None
        rec = self._entries().get(key)
        if rec is None or any(rec[k] != v for k, v in stamp.items()):
            return None
        return str(rec["sha256"])

    def sha256(self, file: str | Path) -> str:
        """The sha256 of ``file``: stored, or computed now (once) and stored."""
        hit = self.cached(file)
        if hit is not None:
            return hit
        key, before = self._key_and_stamp(file)
        digest = sha256_file(key)
        _, after = self._key_and_stamp(file)
        if before == after:  # not changed while it was read: worth keeping
            self._store(key, {**after, "sha256": digest})
        return digest

    def _store(self, key: str, rec: dict[str, Any]) -> None:
        # merge with what other processes stored since this one read the file
        files = self._read()
        files.update(self._entries())
        files.pop(key, None)
        files[key] = rec  # newest last: pruning keeps the most recent
        if len(files) > MAX_ENTRIES:
            files = dict(list(files.items())[-MAX_ENTRIES:])
        self._files = files
        self._write(files)

    def _write(self, files: Mapping[str, Any]) -> None:
        # one temp file per writer: processes and the app's threads may store at the same time
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(
                json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "files": files}, indent=0)
                + "\n",
                encoding="utf-8",
            )
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning(
                "hash cache %s not written (%s): files will be hashed again",
                self.path,
                e.strerror or e,
            )
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
