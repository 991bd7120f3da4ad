"""The results store shared by processes: each run is computed once and never lost.

One row per run, keyed by `RunSpec.key` (spec + `CODE_EPOCH`), in an SQLite file (the default:
one host) or a PostgreSQL database (``postgresql://…``: any number of hosts; see `databases`).
Several processes (pytest-xdist workers, a sweep on several GPUs, sweeps on several machines)
open the same store; every write is a short transaction that excludes the other writers, and
taking a lease on a run is one of them, so exactly one process gets to compute it.

Life of a run::

    (absent) / pending / failed (retryable) --lease--> running --finish--> done | diverged
                                                         |  \\--fail-----> failed
                                                         \\--release---> pending (Ctrl-C, SetupError)
                                            owner dead or heartbeat stale: taken over by lease

Only failures of the computation count against a run (`DEFAULT_MAX_FAILURES`): a run function
that raises `SetupError` (missing or corrupt data, an unusable device: where the run executes,
not what it computes) releases the run unchanged, and `retry` gives a failed run its attempts back.

A lease records its owner as ``host:pid:token``. Another process takes the run over when the
owner's heartbeat is older than `stale_after`, or at once when the owner ran on this host and
its pid is gone (or is a zombie), or when the store's `is_dead` judge says so (a Ray node that
died). `get_or_run` (in `control`) heartbeats from a background thread while the run computes,
and records every exception as a ``failed`` row with its traceback. A long run saves checkpoints
through its `Lease` (``<store>.ckpt/<key>.pt`` beside an SQLite file, written atomically; a table
of a PostgreSQL store); the process that takes the run over reads them and resumes. Finishing
deletes the checkpoint.

Limits: SQLite's WAL mode needs one host and a local filesystem (not NFS); heartbeats are
wall-clock times, so hosts sharing a store need roughly synchronised clocks; on Windows a dead
owner is only detected by its stale heartbeat. Every time the store records or compares comes from its `clock`,
so a test ages a heartbeat by moving a manual clock rather than by sleeping.

Beside this module: `databases` (the SQLite and PostgreSQL backends), `control` (`get_or_run`),
`records` (statuses, `RunRecord`, `RunResult`, the errors), `lease` (`Lease`, `LeaseLost`),
`owners` (owner names and their liveness), `codec` (JSON keeping NaN and ±inf), `provenance`
(`environment`) and `clock`. This module re-exports the names its API hands
out (records, results, errors, leases); import the codec and `environment` from their modules.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments import spec as _spec
from mtlcheck.study.experiments.clock import Clock, SystemClock
from mtlcheck.study.experiments.codec import decode_json, encode_json
from mtlcheck.study.experiments.control import Claim, get_or_run
from mtlcheck.study.experiments.databases import open_database
from mtlcheck.study.experiments.lease import Lease, LeaseLost, acquire
from mtlcheck.study.experiments.records import (
    FINISHED,
    STATUSES,
    RunFailedError,
    RunRecord,
    RunResult,
    SetupError,
    StoreError,
    history_event,
)
from mtlcheck.study.experiments.spec import RunSpec

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_STALE_AFTER",
    "STATUSES",
    "Lease",
    "LeaseLost",
    "ResultStore",
    "RunFailedError",
    "RunRecord",
    "RunResult",
    "SetupError",
    "StoreError",
]

DEFAULT_STALE_AFTER = 600.0
"""Seconds without a heartbeat after which a running lease may be taken over (any host)."""
DEFAULT_MAX_FAILURES = 3
"""A failed run is leased again while it has failed fewer times than this."""
ENDING_COLUMNS = frozenset(
    {"status", "owner", "heartbeat", "finished", "metrics_json", "trajectory_json", "env_json", "timings_json", "error"}
)
"""The columns a lease sets when it ends (`ResultStore.end`)."""

_COLUMNS = (
    "key, spec_json, code_epoch, status, owner, heartbeat, attempts, failures, created, started, finished, "
    "metrics_json, trajectory_json, env_json, timings_json, error, history_json"
)


def _record(row: tuple) -> RunRecord:
    (
        key,
        spec_json,
        epoch,
        status,
        owner,
        hb,
        attempts,
        failures,
        created,
        started,
        finished,
        metrics,
        trajectory,
        env,
        timings,
        error,
        history,
    ) = row
    return RunRecord(
        key=key,
        spec=RunSpec.from_json(spec_json),
        code_epoch=epoch,
        status=status,
        owner=owner,
        heartbeat=hb,
        attempts=attempts,
        failures=failures,
        created=created,
        started=started,
        finished=finished,
        metrics=decode_json(metrics),
        trajectory=decode_json(trajectory),
        env=decode_json(env),
        timings=decode_json(timings),
        error=error,
        history=decode_json(history),
    )


class ResultStore:
    """Runs in the store at `location`: an SQLite file (created with its parent folders unless
    `create` is False) or a ``postgresql://user[:password]@host[:port]/dbname`` URL (a database
    that many hosts share; ``pip install mtlcheck[postgresql]``). Safe to share between threads
    (one connection per thread) and processes. `readonly` opens an existing store for reading
    only (an SQLite file may lie on a read-only filesystem; writing raises `StoreError`). Every
    problem with the store itself (a folder, not a store, not writable, a database that cannot be
    reached) raises `StoreError` naming it. `clock` (default the system's) supplies every time the
    store records, every heartbeat age it judges and every wait (see `Clock`). `is_dead(owner)`,
    if given, is one more judge of a running run's owner: a reason it is dead (its Ray node
    died, say), or None."""

    def __init__(
        self,
        location: str | os.PathLike,
        *,
        busy_timeout: float = 60.0,
        readonly: bool = False,
        create: bool = True,
        clock: Clock | None = None,
        is_dead: Callable[[str], str | None] | None = None,
    ):
        if not busy_timeout > 0:
            raise ValueError(f"ResultStore: busy_timeout must be positive seconds, got {busy_timeout!r}")
        self.db = open_database(location, readonly=bool(readonly), create=create, busy_timeout=float(busy_timeout))
        self.path: Path | None = self.db.path
        """The SQLite file (None for a PostgreSQL store)."""
        self.location: str = self.db.location
        """What reopens this store: the file's path or the database URL."""
        self.checkpoint_dir: Path | None = self.db.checkpoint_dir
        self.busy_timeout = float(busy_timeout)
        self.readonly = bool(readonly)
        self.clock: Clock = SystemClock() if clock is None else clock
        self.is_dead = is_dead
        self._local = threading.local()
        self._init_schema()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.db)!r})"

    def __str__(self) -> str:
        """The file, or the URL with its password hidden."""
        return str(self.db)

    # -- connections ----------------------------------------------------------------------------
    def _conn(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or getattr(local.conn, "closed", False):
            local.conn = self.db.connect()  # a new thread, a fork, or a database connection that broke
            local.pid = os.getpid()
        return local.conn

    def _read(self, sql: str, params: Any = ()) -> list[tuple]:
        """The rows of one query (a problem with the store itself raises `StoreError`)."""
        for attempt in (1, 2):
            conn = self._conn()
            try:
                return conn.execute(sql, params).fetchall()
            except self.db.errors as exc:
                if attempt == 1 and getattr(conn, "closed", False):
                    continue  # the connection broke (a server restart): once more on a new one
                raise self.db.error(exc) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.__dict__.clear()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A short write transaction that excludes every other writer: committed on success,
        rolled back on error."""
        if self.readonly:
            raise StoreError(f"results store {self} was opened read-only")
        conn = self._conn()
        try:
            self.db.begin(conn)
        except BaseException as exc:  # e.g. a lock wait that timed out: leave no transaction half-open
            with contextlib.suppress(*self.db.errors):
                conn.execute("ROLLBACK")
            if isinstance(exc, self.db.errors):
                raise self.db.error(exc) from exc
            raise
        try:
            yield conn
        except BaseException as exc:
            with contextlib.suppress(*self.db.errors):  # a broken connection has nothing to roll back
                conn.execute("ROLLBACK")
            if isinstance(exc, self.db.errors):
                raise self.db.error(exc) from exc
            raise
        try:
            conn.execute("COMMIT")
        except self.db.errors as exc:
            raise self.db.error(exc) from exc

    def _init_schema(self) -> None:
        try:
            if self.readonly:
                self.db.check_schema(self._conn())
            else:
                with self.transaction() as conn:
                    self.db.create_or_check_schema(conn)
        except self.db.errors as exc:
            raise self.db.error(exc) from exc

    def describe_owner(self, key: str) -> str:
        """The run's status, owner and heartbeat age as one phrase, for messages about a lost lease."""
        rows = self._read("SELECT status, owner, heartbeat FROM runs WHERE key=?", (key,))
        if not rows:
            return "the row is gone"
        status, owner, hb = rows[0]
        age = "" if hb is None else f", heartbeat {self.clock.time() - hb:.1f}s ago"
        return f"status {status}, owner {owner}{age}"

    def why_dead(self, owner: str | None, heartbeat: float | None, stale_after: float) -> str | None:
        """Why a running run's owner may be taken over now, or None while it counts as alive."""
        reason = owners.dead_reason(owner, heartbeat, self.clock.time(), stale_after)
        if reason is None and owner is not None and self.is_dead is not None:
            reason = self.is_dead(owner)
        return reason

    # -- leasing --------------------------------------------------------------------------------
    def lease(
        self, spec: RunSpec, *, stale_after: float = DEFAULT_STALE_AFTER, max_failures: int = DEFAULT_MAX_FAILURES
    ) -> Lease | None:
        """Atomically make this process the owner of `spec`'s run, or return None.

        Leases a run that is absent, pending, failed fewer than `max_failures` times, or running
        under an owner that is dead (same host, pid gone) or silent for more than `stale_after`
        seconds (take-over). Returns None for done/diverged runs, failed runs out of retries,
        and runs a live owner is computing."""
        if not isinstance(spec, RunSpec):
            raise TypeError(f"ResultStore.lease: expected a RunSpec, got {type(spec).__name__}")
        if not stale_after > 0:
            raise ValueError(f"ResultStore.lease: stale_after must be positive seconds, got {stale_after!r}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"ResultStore.lease: max_failures must be an int >= 1, got {max_failures!r}")
        return acquire(self, spec, stale_after=stale_after, max_failures=max_failures)

    def claim(self, spec: RunSpec, owner: str, *, stale_after: float, max_failures: int) -> Claim | None:
        """The lease's row transaction: make `owner` the run's owner, or return None (see `lease`)."""
        key, spec_json = spec.key, spec.to_json()
        with self.transaction() as conn:
            now = self.clock.time()
            row = conn.execute(
                "SELECT spec_json, status, owner, heartbeat, attempts, failures, history_json FROM runs WHERE key=?",
                (key,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO runs (key, spec_json, code_epoch, benchmark, method, status, owner, heartbeat, "
                    "attempts, created, started, history_json) VALUES (?,?,?,?,?,'running',?,?,1,?,?,?)",
                    (
                        key,
                        spec_json,
                        _spec.CODE_EPOCH,
                        spec.benchmark,
                        spec.method,
                        owner,
                        now,
                        now,
                        now,
                        encode_json([history_event("claimed", owner, now, attempt=1)]),
                    ),
                )
                return Claim(1, None, None)
            stored_spec, status, old_owner, hb, attempts, failures, history = row
            if stored_spec != spec_json:
                raise StoreError(f"key collision: {key} is stored for {stored_spec}, not {spec_json}")
            previous, reason = None, None
            if status in FINISHED:
                return None
            if status == "failed" and failures >= max_failures:
                return None
            if status == "running":
                reason = self.why_dead(old_owner, hb, stale_after)
                if reason is None:
                    return None
                previous = old_owner
            attempt = attempts + 1
            kind = "taken_over" if previous is not None else ("retried" if status == "failed" else "claimed")
            extra = {"from": previous, "reason": reason} if previous is not None else {}
            history = decode_json(history) + [history_event(kind, owner, now, attempt=attempt, **extra)]
            conn.execute(
                "UPDATE runs SET status='running', owner=?, heartbeat=?, attempts=?, started=?, finished=NULL, "
                "history_json=? WHERE key=?",
                (owner, now, attempt, now, encode_json(history), key),
            )
            return Claim(attempt, previous, reason)

    def beat(self, key: str, owner: str) -> bool:
        """The owner's heartbeat; False if `owner` no longer holds the run."""
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET heartbeat=? WHERE key=? AND owner=? AND status='running'",
                (self.clock.time(), key, owner),
            )
            return cur.rowcount == 1

    def end(self, key: str, owner: str, fields: dict[str, Any], event: dict, *, count_failure: bool = False) -> bool:
        """End `owner`'s lease: set `fields` (columns of `ENDING_COLUMNS`), append `event` to the
        history, count a failure if asked; False (nothing written) if `owner` no longer holds it."""
        unknown = set(fields) - ENDING_COLUMNS
        if unknown:
            raise ValueError(f"ResultStore.end: not columns a lease may set: {sorted(unknown)}")
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT history_json FROM runs WHERE key=? AND owner=? AND status='running'", (key, owner)
            ).fetchone()
            if row is None:
                return False
            history = decode_json(row[0]) + [event]
            assignments = [f"{column}=?" for column in fields] + (["failures=failures+1"] if count_failure else [])
            conn.execute(
                f"UPDATE runs SET {', '.join(assignments)}, history_json=? WHERE key=? AND owner=?",
                (*fields.values(), encode_json(history, "history"), key, owner),
            )
        return True

    def add(self, specs: RunSpec | list[RunSpec]) -> int:
        """Register runs as 'pending' (existing rows are untouched); returns how many were new."""
        specs = [specs] if isinstance(specs, RunSpec) else list(specs)
        for s in specs:
            if not isinstance(s, RunSpec):
                raise TypeError(f"ResultStore.add: expected RunSpecs, got {type(s).__name__}")
        added = 0
        with self.transaction() as conn:
            now = self.clock.time()
            for s in specs:
                cur = conn.execute(
                    "INSERT INTO runs (key, spec_json, code_epoch, benchmark, method, status, created, "
                    "history_json) VALUES (?,?,?,?,?,'pending',?,?) ON CONFLICT (key) DO NOTHING",
                    (
                        s.key,
                        s.to_json(),
                        _spec.CODE_EPOCH,
                        s.benchmark,
                        s.method,
                        now,
                        encode_json([history_event("added", None, now)]),
                    ),
                )
                added += cur.rowcount
        return added

    def retry(self, spec_or_key: RunSpec | str) -> bool:
        """Give a failed run its attempts back (failures set to 0, history kept), so the next
        `lease` computes it again; True if the run was failed."""
        key = self._key(spec_or_key)
        with self.transaction() as conn:
            row = conn.execute("SELECT history_json FROM runs WHERE key=? AND status='failed'", (key,)).fetchone()
            if row is None:
                return False
            history = decode_json(row[0]) + [history_event("retry", None, self.clock.time())]
            conn.execute("UPDATE runs SET failures=0, history_json=? WHERE key=?", (encode_json(history), key))
        return True

    def forget(self, spec_or_key: RunSpec | str) -> bool:
        """Delete a run and its checkpoint so it is computed again; True if a row existed.
        Never do this while a process is computing it."""
        key = self._key(spec_or_key)
        with self.transaction() as conn:
            deleted = conn.execute("DELETE FROM runs WHERE key=?", (key,)).rowcount == 1
        self.delete_checkpoint(key)
        return deleted

    # -- reading --------------------------------------------------------------------------------
    @staticmethod
    def _key(spec_or_key: RunSpec | str) -> str:
        if isinstance(spec_or_key, RunSpec):
            return spec_or_key.key
        if (
            isinstance(spec_or_key, str)
            and len(spec_or_key) == _spec.KEY_LENGTH
            and all(c in "0123456789abcdef" for c in spec_or_key)
        ):
            return spec_or_key
        raise ValueError(f"expected a RunSpec or a {_spec.KEY_LENGTH}-hex-digit key, got {spec_or_key!r}")

    def find(self, prefix: str) -> list[RunRecord]:
        """The stored runs of any code epoch whose key starts with `prefix` (a whole key: that run)."""
        record = self.get(prefix) if len(prefix) == _spec.KEY_LENGTH else None
        if record is not None:
            return [record]
        return [r for r in self.runs(all_epochs=True) if r.key.startswith(prefix)]

    def get(self, spec_or_key: RunSpec | str) -> RunRecord | None:
        """The stored record, or None if the run was never leased or added."""
        rows = self._read(f"SELECT {_COLUMNS} FROM runs WHERE key=?", (self._key(spec_or_key),))
        return _record(rows[0]) if rows else None

    def runs(
        self,
        status: str | None = None,
        benchmark: str | None = None,
        method: str | None = None,
        *,
        all_epochs: bool = False,
    ) -> list[RunRecord]:
        """Records in creation order, filtered; only the current `CODE_EPOCH` unless `all_epochs`."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"ResultStore.runs: status must be one of {STATUSES}, got {status!r}")
        where, params = [], []
        for column, value in (("status", status), ("benchmark", benchmark), ("method", method)):
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        if not all_epochs:
            where.append("code_epoch=?")
            params.append(_spec.CODE_EPOCH)
        sql = (
            f"SELECT {_COLUMNS} FROM runs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY created, key"
        )
        return [_record(r) for r in self._read(sql, params)]

    def counts(self) -> dict[str, int]:
        """Number of runs per status (current `CODE_EPOCH`)."""
        rows = self._read("SELECT status, COUNT(*) FROM runs WHERE code_epoch=? GROUP BY status", (_spec.CODE_EPOCH,))
        return {s: 0 for s in STATUSES} | dict(rows)

    def wait_for(self, spec: RunSpec | str, timeout: float | None = None, poll: float = 0.5) -> RunRecord:
        """Block until the run is done, diverged or failed and return its record; raises
        `TimeoutError` (describing the owner) after `timeout` seconds. Never takes a run over:
        use `get_or_run` for that."""
        if not poll > 0:
            raise ValueError(f"ResultStore.wait_for: poll must be positive seconds, got {poll!r}")
        key = self._key(spec)
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while True:
            record = self.get(key)
            if record is not None and record.status in (*FINISHED, "failed"):
                return record
            if deadline is not None and self.clock.monotonic() >= deadline:
                state = "absent" if record is None else self.describe_owner(key)
                if record is not None and record.status == "running":
                    dead = self.why_dead(record.owner, record.heartbeat, DEFAULT_STALE_AFTER)
                    state += f" ({dead})" if dead else ""
                raise TimeoutError(f"run {key} not finished after {timeout}s: {state}")
            self.clock.sleep(poll)

    # -- computing ------------------------------------------------------------------------------
    def get_or_run(
        self,
        spec: RunSpec,
        fn: Callable[[Lease], Any],
        *,
        wait: bool = True,
        timeout: float | None = None,
        poll: float = 0.5,
        stale_after: float = DEFAULT_STALE_AFTER,
        max_failures: int = DEFAULT_MAX_FAILURES,
        heartbeat_every: float | None = None,
        on_wait: Callable[[RunRecord | None], Any] | None = None,
    ) -> RunRecord | None:
        """The stored result of `spec`, computing it with ``fn(lease)`` if nobody has.

        `fn` returns a `RunResult` (or a tuple metrics, trajectory, timings[, status]); a
        background thread heartbeats every `heartbeat_every` seconds (default stale_after/4)
        while it runs. If another live process owns the run, waits for its result (or returns
        None at once when `wait` is False), taking the run over should that owner die. An
        exception in `fn` is recorded as 'failed' with its traceback and re-raised; a stored
        failure that is out of retries raises `RunFailedError`. KeyboardInterrupt and other
        non-Exception exits release the run to 'pending' (checkpoint kept), and so does a
        `SetupError` (no failure counted). `on_wait(record)` is called once when this call starts
        waiting for another process's lease (e.g. to say so)."""
        return get_or_run(
            self,
            spec,
            fn,
            wait=wait,
            timeout=timeout,
            poll=poll,
            stale_after=stale_after,
            max_failures=max_failures,
            heartbeat_every=heartbeat_every,
            on_wait=on_wait,
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, spec_or_key: RunSpec | str) -> Path:
        """The checkpoint file of an SQLite store's run (``<store>.ckpt/<key>.pt``)."""
        if self.path is None:
            raise StoreError(f"results store {self} keeps its checkpoints in the database, not in files")
        return self.db.checkpoint_path(self._key(spec_or_key))

    def save_checkpoint(self, key: str, data: bytes) -> None:
        """Store a run's checkpoint (atomically: a reader sees the old one or the new one)."""
        self._checkpoint("save_checkpoint", key, data)

    def load_checkpoint(self, key: str) -> bytes | None:
        return self._checkpoint("load_checkpoint", key)

    def has_checkpoint(self, key: str) -> bool:
        return self._checkpoint("has_checkpoint", key)

    def delete_checkpoint(self, key: str) -> None:
        self._checkpoint("delete_checkpoint", key)

    def _checkpoint(self, what: str, key: str, *args):
        if self.readonly and what in ("save_checkpoint", "delete_checkpoint"):
            raise StoreError(f"results store {self} was opened read-only")
        try:
            return getattr(self.db, what)(self._conn(), self._key(key), *args)
        except self.db.errors as exc:
            raise self.db.error(exc) from exc
