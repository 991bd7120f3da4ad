"""Sweeps on several worker processes: local ones (`run_sweep_processes`) or a Ray cluster
(`run_sweep_ray`, optional extra: ``pip install mtlcheck[ray]``).

Local worker processes each open the store (`--store`) themselves: an SQLite file on this host,
or a PostgreSQL URL.

Ray (`run_sweep_ray`): each run not yet finished is one Ray task, and only the driver's node
touches the store. The driver starts a store actor (`remote_store.StoreActor`) pinned to its own
node with Ray's ``NodeAffinitySchedulingStrategy``; it holds the `ResultStore` and each task
gets a `remote_store.RemoteStore` proxy that forwards every lease operation (claim, heartbeat,
end, checkpoints as bytes) to it. So the store keeps its promises across the cluster: a run is
computed once (also against local sweeps on the same store), a failure is recorded as a
``failed`` row, and checkpoints are kept where the driver's store keeps them (beside an SQLite
file, in a PostgreSQL table), so a run resumes on any node. A lease owner of a Ray worker names
its node (``<host>@ray-node-<id>:<pid>:<token>``) and the actor's store judges it dead as soon
as Ray reports that node dead, so when a node dies Ray runs its tasks again elsewhere (up to 3
times) and they take their runs over at once and resume from their checkpoints. A worker
process that dies while its node lives is detected at once on the driver's host, elsewhere
after the store's stale heartbeat (600 s).

What each mode needs:

- one host (``--executor local``, or a local Ray instance): an SQLite store on a local
  filesystem;
- Ray on several hosts: the driver runs on a node of the cluster (``ray.init(address=...)``;
  Ray Client ``ray://`` addresses are refused, the store being served from the driver's node);
  the other nodes need no shared filesystem and no access to the store, only the same mtlcheck
  and data (``--data-root``) at the same paths. The store (file or PostgreSQL URL) must stay
  reachable from the driver's node; if that node dies the sweep stops, and running it again
  resumes every run from its last checkpoint;
- hosts without Ray: each runs ``mtlcheck sweep --store postgresql://...`` on a shared
  PostgreSQL store (SQLite's WAL mode needs all its processes on one host).

GPUs are pinned by Ray: a task asking for ``num_gpus`` gets ``CUDA_VISIBLE_DEVICES`` set to its
GPU(s), so the run's device is plain ``"cuda"``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mtlcheck.study.benchmarks import get_benchmark
from mtlcheck.study.experiments import interrupts, owners
from mtlcheck.study.experiments.records import FINISHED
from mtlcheck.study.experiments.remote_store import RemoteStore, StoreActor, node_of, ray_owner_host
from mtlcheck.study.experiments.runner import Where, run_spec
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import ResultStore, RunFailedError, RunRecord, SetupError, StoreError

__all__ = ["SweepRecords", "SweepSummary", "run_sweep_processes", "run_sweep_ray", "summarize"]

RAY_EXTRA = "pip install mtlcheck[ray]"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"run_sweep_ray needs Ray, an optional dependency of mtlcheck: {RAY_EXTRA} "
            f"(or pip install 'ray>=2.9'); importing it failed: {exc}"
        ) from exc
    return ray


def _run_one(store_path: str, spec_json: str, where: Where, threads: int) -> tuple[str, str | None]:
    """The body of one local worker process's run: (status in the store, error text or None)."""
    store = ResultStore(store_path)
    try:
        return _compute(store, spec_json, where, threads)
    finally:
        store.close()


def _run_remote(actor: Any, location: str, spec_json: str, where: Where, threads: int) -> tuple[str, str | None]:
    """The body of one Ray task: the run computed against the driver's store through its actor."""
    import ray

    store = RemoteStore(actor, location, ray_owner_host(ray.get_runtime_context().get_node_id()))
    return _compute(store, spec_json, where, threads)


