"""The results store of a Ray sweep: one actor on the driver's node writes it, workers call it.

`StoreActor` holds the driver's `ResultStore` (the SQLite file, its checkpoints) and runs on the
driver's node, pinned there with Ray's ``NodeAffinitySchedulingStrategy``. A Ray task gets a
`RemoteStore`, a small proxy with the store protocol (`claim`, `beat`, `end`, `get`, the
checkpoints as bytes, ...) that forwards each call to the actor, so `run_spec(RemoteStore(actor),
spec, where)` computes a run on any node while only the driver's node touches the file: a worker
never opens or creates a store, and a checkpoint saved on one node is read back on another.

A worker's lease owner is ``<host>@ray-node-<node id>:<pid>:<token>`` (`ray_owner_host`; the
proxy's ``owner_host`` makes `lease.acquire` name it so). The actor's store judges such an owner
dead as soon as Ray reports its node dead (`RayNodeJudge`, from ``ray.nodes()``), or its process
gone when it ran on the actor's host, instead of waiting for its heartbeat to go stale.
"""

from __future__ import annotations

import time
from typing import Any

from mtlcheck.study.experiments import owners
from mtlcheck.study.experiments.clock import SystemClock
from mtlcheck.study.experiments.spec import RunSpec

__all__ = ["RayNodeJudge", "RemoteStore", "StoreActor", "node_of", "ray_owner_host"]

NODE_TAG = "@ray-node-"


def ray_owner_host(node_id: str) -> str:
    """The host part of the owner names of a Ray worker on node `node_id`."""
    return f"{owners.HOST}{NODE_TAG}{node_id}"


def node_of(owner: str | None) -> str | None:
    """The Ray node id named in a lease owner, or None if the owner is not a Ray worker."""
    try:
        host = owners.parse_owner(owner or "")[0]
    except ValueError:
        return None
    return host.split(NODE_TAG, 1)[1] if NODE_TAG in host else None


class RayNodeJudge:
    """``judge(owner)``: why a Ray worker's lease is dead (its node died, or it ran on this host and
    its process is gone), or None. Ray's node table is read at most once a second."""

    def __init__(self, refresh: float = 1.0):
        self.refresh = refresh
        self._dead: set[str] = set()
        self._read_at = float("-inf")

    def __call__(self, owner: str) -> str | None:
        node = node_of(owner)
        if node is None:
            return None
        if node not in self._dead and time.monotonic() - self._read_at > self.refresh:
            import ray

            self._dead = {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
            self._read_at = time.monotonic()
        if node in self._dead:
            return f"its Ray node {node[:12]} died"
        host, pid, _ = owners.parse_owner(owner)
        if host.split(NODE_TAG, 1)[0] == owners.HOST and not owners.pid_alive(pid):
            return f"its process {pid} (Ray node {node[:12]}, this host) is dead"
        return None


class StoreActor:
    """The driver's store, served to the sweep's tasks (made a Ray actor by `run_sweep_ray`).
    Also notes which runs a take-over resumed from a checkpoint (`resumed`)."""

    def __init__(self, location: str):
        from mtlcheck.study.experiments.store import ResultStore

        self.store = ResultStore(location, create=False, is_dead=RayNodeJudge())
        self._resumed: set[str] = set()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in RemoteStore.FORWARDED:
            raise AttributeError(f"StoreActor: {method!r} is not a store operation a worker may call")
        result = getattr(self.store, method)(*args, **kwargs)
        if method == "load_checkpoint" and result is not None:
            self._resumed.add(args[0])
        return result

    def resumed(self) -> set[str]:
        """Keys of the runs whose checkpoint a worker loaded (a resumed run)."""
        return set(self._resumed)

    def close(self) -> None:
        self.store.close()


class RemoteStore:
    """The store protocol of a Ray task: every operation is a call to the sweep's `StoreActor`
    (``actor`` is its handle); the clock is this process's. Never opens a file."""

    FORWARDED = frozenset(
        {
            "claim",
            "beat",
            "end",
            "describe_owner",
            "why_dead",
            "get",
            "save_checkpoint",
            "load_checkpoint",
            "has_checkpoint",
            "delete_checkpoint",
        }
    )

    def __init__(self, actor: Any, location: str, owner_host: str | None = None):
        self.actor = actor
        self.location = location
        self.owner_host = owner_host
        self.clock = SystemClock()

    def __repr__(self) -> str:
        return f"RemoteStore({self.location!r})"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray

        return ray.get(self.actor.call.remote(method, *args, **kwargs))

    def claim(self, spec: RunSpec, owner: str, *, stale_after: float, max_failures: int):
        return self._call("claim", spec, owner, stale_after=stale_after, max_failures=max_failures)

    def beat(self, key: str, owner: str) -> bool:
        return self._call("beat", key, owner)

    def end(self, key: str, owner: str, fields: dict[str, Any], event: dict, *, count_failure: bool = False) -> bool:
        return self._call("end", key, owner, fields, event, count_failure=count_failure)

    def describe_owner(self, key: str) -> str:
        return self._call("describe_owner", key)

    def why_dead(self, owner: str | None, heartbeat: float | None, stale_after: float) -> str | None:
        return self._call("why_dead", owner, heartbeat, stale_after)

    def get(self, spec_or_key: RunSpec | str):
        return self._call("get", spec_or_key)

    def save_checkpoint(self, key: str, data: bytes) -> None:
        self._call("save_checkpoint", key, data)

    def load_checkpoint(self, key: str) -> bytes | None:
        return self._call("load_checkpoint", key)

    def has_checkpoint(self, key: str) -> bool:
        return self._call("has_checkpoint", key)

    def delete_checkpoint(self, key: str) -> None:
        self._call("delete_checkpoint", key)

    def close(self) -> None:
        """Nothing to close here: the actor's store is closed by the driver."""
