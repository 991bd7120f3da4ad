"""RunSpec keys and the SQLite results store: atomic leases, take-over, checkpoints, real kills.

Heartbeat ages and timeouts are judged on a `ManualClock` moved by the test; real sleeps remain
only where real processes race on one file (polling them, and their simulated epochs)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mtlcheck.study.experiments import (
    LeaseLost,
    ResultStore,
    RunFailedError,
    RunResult,
    RunSpec,
    StoreError,
    codec,
    environment,
    owners,
    spec_key,
)
from mtlcheck.study.experiments import spec as spec_module
from mtlcheck.study.experiments.store import DEFAULT_STALE_AFTER

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_store_worker.py"
_worker_spec = importlib.util.spec_from_file_location("_store_worker", WORKER)
worker = importlib.util.module_from_spec(_worker_spec)
_worker_spec.loader.exec_module(worker)

BASE = RunSpec("digits", "cagrad", {"c": 0.5, "rescale": 1}, level="parameter", seed=0, budget="smoke")


class ManualClock:
    """A store clock that moves only when the test moves it (or the store sleeps on it): wall
    time starts at the real time, so heartbeats that other processes write compare sensibly."""

    def __init__(self) -> None:
        self.now = time.time()
        self.elapsed = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.elapsed += seconds


def ok_result(value: float = 1.0) -> RunResult:
    return RunResult({"loss": value}, {"loss": [value]}, {"train_s": 0.0})


def spawn(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, **kwargs)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(predicate, timeout: float, what: str, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if pid is not None and not owners.pid_alive(pid):
            raise AssertionError(f"worker {pid} died before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# RunSpec
# ---------------------------------------------------------------------------------------------
def test_key_is_stable_and_canonical():
    same = RunSpec("digits", "cagrad", [("rescale", 1), ("c", 0.5)], level="parameter", seed=0, budget="smoke")
    assert same == BASE and hash(same) == hash(BASE)
    assert same.key == BASE.key
    assert len(BASE.key) == 16 and int(BASE.key, 16) >= 0
    # pinned: a change of canonical form silently orphans every stored result
    assert spec_key(BASE, code_epoch=1) == spec_key(RunSpec.from_json(BASE.to_json()), code_epoch=1)
    assert spec_key(BASE, code_epoch=1) == "cc37e77e56efd498"


def test_every_field_changes_the_key():
    variants = [
        BASE,
        dataclasses.replace(BASE, benchmark="cityscapes"),
        dataclasses.replace(BASE, method="nash_mtl"),
        dataclasses.replace(BASE, method_config={"c": 0.4, "rescale": 1}),
        dataclasses.replace(BASE, method_config={"c": 0.5, "rescale": 1.0}),
        dataclasses.replace(BASE, method_config={"c": 0.5}),
        dataclasses.replace(BASE, level="feature"),
        dataclasses.replace(BASE, seed=1),
        dataclasses.replace(BASE, budget="small"),
        dataclasses.replace(BASE, steps=100),
        dataclasses.replace(BASE, extra={"batch_size": 8}),
    ]
    keys = [v.key for v in variants]
    assert len(set(keys)) == len(keys)


def test_code_epoch_changes_the_key(monkeypatch):
    before = BASE.key
    assert spec_key(BASE, code_epoch=spec_module.CODE_EPOCH + 1) != before
    monkeypatch.setattr(spec_module, "CODE_EPOCH", spec_module.CODE_EPOCH + 1)
    assert BASE.key != before


def test_round_trip_and_views():
    spec = RunSpec(
        "nyuv2",
        "aligned_mtl",
        {"scales": [1.0, 2.0], "mode": "sum"},
        level="feature",
        seed=3,
        budget="paper",
        steps=40000,
        extra={"warmup": 500},
    )
    assert RunSpec.from_dict(spec.to_dict()) == spec
    assert RunSpec.from_json(spec.to_json()) == spec
    assert RunSpec.from_json(json.dumps(spec.to_dict())).key == spec.key
    assert spec.config == {"mode": "sum", "scales": [1.0, 2.0]}
    assert spec.options == {"warmup": 500}
    assert spec.method_config == (("mode", "sum"), ("scales", (1.0, 2.0)))
    assert "nyuv2/aligned_mtl/feature/seed3/paper" in spec.label
    assert {spec: 1}[RunSpec.from_dict(spec.to_dict())] == 1


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"benchmark": ""}, "benchmark"),
        ({"benchmark": 3}, "benchmark"),
        ({"method": " ew"}, "method"),
        ({"level": "params"}, "level"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"seed": 1.0}, "seed"),
        ({"budget": "huge"}, "budget"),
        ({"steps": 0}, "steps"),
        ({"steps": 10.0}, "steps"),
        ({"method_config": {"c": float("nan")}}, "method_config"),
        ({"method_config": {"c": object()}}, "method_config"),
        ({"method_config": {"c": {"nested": 1}}}, "method_config"),
        ({"method_config": [("c", 1), ("c", 2)]}, "method_config"),
        ({"method_config": "c=1"}, "method_config"),
        ({"extra": {1: "x"}}, "extra"),
    ],
)
def test_validation_names_the_field(changes, field):
    with pytest.raises((ValueError, TypeError), match=rf"RunSpec\.{field}"):
        dataclasses.replace(BASE, **changes)


def test_from_dict_is_strict():
    data = BASE.to_dict()
    with pytest.raises(ValueError, match="unknown field.*data_root"):
        RunSpec.from_dict({**data, "data_root": "/data"})
    del data["method"]
    with pytest.raises(ValueError, match="missing required.*method"):
        RunSpec.from_dict(data)


# ---------------------------------------------------------------------------------------------
# Store basics
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def location(tmp_path) -> str:
    """Where the tests' store lives: an SQLite file here; suites/distributed re-runs the tests
    that do not depend on the backend with a PostgreSQL URL instead."""
    return str(tmp_path / "results.sqlite")


@pytest.fixture
def store(location, clock):
    return ResultStore(location, clock=clock)


def test_store_uses_wal_and_a_sibling_checkpoint_dir(store, tmp_path):
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.checkpoint_dir == tmp_path / "results.sqlite.ckpt"
    with pytest.raises(ValueError, match="memory"):
        ResultStore(":memory:")


def test_schema_mismatch_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.execute("CREATE TABLE runs(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 7"):
        ResultStore(path)


def test_an_empty_file_is_no_store_to_read_and_becomes_one_when_written(tmp_path):
    """A reader that opens the file a sweep has just created, before its schema is in, is told
    the database is empty (the reason a reader can wait on), not a schema version 0."""
    path = tmp_path / "new.sqlite"
    sqlite3.connect(path).close()
    with pytest.raises(StoreError, match=r"no results store in .*new\.sqlite \(the database is empty\)"):
        ResultStore(path, readonly=True)
    ResultStore(path).close()
    reader = ResultStore(path, readonly=True)
    assert reader.runs() == []
    reader.close()


def test_get_or_run_computes_once_and_records_everything(store):
    calls = []

    def fn(lease):
        calls.append(lease.attempt)
        return RunResult({"delta_m": -1.5, "per_task": {"seg": 0.5}}, {"loss": [3.0, 2.0, 1.0]}, {"train_s": 0.1})

    first = store.get_or_run(BASE, fn)
    second = store.get_or_run(BASE, fn)
    assert calls == [1]
    assert first == second
    assert first.status == "done" and first.attempts == 1 and first.failures == 0 and first.error is None
    assert first.metrics == {"delta_m": -1.5, "per_task": {"seg": 0.5}}
    assert first.trajectory == {"loss": [3.0, 2.0, 1.0]}
    assert first.timings["train_s"] == 0.1 and first.timings["attempt_wall_s"] >= 0
    assert first.spec == BASE and first.code_epoch == spec_module.CODE_EPOCH
    assert first.started <= first.finished
    assert {"torch", "cuda", "gpus", "python", "platform", "git_revision"} <= set(first.env)
    assert [e["event"] for e in first.history] == ["claimed", "done"]
    assert store.lease(BASE) is None
    assert store.get(BASE.key) == first and store.get(dataclasses.replace(BASE, seed=9)) is None
    assert [r.key for r in store.runs(status="done", benchmark="digits")] == [BASE.key]
    assert store.runs(status="failed") == [] and store.runs(benchmark="nyuv2") == []
    assert store.counts()["done"] == 1
    with pytest.raises(ValueError, match="16-hex-digit key"):
        store.get("not-a-key")
    with pytest.raises(ValueError, match="status must be one of"):
        store.runs(status="finished")


def test_tuple_results_and_diverged_runs(store):
    record = store.get_or_run(BASE, lambda c: ({"loss": math.nan}, {"loss": [1.0, math.nan]}, {}, "diverged"))
    assert record.status == "diverged" and math.isnan(record.metrics["loss"])
    diverged = dataclasses.replace(BASE, seed=1)
    record = store.get_or_run(
        diverged, lambda c: RunResult({"loss": math.inf}, status="diverged", error="NaN loss at step 3")
    )
    assert record.error == "NaN loss at step 3"
    assert store.lease(diverged) is None
    assert store.get_or_run(diverged, lambda c: pytest.fail("a diverged run must not be recomputed")) == record


def test_nan_and_inf_round_trip_as_strict_json(store):
    metrics = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "x": 0.1, "n": 3, "nested": {"v": [math.nan, 1.0]}}
    record = store.get_or_run(BASE, lambda c: RunResult(metrics, {"gds": [math.nan, -math.inf, 0.5]}))
    assert (
        math.isnan(record.metrics["nan"]) and record.metrics["inf"] == math.inf and record.metrics["ninf"] == -math.inf
    )
    assert record.metrics["x"] == 0.1 and record.metrics["n"] == 3 and math.isnan(record.metrics["nested"]["v"][0])
    assert math.isnan(record.trajectory["gds"][0]) and record.trajectory["gds"][1:] == [-math.inf, 0.5]

    def refuse(token):
        raise AssertionError(f"invalid JSON constant {token} stored")

    with store.transaction() as conn:  # the stored text itself, whatever the backend
        raw = conn.execute("SELECT metrics_json, trajectory_json FROM runs").fetchone()
    for text in raw:
        json.loads(text, parse_constant=refuse)
    with pytest.raises(ValueError, match="reserved"):
        codec.encode_json({"__float__": "nan"})


def test_failures_are_recorded_with_traceback_and_retried_up_to_a_limit(store):
    calls = []

    def boom(lease):
        calls.append(lease.attempt)
        raise ValueError("boom 42")

    for _ in range(2):
        with pytest.raises(ValueError, match="boom 42"):
            store.get_or_run(BASE, boom, max_failures=2)
    record = store.get(BASE)
    assert record.status == "failed" and record.failures == 2 and calls == [1, 2]
    assert "Traceback" in record.error and "ValueError: boom 42" in record.error
    assert "in boom" in record.error
    assert record.env is not None
    assert [e["event"] for e in record.history] == ["claimed", "failed", "retried", "failed"]
    with pytest.raises(RunFailedError, match="boom 42"):
        store.get_or_run(BASE, boom, max_failures=2)
    assert calls == [1, 2]
    assert store.lease(BASE, max_failures=2) is None
    # a later, more permissive caller may retry; success clears the error
    done = store.get_or_run(BASE, lambda c: ok_result(), max_failures=3)
    assert done.status == "done" and done.error is None and done.failures == 2 and done.attempts == 3


@pytest.mark.parametrize(
    "result, match",
    [
        ({"loss": 1.0}, "must return a RunResult"),
        (RunResult({"loss": object()}), r"metrics\['loss'\]: object is not JSON"),
        (RunResult({"loss": 1.0}, status="ok"), "status must be one of"),
    ],
)
def test_malformed_results_are_recorded_as_failures(store, result, match):
    with pytest.raises((TypeError, ValueError), match=match):
        store.get_or_run(BASE, lambda c: result)
    record = store.get(BASE)
    assert record.status == "failed" and re.search(match, record.error)


def test_tensor_metrics_are_refused_with_a_hint(store):
    import torch

    with pytest.raises(TypeError, match=r"metrics\['loss'\]: Tensor is not JSON data \(call .item\(\)"):
        store.get_or_run(BASE, lambda c: RunResult({"loss": torch.tensor(1.0)}))


def test_interrupt_releases_the_run_and_keeps_the_checkpoint(store):
    def interrupted(lease):
        lease.save_checkpoint({"step": 5})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_run(BASE, interrupted)
    record = store.get(BASE)
    assert record.status == "pending" and record.owner is None and record.failures == 0
    assert store.has_checkpoint(BASE.key)
    resumed = store.get_or_run(BASE, lambda c: ok_result(c.load_checkpoint()["step"]))
    assert resumed.metrics == {"loss": 5} and resumed.attempts == 2
    assert not store.has_checkpoint(BASE.key)


def test_a_run_asking_for_its_own_result_raises_instead_of_hanging(store):
    with pytest.raises(RuntimeError, match="this very thread"):
        store.get_or_run(BASE, lambda lease: store.get_or_run(BASE, lambda c: ok_result()))
    assert store.get(BASE).status == "failed" and "this very thread" in store.get(BASE).error


def test_add_registers_pending_runs(store):
    specs = [dataclasses.replace(BASE, seed=s) for s in range(3)]
    assert store.add(specs) == 3 and store.add(specs[0]) == 0
    assert [r.status for r in store.runs()] == ["pending"] * 3
    lease = store.lease(specs[1])
    assert lease is not None and lease.attempt == 1
    lease.finish({"loss": 0.0})
    assert store.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0, "diverged": 0}
    assert store.forget(specs[1]) and store.get(specs[1]) is None


def test_the_store_keeps_the_times_of_its_clock_and_waits_on_it(store, clock):
    clock.advance(5.0)
    t0 = clock.now
    store.add(BASE)
    lease = store.lease(BASE)
    clock.advance(2.0)
    lease.heartbeat()
    assert store.get(BASE).heartbeat == t0 + 2.0
    with pytest.raises(TimeoutError, match="not finished after 30s"):
        store.wait_for(BASE, timeout=30, poll=1.0)  # 30 s pass on the clock, not on the wall
    assert clock.elapsed == 5.0 + 2.0 + 30.0
    lease.finish({"loss": 1.0})
    record = store.get(BASE)
    assert (record.created, record.started, record.finished) == (t0, t0, clock.now)
    assert [e["time"] for e in record.history] == [t0, t0, clock.now]


def test_checkpoints_are_atomic_and_deleted_on_finish(store):
    import torch

    lease = store.lease(BASE)
    assert lease.load_checkpoint() is None and not lease.has_checkpoint()
    assert store.checkpoint_path(BASE) == store.checkpoint_dir / f"{BASE.key}.pt"
    lease.save_checkpoint({"step": 1, "w": torch.ones(2)})
    lease.save_checkpoint({"step": 2, "w": torch.zeros(2)})
    (store.checkpoint_dir / f".{BASE.key}.leftover.tmp").write_bytes(b"half a file")  # a write killed midway
    loaded = lease.load_checkpoint()
    assert loaded["step"] == 2 and torch.equal(loaded["w"], torch.zeros(2))
    assert sorted(p.name for p in store.checkpoint_dir.iterdir()) == [f".{BASE.key}.leftover.tmp", f"{BASE.key}.pt"]
    lease.finish({"loss": 1.0})
    assert list(store.checkpoint_dir.iterdir()) == []
    with pytest.raises(RuntimeError, match="already finished"):
        lease.heartbeat()


def test_environment_does_not_initialise_cuda(tmp_path):
    import torch

    env = environment(refresh=True)
    assert env["torch"] == torch.__version__ and env["python"].count(".") == 2
    assert env["git_revision"] is None or len(env["git_revision"]) == 40
    if not torch.cuda.is_available():
        assert env["gpus"] == [] and not torch.cuda.is_initialized()
    assert environment(repo=tmp_path)["git_revision"] is None


# ---------------------------------------------------------------------------------------------
# Leases: atomicity and take-over
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False], ids=["one-store", "store-per-thread"])
def test_threads_racing_for_a_lease_one_wins(location, shared):
    path = location
    common = ResultStore(path)
    n = 12
    barrier = threading.Barrier(n)
    results = [None] * n

    def race(i):
        s = common if shared else ResultStore(path)
        barrier.wait()
        results[i] = s.lease(BASE)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [c for c in results if c is not None]
    assert len(winners) == 1
    assert common.get(BASE).attempts == 1 and common.get(BASE).owner == winners[0].owner
    winners[0].finish({"loss": 1.0})


def test_processes_racing_for_a_lease_one_wins(location, tmp_path):
    path, barrier, release = location, tmp_path / "barrier", tmp_path / "release"
    ResultStore(path)
    n = 6
    procs = [spawn("lease", str(path), str(barrier), str(n), str(release)) for _ in range(n)]
    outcomes = {}
    try:
        # losers print and exit; the winner prints and holds its lease until released
        for p in procs:
            outcomes[p.pid] = json.loads(p.stdout.readline())
        winners = [pid for pid, o in outcomes.items() if o["won"]]
        assert len(winners) == 1, outcomes
        for p in procs:
            if p.pid not in winners:
                assert p.wait(timeout=30) == 0
        record = ResultStore(path).get(worker.SHARED_SPEC)
        assert record.status == "running" and record.attempts == 1
        assert record.owner == outcomes[winners[0]]["owner"]
    finally:
        release.touch()
        for p in procs:
            p.wait(timeout=30)
            p.stdout.close()
    # the winner exited without finishing: its lease is taken over at once (owner pid is dead)
    lease = ResultStore(path).lease(worker.SHARED_SPEC)
    assert lease is not None and lease.attempt == 2 and lease.took_over_from == record.owner
    assert "dead" in lease.takeover_reason


def test_dead_owner_is_taken_over_live_owner_is_not(location, clock):
    path = location
    store = ResultStore(path, clock=clock)
    # a live owner in another process: not taken over while its heartbeat is fresh
    proc = spawn("own", str(path), stdin=subprocess.PIPE)
    try:
        owner = json.loads(proc.stdout.readline())["owner"]
        assert owner is not None and owner.split(":")[1] == str(proc.pid)
        assert store.lease(worker.SHARED_SPEC) is None
        assert store.lease(worker.SHARED_SPEC, stale_after=5.0) is None
        assert store.get_or_run(worker.SHARED_SPEC, lambda c: pytest.fail("computed twice"), wait=False) is None
        with pytest.raises(TimeoutError, match="status running"):
            store.wait_for(worker.SHARED_SPEC, timeout=0.1, poll=0.02)
        proc.stdin.write("heartbeat\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"heartbeat": "ok"}
        # ... but taken over once its heartbeat is older than stale_after (a hung worker)
        heartbeat = store.get(worker.SHARED_SPEC).heartbeat
        clock.now = heartbeat + DEFAULT_STALE_AFTER - 1
        assert store.lease(worker.SHARED_SPEC) is None
        clock.now = heartbeat + DEFAULT_STALE_AFTER + 1
        lease = store.lease(worker.SHARED_SPEC)
        assert lease is not None and lease.took_over_from == owner and "heartbeat" in lease.takeover_reason
        proc.stdin.write("heartbeat\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
        assert reply["heartbeat"] == "lost" and lease.owner in reply["message"]
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        lease.finish({"loss": 2.0})
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stdin.close()

    # an owner that leases and dies is taken over at once, with the attempt counted
    other = dataclasses.replace(worker.SHARED_SPEC, seed=1)
    code = (
        "import sys; from mtlcheck.study.experiments import ResultStore, RunSpec; "
        f"s = RunSpec.from_json({other.to_json()!r}); "
        "c = ResultStore(sys.argv[1]).lease(s); assert c is not None; print(c.owner)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    dead_owner = out.stdout.strip()
    assert store.get(other).status == "running" and store.get(other).owner == dead_owner
    clock.now = store.get(other).heartbeat  # a fresh heartbeat: only the dead pid gives it away
    lease = store.lease(other)
    assert lease is not None and lease.attempt == 2 and lease.took_over_from == dead_owner
    assert "dead" in lease.takeover_reason
    assert [e["event"] for e in store.get(other).history] == ["claimed", "taken_over"]


def test_other_host_owner_is_judged_by_heartbeat_only(store, clock):
    lease = store.lease(BASE)
    foreign = "elsewhere/0000:1:abcdef"
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET owner=? WHERE key=?", (foreign, BASE.key))
    with pytest.raises(LeaseLost, match="no longer owned"):
        lease.heartbeat()
    with pytest.raises(LeaseLost):
        lease.save_checkpoint({"step": 1})
    with pytest.raises(LeaseLost):
        lease.finish({"loss": 1.0})
    assert store.lease(BASE) is None  # pid 1 is not ours to judge on another host
    clock.advance(DEFAULT_STALE_AFTER + 1)
    taken = store.lease(BASE)
    assert taken is not None and taken.took_over_from == foreign
    assert store.get(BASE).status == "running" and store.get(BASE).metrics is None


def test_get_or_run_returns_the_new_owners_result_after_losing_its_lease(store, clock):
    def taken_over_midway(lease):
        clock.advance(DEFAULT_STALE_AFTER + 1)  # our heartbeat thread beats only every stale_after/4 s
        thief = []
        t = threading.Thread(target=lambda: thief.append(store.lease(BASE)))
        t.start()
        t.join()
        assert thief[0] is not None and thief[0].took_over_from == lease.owner
        thief[0].finish({"by": "thief"})
        lease.save_checkpoint({"step": 1})  # raises LeaseLost: this result is not wanted any more
        pytest.fail("save_checkpoint must refuse a lost lease")

    record = store.get_or_run(BASE, taken_over_midway, poll=0.01)
    assert record.metrics == {"by": "thief"} and record.attempts == 2
    assert [e["event"] for e in record.history] == ["claimed", "taken_over", "done"]


def test_a_stale_owner_in_this_process_is_taken_over(store):
    """A lease whose token is no longer live here (pid reused by a later process) counts as dead."""
    lease = store.lease(BASE)
    owners.retire(lease.owner)
    taken = store.lease(BASE)
    assert taken is not None and "not live in this process" in taken.takeover_reason


# ---------------------------------------------------------------------------------------------
# Real processes: SIGKILL half-way, and two processes sharing a sweep
# ---------------------------------------------------------------------------------------------
N_RUNS, EPOCHS = 6, 3


class Zygote:
    """One helper process that imports torch once and forks each sweep worker from there."""

    def __init__(self):
        self.proc = spawn("zygote", stdin=subprocess.PIPE)
        assert "ready" in self._reply(), "zygote did not start"

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"zygote died (exit code {self.proc.wait(timeout=30)})")
        return json.loads(line)

    def _send(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def spawn(self, argv: list[str], stdout: Path) -> int:
        return self._send({"cmd": "spawn", "argv": argv, "stdout": str(stdout)})["pid"]

    def wait(self, pid: int) -> int:
        return self._send({"cmd": "wait", "pid": pid})["returncode"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def _check_sweep_results(store: ResultStore, results: dict) -> None:
    specs = worker.sweep_specs(N_RUNS)
    assert set(results) == {s.key for s in specs}
    for s in specs:
        assert results[s.key]["acc"] == pytest.approx(worker.expected_acc(s.seed, EPOCHS))
        record = store.get(s)
        assert record.status == "done" and record.metrics == results[s.key]
        assert record.trajectory["acc"][-1] == pytest.approx(results[s.key]["acc"])
        assert len(record.trajectory["acc"]) == EPOCHS


def test_sigkill_half_way_then_restart_finishes_only_the_missing_runs(location, tmp_path, zygote):
    path, log = location, tmp_path / "events.jsonl"
    store = ResultStore(path)
    specs = worker.sweep_specs(N_RUNS)
    sweep = ["sweep", str(path), str(log), "--n", str(N_RUNS), "--epochs", str(EPOCHS), "--sleep", "0.02"]
    first = zygote.spawn(
        [*sweep, "--hang-at", "2:1"], tmp_path / "first.out"
    )  # run 2 hangs after its epoch-1 checkpoint
    try:
        wait_until(lambda: any(e["event"] == "hanging" for e in read_log(log)), 120, "run 2 to reach epoch 1", first)
        assert [store.get(s).status if store.get(s) else None for s in specs] == [
            "done",
            "done",
            "running",
            None,
            None,
            None,
        ]
        assert store.has_checkpoint(specs[2].key)
    finally:
        os.kill(first, signal.SIGKILL)
        assert zygote.wait(first) == -signal.SIGKILL
    done_before = {s.key: store.get(s) for s in specs[:2]}

    second = zygote.spawn(sweep, tmp_path / "second.out")
    assert zygote.wait(second) == 0
    output = json.loads((tmp_path / "second.out").read_text().splitlines()[-1])
    assert output["pid"] == second
    _check_sweep_results(store, output["results"])

    events = read_log(log)
    starts = [e for e in events if e["event"] == "start"]
    by_key = Counter(e["key"] for e in starts)
    # every run computed exactly once, except the killed one, which was resumed once
    assert by_key == {s.key: (2 if i == 2 else 1) for i, s in enumerate(specs)}
    assert [store.get(s).attempts for s in specs] == [1, 1, 2, 1, 1, 1]
    # finished runs were not recomputed (nor even touched) by the restarted process
    assert all(e["pid"] == first for e in starts if e["index"] < 2)
    assert {s.key: store.get(s) for s in specs[:2]} == done_before
    # the killed run resumed from its checkpoint, not from scratch
    killed = [e for e in starts if e["index"] == 2]
    assert [(e["pid"], e["start"]) for e in killed] == [(first, 0), (second, 2)]
    assert [e["epoch"] for e in events if e["event"] == "epoch" and e["index"] == 2] == [0, 1, 2]
    assert output["results"][specs[2].key]["start_epoch"] == 2.0
    history = store.get(specs[2]).history
    assert [h["event"] for h in history] == ["claimed", "taken_over", "done"]
    assert f":{first}:" in history[1]["from"] and "dead" in history[1]["reason"]
    assert not any(store.has_checkpoint(s.key) for s in specs)


def test_two_processes_share_a_sweep_without_duplicates(location, tmp_path, zygote):
    path, log, barrier = location, tmp_path / "events.jsonl", tmp_path / "barrier"
    store = ResultStore(path)
    sweep = [
        "sweep",
        str(path),
        str(log),
        "--n",
        str(N_RUNS),
        "--epochs",
        str(EPOCHS),
        "--sleep",
        "0.05",
        "--barrier",
        str(barrier),
        "--parties",
        "2",
    ]
    pids = [zygote.spawn(sweep, tmp_path / f"w{i}.out") for i in range(2)]
    assert [zygote.wait(pid) for pid in pids] == [0, 0]
    outputs = [json.loads((tmp_path / f"w{i}.out").read_text().splitlines()[-1]) for i in range(2)]
    assert outputs[0]["results"] == outputs[1]["results"]
    _check_sweep_results(store, outputs[0]["results"])
    starts = [e for e in read_log(log) if e["event"] == "start"]
    assert sorted(Counter(e["key"] for e in starts).values()) == [1] * N_RUNS  # no run computed twice
    assert all(r.attempts == 1 for r in store.runs())
    assert {e["pid"] for e in starts} == set(pids)  # and the work was shared


def test_environment_reads_the_current_thread_count_past_its_cache():
    import torch

    saved = torch.get_num_threads()
    try:
        environment()  # cached now
        torch.set_num_threads(1)
        assert environment()["torch_threads"] == 1
        torch.set_num_threads(2)
        assert environment()["torch_threads"] == 2
    finally:
        torch.set_num_threads(saved)
