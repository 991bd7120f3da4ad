"""A lease: this process's ownership of one running run, from `acquire` to its end.

While it holds the lease the process heartbeats (`heartbeat`), may save checkpoints (kept by the
store: files beside an SQLite store, a table of a PostgreSQL one), and ends it exactly once:
`finish` (the result), `fail` (the traceback, a failure counted) or `release` (back to pending,
nothing counted). Every one of these first proves the lease is still held and raises `LeaseLost`
if another process took the run over. A lease speaks to its store only through the store's lease
protocol (`control.RunStore`: ``claim``, ``beat``, ``end``, ``describe_owner`` and the checkpoint
methods), so the same lease works on a proxy that forwards them to a store elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments.codec import encode_json
from mtlcheck.study.experiments.provenance import environment
from mtlcheck.study.experiments.records import FINISHED, StoreError, history_event
from mtlcheck.study.experiments.spec import RunSpec

if TYPE_CHECKING:
    from mtlcheck.study.experiments.control import RunStore

__all__ = ["Lease", "LeaseLost", "acquire"]


class LeaseLost(RuntimeError):
    """This process no longer owns the run: another process took it over (stale heartbeat)."""


def acquire(store: RunStore, spec: RunSpec, *, stale_after: float, max_failures: int) -> Lease | None:
    """Make this process (and thread) the owner of `spec`'s run, or return None (see
    `ResultStore.lease`). A store with an ``owner_host`` attribute (a Ray worker's proxy) names
    the owner's host so."""
    owner = owners.new_owner(getattr(store, "owner_host", None))  # live before the row names it
    try:
        claim = store.claim(spec, owner, stale_after=stale_after, max_failures=max_failures)
    except BaseException:
        owners.retire(owner)
        raise
    if claim is None:
        owners.retire(owner)
        return None
    attempt, took_over_from, reason = claim
    return Lease(store, spec, spec.key, owner, attempt, took_over_from, reason)


class Lease:
    """This process's ownership of one running run. Obtain from `acquire` (`ResultStore.lease`)."""

    def __init__(
        self,
        store: RunStore,
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

    @property
    def is_open(self) -> bool:
        """Neither ended (finished, failed, released) nor known to be lost."""
        return not self._closed and self._lost is None

    # -- liveness -------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Record that the run is alive; raises `LeaseLost` if another process took it over."""
        self._check_open("heartbeat")
        if not self.store.beat(self.key, self.owner):
            raise self._lose()

    # -- checkpoints ----------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        return self.store.has_checkpoint(self.key)

    def save_checkpoint(self, obj: Any) -> None:
        """`torch.save(obj)` into the store (atomically), after a heartbeat that proves this
        process still owns the run (raises `LeaseLost` otherwise)."""
        import torch

        self.heartbeat()
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.store.save_checkpoint(self.key, buffer.getvalue())

    def load_checkpoint(self, map_location: Any = "cpu") -> Any | None:
        """The last saved checkpoint, or None if there is none. A corrupt one raises. Loads with
        ``weights_only=False``: checkpoints are this store's own (RNG states, optimizer state),
        not untrusted input."""
        import torch

        data = self.store.load_checkpoint(self.key)
        if data is None:
            return None
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)

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
            {
                "status": status,
                "finished": self.store.clock.time(),
                "heartbeat": None,
                "metrics_json": metrics_json,
                "trajectory_json": trajectory_json,
                "env_json": env_json,
                "timings_json": timings_json,
                "error": error,
            },
            self._event(status),
        )
        with contextlib.suppress(StoreError, OSError):  # the result is stored; a leftover checkpoint is harmless
            self.store.delete_checkpoint(self.key)

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
            {
                "status": "failed",
                "finished": self.store.clock.time(),
                "heartbeat": None,
                "env_json": encode_json(env, "environment"),
                "error": text,
            },
            self._event("failed", error=text.strip().splitlines()[-1] if text.strip() else ""),
            count_failure=True,
        )

    def release(self, reason: str = "released", error: str | None = None, *, interrupted: bool = False) -> None:
        """Give the run back unfinished (status 'pending', checkpoint kept, no failure counted),
        e.g. on Ctrl-C or a `SetupError`; `error` (if given) becomes the row's last error;
        `interrupted` marks the event as a stop (`control.was_interrupted`)."""
        self._check_open("release")
        fields = {"status": "pending", "owner": None, "heartbeat": None}
        if error is not None:
            fields["error"] = error
        detail = {"interrupted": True} if interrupted else {}
        self._end(fields, self._event("released", reason=reason, **detail))

    def _event(self, kind: str, **detail: Any) -> dict[str, Any]:
        return history_event(kind, self.owner, self.store.clock.time(), **detail)

    def _end(self, fields: dict[str, Any], event: dict, *, count_failure: bool = False) -> None:
        if not self.store.end(self.key, self.owner, fields, event, count_failure=count_failure):
            raise self._lose()
        self._close()

    def _lose(self) -> LeaseLost:
        self._lost = (
            f"run {self.key} ({self.spec.label}) is no longer owned by {self.owner}: "
            f"{self.store.describe_owner(self.key)}"
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
