"""A PostgreSQL store keeps the SQLite store's promises, on a real PostgreSQL server.

The semantics tests of suites/pipeline/test_store.py that do not depend on the backend run here
again with `location` a fresh PostgreSQL database: each run computed once, leases with heartbeats,
take-over of dead and stale owners, failures recorded, checkpoints resumed, processes racing, a
sweep killed half-way and restarted. Then what only a database server adds: bad URLs, the CLI
on a URL, and `runs compare` across backends.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from mtlcheck.study.experiments import ResultStore, RunSpec, StoreError

_path = Path(__file__).resolve().parents[1] / "pipeline" / "test_store.py"
_module = importlib.util.spec_from_file_location("_sqlite_store_tests", _path)
sqlite_tests = importlib.util.module_from_spec(_module)
_module.loader.exec_module(sqlite_tests)

clock = sqlite_tests.clock
store = sqlite_tests.store
zygote = sqlite_tests.zygote

SAME_SEMANTICS = [
    "test_get_or_run_computes_once_and_records_everything",
    "test_tuple_results_and_diverged_runs",
    "test_nan_and_inf_round_trip_as_strict_json",
    "test_failures_are_recorded_with_traceback_and_retried_up_to_a_limit",
    "test_malformed_results_are_recorded_as_failures",
    "test_interrupt_releases_the_run_and_keeps_the_checkpoint",
    "test_a_run_asking_for_its_own_result_raises_instead_of_hanging",
    "test_add_registers_pending_runs",
    "test_the_store_keeps_the_times_of_its_clock_and_waits_on_it",
    "test_threads_racing_for_a_lease_one_wins",
    "test_processes_racing_for_a_lease_one_wins",
    "test_dead_owner_is_taken_over_live_owner_is_not",
    "test_other_host_owner_is_judged_by_heartbeat_only",
    "test_get_or_run_returns_the_new_owners_result_after_losing_its_lease",
    "test_a_stale_owner_in_this_process_is_taken_over",
    "test_sigkill_half_way_then_restart_finishes_only_the_missing_runs",
    "test_two_processes_share_a_sweep_without_duplicates",
]
for _name in SAME_SEMANTICS:
    globals()[_name] = getattr(sqlite_tests, _name)


@pytest.fixture
def location(postgres_url) -> str:
    return postgres_url


SPEC = RunSpec("digits", "ew", seed=0, budget="smoke")


def test_the_schema_and_checkpoints_live_in_the_database(postgres_url):
    store = ResultStore(postgres_url)
    assert store.path is None and store.checkpoint_dir is None and store.location == postgres_url
    lease = store.lease(SPEC)
    lease.save_checkpoint({"step": 3})
    assert store.has_checkpoint(SPEC.key) and lease.load_checkpoint() == {"step": 3}
    lease.finish({"loss": 1.0})
    assert not store.has_checkpoint(SPEC.key)
    with pytest.raises(StoreError, match="keeps its checkpoints in the database"):
        store.checkpoint_path(SPEC)
    reader = ResultStore(postgres_url, readonly=True)
    assert reader.get(SPEC).metrics == {"loss": 1.0}
    with pytest.raises(StoreError, match="read-only"):
        reader.add(SPEC)


def test_a_connection_the_server_dropped_is_replaced(postgres_url):
    import psycopg

    store = ResultStore(postgres_url)
    store.add(SPEC)
    with store.transaction() as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    assert store.get(SPEC).status == "pending"  # read on a new connection
    lease = store.lease(SPEC)
    lease.finish({"loss": 1.0})
    assert store.get(SPEC).status == "done"


def test_an_empty_database_is_not_a_store_to_read(postgres_url):
    with pytest.raises(StoreError, match="the database is empty"):
        ResultStore(postgres_url, readonly=True)
    with pytest.raises(StoreError, match="the database is empty"):
        ResultStore(postgres_url, create=False)


def test_a_database_of_something_else_is_refused(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match=r"schema version 0 \(tables \['customers'\]\).*something else"):
        ResultStore(postgres_url)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtlcheck.study", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_bad_urls_are_one_line_errors_that_write_nothing(postgres_server, tmp_path):
    port = postgres_server.rsplit(":", 1)[1]
    cases = {
        "postgresql://mtlcheck@127.0.0.1:1/x": "Connection refused",  # nothing listens there
        f"postgresql://nobody:secret@127.0.0.1:{port}/postgres": 'role "nobody" does not exist',
        f"{postgres_server}/no_such_db": 'database "no_such_db" does not exist',
        f"{postgres_server}": "names no database",
    }
    for url, why in cases.items():
        result = _cli("runs", "list", "--store", url)
        assert result.returncode == 2, (url, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mtlcheck: error: results store") and why in lines[0], lines
        assert "secret" not in result.stderr  # the password is never printed
        assert "Traceback" not in result.stderr


def test_a_sweep_on_a_url_and_runs_compare_across_backends(postgres_url, tmp_path):
    sqlite = str(tmp_path / "runs.sqlite")
    common = ["--budget", "smoke", "--methods", "mgda", "--levels", "feature", "--seeds", "0", "--jobs", "1", "--quiet"]
    for target in (postgres_url, sqlite):
        result = _cli("sweep", *common, "--store", target, "--portable")
        assert result.returncode == 0, result.stderr
    result = _cli("runs", "compare", sqlite, "--store", postgres_url)
    assert result.returncode == 0, result.stderr
    assert "identical" in result.stdout, result.stdout
    export = tmp_path / "runs.json"
    assert _cli("runs", "export", str(export), "--store", postgres_url).returncode == 0
    assert export.stat().st_size > 0


def test_two_sweeps_share_the_work_and_one_killed_mid_run_loses_nothing(postgres_url):
    """Two `mtlcheck sweep` processes on one PostgreSQL store (as two machines of a job array
    would run them); one is killed in the middle of a run. The other takes that run over (at once:
    its owner's pid is dead on this host; from another host, once the heartbeat is stale) and
    every run ends done, finished once."""
    import os
    import signal
    import time

    args = ["sweep", "--budget", "smoke", "--methods", "mgda", "--seeds", "0", "1"]
    args += ["--jobs", "1", "--quiet", "--store", postgres_url]
    command = [sys.executable, "-m", "mtlcheck.study", *args]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    survivor = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = ResultStore(postgres_url)
    try:
        deadline = time.monotonic() + 240
        while not any(r.status == "running" and f":{victim.pid}:" in r.owner for r in reader.runs()):
            assert victim.poll() is None and time.monotonic() < deadline, "the first sweep never held a run"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        out, err = survivor.communicate(timeout=300)
    finally:
        for p in (victim, survivor):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert survivor.returncode == 0, err
    records = reader.runs()
    assert len(records) == 4 and all(r.status == "done" for r in records), [(r.spec.label, r.status) for r in records]
    for r in records:  # finished exactly once each
        assert [e["event"] for e in r.history].count("done") == 1, r.history
    taken = [r for r in records if any(e["event"] == "taken_over" for e in r.history)]
    assert len(taken) == 1 and f":{victim.pid}:" in taken[0].history[0]["owner"]
    # and the survivor says so: which run it took over, and why
    assert "local: " in out and f"taken over: {taken[0].spec.label} (owner process {victim.pid}" in out, out


def _terminate_other_backends(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_a_run_outlives_the_server_dropping_its_connections(postgres_url):
    """The connections drop while the run computes: its heartbeat goes on (a new connection at the
    next tick) and its result is stored, not recorded as a failure."""
    import time

    store = ResultStore(postgres_url)

    def compute(lease):
        _terminate_other_backends(postgres_url)  # the store's connections of both threads
        time.sleep(0.5)
        assert time.time() - ResultStore(postgres_url, readonly=True).get(SPEC).heartbeat < 0.4, "heartbeat stopped"
        _terminate_other_backends(postgres_url)
        return {"loss": 1.0}, {}, {}

    record = store.get_or_run(SPEC, compute, stale_after=1.0, heartbeat_every=0.05)
    assert record.status == "done" and record.metrics == {"loss": 1.0} and record.failures == 0


def test_a_lock_wait_that_times_out_leaves_the_connection_usable(postgres_url):
    import psycopg

    from mtlcheck.study.experiments.databases import PostgresDatabase

    store = ResultStore(postgres_url, busy_timeout=1.0)
    with psycopg.connect(postgres_url) as holder:  # another writer holds the store's lock
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (PostgresDatabase._LOCK,))
        with pytest.raises(StoreError, match="lock timeout"):
            store.add(SPEC)
    assert store.add(SPEC) == 1 and store.get(SPEC).status == "pending"


def test_writers_see_each_other_whatever_the_servers_default_isolation(postgres_url):
    """Under a REPEATABLE READ default a transaction's snapshot would predate the lock it waits
    for; the store asks for READ COMMITTED, so racing threads still make exactly one winner."""
    import threading

    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        name = postgres_url.rsplit("/", 1)[1]
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")
    ResultStore(postgres_url)  # the schema
    n, barrier, leases, errors = 6, threading.Barrier(6), [], []

    def race():
        try:
            store = ResultStore(postgres_url)
            barrier.wait()
            leases.append(store.lease(SPEC))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len([lease for lease in leases if lease is not None]) == 1
