"""Run control: compute a run once, under a lease, with a heartbeat; or wait for whoever does.

`get_or_run(store, spec, fn)` works on any store that offers the lease protocol (`RunStore`):
the SQLite or PostgreSQL `ResultStore`, or a proxy that forwards to one (a Ray worker's). While
``fn(lease)`` computes, a background thread heartbeats. How the run ends:

- ``fn`` returns: the result is stored (``done`` or ``diverged``) and the checkpoint deleted;
- ``fn`` raises `SetupError` (the data or device, not the computation): released to ``pending``,
  no failure counted, the message kept;
- ``fn`` raises another `Exception`: ``failed`` with its traceback, a failure counted;
- KeyboardInterrupt or another non-`Exception` exit: released to ``pending``, checkpoint kept.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments.clock import Clock
from mtlcheck.study.experiments.lease import Lease, LeaseLost, acquire
from mtlcheck.study.experiments.records import RunFailedError, RunRecord, SetupError, StoreError, as_result
from mtlcheck.study.experiments.spec import RunSpec

__all__ = ["FINISH_ATTEMPTS", "Claim", "RunStore", "get_or_run"]

FINISH_ATTEMPTS = 3
"""Tries to store a computed result when the store fails (1 s, then 2 s apart) before giving up."""


class Claim(NamedTuple):
    """A won lease row: the attempt number and, for a take-over, whom from and why."""

    attempt: int
    took_over_from: str | None
    reason: str | None


class RunStore(Protocol):
    """What a lease and `get_or_run` need of a store (`ResultStore` is the reference)."""

    clock: Clock

    def claim(self, spec: RunSpec, owner: str, *, stale_after: float, max_failures: int) -> Claim | None: ...
    def beat(self, key: str, owner: str) -> bool: ...
    def end(
        self, key: str, owner: str, fields: dict[str, Any], event: dict, *, count_failure: bool = False
    ) -> bool: ...
    def describe_owner(self, key: str) -> str: ...
    def why_dead(self, owner: str | None, heartbeat: float | None, stale_after: float) -> str | None: ...
    def get(self, spec_or_key: RunSpec | str) -> RunRecord | None: ...
    def save_checkpoint(self, key: str, data: bytes) -> None: ...
    def load_checkpoint(self, key: str) -> bytes | None: ...
    def has_checkpoint(self, key: str) -> bool: ...
    def delete_checkpoint(self, key: str) -> None: ...
    def close(self) -> None: ...


def get_or_run(
    store: RunStore,
    spec: RunSpec,
    fn: Callable[[Lease], Any],
    *,
    wait: bool = True,
    timeout: float | None = None,
    poll: float = 0.5,
    stale_after: float,
    max_failures: int,
    heartbeat_every: float | None = None,
    on_wait: Callable[[RunRecord | None], Any] | None = None,
) -> RunRecord | None:
    """The stored result of `spec`, computing it with ``fn(lease)`` if nobody has (see
    `ResultStore.get_or_run` for the arguments)."""
    if not isinstance(spec, RunSpec):
        raise TypeError(f"get_or_run: expected a RunSpec, got {type(spec).__name__}")
    if not callable(fn):
        raise TypeError(f"get_or_run: fn must be callable, got {fn!r}")
    interval = stale_after / 4 if heartbeat_every is None else heartbeat_every
    if not 0 < interval < stale_after:
        raise ValueError(f"get_or_run: heartbeat_every must be in (0, stale_after), got {interval!r}")
    clock = store.clock
    deadline = None if timeout is None else clock.monotonic() + timeout
    try_lease = True
    told = False
    while True:
        if try_lease:
            lease = None
            try:
                lease = acquire(store, spec, stale_after=stale_after, max_failures=max_failures)
                if lease is not None:
                    return _execute(store, lease, fn, interval)
            except LeaseLost:
                pass  # taken over while we computed: wait for the new owner's result
            except BaseException:  # Ctrl-C between the lease and the run, a store that failed: give it back
                if lease is not None and lease.is_open:
                    _give_back(lease)
                raise
        record = store.get(spec)
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
        if deadline is not None and clock.monotonic() >= deadline:
            state = "absent" if record is None else store.describe_owner(spec.key)
            raise TimeoutError(f"run {spec.key} ({spec.label}) not finished after {timeout}s: {state}")
        if on_wait is not None and not told:
            told = True
            on_wait(record)
        clock.sleep(poll)
        record = store.get(spec)
        try_lease = (
            record is None
            or record.status in ("pending", "failed")
            or (record.status == "running" and store.why_dead(record.owner, record.heartbeat, stale_after) is not None)
        )


def _execute(store: RunStore, lease: Lease, fn: Callable[[Lease], Any], interval: float) -> RunRecord:
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    lease.heartbeat()
                except LeaseLost:
                    return  # taken over: finish or fail below raises LeaseLost
                except Exception:  # noqa: BLE001 - the store failed this once (a dropped connection): next tick
                    continue
        finally:
            store.close()

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
        _give_back(lease)
        raise
    timings = {**(result.timings or {}), "attempt_wall_s": time.perf_counter() - t0}
    for attempt in range(1, FINISH_ATTEMPTS + 1):
        try:
            lease.finish(
                result.metrics,
                result.trajectory,
                timings,
                status=result.status,
                error=result.error,
                engine=result.engine,
            )
            break
        except LeaseLost:
            raise
        except StoreError:  # the store, not the result (a dropped connection): the result is worth a retry
            if attempt == FINISH_ATTEMPTS:
                raise  # get_or_run gives the run back; should the store refuse that too, it is taken over later
            store.clock.sleep(attempt)
        except Exception as exc:  # a malformed result is a failure of the run, recorded as such
            lease.fail(exc)
            raise
    record = store.get(lease.key)
    assert record is not None
    return record


def _give_back(lease: Lease) -> None:
    """Release an interrupted run to pending (checkpoint kept), marked as interrupted here."""
    with contextlib.suppress(LeaseLost):
        lease.release(f"interrupted in {os.getpid()}", interrupted=True)
