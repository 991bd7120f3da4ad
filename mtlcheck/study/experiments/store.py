"""A SQLite results store shared by processes: each run is computed once and never lost.

One row per run, keyed by `RunSpec.key` (spec + `CODE_EPOCH`). Several processes (pytest-xdist
workers, a sweep on several GPUs) open the same file; SQLite in WAL mode with a busy timeout
serialises the short write transactions, and taking a lease on a run is a ``BEGIN IMMEDIATE``
transaction, so exactly one process gets to compute it.

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
its pid is gone (or is a zombie). `get_or_run` heartbeats from a background thread while the
run computes, and records every exception as a ``failed`` row with its traceback. A long run
saves checkpoints through its `Lease` (``<store>.ckpt/<key>.pt``, written atomically); the
process that takes the run over reads them and resumes. Finishing deletes the checkpoint.

Limits: SQLite's WAL mode needs a local filesystem (not NFS); heartbeats are wall-clock times,
so hosts sharing a store need roughly synchronised clocks; on Windows a dead owner is only
detected by its stale heartbeat. Every time the store records or compares comes from its `clock`,
so a test ages a heartbeat by moving a manual clock rather than by sleeping.

Beside this module: `records` (statuses, `RunRecord`, `RunResult`, the errors), `lease`
(`Lease`, `LeaseLost`), `owners` (owner names and their liveness), `codec` (JSON keeping NaN and
±inf), `provenance` (`environment`) and `clock`. This module re-exports the names its API hands
out (records, results, errors, leases); import the codec and `environment` from their modules.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments import spec as _spec
from mtlcheck.study.experiments.clock import Clock, SystemClock
from mtlcheck.study.experiments.codec import decode_json, encode_json
from mtlcheck.study.experiments.lease import Lease, LeaseLost
from mtlcheck.study.experiments.records import (
    FINISHED,
    STATUSES,
    RunFailedError,
    RunRecord,
    RunResult,
    SetupError,
    StoreError,
    as_result,
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
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key             TEXT PRIMARY KEY,
    spec_json       TEXT NOT NULL,
    code_epoch      INTEGER NOT NULL,
    benchmark       TEXT NOT NULL,
    method          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending','running','done','failed','diverged')),
    owner           TEXT,
    heartbeat       REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    created         REAL NOT NULL,
    started         REAL,
    finished        REAL,
    metrics_json    TEXT,
    trajectory_json TEXT,
    env_json        TEXT,
    timings_json    TEXT,
    error           TEXT,
    history_json    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_benchmark ON runs(benchmark, method);
"""


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
    """Runs in the SQLite file `path` (created with its parent directories unless `create` is
    False). Safe to share between threads (one connection per thread) and processes (WAL + busy
    timeout). `readonly` opens an existing store for reading only (it may lie on a read-only
    filesystem; writing raises `StoreError`). Every problem with the file itself (a folder, not
    SQLite, not writable) raises `StoreError` naming it. `clock` (default the system's) supplies
    every time the store records, every heartbeat age it judges and every wait (see `Clock`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        busy_timeout: float = 60.0,
        readonly: bool = False,
        create: bool = True,
        clock: Clock | None = None,
    ):
        if str(path) in ("", ":memory:"):
            raise ValueError(f"ResultStore: path must be a file (processes share it), got {str(path)!r}")
        if not busy_timeout > 0:
            raise ValueError(f"ResultStore: busy_timeout must be positive seconds, got {busy_timeout!r}")
        self.path = Path(path).resolve()
        self.busy_timeout = float(busy_timeout)
        self.readonly = bool(readonly)
        self.clock: Clock = SystemClock() if clock is None else clock
        self.checkpoint_dir = self.path.with_name(self.path.name + ".ckpt")
        self._local = threading.local()
        self._immutable = False
        if self.path.is_dir():
            raise StoreError(
                f"results store {self.path} is a folder; pass the SQLite file (e.g. {self.path / 'runs.sqlite'})"
            )
        if not self.path.exists() and (readonly or not create):
            raise StoreError(f"no results store at {self.path}")
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of results store {self.path}: {exc.strerror or exc}"
                ) from exc
        self._init_schema()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    # -- connections ----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            return self._connect_readonly() if self.readonly else self._connect_readwrite()
        except sqlite3.Error as exc:
            raise self._file_error(exc) from exc

    def _file_error(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            why = "is not an SQLite results store (or is truncated or corrupt)"
        elif "readonly" in text or "read-only" in text:
            why = "is not writable (a read-only file or folder); `mtlcheck report` and `mtlcheck runs list` can read it"
        elif "unable to open" in text:
            why = "cannot be opened (a missing or read-only folder?)"
        else:
            why = "cannot be used"
        return StoreError(f"results store {self.path} {why}: sqlite3: {text}")

    def _connect_readonly(self) -> sqlite3.Connection:
        """Read-only; a WAL store whose folder cannot be written (no -shm file can be made) is
        opened as immutable, which is right for an archived store nobody writes."""
        uri = self.path.as_uri()
        if not self._immutable:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.busy_timeout, isolation_level=None)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "unable to open" not in str(exc) and "readonly" not in str(exc):
                    raise
            self._immutable = True
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _connect_readwrite(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            deadline = time.monotonic() + self.busy_timeout
            while True:  # switching to WAL can report "locked" without waiting on the busy handler
                try:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL journal mode (got {mode!r}); use a local filesystem")
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or inherited across fork
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.__dict__.clear()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        if self.readonly:
            raise StoreError(f"results store {self.path} was opened read-only")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _init_schema(self) -> None:
        try:
            self._create_or_check_schema()
        except sqlite3.Error as exc:
            raise self._file_error(exc) from exc

    def _create_or_check_schema(self) -> None:
        if self.readonly:
            conn = self._conn()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                raise StoreError(
                    f"{self.path}: schema version {version} (tables {[t[0] for t in tables]}), "
                    f"this mtlcheck expects {SCHEMA_VERSION}"
                )
            return
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            if version == 0 and not tables:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} (tables {[t[0] for t in tables]}), "
                    f"this mtlcheck expects {SCHEMA_VERSION}"
                )

    def describe_owner(self, conn: sqlite3.Connection, key: str) -> str:
        """The run's status, owner and heartbeat age as one phrase, for messages about a lost lease."""
        row = conn.execute("SELECT status, owner, heartbeat FROM runs WHERE key=?", (key,)).fetchone()
        if row is None:
            return "the row is gone"
        status, owner, hb = row
        age = "" if hb is None else f", heartbeat {self.clock.time() - hb:.1f}s ago"
        return f"status {status}, owner {owner}{age}"

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
        key, spec_json = spec.key, spec.to_json()
        owner = owners.new_owner()  # live before the row names it: a racing thread must see it alive
        try:
            lease = self._lease_row(spec, key, spec_json, owner, stale_after, max_failures)
        except BaseException:
            owners.retire(owner)
            raise
        if lease is None:
            owners.retire(owner)
        return lease

    def _lease_row(
        self, spec: RunSpec, key: str, spec_json: str, owner: str, stale_after: float, max_failures: int
    ) -> Lease | None:
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
                return Lease(self, spec, key, owner, 1, None, None)
            stored_spec, status, old_owner, hb, attempts, failures, history = row
            if stored_spec != spec_json:
                raise StoreError(f"key collision: {key} is stored for {stored_spec}, not {spec_json}")
            previous, reason = None, None
            if status in FINISHED:
                return None
            if status == "failed" and failures >= max_failures:
                return None
            if status == "running":
                reason = owners.dead_reason(old_owner, hb, now, stale_after)
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
            return Lease(self, spec, key, owner, attempt, previous, reason)

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
                    "INSERT OR IGNORE INTO runs (key, spec_json, code_epoch, benchmark, method, status, created, "
                    "history_json) VALUES (?,?,?,?,?,'pending',?,?)",
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
        self._delete_checkpoint(key)
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

    def get(self, spec_or_key: RunSpec | str) -> RunRecord | None:
        """The stored record, or None if the run was never leased or added."""
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM runs WHERE key=?", (self._key(spec_or_key),)).fetchone()
        return None if row is None else _record(row)

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
        return [_record(r) for r in self._conn().execute(sql, params).fetchall()]

    def counts(self) -> dict[str, int]:
        """Number of runs per status (current `CODE_EPOCH`)."""
        rows = (
            self._conn()
            .execute("SELECT status, COUNT(*) FROM runs WHERE code_epoch=? GROUP BY status", (_spec.CODE_EPOCH,))
            .fetchall()
        )
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
                state = "absent" if record is None else self.describe_owner(self._conn(), key)
                if record is not None and record.status == "running":
                    dead = owners.dead_reason(record.owner, record.heartbeat, self.clock.time(), DEFAULT_STALE_AFTER)
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
        if not isinstance(spec, RunSpec):
            raise TypeError(f"ResultStore.get_or_run: expected a RunSpec, got {type(spec).__name__}")
        if not callable(fn):
            raise TypeError(f"ResultStore.get_or_run: fn must be callable, got {fn!r}")
        interval = stale_after / 4 if heartbeat_every is None else heartbeat_every
        if not 0 < interval < stale_after:
            raise ValueError(f"ResultStore.get_or_run: heartbeat_every must be in (0, stale_after), got {interval!r}")
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        try_lease = True
        told = False
        while True:
            if try_lease:
                lease = self.lease(spec, stale_after=stale_after, max_failures=max_failures)
                if lease is not None:
                    try:
                        return self._execute(lease, fn, interval)
                    except LeaseLost:
                        pass  # taken over while we computed: wait for the new owner's result
            record = self.get(spec)
            if record is not None and record.is_finished:
                return record
            if record is not None and record.status == "failed" and record.failures >= max_failures:
                raise RunFailedError(record)
            if record is not None and record.status == "running" and owners.owned_by_this_thread(record.owner):
                raise RuntimeError(
                    f"get_or_run: run {spec.key} ({spec.label}) is being computed by this very "
                    "thread (a run function asked for its own result); waiting would never end"
                )
            if not wait:
                return None
            if deadline is not None and self.clock.monotonic() >= deadline:
                raise TimeoutError(
                    f"run {spec.key} ({spec.label}) not finished after {timeout}s: "
                    f"{'absent' if record is None else self.describe_owner(self._conn(), spec.key)}"
                )
            if on_wait is not None and not told:
                told = True
                on_wait(record)
            self.clock.sleep(poll)
            record = self.get(spec)
            try_lease = (
                record is None
                or record.status in ("pending", "failed")
                or (
                    record.status == "running"
                    and owners.dead_reason(record.owner, record.heartbeat, self.clock.time(), stale_after) is not None
                )
            )

    def _execute(self, lease: Lease, fn: Callable[[Lease], Any], interval: float) -> RunRecord:
        stop = threading.Event()
        lost: list[BaseException] = []

        def beat() -> None:
            try:
                while not stop.wait(interval):
                    lease.heartbeat()
            except BaseException as exc:  # noqa: BLE001 - surfaced by finish/fail below
                lost.append(exc)
            finally:
                self.close()

        thread = threading.Thread(target=beat, name=f"mtlcheck-heartbeat-{lease.key}", daemon=True)
        thread.start()
        t0 = time.perf_counter()
        try:
            try:
                result = as_result(fn(lease))
            finally:
                stop.set()
                thread.join()
        except SetupError as exc:
            with contextlib.suppress(LeaseLost):
                lease.release(f"setup error: {exc}", error="".join(traceback.format_exception_only(type(exc), exc)))
            raise
        except Exception as exc:
            with contextlib.suppress(LeaseLost):
                lease.fail(exc)
            raise
        except BaseException:
            with contextlib.suppress(LeaseLost):
                lease.release(f"interrupted in {os.getpid()}")
            raise
        timings = {**(result.timings or {}), "attempt_wall_s": time.perf_counter() - t0}
        try:
            lease.finish(
                result.metrics,
                result.trajectory,
                timings,
                status=result.status,
                error=result.error,
                engine=result.engine,
            )
        except LeaseLost:
            raise
        except Exception as exc:  # a malformed result is a failure of the run, recorded as such
            lease.fail(exc)
            raise
        record = self.get(lease.key)
        assert record is not None
        return record

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, spec_or_key: RunSpec | str) -> Path:
        return self.checkpoint_dir / f"{self._key(spec_or_key)}.pt"

    def _delete_checkpoint(self, key: str) -> None:
        path = self.checkpoint_dir / f"{key}.pt"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if self.checkpoint_dir.is_dir():
            for tmp in self.checkpoint_dir.glob(f".{key}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
