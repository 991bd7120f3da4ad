"""The `mtlcheck` command end to end, in real subprocesses (including a SIGKILL half-way)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from mtlcheck.study.cli import main

SMOKE = ["--budget", "smoke", "--quiet", "--threads", "1"]


def test_list_shows_every_method_and_benchmark(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("mgda", "nash_mtl", "cosreg", "digits-dense", "metagraspnet", "mgda_ub"):
        assert name in out


def test_unknown_method_and_missing_data_root_are_clear_errors(tmp_path, capsys):
    store = str(tmp_path / "runs.sqlite")
    assert main(["run", "--benchmark", "digits-dense", "--method", "nope", "--store", store]) == 2
    assert "unknown aggregator 'nope'" in capsys.readouterr().err
    assert main(["run", "--benchmark", "cityscapes", "--method", "ew", "--store", store]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                "--benchmark",
                "cityscapes",
                "--method",
                "ew",
                "--store",
                store,
                "--data-root",
                str(tmp_path / "missing"),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err
    assert not os.path.exists(store)  # usage errors are found before the store is even opened


def test_run_stores_and_never_recomputes(tmp_path, capsys):
    args = ["run", "--benchmark", "digits-dense", "--method", "mgda_ub", "--store", str(tmp_path / "r.sqlite"), *SMOKE]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "digits-dense/mgda/feature/seed0/smoke: done" in first and "semantic/miou" in first
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        before = db.execute("select key, finished, attempts from runs").fetchall()
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[:3] == first.splitlines()[:3]
    with sqlite3.connect(tmp_path / "r.sqlite") as db:  # the stored run was read back, not trained again
        assert db.execute("select key, finished, attempts from runs").fetchall() == before


def test_check_runs_the_kit_on_a_method(capsys):
    assert main(["check", "ew"]) == 0
    assert "EW(): " in capsys.readouterr().out


def _finished(store):
    """Finished runs by key; none while the sweep has created the file but not yet its schema."""
    with sqlite3.connect(store) as db:
        if db.execute("select 1 from sqlite_master where type = 'table' and name = 'runs'").fetchone() is None:
            return {}
        return dict(db.execute("select key, finished from runs where status = 'done'").fetchall())


def test_killed_sweep_resumes_and_finishes_only_the_missing_runs(tmp_path):
    store = str(tmp_path / "runs.sqlite")
    methods = ["ew", "mgda", "pcgrad", "imtl", "famo", "rlw"]
    cmd = [
        sys.executable,
        "-m",
        "mtlcheck.study.cli",
        "sweep",
        "--benchmark",
        "digits-dense",
        "--methods",
        *methods,
        "--levels",
        "parameter",
        "--seeds",
        "0",
        "--jobs",
        "1",
        "--store",
        store,
        *SMOKE,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if os.path.exists(store) and len(_finished(store)) >= 2:
            break
    assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished(store)
    assert 2 <= len(before) < len(methods)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    after = _finished(store)
    assert len(after) == len(methods)
    for key, finished in before.items():  # finished runs were not recomputed
        assert after[key] == finished
    with sqlite3.connect(store) as db:
        attempts = dict(db.execute("select key, attempts from runs").fetchall())
    assert all(attempts[k] == 1 for k in before)


def test_bench_takes_its_own_options(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--methods",
                "ew",
                "mgda",
                "--levels",
                "parameter",
                "feature",
                "--size",
                "32",
                "--repeats",
                "1",
                "--threads",
                "1",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| mgda | feature |" in table and "| ew | parameter |" in table
    import json

    rows = json.loads(out_json.read_text())["rows"]
    assert {(r["method"], r["level"]) for r in rows} == {
        ("ew", "parameter"),
        ("mgda", "parameter"),
        ("mgda", "feature"),
    }
    assert next(r for r in rows if r["method"] == "ew")["ratio_to_ew"] == 1.0
