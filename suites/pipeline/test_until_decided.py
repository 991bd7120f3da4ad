"""`mtlcheck reproduce --until-decided`: bad input is one line and exit 2, and the rounds give seeds
to exactly the rows the design asks for, resume from the store, and write the sequential report."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest

from mtlcheck.study.cli import main
from mtlcheck.study.paper import sequential

SMOKE = ["--budget", "smoke", "--quiet", "--threads", "1", "--jobs", "1"]
FEW = ["--methods", "ew", "pcgrad", "--levels", "parameter"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--until-decided", "--seeds", "0", "1"], "--until-decided chooses the seeds itself"),
        (["--until-decided", "--max-seeds", "6"], "--max-seeds must be one of the design's looks"),
        (["--max-seeds", "8"], "--max-seeds goes with --until-decided"),
        (["--time-budget", "30m"], "--time-budget goes with --until-decided"),
    ],
)
def test_bad_sequential_options_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    store = tmp_path / "runs.sqlite"
    assert main(["reproduce", *SMOKE, "--store", str(store), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not store.exists()  # nothing half-written


@pytest.mark.parametrize("budget", ["0", "abc", "-5m", "3x"])
def test_an_impossible_time_budget_is_a_usage_error(tmp_path, capsys, budget):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--until-decided", "--time-budget", budget, "--store", str(tmp_path / "s.sqlite")])
    assert exc.value.code == 2
    assert "--time-budget" in capsys.readouterr().err


def _seeds(store) -> dict[tuple[str, str], list[int]]:
    with sqlite3.connect(store) as db:
        specs = [json.loads(s) for (s,) in db.execute("select spec_json from runs where status = 'done'")]
    out: dict = {}
    for s in specs:
        out.setdefault((s["method"], s["level"]), []).append(s["seed"])
    return {k: sorted(v) for k, v in out.items()}


def test_rounds_add_the_seeds_the_design_asks_for_and_resume(tmp_path, capsys, monkeypatch):
    """The design (here told to ask once for PCGrad at 5 seeds, and for the Baseline at the 3 it has)
    drives the runs: the first look at 3 seeds for every row, then seeds 3 and 4 for PCGrad only; a second
    invocation finds everything stored and runs nothing; --max-seeds below what is stored is refused."""
    real = sequential.assess
    asked = []

    def assess(tables, claims=sequential.CLAIMS, **kw):
        plan = real(tables, claims, **kw)
        if asked:
            return sequential.Plan(plan.states, {})
        asked.append(
            min(e.n for t in tables.values() for row in getattr(t, "estimates", {}).values() for e in row.values())
        )
        return sequential.Plan(
            plan.states, {("table2", ("PCGrad", "parameter")): 5, ("table2", ("Baseline", "parameter")): 3}
        )

    monkeypatch.setattr(sequential, "assess", assess)
    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    args = ["reproduce", "--until-decided", "--max-seeds", "8", *SMOKE, *FEW, "--store", str(store), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert _seeds(store) == {("ew", "parameter"): [0, 1, 2], ("pcgrad", "parameter"): [0, 1, 2, 3, 4]}
    assert asked == [3] and "round 0:" in printed and "round 1:" in printed
    report = (out / "digits-dense-smoke-until-decided" / "report.md").read_text()
    assert "## Summary" in report and "sequential design's (`--until-decided`, up to 8 seeds)" in report
    with sqlite3.connect(store) as db:
        before = db.execute("select key, finished from runs order by key").fetchall()
    assert main(args) == 0  # resumes: everything is stored
    with sqlite3.connect(store) as db:
        assert db.execute("select key, finished from runs order by key").fetchall() == before
    capsys.readouterr()
    assert main([*args[:3], "3", *args[4:]]) == 2  # a look, but below the 5 seeds stored
    assert "already holds 5 seeds of digits-dense: --max-seeds must be >= 5" in capsys.readouterr().err


def test_a_design_that_asks_for_nothing_new_stops_instead_of_spinning(tmp_path, capsys, monkeypatch):
    """Requests for seeds every row already has (a design bug, or rows that cannot move) end the
    loop with 'no progress' instead of repeating the same empty round forever."""
    import signal

    real = sequential.assess

    def assess(tables, claims=sequential.CLAIMS, **kw):
        return sequential.Plan(real(tables, claims, **kw).states, {("table2", ("Baseline", "parameter")): 3})

    def hang(*_):
        raise AssertionError("the loop did not stop")

    monkeypatch.setattr(sequential, "assess", assess)
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(300)
    try:
        args = ["reproduce", "--until-decided", *SMOKE, *FEW, "--store", str(tmp_path / "r.sqlite")]
        assert main([*args, "--out", str(tmp_path / "out")]) == 0
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "no progress: every row the design asks for has its seeds; stopping" in capsys.readouterr().out


def test_runs_of_another_configuration_in_the_store_are_no_rows_of_the_design(tmp_path, capsys, monkeypatch):
    """A store that also holds a CAGrad[c=0.2] run (`mtlcheck run --config`): the design reads only
    the paper's configuration of each method, so it never asks seeds for a row it cannot run (it
    raised 'not a paper method' once a region claim asked for every row it read)."""
    real, seen = sequential.assess, set()

    def assess(tables, claims=sequential.CLAIMS, **kw):
        if sys._getframe(1).f_code.co_name == "until_decided":  # the rounds' design, not the report's text
            seen.update(t.label(r) for t in tables.values() for r in getattr(t, "rows", ()))
        return real(tables, claims, **kw)

    monkeypatch.setattr(sequential, "assess", assess)
    store = str(tmp_path / "r.sqlite")
    other = ["run", "--benchmark", "digits-dense", "--method", "cagrad", "--level", "parameter", "--config"]
    assert main([*other, "c=0.2", "--budget", "smoke", "--seed", "0", "--store", store, "--quiet"]) == 0
    args = ["reproduce", "--until-decided", "--max-seeds", "3", *SMOKE, *FEW, "--store", store]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert seen and not [s for s in seen if "c=0.2" in s], sorted(seen)
