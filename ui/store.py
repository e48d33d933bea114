"""Jobs and history as plain frozen data, persisted as JSON in the data dir (written atomically).

A job is one GenerationRequest + RunOptions + output path. The queue file lists the jobs not yet
finished, the running one included (state "running"), so a job that was running when the app
crashed or was killed is found again on the next start and put back in the queue.

A file that cannot be used as it is (not JSON, the wrong shape, an entry with wrong-typed values,
which the app would trip over on every start) is moved aside to ``<name>.bad``; the entries that
are intact are kept and written back, and :attr:`JobStore.notes` says what happened.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .paths import DataFileError, field_problems, read_json, set_aside, write_json_atomic

log = logging.getLogger(__name__)

QUEUE_FILE = "queue.json"
HISTORY_FILE = "history.json"
HISTORY_LIMIT = 500
FORMAT = 1


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


_S = TypeVar("_S", bound="_Saved")


class _Saved:
    """What a saved job and a history entry share: views of the request, and a dict round trip
    that ignores keys it does not know (a file written by a newer version still loads)."""

    id: str
    request: dict[str, Any]

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @property
    def seed(self) -> int:
        seed = self.request.get("seed", 0)
        return seed if isinstance(seed, int) else 0

    @classmethod
    def from_dict(cls: type[_S], data: dict[str, Any]) -> _S:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # subclasses are dataclasses
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class Job(_Saved):
    id: str
    request: dict[str, Any]  # GenerationRequest.to_dict(), seed already fixed
    options: dict[str, Any]  # RunOptions.to_dict()
    out: str  # the .mp4 the job writes
    state: str = "queued"  # "queued" | "running" | "copying" (its inputs; saved as queued)
    created: float = field(default_factory=time.time)
    recovered: bool = False  # was running when the app stopped
    review: bool = False  # wait for Decode / Discard after denoising ("Review before decode")


@dataclass(frozen=True, kw_only=True)
class HistoryEntry(_Saved):
    id: str
    status: str  # "done" | "failed" | "cancelled" | "discarded" (at review)
    request: dict[str, Any]  # the resolved request (every default filled in) when known
    options: dict[str, Any]
    out: str | None = None
    thumbnail: str | None = None
    seconds: float | None = None
    peak_vram_gb: float | None = None  # None on the CPU
    error: str | None = None
    finished: float = field(default_factory=time.time)
    review: bool = False  # made with "Review before decode" (Reuse settings restores it)


class JobStore:
    """Reads and writes queue.json / history.json under ``root``; with ``root`` None (the data dir
    cannot be written) nothing is read or written: the session's queue and history live only in
    the QueueModel's memory."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.notes: list[str] = []  # what loading found wrong (for the status bar)
        self._save_failed: set[str] = set()

    @property
    def queue_path(self) -> Path:
        if self.root is None:
            raise ValueError("an in-memory job store has no files")
        return self.root / QUEUE_FILE

    @property
    def history_path(self) -> Path:
        if self.root is None:
            raise ValueError("an in-memory job store has no files")
        return self.root / HISTORY_FILE

    def load_queue(self) -> list[Job]:
        """The saved queue; a job saved as running comes back queued, marked ``recovered``."""
        if self.root is None:
            return []
        jobs = self._load(self.queue_path, "jobs", Job, "job")
        return [
            replace(j, state="queued", recovered=True) if j.state == "running" else j for j in jobs
        ]

    def save_queue(self, jobs: list[Job]) -> None:
        self._save(QUEUE_FILE, {"format": FORMAT, "jobs": [j.to_dict() for j in jobs]})

    def load_history(self) -> list[HistoryEntry]:
        if self.root is None:
            return []
        return self._load(self.history_path, "entries", HistoryEntry, "entry")

    def save_history(self, entries: list[HistoryEntry]) -> None:
        entries = entries[-HISTORY_LIMIT:]
        self._save(HISTORY_FILE, {"format": FORMAT, "entries": [e.to_dict() for e in entries]})

    def _save(self, name: str, data: dict[str, Any]) -> None:
        """Write one file; a failure (disk full, the folder made read-only meanwhile) is logged
        once and the app goes on with what it holds in memory."""
        if self.root is None:
            return
        try:
            write_json_atomic(self.root / name, data)
        except OSError as e:
            if name not in self._save_failed:
                log.warning(
                    "cannot save %s (%s): changes are kept in memory only", self.root / name, e
                )
            self._save_failed.add(name)
        else:
            self._save_failed.discard(name)

    def _load(self, path: Path, key: str, cls: type[_S], noun: str) -> list[_S]:
        try:
            data = read_json(path, None)
        except DataFileError as e:
            self.notes.append(set_aside(path, str(e)))
            return []
        if data is None:
            return []
        items = data.get(key, []) if isinstance(data, dict) else None
        if not isinstance(items, list):
            shape = (
                f'"{key}" is not a list' if isinstance(data, dict) else "it is not a JSON object"
            )
            self.notes.append(set_aside(path, f"is not a Wan Desktop {path.stem} file ({shape})"))
            return []
        out: list[_S] = []
        bad: list[str] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            why = _entry_problem(item, cls, seen)
            if why is None:
                out.append(cls.from_dict(item))
                seen.add(item["id"])
            else:
                bad.append(f"{noun} {i + 1}: {why}")
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            self.notes.append(
                set_aside(
                    path,
                    f"had {len(bad)} damaged {noun}{'s' if len(bad) > 1 else ''} of "
                    f"{len(items)} ({bad[0]}{more})",
                    f"the other {len(out)} were kept",
                )
            )
            self._save(path.name, {"format": FORMAT, key: [x.to_dict() for x in out]})
        return out


_REQUIRED = {
    "Job": ("id", "request", "options", "out"),
    "HistoryEntry": ("id", "status", "request", "options"),
}


def _entry_problem(item: Any, cls: type, seen_ids: set[str]) -> str | None:
    """Why a saved queue or history entry cannot be loaded (None: it can): every field of the
    right JSON type, the request and options readable as GenerationRequest / RunOptions, a known
    job state and an id not seen before."""
    from wan_desktop.options import RunOptions
    from wan_desktop.request import GenerationRequest

    if not isinstance(item, dict):
        return "not a JSON object"
    missing = [k for k in _REQUIRED[cls.__name__] if k not in item]
    if missing:
        return f"no {', '.join(missing)}"
    for kind, fields_of, data in (
        (cls, "", item),
        (GenerationRequest, "request.", item["request"]),
        (RunOptions, "options.", item["options"]),
    ):
        if not isinstance(data, dict):
            return f"{fields_of[:-1]} is not a JSON object"
        bad = field_problems(kind, data)
        if bad:
            name, why = next(iter(bad.items()))
            return f"{fields_of}{name}: {why}"
    for k in ("out", "thumbnail"):  # paths the window opens: a NUL byte makes Path() raise
        if isinstance(item.get(k), str) and "\x00" in item[k]:
            return f"{k}: a NUL character in a file name"
    if cls is Job and item.get("state", "queued") not in ("queued", "running"):
        return f"state {item['state']!r} is not queued or running"
    if item["id"] in seen_ids:
        return f"the id {item['id']!r} is used twice"
    return None
