"""The embedded NYU-v2 analog (digits-nyu) and `--benchmark all`: the three embedded analogs in one
store, one report, and every claim judged over Tables 1-7 together."""

from __future__ import annotations

import torch

from mtlcheck.study.benchmarks import EMBEDDED_ANALOGS, get_benchmark
from mtlcheck.study.cli import main
from mtlcheck.study.experiments.runner import Where, execute, make_spec
from mtlcheck.study.experiments.store import ResultStore
from mtlcheck.study.paper.claims import CLAIMS
from mtlcheck.study.paper.published_tables import load_paper_tables

SMOKE = ["--budget", "smoke", "--quiet", "--threads", "1", "--jobs", "1"]


def test_digits_nyu_has_the_papers_nyuv2_columns_and_tables():
    bench = get_benchmark("digits-nyu")
    paper = load_paper_tables()["table3"]
    assert [m.label for m in bench.metrics] == list(paper.columns) == ["DE", "NE", "SS"]
    assert {m.label: m.higher_is_better for m in bench.metrics} == dict(paper.higher_is_better)
    assert bench.paper_tables == ("table3", None, "table7")
    assert [m.key for m in bench.metrics] == [m.key for m in get_benchmark("nyuv2").metrics]


def test_digits_nyu_run_stores_the_normal_angle_statistics():
    torch.set_num_threads(1)
    outcome = execute(make_spec("digits-nyu", "ew", budget="smoke", steps=3), Where())
    assert outcome.status == "done", outcome.error
    m = outcome.metrics
    for key in ("normal/mean", "normal/median", "normal/within_11_25", "normal/within_22_5", "normal/within_30"):
        assert key in m, sorted(m)
    assert 0 <= m["normal/within_11_25"] <= m["normal/within_22_5"] <= m["normal/within_30"] <= 1
    assert 0 < m["normal/median"] < 180 and 0 < m["normal/mean"] < 180
    assert 0 <= m["semantic/miou"] <= 1 and m["depth/l1"] > 0


def test_reproduce_all_runs_the_three_analogs_into_one_store_and_one_report(tmp_path, capsys):
    store, out = tmp_path / "runs.sqlite", tmp_path / "out"
    args = ["--benchmark", "all", "--methods", "ew", "--levels", "parameter", "--seeds", "0", "--steps", "2"]
    assert main(["reproduce", *args, "--store", str(store), "--out", str(out), *SMOKE]) == 0
    printed = capsys.readouterr().out
    runs = ResultStore(store, readonly=True).runs()
    assert sorted(r.spec.benchmark for r in runs) == sorted(EMBEDDED_ANALOGS)
    report = out / "all-smoke-2steps" / "report.md"
    text = report.read_text()
    assert text in printed
    for name in EMBEDDED_ANALOGS:  # each analog's own report (runs, tables, figures) beside it
        assert (report.parent / name / "report.md").is_file()
        assert f"[{name}/report.md]({name}/report.md)" in text
    for table in ("Table 1", "Table 2", "Table 3", "Table 5", "Table 6", "Table 7"):
        assert table in text
    assert "table3 ← digits-nyu" in text and "figure5 ← digits-instance" in text
    assert text.count("## Claims on these runs") == 1
    # one claims section over every table: no claim lacks a table (with one method, most lack rows)
    claims = text.split("## Claims on these runs", 1)[1]
    assert f"{len(CLAIMS)} claims" in claims
    assert "needs table" not in claims
    # the report alone, read again from the store, gives the same text
    assert main(["report", "--benchmark", "all", "--budget", "smoke", "--store", str(store), "--out", str(out)]) == 0
    assert report.read_text() == text


def test_all_is_for_sweep_report_and_reproduce_only(tmp_path, capsys):
    store = str(tmp_path / "runs.sqlite")
    assert main(["run", "--benchmark", "all", "--method", "ew", "--store", store, *SMOKE[:2]]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'all'" in err and len(err.strip().splitlines()) == 1
    ResultStore(store)  # an empty store: nothing of the three analogs is stored yet
    assert main(["report", "--benchmark", "all", "--budget", "smoke", "--store", store]) == 2
    err = capsys.readouterr().err
    assert "no stored runs for digits-instance" in err and len(err.strip().splitlines()) == 1