def _compute(store: Any, spec_json: str, where: Where, threads: int) -> tuple[str, str | None]:
    import torch

    torch.set_num_threads(threads)
    spec = RunSpec.from_json(spec_json)
    try:
        record = run_spec(store, spec, where, wait=True)
    except SetupError as exc:  # the data or device: the run is released, not counted
        return "setup", str(exc)
    except RunFailedError as exc:  # failed before, out of attempts: one line, not a traceback
        return "failed", str(exc)
    except Exception:  # noqa: BLE001 - recorded in the store by get_or_run; the sweep goes on
        record = store.get(spec)
        status = "absent" if record is None else record.status
        return status, traceback.format_exc(limit=5)
    return record.status, None


def _run_in_worker(store_path: str, spec_json: str, where: Where, threads: int) -> tuple[str, str | None]:
    """`_run_one` in a local worker process: ("interrupted", None) when the sweep stopped it
    (its run released, checkpoint kept) or stopped before it began."""
    try:
        with interrupts.interruptible():
            return _run_one(store_path, spec_json, where, threads)
    except KeyboardInterrupt:
        return "interrupted", None


def _heaviest_first(specs: list[RunSpec]) -> list[RunSpec]:
    """Specs in order of their expected cost (second-order > parameter-level gradient method >
    feature level > loss-only), so that the last runs to finish are short ones."""
    from mtlcheck.aggregators import aggregator_class

    def rank(spec: RunSpec) -> int:
        try:
            tags = aggregator_class(spec.method)().tags()
        except Exception:  # noqa: BLE001 - an unknown method fails in its run, where it is recorded
            return 0
        if tags.second_order:
            return 3
        if tags.loss_only:
            return 0
        return 2 if spec.level == "parameter" else 1

    return sorted(specs, key=rank, reverse=True)  # stable: ties keep the sweep's order


def run_sweep_processes(
    store_path: str | Path,
    specs: Iterable[RunSpec],
    where: Where = Where(),
    *,
    jobs: int = 2,
    threads: int = 1,
    progress: bool = True,
) -> list[RunRecord]:
    """Compute every spec once on `jobs` local worker processes with `threads` torch threads each.

    On a CPU this is the fast way to run a sweep of small models: one run per core with one
    thread each keeps every core busy, whereas intra-op threads on small tensors synchronise
    often and, when the cores are oversubscribed, make each op many times slower. Workers are
    started with "spawn" (no inherited SQLite connections or thread pools) and live for the
    whole sweep, so a benchmark's cached data is generated once per worker. Results, failures
    and the return value are as `run_sweep_ray`'s. Ctrl-C, SIGTERM or a `SetupError` stops it
    (`interrupts`): no new run starts, the runs in progress are released with their checkpoints,
    and the exception (`interrupts.Terminated` for SIGTERM) comes out once the workers are gone."""
    from concurrent.futures import as_completed

    specs = list(specs)
    for s in specs:
        if not isinstance(s, RunSpec):
            raise TypeError(f"run_sweep_processes: expected RunSpecs, got {type(s).__name__}")
    for name, value in (("jobs", jobs), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"run_sweep_processes: {name} must be an int >= 1, got {value!r}")
    where.check(s.benchmark for s in specs)  # usage errors (device, weights, data root) before any worker starts
    store, todo = _open_with_todo(store_path, specs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=f"runs ({jobs} processes)", unit="run")
    worker_where = replace(where, progress=False)
    try:
        if todo:
            with interrupts.worker_pool(min(jobs, len(todo))) as pool:
                futures = {
                    pool.submit(_run_in_worker, store.location, s.to_json(), worker_where, threads): s
                    for s in _heaviest_first(todo)
                }
                for future in as_completed(futures):
                    spec = futures[future]
                    try:
                        status, error = future.result()
                    except Exception as exc:  # noqa: BLE001 - the worker process itself died
                        status, error = "absent", f"{type(exc).__name__}: {exc}"
                    if status == "setup":  # every other run would meet it too (as run_sweep): stop
                        raise SetupError(error)
                    if status == "failed" and error is not None:
                        print(f"run {spec.label}: {error}", file=sys.stderr)
                    elif error is not None:
                        print(f"run {spec.label} failed ({status} in the store):\n{error}", file=sys.stderr)
                    if bar is not None:
                        bar.set_postfix_str(spec.label)
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return _stored_records(store, specs, "run_sweep_processes")


