"""A SQLite results store shared by processes: each run is computed once and never lost.

One row per run, keyed by `RunSpec.key` (spec + `CODE_EPOCH`). Several processes (pytest-xdist
workers, a sweep on several GPUs) open the same file; SQLite in WAL mode with a busy timeout
serialises the short write transactions, and a claim is a ``BEGIN IMMEDIATE`` transaction, so
exactly one process gets to compute a run.

Life of a run::

    (absent) / pending / failed (retryable) --claim--> running --finish--> done | diverged
                                                         |  \\--fail-----> failed
                                                         \\--release---> pending (Ctrl-C, SetupError)
                                            owner dead or heartbeat stale: taken over by claim

Only failures of the computation count against a run (`DEFAULT_MAX_FAILURES`): a run function
that raises `SetupError` (missing or corrupt data, an unusable device: where the run executes,
not what it computes) releases the run unchanged, and `retry` gives a failed run its attempts back.

A claim records its owner as ``host:pid:token``. Another process takes the run over when the
owner's heartbeat is older than `stale_after`, or at once when the owner ran on this host and
its pid is gone (or is a zombie). `get_or_run` heartbeats from a background thread while the
run computes, and records every exception as a ``failed`` row with its traceback. A long run
saves checkpoints through its `Claim` (``<store>.ckpt/<key>.pt``, written atomically); the
process that takes the run over reads them and resumes. Finishing deletes the checkpoint.

Limits: SQLite's WAL mode needs a local filesystem (not NFS); heartbeats are wall-clock times,
so hosts sharing a store need roughly synchronised clocks; on Windows a dead owner is only
detected by its stale heartbeat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mtlcheck.allocator import malloc_setting
from mtlcheck.experiments import spec as _spec
from mtlcheck.experiments.spec import RunSpec

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_STALE_AFTER",
    "STATUSES",
    "Claim",
    "ClaimLost",
    "ResultStore",
    "RunFailedError",
    "RunRecord",
    "RunResult",
    "SetupError",
    "StoreError",
    "decode_json",
    "encode_json",
    "environment",
]

STATUSES = ("pending", "running", "done", "failed", "diverged")
FINISHED = ("done", "diverged")
DEFAULT_STALE_AFTER = 600.0
"""Seconds without a heartbeat after which a running claim may be taken over (any host)."""
DEFAULT_MAX_FAILURES = 3
"""A failed run is claimed again while it has failed fewer times than this."""
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


class StoreError(RuntimeError):
    """The store file cannot be used (wrong schema, WAL refused, key collision)."""


class SetupError(RuntimeError):
    """The run cannot start or go on because of where it executes (data, device, files), not
    because of what it computes. Raised by a run function, it makes `get_or_run` release the run
    (status 'pending', no failure counted, the message kept as its last error) and re-raise."""


class ClaimLost(RuntimeError):
    """This process no longer owns the run: another process took it over (stale heartbeat)."""


class RunFailedError(RuntimeError):
    """A stored run failed and is not retried; `record.error` holds the traceback text."""

    def __init__(self, record: "RunRecord"):
        self.record = record
        last = (record.error or "").strip().splitlines()
        super().__init__(
            f"run {record.key} ({record.spec.label}) failed {record.failures} time(s) and is not retried "
            f"(last error: {last[-1] if last else 'none recorded'}); `mtlcheck runs retry {record.key}` "
            "gives it its attempts back"
        )


# ---------------------------------------------------------------------------------------------
# JSON with explicit non-finite floats
# ---------------------------------------------------------------------------------------------
_FLOAT_TAG = "__float__"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isfinite(x):
            return x
        return {_FLOAT_TAG: "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            if k == _FLOAT_TAG:
                raise ValueError(f"{where}: the key {_FLOAT_TAG!r} is reserved for encoding NaN/inf")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    hint = " (call .item() or .tolist() first)" if hasattr(value, "tolist") else ""
    raise TypeError(f"{where}: {type(value).__name__} is not JSON data{hint}")


def _revive(obj: dict) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj:
        try:
            return _NONFINITE[obj[_FLOAT_TAG]]
        except KeyError:
            raise ValueError(f"bad non-finite float tag {obj!r}") from None
    return obj


def encode_json(value: Any, where: str = "value") -> str:
    """Strict JSON text; NaN and ±inf become ``{"__float__": "nan"|"inf"|"-inf"}``."""
    return json.dumps(_jsonable(value, where), allow_nan=False, separators=(",", ":"))


def decode_json(text: str | None) -> Any:
    """Inverse of `encode_json` (None stays None)."""
    if text is None:
        return None
    return json.loads(text, object_hook=_revive)


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------
_ENV_CACHE: dict[int, dict[str, Any]] = {}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(repo: str | os.PathLike | None = None, *, refresh: bool = False) -> dict[str, Any]:
    """Versions and hardware of this process: python, platform, host, torch, CUDA, GPU names,
    numpy, mtlcheck, and the git revision (None outside a repository) of `repo` (default: the
    checkout mtlcheck is imported from). CUDA is queried only when `torch.cuda.is_available()`.
    Cached per process unless `refresh` (all but the torch thread count, read each call)."""
    import torch

    if repo is None and not refresh and os.getpid() in _ENV_CACHE:  # the thread count can change
        return {**_ENV_CACHE[os.getpid()], "torch_threads": torch.get_num_threads()}

    import mtlcheck

    where = Path(repo) if repo is not None else Path(mtlcheck.__file__).resolve().parent
    revision = _git(["rev-parse", "HEAD"], where)
    dirty = None
    if revision is not None:
        status = _git(["status", "--porcelain", "--untracked-files=no"], where)
        dirty = None if status is None else bool(status)
    cuda = torch.cuda.is_available()
    try:
        import numpy

        numpy_version = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a dependency
        numpy_version = None
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "numpy": numpy_version,
        "mtlcheck": getattr(mtlcheck, "__version__", None),
        "git_revision": revision,
        "git_dirty": dirty,
        "code_epoch": _spec.CODE_EPOCH,
        "malloc": malloc_setting(),
    }
    if repo is None:
        _ENV_CACHE[os.getpid()] = dict(env)
    return {**env, "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Owners
# ---------------------------------------------------------------------------------------------
def _host_id() -> str:
    """Hostname plus the kernel boot id (Linux), so a reboot or a same-named machine differs."""
    host = socket.gethostname().replace(":", "_") or "unknown-host"
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return host
    return f"{host}/{boot}"


_HOST = _host_id()
_LIVE_TOKENS: dict[str, int] = {}  # token of each open claim in this process -> claiming thread
_LIVE_LOCK = threading.Lock()


def _parse_owner(owner: str) -> tuple[str, int, str]:
    host, pid, token = owner.rsplit(":", 2)
    return host, int(pid), token


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process; rely on heartbeats there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _owned_by_this_thread(owner: str | None) -> bool:
    try:
        host, pid, token = _parse_owner(owner or "")
    except ValueError:
        return False
    with _LIVE_LOCK:
        return host == _HOST and pid == os.getpid() and _LIVE_TOKENS.get(token) == threading.get_ident()


def _owner_dead_reason(owner: str | None, heartbeat: float | None, now: float, stale_after: float) -> str | None:
    """Why a running claim may be taken over, or None while its owner counts as alive."""
    if owner is None or heartbeat is None:
        return "running row without owner or heartbeat"
    age = now - heartbeat
    if age > stale_after:
        return f"heartbeat {age:.1f}s old (stale_after={stale_after:g}s)"
    try:
        host, pid, token = _parse_owner(owner)
    except ValueError:
        return f"unparseable owner {owner!r}"
    if host != _HOST:
        return None
    if pid == os.getpid():
        with _LIVE_LOCK:
            alive = token in _LIVE_TOKENS
        return None if alive else f"owner token {token} is not live in this process (pid {pid} reused)"
    return None if _pid_alive(pid) else f"owner process {pid} on this host is dead"


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
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


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a run function returns to `get_or_run` (a 3- or 4-tuple in this order also works)."""

    metrics: Mapping[str, Any]
    trajectory: Mapping[str, Any] | None = None
    timings: Mapping[str, Any] | None = None
    status: str = "done"
    error: str | None = None


