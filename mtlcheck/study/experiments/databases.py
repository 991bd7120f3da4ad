"""Where a results store keeps its rows and checkpoints: an SQLite file, or a PostgreSQL database.

`open_database(location)` picks the backend from the location: a ``postgresql://`` (or
``postgres://``) URL opens PostgreSQL through psycopg (``pip install mtlcheck[postgresql]``),
anything else is an SQLite file. Both give `ResultStore` the same few things: connections whose
``execute`` takes ``?`` placeholders, a write transaction that serialises every writer (SQLite's
``BEGIN IMMEDIATE``; in PostgreSQL a transaction-level advisory lock), the schema, and checkpoint
storage (files beside an SQLite store; a table of the database for PostgreSQL, so every host
that reaches the database reaches the checkpoints).

Where each works: SQLite in WAL mode needs all its processes on one host with a local filesystem
(SQLite's documentation: WAL does not work over a network filesystem). PostgreSQL is shared by
any number of hosts and users that can connect to it; it then holds the whole store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mtlcheck.study.experiments.records import StoreError

__all__ = ["SCHEMA_VERSION", "PostgresDatabase", "SQLiteDatabase", "is_database_url", "open_database"]

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
    heartbeat       {real},
    attempts        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    created         {real} NOT NULL,
    started         {real},
    finished        {real},
    metrics_json    TEXT,
    trajectory_json TEXT,
    env_json        TEXT,
    timings_json    TEXT,
    error           TEXT,
    history_json    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_benchmark ON runs(benchmark, method)
"""

POSTGRESQL_EXTRA = "pip install 'mtlcheck[postgresql]'"


def is_database_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.split("://", 1)[0] in ("postgresql", "postgres")


def open_database(location: str | os.PathLike, *, readonly: bool, create: bool, busy_timeout: float):
    """The backend for `location`: `PostgresDatabase` for a PostgreSQL URL, else `SQLiteDatabase`."""
    if is_database_url(location):
        return PostgresDatabase(str(location), readonly=readonly, create=create, busy_timeout=busy_timeout)
    return SQLiteDatabase(location, readonly=readonly, create=create, busy_timeout=busy_timeout)


def _empty(db) -> StoreError:
    """The error for a database with no tables and no schema version, one backend or the other."""
    return StoreError(f"no results store in {db} (the database is empty)")


def _statements(real: str) -> list[str]:
    return [s for s in _SCHEMA.format(real=real).split(";") if s.strip()]


class SQLiteDatabase:
    """An SQLite file in WAL mode (one host), checkpoints in the folder ``<file>.ckpt`` beside it."""

    errors = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike, *, readonly: bool, create: bool, busy_timeout: float):
        if str(path) in ("", ":memory:"):
            raise ValueError(f"ResultStore: path must be a file (processes share it), got {str(path)!r}")
        self.path = Path(path).resolve()
        self.location = str(self.path)
        self.readonly, self.busy_timeout = readonly, busy_timeout
        self.checkpoint_dir = self.path.with_name(self.path.name + ".ckpt")
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

    def __str__(self) -> str:
        return str(self.path)

    # -- connections ----------------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        try:
            return self._connect_readonly() if self.readonly else self._connect_readwrite()
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def error(self, exc: BaseException) -> StoreError:
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

    def begin(self, conn) -> None:
        conn.execute("BEGIN IMMEDIATE")

    # -- schema ---------------------------------------------------------------------------------
    def check_schema(self, conn) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not self._tables(conn):
            raise _empty(self)
        if version != SCHEMA_VERSION:
            self._wrong_schema(conn, version)

    def create_or_check_schema(self, conn) -> None:
        """Inside a write transaction: create the schema in an empty file, or check its version."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and not self._tables(conn):
            for statement in _statements("REAL"):  # executescript would commit
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            self._wrong_schema(conn, version)

    def _tables(self, conn) -> list[str]:
        return [t[0] for t in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()]

    def _wrong_schema(self, conn, version) -> None:
        raise StoreError(
            f"{self.path}: schema version {version} (tables {self._tables(conn)}), "
            f"this mtlcheck expects {SCHEMA_VERSION}"
        )

    # -- checkpoints (files; `conn` unused) ------------------------------------------------------
    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoint_dir / f"{key}.pt"

    def save_checkpoint(self, conn, key: str, data: bytes) -> None:
        """Atomically: a temporary file, fsync, `os.replace`, fsync of the folder."""
        path = self.checkpoint_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    def load_checkpoint(self, conn, key: str) -> bytes | None:
        try:
            return self.checkpoint_path(key).read_bytes()
        except FileNotFoundError:
            return None

    def has_checkpoint(self, conn, key: str) -> bool:
        return self.checkpoint_path(key).exists()

    def delete_checkpoint(self, conn, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint_path(key).unlink()
        if self.checkpoint_dir.is_dir():
            for tmp in self.checkpoint_dir.glob(f".{key}.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


class _QmarkConnection:
    """A psycopg connection whose ``execute`` takes the ``?`` placeholders the store's SQL uses."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params: Any = ()):
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    @property
    def closed(self) -> bool:
        """Closed, or broken (the server restarted, the network dropped): the store reconnects."""
        return bool(self.conn.closed or self.conn.broken)

    def close(self) -> None:
        self.conn.close()


