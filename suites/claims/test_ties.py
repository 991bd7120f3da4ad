"""Ties decide nothing: the cases that made earlier versions pronounce verdicts from ties.

- SS equal in every row (a 12-step smoke run predicts background only): every SS ranking
  similarity would be 50 % from ties alone, and "FD beats GMS on SS" was reported contradicted.
- Measures recorded at step 0 only (`--steps 3`): GDS, GMS, FD equal for every method, every RS
  50 %, the same claim contradicted again.
- "MGDA-UB performs the best" from 2 rows and 1 seed: held.
Each must now be not evaluable (the tables cannot carry the claim) or inconclusive, with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mtlcheck.study.paper.claims import claim_by_id
from mtlcheck.study.paper.our_tables import result_tables
from mtlcheck.study.paper.verdicts import judge_all

pytestmark = [pytest.mark.claim]

_spec = importlib.util.spec_from_file_location("_simulate", Path(__file__).with_name("_simulate.py"))
_simulate = sys.modules.setdefault("_simulate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_simulate)
record = _simulate.record

DENSE = "digits-dense"
METHODS = ("ew", "pcgrad", "mgda", "cagrad")


def _dense(de, ss, is_):
    return {"depth/l1": de, "semantic/miou": ss, "instance/l1": is_}


def _traj(gds, gms, fd, steps=(0, 3, 6, 9)):
    return {"step": list(steps), "gds": [gds] * len(steps), "gms": [gms] * len(steps), "fd": [fd] * len(steps)}


def _verdict(tables, claim_id):
    (v,) = judge_all(tables, [claim_by_id(claim_id)], plan_seeds=False)
    return v


def test_ss_equal_in_every_row_leaves_the_ss_ranking_similarity_out():
    recs = [
        record(
            m,
            "parameter",
            s,
            _dense(1.3 + 0.01 * i + 0.3 * s, 0.0777, 0.08 + 0.002 * i + 0.01 * s),
            _traj(0.1 + 0.01 * i, 0.8 - 0.02 * i, 0.5 + 0.03 * i + 0.001 * s),
            bench=DENSE,
        )
        for i, m in enumerate(METHODS)
        for s in range(3)
    ]
    tables = result_tables(recs, DENSE, derived_intervals=False)
    rs = tables["table6"]
    assert all(rs.value(m, "SS") is None for m in ("FD", "GDS", "GMS"))  # not 50 %
    assert "SS: the same value for all 4 ranked methods" in rs.row("FD").note
    assert rs.value("FD", "DE") is not None  # the other metrics still rank
    for claim in ("rs-cityscapes-fd-beats-gds-gms", "conclusion-fd-faithful-masks-and-cityscapes-seg"):
        v = _verdict(tables, claim)
        assert v["verdict"] in ("not evaluable", "inconclusive"), v
    v = _verdict(tables, "rs-cityscapes-fd-beats-gds-gms")
    assert v["verdict"] == "not evaluable" and "SS: the same value for all 4 ranked methods" in v["evidence"]


def test_measures_at_step_zero_only_are_equal_for_every_method_and_rank_nothing():
    recs = [
        record(
            m,
            "parameter",
            s,
            _dense(1.3 + 0.01 * i + 0.3 * s, 0.08 + 0.003 * i, 0.08 + 0.002 * i),
            _traj(0.12, 0.85, 0.55, steps=(0,)),
            bench=DENSE,
        )
        for i, m in enumerate(METHODS)
        for s in range(3)
    ]
    tables = result_tables(recs, DENSE, derived_intervals=False)
    rs = tables["table6"]
    assert all(v is None for r in rs.rows for v in r.values.values())
    assert "FD has the same end value for all 4 ranked methods" in rs.row("FD").note
    v = _verdict(tables, "rs-cityscapes-fd-beats-gds-gms")
    assert v["verdict"] == "not evaluable" and "same end value" in v["evidence"]


def test_fd_equal_for_every_method_does_not_decide_the_figure5_claim():
    """Figure 5's claim compares each method's final FD with the Baseline's: all equal is a tie
    everywhere, which no number of seeds can turn into 'not below'."""
    methods = ("ew", "rgw", "pcgrad", "mgda", "aligned_mtl", "gradvac", "cagrad", "imtl", "graddrop", "dwa", "rlw")
    recs = [
        record(
            m,
            "parameter",
            s,
            {k: 0.3 + 0.01 * i + 0.05 * s for k in _simulate.METRICS},
            _traj(0.1, 0.8, 0.5, steps=(0,)),
        )
        for i, m in enumerate(methods)
        for s in range(3)
    ]
    tables = result_tables(recs, "digits-instance", derived_intervals=False)
    (v,) = judge_all(tables, [claim_by_id("fig5-fd-below-baseline-except-four")])
    assert v["verdict"] == "inconclusive", v  # a tie stays a tie: not even 'equivalent' (FD never moved)
    assert v["procedure"] == "comparisons" and not v["decision"].equal


@pytest.mark.parametrize("seeds", [1, 3])
def test_mgda_ub_best_from_two_rows_is_not_evaluable(seeds):
    m = {k: 0.3 for k in _simulate.METRICS}
    recs = [record("ew", "parameter", s, dict(m), _traj(0.1, 0.8, 0.5)) for s in range(seeds)]
    recs += [
        record("mgda", "parameter", s, {k: 0.31 + 0.001 * s for k in m}, _traj(0.1, 0.8, 0.5)) for s in range(seeds)
    ]
    recs += [record("mgda", "feature", s, {k: 0.35 + 0.002 * s for k in m}, _traj(0.1, 0.8, 0.5)) for s in range(seeds)]
    tables = result_tables(recs, "digits-instance", derived_intervals=False)
    v = _verdict(tables, "conclusion-v1-mgda-ub-best")
    assert v["verdict"] == "not evaluable", v
    assert "ranks 2 row(s) besides the Baseline; 'performs the best' needs at least 3" in v["evidence"]


def test_one_seed_decides_nothing_even_when_the_point_values_are_clear():
    m = {k: 0.3 for k in _simulate.METRICS}
    recs = [
        record("ew", "parameter", 0, dict(m), _traj(0.1, 0.8, 0.5)),
        record("famo", "parameter", 0, {k: 0.5 for k in m}, _traj(0.1, 0.8, 0.5)),
        record("mgda", "parameter", 0, {k: 0.1 for k in m}, _traj(0.1, 0.8, 0.5)),
    ]
    tables = result_tables(recs, "digits-instance")
    v = _verdict(tables, "fig4-famo-beats-mgda")
    assert v["verdict"] == "inconclusive"
    assert "one seed: no interval" in v["evidence"] and "the claim holds" in v["evidence"]


def test_figure5_claim_needs_enough_methods_for_most_with_four_exceptions():
    methods = ("ew", "rgw", "pcgrad", "mgda", "aligned_mtl", "gradvac", "cagrad", "imtl")
    recs = [
        record(m, "parameter", s, {k: 0.3 for k in _simulate.METRICS}, _traj(0.1, 0.8, 0.5 + 0.01 * i + 0.001 * s))
        for i, m in enumerate(methods)
        for s in range(3)
    ]
    v = _verdict(result_tables(recs, "digits-instance", derived_intervals=False), "fig5-fd-below-baseline-except-four")
    assert v["verdict"] == "not evaluable" and "needs at least 9" in v["evidence"]
