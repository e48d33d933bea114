"""Jobs and history as plain frozen data, persisted as JSON in the data dir (written atomically).

A job is one GenerationRequest + RunOptions + output path. The queue file lists the jobs not yet
finished, the running one included (state "running"), so a job that was running when the app
crashed or was killed is found again on the next start and put back in the queue.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from .paths import read_json, write_json_atomic

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

    request: dict[str, Any]

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @property
    def seed(self) -> int:
        return int(self.request.get("seed", 0))

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
    state: str = "queued"  # "queued" | "running"
    created: float = field(default_factory=time.time)
    recovered: bool = False  # was running when the app stopped


@dataclass(frozen=True, kw_only=True)
class HistoryEntry(_Saved):
    id: str
    status: str  # "done" | "failed" | "cancelled"
    request: dict[str, Any]  # the resolved request (every default filled in) when known
    options: dict[str, Any]
    out: str | None = None
    thumbnail: str | None = None
    seconds: float | None = None
    peak_vram_gb: float | None = None  # None on the CPU
    error: str | None = None
    finished: float = field(default_factory=time.time)


class JobStore:
    """Reads and writes queue.json / history.json under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def queue_path(self) -> Path:
        return self.root / QUEUE_FILE

    @property
    def history_path(self) -> Path:
        return self.root / HISTORY_FILE

    def load_queue(self) -> list[Job]:
        """The saved queue; a job saved as running comes back queued, marked ``recovered``."""
        data = read_json(self.queue_path, {})
        jobs = []
        for item in data.get("jobs", []) if isinstance(data, dict) else []:
            try:
                job = Job.from_dict(item)
            except TypeError:  # a damaged entry: skip it, keep the rest
                continue
            if job.state == "running":
                job = replace(job, state="queued", recovered=True)
            jobs.append(job)
        return jobs

    def save_queue(self, jobs: list[Job]) -> None:
        write_json_atomic(self.queue_path, {"format": FORMAT, "jobs": [j.to_dict() for j in jobs]})

    def load_history(self) -> list[HistoryEntry]:
        data = read_json(self.history_path, {})
        out = []
        for item in data.get("entries", []) if isinstance(data, dict) else []:
            try:
                out.append(HistoryEntry.from_dict(item))
            except TypeError:
                continue
        return out

    def save_history(self, entries: list[HistoryEntry]) -> None:
        entries = entries[-HISTORY_LIMIT:]
        write_json_atomic(self.history_path,
                          {"format": FORMAT, "entries": [e.to_dict() for e in entries]})
