"""`mtlcheck sweep` stops when told (mtlcheck.study.experiments.interrupts), in real processes.

Each test starts a sweep in its own session, waits until the store shows its runs in progress
(each with a checkpoint), signals it and checks: the exit code and message, that no run was
claimed after the signal, that it stopped within seconds, that no process of it is left, and
where it matters that the same command run again computes every run exactly once. A sweep
takes a few seconds to reach its runs on 2 cores (the workers import torch): the variants of paths
already covered (SIGTERM to the group, SIGTERM in process, SIGTERM to the group of a sweep that
ignores Ctrl-C) are marked slow; the others take ~55 s together. A sweep started with SIGINT
ignored (`cmd &` in a script, nohup) must ignore a Ctrl-C to its group, workers included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlcheck.study.experiments.interrupts import (
    Terminated,
    exit_at_next_signal,
    exit_code,
    second_signal_exits,
    terminate_as_interrupt,
)
from mtlcheck.study.experiments.store import ResultStore

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds processes in /proc (Linux)")

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
# 3 runs on 2 workers; 40 steps of ~40 ms on one thread, a checkpoint every 6
SWEEP = ["sweep", "--methods", "ew", "--levels", "parameter", "--seeds", "0", "1", "2"]
SWEEP += ["--budget", "smoke", "--steps", "40", "--quiet", "--threads", "1"]
CLAIMS = ("claimed", "taken_over", "retried")
STOPPED = 10.0  # seconds from the signal to the command's exit: STOP_GRACE and slack for a busy machine


def _start(store: Path, jobs: int = 2, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """The sweep in a session of its own, SIGINT at its default (a background job inherits it
    ignored) unless `sigint` is SIG_IGN."""
    return subprocess.Popen(
        [sys.executable, "-m", "mtlcheck.study", *SWEEP, "--jobs", str(jobs), "--store", str(store)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def _poll(what: str, condition, proc: subprocess.Popen, timeout: float = 120.0):
    """`condition()` once it is truthy; fails if `proc` ends first or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.returncode}\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {what} after {timeout}s")


def _records(store: Path) -> list:
    try:
        db = ResultStore(store, readonly=True)
    except Exception:  # noqa: BLE001 - not created yet
        return []
    try:
        return db.runs()
    except Exception:  # noqa: BLE001 - its schema not yet written
        return []
    finally:
        db.close()


