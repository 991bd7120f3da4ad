"""What the store holds and hands out: run statuses, records, results, history events, errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mtlcheck.study.experiments.spec import RunSpec

__all__ = [
    "FINISHED",
    "STATUSES",
    "RunFailedError",
    "RunRecord",
    "RunResult",
    "SetupError",
    "StoreError",
    "as_result",
    "history_event",
]

STATUSES = ("pending", "running", "done", "failed", "diverged")
FINISHED = ("done", "diverged")


class StoreError(RuntimeError):
    """The store file cannot be used (wrong schema, WAL refused, key collision)."""


class SetupError(RuntimeError):
    """The run cannot start or go on because of where it executes (data, device, files), not
    because of what it computes. Raised by a run function, it makes `get_or_run` release the run
    (status 'pending', no failure counted, the message kept as its last error) and re-raise."""


class RunFailedError(RuntimeError):
    """A stored run failed and is not retried; `record.error` holds the traceback text."""

    def __init__(self, record: RunRecord):
        self.record = record
        last = (record.error or "").strip().splitlines()
        super().__init__(
            f"run {record.key} ({record.spec.label}) failed {record.failures} time(s) and is not retried "
            f"(last error: {last[-1] if last else 'none recorded'}); `mtlcheck runs retry {record.key}` "
            "gives it its attempts back"
        )


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One row of the store, decoded."""

    key: str
    spec: RunSpec
    code_epoch: int
    status: str
    owner: str | None
    heartbeat: float | None
    attempts: int
    failures: int
    created: float
    started: float | None
    finished: float | None
    metrics: dict[str, Any] | None
    trajectory: dict[str, list] | None
    env: dict[str, Any] | None
    timings: dict[str, Any] | None
    error: str | None
    history: list[dict[str, Any]]

    @property
    def is_finished(self) -> bool:
        """done or diverged: a result that is never recomputed."""
        return self.status in FINISHED

    @property
    def was_interrupted(self) -> bool:
        """pending, and last given back by a process that was stopped (Ctrl-C, SIGTERM)."""
        last = self.history[-1] if self.history else {}
        return self.status == "pending" and last.get("event") == "released" and bool(last.get("interrupted"))


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a run function returns to `get_or_run` (a 3- or 4-tuple in this order also works)."""

    metrics: Mapping[str, Any]
    trajectory: Mapping[str, Any] | None = None
    timings: Mapping[str, Any] | None = None
    status: str = "done"
    error: str | None = None
    engine: Mapping[str, Any] | None = None  # the kernels the run used: stored with its environment


def as_result(value: Any) -> RunResult:
    """A run function's return value as a `RunResult` (TypeError naming what it got otherwise)."""
    if isinstance(value, RunResult):
        return value
    if isinstance(value, tuple) and len(value) in (3, 4):
        return RunResult(*value)
    raise TypeError(
        "a run function must return a RunResult or a tuple (metrics, trajectory, timings[, status]), "
        f"got {type(value).__name__}"
    )


def history_event(kind: str, owner: str | None, time: float, **detail: Any) -> dict[str, Any]:
    """One entry of a run's ``history``: what happened (``added``, ``claimed``, ``taken_over``,
    ``retried``, ``done``, ...), when (wall seconds), by whom."""
    return {"event": kind, "time": time, "owner": owner, **detail}