def _open_with_todo(store_path: str | Path, specs: list[RunSpec]) -> tuple[ResultStore, list[RunSpec]]:
    """The store (its file and schema created before any worker opens it) and the specs, without
    repeats, that it holds no finished run of."""
    store = ResultStore(store_path)
    todo = []
    for s in specs:
        record = store.get(s)
        if (record is None or not record.is_finished) and s not in todo:
            todo.append(s)
    return store, todo


_LISTED = 10  # runs named in `_stored_records`' error; the rest are counted


def _stored_records(store: ResultStore, specs: list[RunSpec], who: str) -> list[RunRecord]:
    """The stored record of every spec, in order; raises if one is neither finished nor failed
    (naming the first `_LISTED` of them)."""
    records, problems = [], []
    for s in specs:
        record = store.get(s)
        if record is None or not (record.is_finished or record.status == "failed"):
            state = "absent" if record is None else f"{record.status} (owner {record.owner})"
            problems.append(f"{s.label} [{s.key}]: {state}")
        if record is not None:
            records.append(record)
    store.close()
    if problems:
        listed = problems[:_LISTED]
        if len(problems) > _LISTED:
            listed.append(f"... and {len(problems) - _LISTED} more")
        raise StoreError(
            f"{who}: {len(problems)} run(s) neither finished nor failed in {store} "
            "(see the errors printed above; run the sweep again to retry them):\n  " + "\n  ".join(listed)
        )
    return records


def _check_device(where: Where, num_gpus_per_run: float) -> None:
    device = where.device
    if device.startswith("cuda"):
        if not num_gpus_per_run > 0:
            raise ValueError(
                f"run_sweep_ray: device {device!r} needs num_gpus_per_run > 0 so that Ray assigns each run a GPU"
            )
        if device not in ("cuda", "cuda:0"):
            raise ValueError(
                f"run_sweep_ray: device {device!r}: Ray pins each run's GPU through "
                "CUDA_VISIBLE_DEVICES, so use device 'cuda'"
            )


@dataclass(frozen=True)
class SweepSummary:
    """What happened to the runs a sweep computed, read from their history since it started:
    where each finished (a Ray node id, or a host), the take-overs and why, the failed runs
    computed again, and the runs that resumed from a checkpoint."""

    finished_on: dict[str, str]
    taken_over: dict[str, str]
    retried: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()

    @property
    def resubmitted(self) -> tuple[str, ...]:
        """Runs taken over because their Ray node or worker process died (Ray ran their tasks
        again): the reasons `RayNodeJudge` gives, which name the Ray node."""
        return tuple(label for label, why in self.taken_over.items() if "Ray node" in why)

    @property
    def eventful(self) -> bool:
        """Whether something beyond plain computing happened: a take-over, a retry, a resume, or
        runs finished in more than one place."""
        return bool(self.taken_over or self.retried or self.resumed or len(set(self.finished_on.values())) > 1)

    def line(self) -> str:
        """One line for a person: where the runs ran, what was taken over, retried, resumed."""
        where = Counter(self.finished_on.values())
        places = ", ".join(f"{place}: {n}" for place, n in sorted(where.items()))
        parts = [f"{len(self.finished_on)} run(s) computed on {len(where)} node(s) ({places})"]
        if self.resubmitted:
            parts.append(
                "resubmitted by Ray after their node or worker process died: "
                + ", ".join(f"{label} ({self.taken_over[label]})" for label in self.resubmitted)
            )
        others = [f"{label} ({why})" for label, why in self.taken_over.items() if label not in self.resubmitted]
        if others:
            parts.append("taken over: " + ", ".join(others))
        if self.retried:
            parts.append("failed before, computed again: " + ", ".join(self.retried))
        if self.resumed:
            parts.append("resumed from a checkpoint: " + ", ".join(self.resumed))
        return "; ".join(parts)