def _in_progress(store: Path, proc: subprocess.Popen, runs: int = 2) -> list:
    """Waits until `runs` runs are running, each past its first checkpoint."""
    ckpt = Path(f"{store}.ckpt")

    def ready():
        running = [r for r in _records(store) if r.status == "running"]
        return len(running) >= runs and all((ckpt / f"{r.key}.pt").exists() for r in running) and running

    return _poll("runs in progress", ready, proc)


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _gone(pids: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while {p for p in pids if _alive(p)} and time.monotonic() < deadline:
        time.sleep(0.05)
    left = {p: Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ") for p in pids if _alive(p)}
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"still alive {timeout}s after the sweep ended: {left}"


def _signal(proc: subprocess.Popen, signum: int, group: bool) -> float:
    sent = time.time()
    (os.killpg if group else os.kill)(proc.pid, signum)
    return sent


def _ended(proc: subprocess.Popen, since: float) -> tuple[int, str, float]:
    """(exit code, stderr, seconds from `since` to the exit)."""
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the sweep did not stop: {proc.communicate()[1][-3000:]}")
    return proc.returncode, err, time.time() - since


def _nothing_claimed_after(store: Path, sent: float) -> list:
    records = _records(store)
    late = [
        (r.spec.label, e["event"], e["time"] - sent)
        for r in records
        for e in r.history
        if e["event"] in CLAIMS and e["time"] > sent
    ]
    assert not late, f"claimed after the signal: {late}"
    assert all(r.created <= sent for r in records)
    return records


def _stopped_and_said_so(rc: int, err: str, seconds: float, expected_rc: int = 130) -> None:
    assert rc == expected_rc, (rc, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert "mtlcheck: interrupted." in err and "of 3 run(s) finished" in err, err[-3000:]
    assert "Run the same command again to resume." in err
    assert seconds < STOPPED, f"stopped {seconds:.1f}s after the signal"


def _released_with_checkpoints(records: list, store: Path, sent: float) -> None:
    stopped = [r for r in records if r.status != "done"]
    assert stopped, [r.status for r in records]
    for r in stopped:
        assert r.status == "pending" and r.failures == 0, (r.status, r.history[-1])
        assert "interrupted in" in r.history[-1]["reason"]
        assert r.history[-1]["time"] - sent < 5.0, "released more than 5 s after the signal"
        assert Path(f"{store}.ckpt/{r.key}.pt").exists()


def _each_run_computed_once_when_run_again(store: Path) -> None:
    again = subprocess.run(
        [sys.executable, "-m", "mtlcheck.study", *SWEEP, "--jobs", "2", "--store", str(store)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    records = _records(store)
    assert len(records) == 3 and all(r.status == "done" for r in records), [r.status for r in records]
    for r in records:
        assert [e["event"] for e in r.history].count("done") == 1, r.history


@pytest.mark.parametrize(
    "signum, group, rc",
    [
        pytest.param(signal.SIGINT, True, 130, id="ctrl-c"),
        pytest.param(signal.SIGINT, False, 130, id="sigint-to-the-parent"),
        pytest.param(signal.SIGTERM, False, 143, id="sigterm-to-the-parent"),
        pytest.param(signal.SIGTERM, True, 143, id="sigterm-to-the-group", marks=pytest.mark.slow),
    ],
)
def test_a_signal_stops_the_sweep_and_releases_its_runs(tmp_path, signum, group, rc):
    store = tmp_path / "runs.sqlite"
    proc = _start(store)
    _in_progress(store, proc)
    processes = _descendants(proc.pid)
    sent = _signal(proc, signum, group)
    code, err, seconds = _ended(proc, sent)
    _stopped_and_said_so(code, err, seconds, rc)
    records = _nothing_claimed_after(store, sent)
    _released_with_checkpoints(records, store, sent)
    assert "released with its checkpoint: it resumes from there" in err
    _gone(processes)
    print(f"exit {code} {seconds:.2f}s after the signal")
    if signum == signal.SIGINT and group:
        _each_run_computed_once_when_run_again(store)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    store = tmp_path / "runs.sqlite"
    proc = _start(store)
    _in_progress(store, proc)
    processes = _descendants(proc.pid)
    sent = _signal(proc, signal.SIGINT, group=True)
    time.sleep(0.1)
    again = _signal(proc, signal.SIGINT, group=True)
    code, err, seconds = _ended(proc, again)
    # 130, or death by SIGINT when the second one finds it tearing down (a shell says 130 too)
    assert code in (130, -signal.SIGINT) and "Traceback" not in err, (code, err[-3000:])
    assert "mtlcheck: interrupted." in err
    assert seconds < 3.0, f"exited {seconds:.1f}s after the second Ctrl-C"
    _nothing_claimed_after(store, sent)
    _gone(processes)
    print(f"exit {code} {seconds:.2f}s after the second signal")
    _each_run_computed_once_when_run_again(store)


_SECOND_CTRL_C_WHILE_THE_STORE_IS_READ = """
import os, signal, sys, time
from mtlcheck.study import cli
from mtlcheck.study.experiments import interrupts


def first_ctrl_c(args):
    raise KeyboardInterrupt


def reading_the_store(location, specs):
    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the store is read
    time.sleep(60)
    return "never said"


cli._portable = first_ctrl_c
interrupts.where_it_stopped = reading_the_store
sys.exit(cli.main(["run", "--benchmark", "digits-dense", "--method", "ew", "--store", sys.argv[1]]))
"""


def test_a_second_ctrl_c_while_the_store_is_read_still_says_interrupted(tmp_path):
    """The message comes before the store is read (which may take seconds on a busy machine or a
    remote database): a second Ctrl-C meanwhile exits at once, the message out (it was lost)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_CTRL_C_WHILE_THE_STORE_IS_READ, str(tmp_path / "runs.sqlite")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-3000:])
    assert "mtlcheck: interrupted." in done.stderr and "never said" not in done.stderr
    assert time.monotonic() - started < 50  # not the 60 s the store's reading would have taken


def test_workers_die_with_a_killed_sweep(tmp_path):
    store = tmp_path / "runs.sqlite"
    proc = _start(store)
    _in_progress(store, proc)
    processes = _descendants(proc.pid)  # the workers and multiprocessing's resource tracker
    assert len(processes) >= 3, processes
    killed = _signal(proc, signal.SIGKILL, group=False)
    proc.communicate(timeout=60)
    _gone(processes)
    print(f"all gone {time.time() - killed:.2f}s after SIGKILL")


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path):
    store = tmp_path / "runs.sqlite"
    proc = _start(store)
    workers = _poll("workers", lambda: len(_descendants(proc.pid)) >= 2, proc)
    assert workers
    sent = _signal(proc, signal.SIGINT, group=True)
    code, err, seconds = _ended(proc, sent)
    assert code == 130 and "Traceback" not in err and "mtlcheck: interrupted." in err, err[-3000:]
    assert seconds < STOPPED
    _nothing_claimed_after(store, sent)


@pytest.mark.parametrize(
    "signum, rc",
    [
        pytest.param(signal.SIGINT, 130, id="ctrl-c"),
        pytest.param(signal.SIGTERM, 143, id="sigterm", marks=pytest.mark.slow),
    ],
)
def test_a_signal_stops_an_in_process_sweep(tmp_path, signum, rc):
    """--jobs 1: the runs are computed in the command's own process."""
    store = tmp_path / "runs.sqlite"
    proc = _start(store, jobs=1)
    _in_progress(store, proc, runs=1)
    sent = _signal(proc, signum, group=True)
    code, err, seconds = _ended(proc, sent)
    _stopped_and_said_so(code, err, seconds, rc)
    _released_with_checkpoints(_nothing_claimed_after(store, sent), store, sent)


def test_sigterm_raises_where_ctrl_c_would_and_asks_for_exit_143():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as raised, terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert isinstance(raised.value, KeyboardInterrupt) and exit_code(raised.value) == 143
    assert exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == before  # given back


def test_the_commands_handlers_leave_an_ignored_signal_ignored():
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with terminate_as_interrupt(), second_signal_exits(130):
            assert {signal.getsignal(s) for s in before} == {signal.SIG_IGN}
        exit_at_next_signal(130)
        assert {signal.getsignal(s) for s in before} == {signal.SIG_IGN}
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_second_signal_while_the_command_says_where_it_stopped_exits_at_once():
    code = "import os, signal, time\nfrom mtlcheck.study.experiments.interrupts import second_signal_exits\n"
    code += "with second_signal_exits(130):\n    print('saying', flush=True)\n    time.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "saying\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130


def _releases_after(store: Path, since: float) -> list:
    return [
        (r.spec.label, e["event"], e["time"] - since)
        for r in _records(store)
        for e in r.history
        if e["time"] > since and "interrupted in" in e.get("reason", "")
    ]


def test_a_sweep_that_ignores_ctrl_c_ignores_it_in_its_workers_too(tmp_path):
    """`cmd &` in a script, nohup: SIGINT ignored from the start; one to the group changes nothing."""
    store = tmp_path / "runs.sqlite"
    proc = _start(store, sigint=signal.SIG_IGN)
    _in_progress(store, proc)
    sent = _signal(proc, signal.SIGINT, group=True)
    code, err, _ = _ended(proc, sent)
    assert code == 0 and "Traceback" not in err and "neither finished nor failed" not in err, (code, err[-3000:])
    records = _records(store)
    assert len(records) == 3 and all(r.status == "done" for r in records), [r.status for r in records]
    assert not _releases_after(store, 0.0)
    claimed_later = [r for r in records if any(e["event"] in CLAIMS and e["time"] > sent for e in r.history)]
    assert claimed_later, "the third run should start after the ignored Ctrl-C"
    for r in records:
        assert [e["event"] for e in r.history].count("done") == 1, r.history


@pytest.mark.parametrize(
    "group", [pytest.param(False, id="to-the-parent"), pytest.param(True, id="to-the-group", marks=pytest.mark.slow)]
)
def test_sigterm_stops_a_sweep_that_ignores_ctrl_c(tmp_path, group):
    """The sweep's stop still interrupts the workers' runs (its SIGINT to them is not the one ignored)."""
    store = tmp_path / "runs.sqlite"
    proc = _start(store, sigint=signal.SIG_IGN)
    _in_progress(store, proc)
    processes = _descendants(proc.pid)
    ignored = _signal(proc, signal.SIGINT, group=True)
    time.sleep(0.3)
    assert not _releases_after(store, ignored), "a run was released after an ignored Ctrl-C"
    sent = _signal(proc, signal.SIGTERM, group)
    code, err, seconds = _ended(proc, sent)
    _stopped_and_said_so(code, err, seconds, 143)
    records = _nothing_claimed_after(store, sent)
    assert not [r for r in records if r.status == "running"], [r.status for r in records]
    _released_with_checkpoints(records, store, sent)
    _gone(processes)
    print(f"exit {code} {seconds:.2f}s after SIGTERM")
