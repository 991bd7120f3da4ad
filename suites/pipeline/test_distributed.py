"""Sweeps on several processes: local worker processes (`run_sweep_processes`), same store
semantics and results as an in-process sweep; `run_sweep_ray`'s usage errors (its sweeps on a
two-node Ray cluster are in suites/distributed/test_ray.py)."""

import os
import sys

import pytest
import torch

from mtlcheck.study.cli import main
from mtlcheck.study.experiments.runner import Where, run_sweep, sweep_specs
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import ResultStore, StoreError

METHODS = ["ew", "mgda", "pcgrad", "famo"]


def _specs():
    return sweep_specs("digits-dense", METHODS, levels=("parameter",), seeds=(0,), budget="smoke")


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    from mtlcheck.study.experiments.distributed import run_sweep_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ImportError, match=r"pip install mtlcheck\[ray\]"):
        run_sweep_ray(tmp_path / "runs.sqlite", _specs(), progress=False)


def test_ray_address_without_ray_executor_is_a_usage_error(tmp_path, capsys):
    assert (
        main(
            [
                "sweep",
                "--methods",
                "ew",
                "--levels",
                "parameter",
                "--budget",
                "smoke",
                "--quiet",
                "--store",
                str(tmp_path / "r.sqlite"),
                "--ray-address",
                "auto",
            ]
        )
        == 2
    )
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_cuda_device_needs_a_gpu_per_run(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install mtlcheck[ray])")
    from mtlcheck.study.experiments.distributed import run_sweep_ray

    with pytest.raises(ValueError, match="num_gpus_per_run > 0"):
        run_sweep_ray(tmp_path / "r.sqlite", _specs(), Where(device="cuda"), progress=False)
    with pytest.raises(ValueError, match="use device 'cuda'"):
        run_sweep_ray(tmp_path / "r.sqlite", _specs(), Where(device="cuda:1"), num_gpus_per_run=1, progress=False)


def test_local_worker_processes_compute_each_run_once_as_an_in_process_sweep_does(tmp_path):
    """`run_sweep_processes` (the CPU default of `mtlcheck sweep`/`reproduce`: one worker process
    per core): every run computed once, in the workers, with the results of an in-process sweep
    at the same thread count; a failing run is recorded and the others go on."""
    from mtlcheck.study.experiments.distributed import run_sweep_processes

    bad = RunSpec(benchmark="digits-dense", method="ew", method_config={"no_such_option": 1}, budget="smoke")
    specs = sweep_specs("digits-dense", ["ew"], levels=("parameter",), seeds=(0, 1), budget="smoke")
    path = tmp_path / "procs.sqlite"
    records = run_sweep_processes(path, [*specs, bad], jobs=2, threads=1, progress=False)
    assert [r.spec for r in records] == [*specs, bad]
    by_key = {r.key: r for r in records}
    assert by_key[bad.key].status == "failed" and "no_such_option" in by_key[bad.key].error
    good = [by_key[s.key] for s in specs]
    assert all(r.status == "done" and r.attempts == 1 for r in good), [(r.spec.label, r.status, r.error) for r in good]
    assert str(os.getpid()) not in {r.history[0]["owner"].split(":")[1] for r in good}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: CPU sums depend on the thread count
    try:
        local = run_sweep(ResultStore(tmp_path / "local.sqlite"), specs, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert {r.key: r.metrics for r in local} == {r.key: r.metrics for r in good}


def test_a_ray_workers_lease_owner_names_its_node_and_dies_with_it(monkeypatch):
    """Owners of Ray workers are ``<host>@ray-node-<id>:pid:token``; the store actor's judge calls
    such an owner dead as soon as Ray reports its node dead (and not before)."""
    import types

    from mtlcheck.study.experiments import owners
    from mtlcheck.study.experiments.remote_store import RayNodeJudge, node_of, ray_owner_host

    node = "ab" * 28
    owner = owners.new_owner(ray_owner_host(node))
    try:
        assert node_of(owner) == node and node_of(owners.HOST + ":1:x") is None
        assert owners.owned_by_this_thread(owner)
        alive = [{"NodeID": node, "Alive": True}]
        monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(nodes=lambda: alive))
        assert RayNodeJudge(refresh=0)(owner) is None  # its node lives, and so does its process (this one)
        alive[0]["Alive"] = False
        assert RayNodeJudge(refresh=0)(owner) == f"its Ray node {node[:12]} died"
        assert RayNodeJudge(refresh=0)(f"{owners.HOST}:1:x") is None  # not a Ray worker: not its business
    finally:
        owners.retire(owner)
    with pytest.raises(ValueError, match="host must be"):
        owners.new_owner("elsewhere")


def test_runs_left_unfinished_are_counted_and_the_first_ten_named(tmp_path):
    from mtlcheck.study.experiments.distributed import _stored_records

    specs = sweep_specs("digits-dense", ["ew"], levels=("parameter",), seeds=tuple(range(25)), budget="smoke")
    with pytest.raises(StoreError) as raised:
        _stored_records(ResultStore(tmp_path / "runs.sqlite"), specs, "run_sweep_processes")
    message = str(raised.value)
    assert message.startswith("run_sweep_processes: 25 run(s) neither finished nor failed in ")
    assert "run the sweep again to retry them" in message
    lines = message.splitlines()[1:]
    assert lines[:10] == [f"  {s.label} [{s.key}]: absent" for s in specs[:10]]
    assert lines[10:] == ["  ... and 15 more"]


def test_a_run_whose_ray_worker_died_counts_as_resubmitted_whichever_reason_the_store_saw_first():
    """A killed node's run is taken over for 'its Ray node … died' or, when its worker ran on this
    host and is gone before Ray marks the node dead, 'its process N (Ray node …, this host) is dead':
    both are Ray resubmissions; a stale heartbeat of an owner outside Ray is a plain take-over."""
    from mtlcheck.study.experiments.distributed import SweepSummary

    summary = SweepSummary(
        finished_on={"a": "node1", "b": "node1", "c": "host"},
        taken_over={
            "a": "its Ray node 92a7325b5b2b died",
            "b": "its process 16990 (Ray node 92a7325b5b2b, this host) is dead",
            "c": "owner process 7 on this host is dead",
        },
    )
    assert summary.resubmitted == ("a", "b")
    line = summary.line()
    assert "resubmitted by Ray after their node or worker process died: a (its Ray node" in line
    assert "taken over: c (owner process 7 on this host is dead)" in line
