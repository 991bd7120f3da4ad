"""A lease: this process's ownership of one running run, from `ResultStore.lease` to its end.

While it holds the lease the process heartbeats (`heartbeat`), may save checkpoints
(``<store>.ckpt/<key>.pt``, written atomically), and ends it exactly once: `finish` (the result),
`fail` (the traceback, a failure counted) or `release` (back to pending, nothing counted). Every
one of these first proves the lease is still held and raises `LeaseLost` if another process took
the run over.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments.codec import decode_json, encode_json
from mtlcheck.study.experiments.provenance import environment
from mtlcheck.study.experiments.records import FINISHED, history_event
from mtlcheck.study.experiments.spec import RunSpec

if TYPE_CHECKING:
    from mtlcheck.study.experiments.store import ResultStore

__all__ = ["Lease", "LeaseLost"]


class LeaseLost(RuntimeError):
    """This process no longer owns the run: another process took it over (stale heartbeat)."""


class Lease:
    """This process's ownership of one running run. Obtain from `ResultStore.lease`."""

    def __init__(
        self,
        store: ResultStore,
        spec: RunSpec,
        key: str,
        owner: str,
        attempt: int,
        took_over_from: str | None,
        takeover_reason: str | None,
    ):
        self.store = store
        self.spec = spec
        self.key = key
        self.owner = owner
        self.attempt = attempt
        self.took_over_from = took_over_from
        self.takeover_reason = takeover_reason
        self.started_at = store.clock.time()
        self._closed = False
        self._lost: str | None = None

    def __repr__(self) -> str:
        return f"Lease(key={self.key!r}, spec={self.spec.label!r}, owner={self.owner!r}, attempt={self.attempt})"

    # -- liveness -------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Record that the run is alive; raises `LeaseLost` if another process took it over."""
        self._check_open("heartbeat")
        with self.store.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET heartbeat=? WHERE key=? AND owner=? AND status='running'",
                (self.store.clock.time(), self.key, self.owner),
            )
            if cur.rowcount != 1:
                raise self._lose(conn)

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        """``<store>.ckpt/<key>.pt``; written by `save_checkpoint`, read by `load_checkpoint`."""
        return self.store.checkpoint_dir / f"{self.key}.pt"

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def save_checkpoint(self, obj: Any) -> Path:
        """`torch.save(obj)` atomically (temporary file, fsync, `os.replace`), after a heartbeat
        that proves this process still owns the run (raises `LeaseLost` otherwise)."""
        import torch

        self.heartbeat()
        path = self.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{self.key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        return path

    def load_checkpoint(self, map_location: Any = "cpu") -> Any | None:
        """The last saved checkpoint, or None if there is none. A corrupt file raises. Loads with
        ``weights_only=False``: checkpoints are this store's own files (RNG states, optimizer
        state), not untrusted input."""
        import torch

        path = self.checkpoint_path
        if not path.exists():
            return None
        return torch.load(path, map_location=map_location, weights_only=False)

    # -- endings --------------------------------------------------------------------------------
    def finish(
        self,
        metrics: Mapping[str, Any],
        trajectory: Mapping[str, Any] | None = None,
        timings: Mapping[str, Any] | None = None,
        status: str = "done",
        error: str | None = None,
        engine: Mapping[str, Any] | None = None,
    ) -> None:
        """Store the result (status 'done' or 'diverged') and delete the checkpoint. Raises
        `LeaseLost` (storing nothing) if another process took the run over meanwhile. `engine`
        (the kernels the run used, `precision.engine_state`) is stored in its environment."""
        self._check_open("finish")
        if status not in FINISHED:
            raise ValueError(f"Lease.finish: status must be one of {FINISHED}, got {status!r}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"Lease.finish: metrics must be a mapping, got {type(metrics).__name__}")
        if trajectory is not None and not isinstance(trajectory, Mapping):
            raise TypeError(f"Lease.finish: trajectory must be a mapping of lists, got {type(trajectory).__name__}")
        if timings is not None and not isinstance(timings, Mapping):
            raise TypeError(f"Lease.finish: timings must be a mapping, got {type(timings).__name__}")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"Lease.finish: error must be a string or None, got {type(error).__name__}")
        metrics_json = encode_json(metrics, "metrics")
        trajectory_json = encode_json(trajectory if trajectory is not None else {}, "trajectory")
        timings_json = encode_json(timings if timings is not None else {}, "timings")
        if engine is not None and not isinstance(engine, Mapping):
            raise TypeError(f"Lease.finish: engine must be a mapping or None, got {type(engine).__name__}")
        env = environment()
        if engine:
            env["engine"] = dict(engine)
        env_json = encode_json(env, "environment")
        self._end(
            "status=?, finished=?, heartbeat=NULL, metrics_json=?, trajectory_json=?, env_json=?, timings_json=?, "
            "error=?",
            (status, self.store.clock.time(), metrics_json, trajectory_json, env_json, timings_json, error),
            self._event(status),
        )
        self.store._delete_checkpoint(self.key)

    def fail(self, error: BaseException | str) -> None:
        """Record a failure with its text (the full traceback for an exception). The checkpoint
        is kept, so a retry may resume."""
        self._check_open("fail")
        if isinstance(error, BaseException):
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        elif isinstance(error, str):
            text = error
        else:
            raise TypeError(f"Lease.fail: error must be an exception or a string, got {type(error).__name__}")
        try:
            env = environment()
        except Exception as exc:  # noqa: BLE001 - the failure must be recorded even so
            env = {"environment_error": f"{type(exc).__name__}: {exc}"}
        self._end(
            "status='failed', finished=?, heartbeat=NULL, failures=failures+1, env_json=?, error=?",
            (self.store.clock.time(), encode_json(env, "environment"), text),
            self._event("failed", error=text.strip().splitlines()[-1] if text.strip() else ""),
        )

    def release(self, reason: str = "released", error: str | None = None) -> None:
        """Give the run back unfinished (status 'pending', checkpoint kept, no failure counted),
        e.g. on Ctrl-C or a `SetupError`; `error` (if given) becomes the row's last error."""
        self._check_open("release")
        if error is None:
            self._end("status='pending', owner=NULL, heartbeat=NULL", (), self._event("released", reason=reason))
        else:
            self._end(
                "status='pending', owner=NULL, heartbeat=NULL, error=?",
                (error,),
                self._event("released", reason=reason),
            )

    def _event(self, kind: str, **detail: Any) -> dict[str, Any]:
        return history_event(kind, self.owner, self.store.clock.time(), **detail)

    def _end(self, assignments: str, params: tuple, event: dict) -> None:
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT history_json FROM runs WHERE key=? AND owner=? AND status='running'", (self.key, self.owner)
            ).fetchone()
            if row is None:
                raise self._lose(conn)
            history = decode_json(row[0]) + [event]
            conn.execute(
                f"UPDATE runs SET {assignments}, history_json=? WHERE key=? AND owner=?",
                (*params, encode_json(history, "history"), self.key, self.owner),
            )
        self._close()

    def _lose(self, conn: sqlite3.Connection) -> LeaseLost:
        self._lost = (
            f"run {self.key} ({self.spec.label}) is no longer owned by {self.owner}: "
            f"{self.store.describe_owner(conn, self.key)}"
        )
        self._close()
        return LeaseLost(self._lost)

    def _close(self) -> None:
        self._closed = True
        owners.retire(self.owner)

    def _check_open(self, what: str) -> None:
        if self._lost is not None:
            raise LeaseLost(self._lost)
        if self._closed:
            raise RuntimeError(f"Lease.{what}: the lease on {self.key} was already finished, failed or released")


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
