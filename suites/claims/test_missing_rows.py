"""Rows without values: a claim that reads one is not evaluable, never judged on the other rows.

A row whose runs did not all finish (a seed diverged or failed) has null values and a note
(`our_tables`); `verdicts.without_null_rows` removes it. A claim about all rows of a table ("most
methods ... except four", a ranking) judged on the others would say something else, so it is not
evaluable and names the row and why; a claim that reads only other named rows keeps its verdict.
The same holds in the sequential design (`sequential.assess`), on both of its paths, and for the
derived tables: a ranking similarity is not computed over fewer methods.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlcheck.study.paper import reports
from mtlcheck.study.paper.claims import CLAIMS, claim_by_id
from mtlcheck.study.paper.our_tables import result_tables
from mtlcheck.study.paper.published_tables import load_paper_tables
from mtlcheck.study.paper.sequential import LOOKS, assess
from mtlcheck.study.paper.verdicts import judge_all, reads

pytestmark = [pytest.mark.claim]

_spec = importlib.util.spec_from_file_location("_simulate", Path(__file__).with_name("_simulate.py"))
_simulate = sys.modules.setdefault("_simulate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_simulate)

BENCH = _simulate.BENCH
FIG5 = "fig5-fd-below-baseline-except-four"  # reads every parameter-level row of 'figure5'
FIG4 = "fig4-famo-beats-mgda"  # only_named: FAMO, MGDA and the Baseline of Table 1
FIG3 = "fig3-uncertainty-poor-gradvac-strong"  # only_named, and names GradVac
RS = "rs-metagraspnet-fd-box-vs-mask"  # Table 5: no comparison form, judged on the first look
EXCEPTIONS = ("rgw", "pcgrad", "mgda", "aligned_mtl")
NOTE = "GradVac (parameter): diverged at step 7 in 1/3 seeds (seed 2); no mean taken over the other 2 done seed(s)"


def _study(n_seeds: int = 3, diverged_seed: int | None = 2):
    """A study where Figure 5's claim and FAMO > MGDA hold, with GradVac's parameter-level run of
    `diverged_seed` diverged at step 7 (as the store records it), or every run done (None)."""
    effects = {("famo", "parameter"): 0.05}
    fd = {(m, "parameter"): (0.1 if m in EXCEPTIONS else -0.1) for m in _simulate.PARAMETER if m != "ew"}
    records = _simulate.simulate(np.random.default_rng(7), n_seeds, effects=effects, measure_effects=fd)
    return [
        dataclasses.replace(r, status="diverged", metrics={}, trajectory={}, timings={"diverged_step": 7})
        if (r.spec.method, r.spec.level, r.spec.seed) == ("gradvac", "parameter", diverged_seed)
        else r
        for r in records
    ]


def _verdicts(records, *ids):
    tables = result_tables(records, BENCH, derived_intervals=False)
    return {v["id"]: v for v in judge_all(tables, [claim_by_id(i) for i in ids], plan_seeds=False)}


def test_a_claim_on_every_row_is_not_evaluable_and_names_the_missing_row():
    full = _verdicts(_study(diverged_seed=None), FIG5)[FIG5]
    assert full["verdict"] == "holds", full["evidence"]  # judged on every row, it holds
    v = _verdicts(_study(), FIG5)[FIG5]
    assert v["verdict"] == "not evaluable", v["evidence"]
    assert v["procedure"] is None and v["decision"] is None
    assert NOTE in v["evidence"]
    assert "it reads every row of figure5" in v["evidence"]


def test_a_claim_on_other_named_rows_keeps_its_verdict_and_one_naming_the_row_does_not():
    full = _verdicts(_study(diverged_seed=None), FIG4, FIG3)
    v = _verdicts(_study(), FIG4, FIG3)
    assert v[FIG4]["verdict"] == full[FIG4]["verdict"] == "holds", v[FIG4]["evidence"]
    assert v[FIG4]["evidence"] == full[FIG4]["evidence"]  # the diverged row is not even mentioned
    assert v[FIG3]["verdict"] == "not evaluable", v[FIG3]["evidence"]
    assert NOTE in v[FIG3]["evidence"] and "it is about these rows" in v[FIG3]["evidence"]


def test_derived_tables_are_not_computed_over_fewer_methods():
    tables = result_tables(_study(), BENCH, derived_intervals=False)
    rs = tables["table5"]
    for row in rs.rows:
        assert all(v is None for v in row.values.values()), row
        assert "not computed, as the rankings take every method and GradVac has no" in row.note
        assert "diverged at step 7 in 1/3 seeds (seed 2)" in row.note
    change = tables["relative_change"].row("GradVac", "feature")
    assert all(v is None for v in change.values.values())
    assert "parameter-level value is null" in change.note and "diverged at step 7" in change.note
    v = _verdicts(_study(), RS)[RS]
    assert v["verdict"] == "not evaluable" and "GradVac has no" in v["evidence"], v["evidence"]


def _at(records):
    """The sequential design's `tables_at`: every row's seeds 0..m−1."""
    return lambda m: result_tables([r for r in records if r.spec.seed < m], BENCH, derived_intervals=False)


def test_the_sequential_design_gives_the_same_state_and_asks_no_seeds_for_it():
    records = _study()
    tables = result_tables(records, BENCH, derived_intervals=False)
    plan = assess(tables, [claim_by_id(c) for c in (FIG5, FIG4, FIG3)], max_seeds=8, tables_at=_at(records))
    states = {s.id: s for s in plan.states}
    fixed = _verdicts(records, FIG5, FIG3)
    for c in (FIG5, FIG3):
        assert states[c].state == "not evaluable" and states[c].requests == {}
        assert states[c].verdict["evidence"] == fixed[c]["evidence"]
    assert states[FIG4].state == "holds", states[FIG4].verdict["evidence"]
    assert not [k for k in plan.requests if k[0] == "figure5"], plan.requests


def test_the_first_look_path_sees_a_row_that_diverged_after_the_first_look():
    """A claim without a comparison form is judged at the look every row it reads has reached (the
    first, 3 seeds, where GradVac is still done); its seed 4 diverged, so the claim reads a row
    without values all the same."""
    records = _study(n_seeds=5, diverged_seed=4)
    tables = result_tables(records, BENCH, derived_intervals=False)
    first = result_tables([r for r in records if r.spec.seed < LOOKS[0]], BENCH, derived_intervals=False)
    assert all(v is not None for r in first["table5"].rows for v in r.values.values())
    plan = assess(tables, [claim_by_id(RS)], max_seeds=8, tables_at=_at(records))
    (s,) = plan.states
    assert s.state == "not evaluable" and s.requests == {} and not plan.requests
    assert "diverged at step 7 in 1/5 seeds (seed 4)" in s.verdict["evidence"]


def test_the_report_says_which_row_keeps_the_claim_from_a_verdict(tmp_path):
    text = reports.write_report(_study(), BENCH, tmp_path).read_text(encoding="utf-8")
    assert "every claim that reads it is not evaluable, and its verdict names the row and why" in text
    line = next(x for x in text.splitlines() if FIG5 in x and "not evaluable" in x)
    assert "Not judged: rows it needs have no values (in figure5, " + NOTE in line


def test_claims_on_measure_tables_read_only_the_measures_they_name():
    """Tables 5-7 are read measure by measure: a measure row without values that a claim does not
    name leaves its verdict and evidence as they were (checked on the paper's own tables)."""
    paper = load_paper_tables()
    checked = 0
    for c in CLAIMS:
        for name in c.source_tables:
            t = paper.get(name)
            if t is None or t.row_kind != "measure":
                continue
            for row in t.rows:
                if reads(c, t, row.key):
                    continue
                null = dataclasses.replace(row, values=dict.fromkeys(row.values), note="diverged")
                tables = {**paper, name: dataclasses.replace(t, rows=tuple(null if r is row else r for r in t.rows))}
                assert judge_all(tables, [c]) == judge_all(paper, [c]), (c.id, row.key)
                checked += 1
    assert checked  # rs-nyuv2-fd-beats-gms names FD and GMS only