def _as_result(value: Any) -> RunResult:
    if isinstance(value, RunResult):
        return value
    if isinstance(value, tuple) and len(value) in (3, 4):
        return RunResult(*value)
    raise TypeError(
        "a run function must return a RunResult or a tuple (metrics, trajectory, timings[, status]), "
        f"got {type(value).__name__}"
    )


_COLUMNS = (
    "key, spec_json, code_epoch, status, owner, heartbeat, attempts, failures, created, started, finished, "
    "metrics_json, trajectory_json, env_json, timings_json, error, history_json"
)


def _record(row: tuple) -> RunRecord:
    (key, spec_json, epoch, status, owner, hb, attempts, failures, created, started, finished,
     metrics, trajectory, env, timings, error, history) = row
    return RunRecord(
        key=key, spec=RunSpec.from_json(spec_json), code_epoch=epoch, status=status, owner=owner,
        heartbeat=hb, attempts=attempts, failures=failures, created=created, started=started,
        finished=finished, metrics=decode_json(metrics), trajectory=decode_json(trajectory),
        env=decode_json(env), timings=decode_json(timings), error=error, history=decode_json(history),
    )


def _event(kind: str, owner: str | None, **detail: Any) -> dict[str, Any]:
    return {"event": kind, "time": time.time(), "owner": owner, **detail}


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------
class Claim:
    """This process's ownership of one running run. Obtain from `ResultStore.claim`."""

    def __init__(self, store: "ResultStore", spec: RunSpec, key: str, owner: str, attempt: int,
                 took_over_from: str | None, takeover_reason: str | None):
        self.store = store
        self.spec = spec
        self.key = key
        self.owner = owner
        self.attempt = attempt
        self.took_over_from = took_over_from
        self.takeover_reason = takeover_reason
        self.started_at = time.time()
        self._closed = False
        self._lost: str | None = None

    def __repr__(self) -> str:
        return f"Claim(key={self.key!r}, spec={self.spec.label!r}, owner={self.owner!r}, attempt={self.attempt})"

    # -- liveness -------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Record that the run is alive; raises `ClaimLost` if another process took it over."""
        self._check_open("heartbeat")
        with self.store._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET heartbeat=? WHERE key=? AND owner=? AND status='running'",
                (time.time(), self.key, self.owner),
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
        that proves this process still owns the run (raises `ClaimLost` otherwise)."""
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
    def finish(self, metrics: Mapping[str, Any], trajectory: Mapping[str, Any] | None = None,
               timings: Mapping[str, Any] | None = None, status: str = "done", error: str | None = None) -> None:
        """Store the result (status 'done' or 'diverged') and delete the checkpoint. Raises
        `ClaimLost` (storing nothing) if another process took the run over meanwhile."""
        self._check_open("finish")
        if status not in FINISHED:
            raise ValueError(f"Claim.finish: status must be one of {FINISHED}, got {status!r}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"Claim.finish: metrics must be a mapping, got {type(metrics).__name__}")
        if trajectory is not None and not isinstance(trajectory, Mapping):
            raise TypeError(f"Claim.finish: trajectory must be a mapping of lists, got {type(trajectory).__name__}")
        if timings is not None and not isinstance(timings, Mapping):
            raise TypeError(f"Claim.finish: timings must be a mapping, got {type(timings).__name__}")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"Claim.finish: error must be a string or None, got {type(error).__name__}")
        metrics_json = encode_json(metrics, "metrics")
        trajectory_json = encode_json(trajectory if trajectory is not None else {}, "trajectory")
        timings_json = encode_json(timings if timings is not None else {}, "timings")
        env_json = encode_json(environment(), "environment")
        self._end(
            "status=?, finished=?, heartbeat=NULL, metrics_json=?, trajectory_json=?, env_json=?, timings_json=?, error=?",
            (status, time.time(), metrics_json, trajectory_json, env_json, timings_json, error),
            _event(status, self.owner),
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
            raise TypeError(f"Claim.fail: error must be an exception or a string, got {type(error).__name__}")
        try:
            env = environment()
        except Exception as exc:  # noqa: BLE001 - the failure must be recorded even so
            env = {"environment_error": f"{type(exc).__name__}: {exc}"}
        self._end(
            "status='failed', finished=?, heartbeat=NULL, failures=failures+1, env_json=?, error=?",
            (time.time(), encode_json(env, "environment"), text),
            _event("failed", self.owner, error=text.strip().splitlines()[-1] if text.strip() else ""),
        )

    def release(self, reason: str = "released", error: str | None = None) -> None:
        """Give the run back unfinished (status 'pending', checkpoint kept, no failure counted),
        e.g. on Ctrl-C or a `SetupError`; `error` (if given) becomes the row's last error."""
        self._check_open("release")
        if error is None:
            self._end("status='pending', owner=NULL, heartbeat=NULL", (), _event("released", self.owner, reason=reason))
        else:
            self._end("status='pending', owner=NULL, heartbeat=NULL, error=?", (error,),
                      _event("released", self.owner, reason=reason))

    def _end(self, assignments: str, params: tuple, event: dict) -> None:
        with self.store._write() as conn:
            row = conn.execute("SELECT history_json FROM runs WHERE key=? AND owner=? AND status='running'",
                               (self.key, self.owner)).fetchone()
            if row is None:
                raise self._lose(conn)
            history = decode_json(row[0]) + [event]
            conn.execute(f"UPDATE runs SET {assignments}, history_json=? WHERE key=? AND owner=?",
                         (*params, encode_json(history, "history"), self.key, self.owner))
        self._close()

    def _lose(self, conn: sqlite3.Connection) -> ClaimLost:
        self._lost = f"run {self.key} ({self.spec.label}) is no longer owned by {self.owner}: {self.store._describe(conn, self.key)}"
        self._close()
        return ClaimLost(self._lost)

    def _close(self) -> None:
        self._closed = True
        with _LIVE_LOCK:
            _LIVE_TOKENS.pop(_parse_owner(self.owner)[2], None)

    def _check_open(self, what: str) -> None:
        if self._lost is not None:
            raise ClaimLost(self._lost)
        if self._closed:
            raise RuntimeError(f"Claim.{what}: the claim on {self.key} was already finished, failed or released")


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------
class ResultStore:
    """Runs in the SQLite file `path` (created with its parent directories unless `create` is
    False). Safe to share between threads (one connection per thread) and processes (WAL + busy
    timeout). `readonly` opens an existing store for reading only (it may lie on a read-only
    filesystem; writing raises `StoreError`). Every problem with the file itself (a folder, not
    SQLite, not writable) raises `StoreError` naming it."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 60.0, readonly: bool = False,
                 create: bool = True):
        if str(path) in ("", ":memory:"):
            raise ValueError(f"ResultStore: path must be a file (processes share it), got {str(path)!r}")
        if not busy_timeout > 0:
            raise ValueError(f"ResultStore: busy_timeout must be positive seconds, got {busy_timeout!r}")
        self.path = Path(path).resolve()
        self.busy_timeout = float(busy_timeout)
        self.readonly = bool(readonly)
        self.checkpoint_dir = self.path.with_name(self.path.name + ".ckpt")
        self._local = threading.local()
        self._immutable = False
        if self.path.is_dir():
            raise StoreError(f"results store {self.path} is a folder; pass the SQLite file "
                             f"(e.g. {self.path / 'runs.sqlite'})")
        if not self.path.exists() and (readonly or not create):
            raise StoreError(f"no results store at {self.path}")
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of results store {self.path}: "
                                 f"{exc.strerror or exc}") from exc
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
    def _write(self) -> Iterator[sqlite3.Connection]:
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
                raise StoreError(f"{self.path}: schema version {version} (tables {[t[0] for t in tables]}), "
                                 f"this mtlcheck expects {SCHEMA_VERSION}")
            return
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
            if version == 0 and not tables:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # executescript would commit
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} (tables {[t[0] for t in tables]}), "
                                 f"this mtlcheck expects {SCHEMA_VERSION}")

    def _describe(self, conn: sqlite3.Connection, key: str) -> str:
        row = conn.execute("SELECT status, owner, heartbeat FROM runs WHERE key=?", (key,)).fetchone()
        if row is None:
            return "the row is gone"
        status, owner, hb = row
        age = "" if hb is None else f", heartbeat {time.time() - hb:.1f}s ago"
        return f"status {status}, owner {owner}{age}"

    # -- claiming -------------------------------------------------------------------------------
    def claim(self, spec: RunSpec, *, stale_after: float = DEFAULT_STALE_AFTER,
              max_failures: int = DEFAULT_MAX_FAILURES) -> Claim | None:
        """Atomically make this process the owner of `spec`'s run, or return None.

        Claims a run that is absent, pending, failed fewer than `max_failures` times, or running
        under an owner that is dead (same host, pid gone) or silent for more than `stale_after`
        seconds (take-over). Returns None for done/diverged runs, failed runs out of retries,
        and runs a live owner is computing."""
        if not isinstance(spec, RunSpec):
            raise TypeError(f"ResultStore.claim: expected a RunSpec, got {type(spec).__name__}")
        if not stale_after > 0:
            raise ValueError(f"ResultStore.claim: stale_after must be positive seconds, got {stale_after!r}")
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"ResultStore.claim: max_failures must be an int >= 1, got {max_failures!r}")
        key, spec_json = spec.key, spec.to_json()
        token = uuid.uuid4().hex[:12]
        owner = f"{_HOST}:{os.getpid()}:{token}"
        with _LIVE_LOCK:  # live before the row names it: a racing thread must see it alive
            _LIVE_TOKENS[token] = threading.get_ident()
        try:
            claim = self._claim_row(spec, key, spec_json, owner, stale_after, max_failures)
        except BaseException:
            with _LIVE_LOCK:
                _LIVE_TOKENS.pop(token, None)
            raise
        if claim is None:
            with _LIVE_LOCK:
                _LIVE_TOKENS.pop(token, None)
        return claim

    def _claim_row(self, spec: RunSpec, key: str, spec_json: str, owner: str, stale_after: float,
                   max_failures: int) -> Claim | None:
        with self._write() as conn:
            now = time.time()
            row = conn.execute(
                "SELECT spec_json, status, owner, heartbeat, attempts, failures, history_json FROM runs WHERE key=?",
                (key,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO runs (key, spec_json, code_epoch, benchmark, method, status, owner, heartbeat, "
                    "attempts, created, started, history_json) VALUES (?,?,?,?,?,'running',?,?,1,?,?,?)",
                    (key, spec_json, _spec.CODE_EPOCH, spec.benchmark, spec.method, owner, now, now, now,
                     encode_json([_event("claimed", owner, attempt=1)])))
                return Claim(self, spec, key, owner, 1, None, None)
            stored_spec, status, old_owner, hb, attempts, failures, history = row
            if stored_spec != spec_json:
                raise StoreError(f"key collision: {key} is stored for {stored_spec}, not {spec_json}")
            previous, reason = None, None
            if status in FINISHED:
                return None
            if status == "failed" and failures >= max_failures:
                return None
            if status == "running":
                reason = _owner_dead_reason(old_owner, hb, now, stale_after)
                if reason is None:
                    return None
                previous = old_owner
            attempt = attempts + 1
            kind = "taken_over" if previous is not None else ("retried" if status == "failed" else "claimed")
            extra = {"from": previous, "reason": reason} if previous is not None else {}
            history = decode_json(history) + [_event(kind, owner, attempt=attempt, **extra)]
            conn.execute(
                "UPDATE runs SET status='running', owner=?, heartbeat=?, attempts=?, started=?, finished=NULL, "
                "history_json=? WHERE key=?",
                (owner, now, attempt, now, encode_json(history), key))
            return Claim(self, spec, key, owner, attempt, previous, reason)

    def add(self, specs: RunSpec | list[RunSpec]) -> int:
        """Register runs as 'pending' (existing rows are untouched); returns how many were new."""
        specs = [specs] if isinstance(specs, RunSpec) else list(specs)
        for s in specs:
            if not isinstance(s, RunSpec):
                raise TypeError(f"ResultStore.add: expected RunSpecs, got {type(s).__name__}")
        added = 0
        with self._write() as conn:
            now = time.time()
            for s in specs:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO runs (key, spec_json, code_epoch, benchmark, method, status, created, "
                    "history_json) VALUES (?,?,?,?,?,'pending',?,?)",
                    (s.key, s.to_json(), _spec.CODE_EPOCH, s.benchmark, s.method, now,
                     encode_json([_event("added", None)])))
                added += cur.rowcount
        return added

    def retry(self, spec_or_key: RunSpec | str) -> bool:
        """Give a failed run its attempts back (failures set to 0, history kept), so the next
        `claim` computes it again; True if the run was failed."""
        key = self._key(spec_or_key)
        with self._write() as conn:
            row = conn.execute("SELECT history_json FROM runs WHERE key=? AND status='failed'", (key,)).fetchone()
            if row is None:
                return False
            history = decode_json(row[0]) + [_event("retry", None)]
            conn.execute("UPDATE runs SET failures=0, history_json=? WHERE key=?", (encode_json(history), key))
        return True

    def forget(self, spec_or_key: RunSpec | str) -> bool:
        """Delete a run and its checkpoint so it is computed again; True if a row existed.
        Never do this while a process is computing it."""
        key = self._key(spec_or_key)
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM runs WHERE key=?", (key,)).rowcount == 1
        self._delete_checkpoint(key)
        return deleted

    # -- reading --------------------------------------------------------------------------------
    @staticmethod
    def _key(spec_or_key: RunSpec | str) -> str:
        if isinstance(spec_or_key, RunSpec):
            return spec_or_key.key
        if isinstance(spec_or_key, str) and len(spec_or_key) == _spec.KEY_LENGTH and all(
                c in "0123456789abcdef" for c in spec_or_key):
            return spec_or_key
        raise ValueError(f"expected a RunSpec or a {_spec.KEY_LENGTH}-hex-digit key, got {spec_or_key!r}")

    def get(self, spec_or_key: RunSpec | str) -> RunRecord | None:
        """The stored record, or None if the run was never claimed or added."""
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM runs WHERE key=?", (self._key(spec_or_key),)).fetchone()
        return None if row is None else _record(row)

    def runs(self, status: str | None = None, benchmark: str | None = None, method: str | None = None,
             *, all_epochs: bool = False) -> list[RunRecord]:
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
        sql = f"SELECT {_COLUMNS} FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY created, key"
        return [_record(r) for r in self._conn().execute(sql, params).fetchall()]

    def counts(self) -> dict[str, int]:
        """Number of runs per status (current `CODE_EPOCH`)."""
        rows = self._conn().execute("SELECT status, COUNT(*) FROM runs WHERE code_epoch=? GROUP BY status",
                                    (_spec.CODE_EPOCH,)).fetchall()
        return {s: 0 for s in STATUSES} | dict(rows)

    def wait_for(self, spec: RunSpec | str, timeout: float | None = None, poll: float = 0.5) -> RunRecord:
        """Block until the run is done, diverged or failed and return its record; raises
        `TimeoutError` (describing the owner) after `timeout` seconds. Never takes a run over:
        use `get_or_run` for that."""
        if not poll > 0:
            raise ValueError(f"ResultStore.wait_for: poll must be positive seconds, got {poll!r}")
        key = self._key(spec)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.get(key)
            if record is not None and record.status in (*FINISHED, "failed"):
                return record
            if deadline is not None and time.monotonic() >= deadline:
                state = "absent" if record is None else self._describe(self._conn(), key)
                if record is not None and record.status == "running":
                    dead = _owner_dead_reason(record.owner, record.heartbeat, time.time(), DEFAULT_STALE_AFTER)
                    state += f" ({dead})" if dead else ""
                raise TimeoutError(f"run {key} not finished after {timeout}s: {state}")
            time.sleep(poll)

    # -- computing ------------------------------------------------------------------------------
    def get_or_run(self, spec: RunSpec, fn: Callable[[Claim], Any], *, wait: bool = True,
                   timeout: float | None = None, poll: float = 0.5, stale_after: float = DEFAULT_STALE_AFTER,
                   max_failures: int = DEFAULT_MAX_FAILURES, heartbeat_every: float | None = None,
                   on_wait: Callable[[RunRecord | None], Any] | None = None) -> RunRecord | None:
        """The stored result of `spec`, computing it with ``fn(claim)`` if nobody has.

        `fn` returns a `RunResult` (or a tuple metrics, trajectory, timings[, status]); a
        background thread heartbeats every `heartbeat_every` seconds (default stale_after/4)
        while it runs. If another live process owns the run, waits for its result (or returns
        None at once when `wait` is False), taking the run over should that owner die. An
        exception in `fn` is recorded as 'failed' with its traceback and re-raised; a stored
        failure that is out of retries raises `RunFailedError`. KeyboardInterrupt and other
        non-Exception exits release the run to 'pending' (checkpoint kept), and so does a
        `SetupError` (no failure counted). `on_wait(record)` is called once when this call starts
        waiting for another process's claim (e.g. to say so)."""
        if not isinstance(spec, RunSpec):
            raise TypeError(f"ResultStore.get_or_run: expected a RunSpec, got {type(spec).__name__}")
        if not callable(fn):
            raise TypeError(f"ResultStore.get_or_run: fn must be callable, got {fn!r}")
        interval = stale_after / 4 if heartbeat_every is None else heartbeat_every
        if not 0 < interval < stale_after:
            raise ValueError(f"ResultStore.get_or_run: heartbeat_every must be in (0, stale_after), got {interval!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        try_claim = True
        told = False
        while True:
            if try_claim:
                claim = self.claim(spec, stale_after=stale_after, max_failures=max_failures)
                if claim is not None:
                    try:
                        return self._execute(claim, fn, interval)
                    except ClaimLost:
                        pass  # taken over while we computed: wait for the new owner's result
            record = self.get(spec)
            if record is not None and record.is_finished:
                return record
            if record is not None and record.status == "failed" and record.failures >= max_failures:
                raise RunFailedError(record)
            if record is not None and record.status == "running" and _owned_by_this_thread(record.owner):
                raise RuntimeError(f"get_or_run: run {spec.key} ({spec.label}) is being computed by this very "
                                   "thread (a run function asked for its own result); waiting would never end")
            if not wait:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {spec.key} ({spec.label}) not finished after {timeout}s: "
                                   f"{'absent' if record is None else self._describe(self._conn(), spec.key)}")
            if on_wait is not None and not told:
                told = True
                on_wait(record)
            time.sleep(poll)
            record = self.get(spec)
            try_claim = (record is None or record.status in ("pending", "failed")
                         or (record.status == "running"
                             and _owner_dead_reason(record.owner, record.heartbeat, time.time(), stale_after) is not None))

    def _execute(self, claim: Claim, fn: Callable[[Claim], Any], interval: float) -> RunRecord:
        stop = threading.Event()
        lost: list[BaseException] = []

        def beat() -> None:
            try:
                while not stop.wait(interval):
                    claim.heartbeat()
            except BaseException as exc:  # noqa: BLE001 - surfaced by finish/fail below
                lost.append(exc)
            finally:
                self.close()

        thread = threading.Thread(target=beat, name=f"mtlcheck-heartbeat-{claim.key}", daemon=True)
        thread.start()
        t0 = time.perf_counter()
        try:
            try:
                result = _as_result(fn(claim))
            finally:
                stop.set()
                thread.join()
        except SetupError as exc:
            with contextlib.suppress(ClaimLost):
                claim.release(f"setup error: {exc}", error="".join(traceback.format_exception_only(type(exc), exc)))
            raise
        except Exception as exc:
            with contextlib.suppress(ClaimLost):
                claim.fail(exc)
            raise
        except BaseException:
            with contextlib.suppress(ClaimLost):
                claim.release(f"interrupted in {os.getpid()}")
            raise
        timings = {**(result.timings or {}), "attempt_wall_s": time.perf_counter() - t0}
        try:
            claim.finish(result.metrics, result.trajectory, timings, status=result.status, error=result.error)
        except ClaimLost:
            raise
        except Exception as exc:  # a malformed result is a failure of the run, recorded as such
            claim.fail(exc)
            raise
        record = self.get(claim.key)
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