class PostgresDatabase:
    """A PostgreSQL database (``postgresql://user[:password]@host[:port]/dbname``), shared by every
    host that reaches it; checkpoints in its table ``checkpoints``. Writers are serialised by a
    transaction-level advisory lock, as SQLite serialises them."""

    _LOCK = 0x6D746C63  # the advisory lock every write transaction of a store takes ("mtlc")

    def __init__(self, url: str, *, readonly: bool, create: bool, busy_timeout: float):
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(f"a PostgreSQL results store needs psycopg: {POSTGRESQL_EXTRA} ({exc})") from exc
        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.url = url
        self.location = url
        self.path = None
        self.checkpoint_dir = None
        self.readonly, self.create, self.busy_timeout = readonly, create, busy_timeout
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise StoreError(f"results store {self}: the URL names no database (postgresql://user@host:port/dbname)")

    def __str__(self) -> str:
        """The URL with its password hidden."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    def connect(self) -> _QmarkConnection:
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.busy_timeout)))
        except self._psycopg.Error as exc:
            raise self.error(exc) from exc
        try:
            conn.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
            if self.readonly:
                conn.execute("SET default_transaction_read_only = on")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, self._psycopg.Error):
                raise self.error(exc) from exc
            raise
        return _QmarkConnection(conn)

    def error(self, exc: BaseException) -> StoreError:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[0] if lines else type(exc).__name__
        if "read-only transaction" in text:
            return StoreError(f"results store {self} was opened read-only: {text}")
        return StoreError(f"results store {self} cannot be used: {text}")

    def begin(self, conn) -> None:
        # READ COMMITTED whatever the server's default: each statement then sees what the writers
        # before this one committed (under REPEATABLE READ the snapshot would predate the lock)
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (self._LOCK,))

    # -- schema ---------------------------------------------------------------------------------
    def _tables(self, conn) -> list[str]:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _version(self, conn) -> int:
        if "mtlcheck_schema" not in self._tables(conn):
            return 0
        row = conn.execute("SELECT version FROM mtlcheck_schema").fetchone()
        return 0 if row is None else int(row[0])

    def check_schema(self, conn) -> None:
        version = self._version(conn)
        if version == 0 and not self._tables(conn):
            raise _empty(self)
        if version != SCHEMA_VERSION:
            self._wrong_schema(conn, version)

    def create_or_check_schema(self, conn) -> None:
        version = self._version(conn)
        if version == 0 and not self._tables(conn):
            if not self.create:
                raise _empty(self)
            for statement in _statements("DOUBLE PRECISION"):
                conn.execute(statement)
            conn.execute("CREATE TABLE checkpoints (key TEXT PRIMARY KEY, data BYTEA NOT NULL)")
            conn.execute("CREATE TABLE mtlcheck_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO mtlcheck_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version != SCHEMA_VERSION:
            self._wrong_schema(conn, version)

    def _wrong_schema(self, conn, version) -> None:
        raise StoreError(
            f"{self}: schema version {version} (tables {self._tables(conn)}), this mtlcheck expects {SCHEMA_VERSION}"
            + ("; a database of something else?" if version == 0 else "")
        )

    # -- checkpoints (through the store's connection `conn`) --------------------------------------
    def save_checkpoint(self, conn, key: str, data: bytes) -> None:
        conn.execute(
            "INSERT INTO checkpoints (key, data) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET data = excluded.data",
            (key, data),
        )

    def load_checkpoint(self, conn, key: str) -> bytes | None:
        row = conn.execute("SELECT data FROM checkpoints WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def has_checkpoint(self, conn, key: str) -> bool:
        return conn.execute("SELECT 1 FROM checkpoints WHERE key=?", (key,)).fetchone() is not None

    def delete_checkpoint(self, conn, key: str) -> None:
        conn.execute("DELETE FROM checkpoints WHERE key=?", (key,))


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
