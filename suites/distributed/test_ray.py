"""Ray sweeps on a two-node local cluster (`run_sweep_ray`): only the driver writes the store, a
dead node's runs resume elsewhere at once, Ctrl-C gives the runs back, and nothing is lost or
computed twice (one finish per run in each record's history)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from mtlcheck.study.cli import main
from mtlcheck.study.experiments.records import FINISHED, StoreError
from mtlcheck.study.experiments.remote_store import node_of
from mtlcheck.study.experiments.runner import run_sweep, sweep_specs
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import ResultStore

try:
    import ray
except ImportError:  # an error where CI requires Ray (MTLCHECK_REQUIRE_SERVICES=ray), else a skip
    if "ray" in os.environ.get("MTLCHECK_REQUIRE_SERVICES", "").split(","):
        raise
    pytest.skip("Ray is not installed (pip install mtlcheck[ray])", allow_module_level=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _specs(methods, steps=None):
    return sweep_specs("digits-dense", methods, levels=("parameter",), seeds=(0,), budget="smoke", steps=steps)


def _finishes(record) -> int:
    return sum(e["event"] in FINISHED for e in record.history)


def _local(specs, path):
    """The same specs computed straight in this process, on one thread (as a Ray task here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU sums depend on the thread count
    try:
        return {r.key: r.metrics for r in run_sweep(ResultStore(path), specs, progress=False)}
    finally:
        torch.set_num_threads(threads)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


def _checkpointed(path, nodes=None):
    """Keys of the running runs with a checkpoint (on one of `nodes`, if given)."""
    if not path.exists():
        return set()
    try:
        store = ResultStore(path, readonly=True)
    except StoreError as exc:  # the driver created the file and is writing its schema
        if "the database is empty" in str(exc):
            return set()
        raise
    try:
        return {
            r.key
            for r in store.runs(status="running")
            if store.has_checkpoint(r.key) and (nodes is None or node_of(r.owner) in nodes)
        }
    finally:
        store.close()


def test_without_a_shared_filesystem_every_run_is_stored_once_by_the_driver(ray_cluster, tmp_path):
    """The worker node sees an empty tmpfs where the driver's store lies: every run (a failing one
    too) is stored once in the driver's store, some computed on the worker node, nothing written on
    its side, and the results are a local sweep's."""
    from mtlcheck.study.experiments.distributed import run_sweep_ray

    folder = tmp_path / "store"
    cluster = ray_cluster(hide=folder)
    bad = RunSpec(benchmark="digits-dense", method="ew", method_config={"no_such_option": 1}, budget="smoke")
    specs = _specs(["ew", "mgda", "pcgrad", "famo"])
    records = run_sweep_ray(folder / "runs.sqlite", [*specs, bad], address=cluster.address, progress=False)

    assert [r.spec for r in records] == [*specs, bad]
    good, failed = records[:-1], records[-1]
    assert all(r.status == "done" and r.attempts == 1 and _finishes(r) == 1 for r in good), [
        (r.spec.label, r.status, r.error) for r in good
    ]
    assert failed.status == "failed" and failed.failures == 1 and "no_such_option" in failed.error
    ran_on = {node_of(r.history[-1]["owner"]) for r in good}
    assert cluster.worker_node_id in ran_on, ran_on
    assert cluster.hidden_from_worker() == []  # no store, no checkpoint made on the worker node's side
    assert sorted(records.summary.finished_on) == sorted(r.spec.label for r in good)
    assert not records.summary.taken_over

    again = run_sweep_ray(folder / "runs.sqlite", specs, address=cluster.address, progress=False)
    assert [(r.key, r.attempts, r.finished) for r in again] == [(r.key, r.attempts, r.finished) for r in good]
    assert again.summary is None  # all stored: nothing was computed
    assert _local(specs, tmp_path / "local.sqlite") == {r.key: r.metrics for r in good}


def test_a_killed_nodes_runs_are_taken_over_at_once_and_resume_from_their_checkpoints(ray_cluster, tmp_path):
    """SIGKILL the worker node's process group once its run saved a checkpoint: Ray runs the task
    again on the head, the store takes the lease over at once (its node is dead) and the run
    resumes from its checkpoint, with a straight run's results; nothing waits for a stale
    heartbeat (600 s)."""
    from mtlcheck.study.experiments.distributed import run_sweep_ray

    cluster = ray_cluster()
    path = tmp_path / "runs.sqlite"
    specs = _specs(["ew", "mgda"], steps=150)
    killed: list[str] = []

    def kill_when_checkpointed():
        killed.extend(_wait_for(lambda: _checkpointed(path, {cluster.worker_node_id}), 120, "a checkpoint"))
        cluster.kill_worker_node()

    killer = threading.Thread(target=kill_when_checkpointed, daemon=True)
    killer.start()
    t0 = time.monotonic()
    records = run_sweep_ray(path, specs, address=cluster.address, progress=False)
    seconds = time.monotonic() - t0
    killer.join(timeout=1)

    assert len(killed) == 1 and seconds < 120, (killed, seconds)
    assert all(r.status == "done" and _finishes(r) == 1 for r in records), [(r.spec.label, r.status) for r in records]
    (victim,) = [r for r in records if r.key == killed[0]]
    (takeover,) = [e for e in victim.history if e["event"] == "taken_over"]
    assert node_of(takeover["from"]) == cluster.worker_node_id
    # Both are true of a killed node, whichever the store sees first: Ray marks the node dead
    # after missed heartbeats, while its worker process (on this host, in the test) is gone at once.
    node = cluster.worker_node_id[:12]
    assert takeover["reason"] == f"its Ray node {node} died" or re.fullmatch(
        rf"its process \d+ \(Ray node {node}, this host\) is dead", takeover["reason"]
    ), takeover["reason"]
    summary = records.summary
    assert summary.resubmitted == (victim.spec.label,) and victim.spec.label in summary.resumed
    assert f"resubmitted by Ray after their node or worker process died: {victim.spec.label} (its " in summary.line()
    assert _local([victim.spec], tmp_path / "local.sqlite") == {victim.key: victim.metrics}


def test_ctrl_c_cancels_the_tasks_releases_the_runs_and_a_rerun_completes(ray_cluster, tmp_path, capsys):
    """SIGINT to a `mtlcheck sweep --executor ray` driver: exit 130, its runs pending with their
    checkpoints, the cluster left running; the same command then finishes them from there."""
    cluster = ray_cluster()
    store = tmp_path / "runs.sqlite"
    args = ["sweep", "--executor", "ray", "--ray-address", cluster.address, "--methods", "ew", "mgda"]
    args += ["--levels", "parameter", "--seeds", "0", "--budget", "smoke", "--steps", "150", "--quiet"]
    args += ["--threads", "1", "--store", str(store), "--out", str(tmp_path / "out")]
    driver = subprocess.Popen(
        [sys.executable, "-m", "mtlcheck.study.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: len(_checkpointed(store)) == 2, 120, "both runs' checkpoints")
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, (out, err)
    assert "interrupted" in err and "resumes from there" in err, err

    reader = ResultStore(store, readonly=True)
    stopped = reader.runs()
    assert len(stopped) == 2 and all(r.status == "pending" for r in stopped), [(r.status, r.owner) for r in stopped]
    assert all(r.history[-1]["event"] == "released" and reader.has_checkpoint(r.key) for r in stopped)
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        assert len(cluster.alive_nodes()) == 2  # the cluster we did not start runs on
    finally:
        ray.shutdown()

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 runs in" in out and "2 done" in out
    assert "ray: 2 run(s) computed on 2 node(s)" in out or "ray: 2 run(s) computed on 1 node(s)" in out, out
    assert "resumed from a checkpoint" in out, out
    records = ResultStore(store, readonly=True).runs()
    assert all(r.status == "done" and _finishes(r) == 1 for r in records)


def test_an_address_without_a_cluster_is_one_line_and_leaves_nothing(tmp_path, capsys):
    store = tmp_path / "new" / "runs.sqlite"
    args = ["sweep", "--executor", "ray", "--ray-address", f"127.0.0.1:{_closed_port()}", "--methods", "ew"]
    args += ["--levels", "parameter", "--seeds", "0", "--budget", "smoke", "--quiet", "--store", str(store)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlcheck: error: run_sweep_ray: no Ray cluster at 127.0.0.1:") and err.count("\n") == 1, err
    assert not store.parent.exists()