def summarize(records: Iterable[RunRecord], since: float, resumed: Iterable[str] = ()) -> SweepSummary:
    """The `SweepSummary` of `records` from their history events at or after wall time `since`;
    `resumed`: keys of the runs that resumed from a checkpoint."""
    finished_on: dict[str, str] = {}
    taken_over: dict[str, str] = {}
    retried: list[str] = []
    resumed = set(resumed)
    for record in records:
        label = record.spec.label
        for event in record.history:
            if event.get("time", 0) < since:
                continue
            if event["event"] in FINISHED:
                finished_on[label] = _place(event.get("owner"))
            elif event["event"] == "taken_over":
                taken_over[label] = str(event.get("reason"))
            elif event["event"] == "retried":
                retried.append(label)
    return SweepSummary(
        finished_on, taken_over, tuple(retried), tuple(r.spec.label for r in records if r.key in resumed)
    )


def _place(owner: str | None) -> str:
    """Where an owner ran: its Ray node (short id) or its host."""
    node = node_of(owner)
    if node is not None:
        return f"node {node[:12]}"
    try:
        return owners.parse_owner(owner or "")[0]
    except ValueError:
        return "unknown"


class SweepRecords(list):
    """The stored records of a sweep, in the order of its specs, and its `summary` (a
    `SweepSummary`, or None when nothing had to be computed)."""

    def __init__(self, records: Iterable[RunRecord], summary: SweepSummary | None):
        super().__init__(records)
        self.summary = summary


def _connect(ray, address: str | None) -> None:
    """``ray.init(address=address)``; a ValueError of one line when no cluster answers there (an
    unreachable host:port would otherwise make Ray retry for minutes)."""
    target = address if address is not None else os.environ.get("RAY_ADDRESS")
    if target and target.startswith("ray://"):
        raise ValueError(
            f"run_sweep_ray: {target}: Ray Client addresses are not supported; run the sweep on a node of "
            "the cluster (its results store is served from the driver's node)"
        )
    host, _, port = (target or "").rpartition(":")
    if port.isdigit():
        try:
            socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
        except OSError as exc:
            raise ValueError(f"run_sweep_ray: no Ray cluster at {target}: {exc.strerror or exc}") from None
    try:
        ray.init(address=address)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"run_sweep_ray: no Ray cluster at {target or 'auto'}: {first}") from None


