"""The store's clock, a seam: wall time for what it records, monotonic time and sleep for its waits.

`ResultStore(path, clock=...)` reads every timestamp it stores (creation, start, finish,
heartbeats, history events), every heartbeat age it judges and every timeout it waits out from
one object with this interface, so a test can age a heartbeat or run out a timeout by moving a
manual clock instead of sleeping. The heartbeat thread of `get_or_run` and SQLite's own busy
timeout keep real time: they pace real concurrency.
"""

from __future__ import annotations

import time as _time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (stored, and compared across hosts)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines)."""

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (between polls of the store)."""


class SystemClock:
    """The process's real clocks: `time.time`, `time.monotonic`, `time.sleep`."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)
    sleep = staticmethod(_time.sleep)

    def __repr__(self) -> str:
        return "SystemClock()"
