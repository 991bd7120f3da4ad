"""Sweeps on several worker processes: local ones (`run_sweep_processes`) or a Ray cluster
(`run_sweep_ray`, optional extra: ``pip install mtlcheck[ray]``).

Each run is one Ray task that opens the same `ResultStore` file and calls `run_spec`, so the
store still does everything that matters: a run is computed once (also against local sweeps
on the same file), a dead worker's run is taken over and resumes from its checkpoint, and a
failure is recorded as a ``failed`` row. The driver only schedules and then reads the results
back from the store.

Where it works: every worker must open the *same* SQLite file with working locking. The store
uses WAL mode, which SQLite supports only when all processes are on one host (it needs shared
memory next to the file; network filesystems such as NFS are not supported). In practice that
means one node with many CPUs/GPUs, or a multi-node cluster whose nodes share a filesystem
that really provides SQLite's locking and shared memory; with anything else results can be
lost or corrupted. Take-over across hosts waits for a stale heartbeat (default 600 s).

GPUs are pinned by Ray: a task asking for ``num_gpus`` gets ``CUDA_VISIBLE_DEVICES`` set to its
GPU(s), so the run's device is plain ``"cuda"``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mtlcheck.study.benchmarks import get_benchmark
from mtlcheck.study.experiments import interrupts
from mtlcheck.study.experiments.runner import Where, run_spec
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import ResultStore, RunFailedError, RunRecord, SetupError, StoreError

__all__ = ["run_sweep_processes", "run_sweep_ray"]

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
    """The body of one Ray task: (status in the store, error text or None)."""
    import torch

    torch.set_num_threads(threads)
    spec = RunSpec.from_json(spec_json)
    store = ResultStore(store_path)
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
    finally:
        store.close()
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
                    pool.submit(_run_in_worker, str(store.path), s.to_json(), worker_where, threads): s
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


def _stored_records(store: ResultStore, specs: list[RunSpec], who: str) -> list[RunRecord]:
    """The stored record of every spec, in order; raises if one is neither finished nor failed."""
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
        raise StoreError(
            f"{who}: {len(problems)} run(s) neither finished nor failed in {store.path} "
            "(see the errors printed above; run the sweep again to retry them):\n  " + "\n  ".join(problems)
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


def run_sweep_ray(
    store_path: str | Path,
    specs: Iterable[RunSpec],
    where: Where = Where(),
    *,
    num_gpus_per_run: float = 0,
    num_cpus_per_run: float = 1,
    address: str | None = None,
    progress: bool = True,
) -> list[RunRecord]:
    """Compute every spec once, one Ray task per run not yet finished in `store_path`.

    Uses the Ray connection of this process if `ray.init` was already called (then `address`
    must be None); otherwise connects with ``ray.init(address=address)`` (None: a local
    instance, or the cluster named by ``RAY_ADDRESS``) and shuts down afterwards. Each task
    reserves `num_cpus_per_run` CPUs (also its torch thread count) and `num_gpus_per_run` GPUs.
    Per-run progress bars are off inside workers; `progress` shows a bar of finished runs.

    A run that fails is recorded as failed in the store and the sweep goes on. Returns the
    stored records in the order of `specs`; raises `RuntimeError` at the end if some task
    left its run neither finished nor failed in the store (e.g. its worker could not open
    the store file, or died more often than Ray retries)."""
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
    store, todo = _open_with_todo(store_path, specs)

    started = False
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                f"run_sweep_ray: Ray is already initialised in this process; cannot connect to "
                f"address={address!r} (pass address=None to use the existing connection)"
            )
    elif todo:
        ray.init(address=address)
        started = True
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="runs (ray)", unit="run")
    try:
        task = ray.remote(num_cpus=num_cpus_per_run, num_gpus=num_gpus_per_run)(_run_one)
        threads = max(1, int(num_cpus_per_run))
        worker_where = replace(where, progress=False)
        refs: dict[Any, RunSpec] = {task.remote(str(store.path), s.to_json(), worker_where, threads): s for s in todo}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                spec = refs[done[0]]
                try:
                    status, error = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the task itself died (worker crash, cancelled)
                    status, error = "absent", f"{type(exc).__name__}: {exc}"
                if error is not None:
                    print(f"run {spec.label} failed ({status} in the store):\n{error}", file=sys.stderr)
                if bar is not None:
                    bar.set_postfix_str(spec.label)
                    bar.update(1)
        except KeyboardInterrupt:  # interrupt the tasks: get_or_run gives their runs back as pending
            for ref in pending:
                ray.cancel(ref)
            raise
    finally:
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()
    return _stored_records(store, specs, "run_sweep_ray")