def _store_actor(ray, location: str):
    """A `StoreActor` on this (the driver's) node, serving the store at `location`."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(num_cpus=0, max_restarts=0, scheduling_strategy=here)(StoreActor).remote(location)
    ray.get(actor.resumed.remote())  # started: a problem opening the store shows here, once
    return actor


def _cancel(ray, refs: list) -> None:
    """Cancel the tasks and wait (up to a minute) for them to end: a running one gets a
    KeyboardInterrupt, so `get_or_run` releases its run to pending, checkpoint kept."""
    for ref in refs:
        ray.cancel(ref)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=60)


def run_sweep_ray(
    store_path: str | Path,
    specs: Iterable[RunSpec],
    where: Where = Where(),
    *,
    num_gpus_per_run: float = 0,
    num_cpus_per_run: float = 1,
    address: str | None = None,
    progress: bool = True,
) -> SweepRecords:
    """Compute every spec once, one Ray task per run not yet finished in the store at `store_path`.

    Uses the Ray connection of this process if `ray.init` was already called (then `address`
    must be None); otherwise connects with ``ray.init(address=address)`` (None: a local
    instance, or the cluster named by ``RAY_ADDRESS``) and disconnects afterwards; an address
    where no cluster answers is a ValueError, raised before the store is created. The store is
    served to the tasks by an actor on this node (see the module's docstring). Each task
    reserves `num_cpus_per_run` CPUs (also its torch thread count) and `num_gpus_per_run` GPUs.
    Per-run progress bars are off inside workers; `progress` shows a bar of finished runs.

    A run that fails is recorded as failed in the store and the sweep goes on. On Ctrl-C the
    tasks are cancelled (their runs released to pending, checkpoints kept) and the
    KeyboardInterrupt goes on up; a cluster this call did not start is left running. Returns the
    stored records in the order of `specs`, with ``.summary`` (`SweepSummary`); raises
    `StoreError` at the end if a run was left neither finished nor failed (e.g. its task died
    more often than Ray retries)."""
    ray = _import_ray()
    specs = list(specs)
    for s in specs:
        if not isinstance(s, RunSpec):
            raise TypeError(f"run_sweep_ray: expected RunSpecs, got {type(s).__name__}")
    if not num_cpus_per_run > 0:
        raise ValueError(f"run_sweep_ray: num_cpus_per_run must be positive, got {num_cpus_per_run!r}")
    if not num_gpus_per_run >= 0:
        raise ValueError(f"run_sweep_ray: num_gpus_per_run must be >= 0, got {num_gpus_per_run!r}")
    _check_device(where, num_gpus_per_run)
    for name in {s.benchmark for s in specs}:  # usage errors here, not as failed runs on workers
        get_benchmark(name).check_data_root(where.data_root)
    connected = ray.is_initialized()
    if connected and address is not None:
        raise ValueError(
            f"run_sweep_ray: Ray is already initialised in this process; cannot connect to "
            f"address={address!r} (pass address=None to use the existing connection)"
        )
    if not connected and _unfinished(store_path, specs):
        _connect(ray, address)  # before the store is created: a wrong address leaves nothing behind
    try:
        store, todo = _open_with_todo(store_path, specs)
        since, resumed = time.time(), set()
        if todo:
            actor = _store_actor(ray, store.location)
            try:
                _run_tasks(ray, actor, store.location, todo, where, num_cpus_per_run, num_gpus_per_run, progress)
                resumed = ray.get(actor.resumed.remote())
            finally:
                ray.kill(actor)
    finally:
        if not connected and ray.is_initialized():
            ray.shutdown()  # our connection only: a cluster we connected to keeps running
    records = _stored_records(store, specs, "run_sweep_ray")
    return SweepRecords(records, summarize(records, since, resumed) if todo else None)


def _unfinished(store_path: str | Path, specs: list[RunSpec]) -> bool:
    """Whether a spec is not finished in the store (creating nothing)."""
    try:
        store = ResultStore(store_path, readonly=True)
    except StoreError:
        return bool(specs)
    try:
        return any(not ((r := store.get(s)) is not None and r.is_finished) for s in specs)
    finally:
        store.close()


def _run_tasks(ray, actor, location: str, todo, where: Where, cpus: float, gpus: float, progress: bool) -> None:
    """One task per spec of `todo` (heaviest first); says which failed; Ctrl-C cancels them."""
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=3)(_run_remote)
    threads = max(1, int(cpus))
    worker_where = replace(where, progress=False)
    refs = {task.remote(actor, location, s.to_json(), worker_where, threads): s for s in _heaviest_first(todo)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="runs (ray)", unit="run")
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                spec = refs[ref]
                try:
                    status, error = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the task itself died more often than Ray retries
                    status, error = "absent", f"{type(exc).__name__}: {exc}"
                if status == "failed" and error is not None:
                    print(f"run {spec.label}: {error}", file=sys.stderr)
                elif error is not None:
                    print(f"run {spec.label} failed ({status} in the store):\n{error}", file=sys.stderr)
                if bar is not None:
                    bar.set_postfix_str(spec.label)
                    bar.update(1)
    except BaseException:  # Ctrl-C, or anything else that ends the sweep: no task goes on without it
        _cancel(ray, pending)
        raise
    finally:
        if bar is not None:
            bar.close()
