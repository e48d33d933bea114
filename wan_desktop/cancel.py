"""A thread-safe cancel flag checked by the generation loop between steps and stages."""

from __future__ import annotations

import threading

from .errors import Cancelled


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if cancel() was called (from any thread)."""
        if self._event.is_set():
            raise Cancelled(self.reason)
