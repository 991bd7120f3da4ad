"""Claims that need a table these runs do not give, judged on the tables they give.

A study of one embedded analog gives only its own tables: the default study (digits-dense, the
CityScapes analog) gives Table 2 but not Table 3. "CosReg reaches top 3 on CityScapes *and* NYU-v2"
is then not evaluable as a whole, but its CityScapes part may already be false, and a conjunction
with a false part is false whatever the other part says. The missing part is a
`comparisons.Missing` node, never established either way: the claim can be contradicted (never
said to hold) on the tables given, and is otherwise "not evaluable", naming the missing table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mtlcheck.study.benchmarks import get_benchmark
from mtlcheck.study.paper import comparisons
from mtlcheck.study.paper.claims import claim_by_id
from mtlcheck.study.paper.comparisons import ALPHA, AtLeast, Better, Missing, all_of, any_of, negate
from mtlcheck.study.paper.our_tables import result_tables
from mtlcheck.study.paper.reports import claim_tables
from mtlcheck.study.paper.sequential import assess, summary_markdown
from mtlcheck.study.paper.verdicts import judge_all

pytestmark = [pytest.mark.claim]

_spec = importlib.util.spec_from_file_location("_simulate", Path(__file__).with_name("_simulate.py"))
_simulate = sys.modules.setdefault("_simulate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(_simulate)

DENSE = "digits-dense"
HIGHER = {m.key: m.higher_is_better for m in get_benchmark(DENSE).metrics}  # DE, SS, IS
NOISE = 0.002
COSREG = "cosreg-top3-cityscapes-nyuv2"
GRADDROP = "graddrop-top3-except-nyuv2-ne"
BEST = "conclusion-graddrop-cosreg-best"


def dense_records(rng: np.random.Generator, n_seeds: int, quality=None, noise: float = NOISE):
    """A simulated digits-dense study: every row's metrics are 0.5 moved by `quality[(method, level)]`
    (> 0: better on every metric) plus a seed effect shared by every row and independent noise."""
    quality = quality or {}
    seed_effect = rng.normal(0.0, 0.05, size=(n_seeds, len(HIGHER)))
    out = []
    for method, level in _simulate.ROWS:
        for s in range(n_seeds):
            q = quality.get((method, level), 0.0)
            values = 0.5 + seed_effect[s] + rng.normal(0.0, noise, size=len(HIGHER))
            metrics = {k: float(v + (q if up else -q)) for (k, up), v in zip(HIGHER.items(), values)}
            traj = {"step": [0, 3, 6, 9], **{k: [0.5] * 4 for k in _simulate.MEASURE_KEYS}}
            out.append(_simulate.record(method, level, s, metrics, traj, bench=DENSE))
    return out


def verdicts(records, *ids):
    tables = claim_tables({DENSE: result_tables(records, DENSE, derived_intervals=False)})
    assert "table2" in tables and "table3" not in tables
    return {v["id"]: v for v in judge_all(tables, [claim_by_id(i) for i in ids], plan_seeds=False)}


def test_a_missing_part_is_never_established_and_a_false_conjunct_still_contradicts():
    lit = Better("table2", "DE", ("CosReg", "parameter"), ("Baseline", "parameter"))
    m = Missing("table3")
    assert negate(m) == m == ~m and comparisons.literals(all_of([lit, m])) == [lit]
    assert comparisons.missing_tables(all_of([lit, any_of([~lit, m]), Missing("table1")])) == ["table3", "table1"]
    with pytest.raises(KeyError, match="table3"):
        comparisons.point(all_of([m, lit]), {})
    # p₊ tiny: lit established true; p₋ tiny: established false (evidence: signed, raw, α, p₊, p₋)
    true, false = {lit: (None, None, ALPHA, 1e-9, 1.0)}, {lit: (None, None, ALPHA, 1.0, 1e-9)}
    assert comparisons.ratios(all_of([lit, m]), true)[0] == np.inf  # a conjunction never holds
    assert comparisons.ratios(all_of([lit, m]), false)[1] <= 1.0  # but is contradicted
    assert comparisons.ratios(any_of([lit, m]), true)[0] <= 1.0  # a disjunction holds by a true part
    assert comparisons.ratios(any_of([lit, m]), false)[1] == np.inf  # and is never contradicted
    levels = {}
    comparisons.collect_levels(negate(all_of([lit, m, Missing("table1")])), levels)
    assert levels == {~lit: 1.0}  # a missing part is never declared: it costs the others nothing
    assert isinstance(negate(all_of([lit, m])), AtLeast)
    assert not comparisons.can_be_established(all_of([lit, m])) and comparisons.can_be_established(any_of([lit, m]))
    assert comparisons.can_be_established(negate(all_of([lit, m])))


def test_cosreg_clearly_last_on_table2_contradicts_its_top3_claim_whatever_table3_says():
    records = dense_records(
        np.random.default_rng(1),
        3,
        {(m, lv): 0.0 for m, lv in _simulate.ROWS}
        | {
            ("cosreg", "parameter"): -0.05,
            ("cosreg", "feature"): -0.05,
        },
    )
    v = verdicts(records, COSREG, GRADDROP, BEST)
    assert v[COSREG]["verdict"] == "contradicted", v[COSREG]["evidence"]
    assert "on table2 alone, whatever table3 (not in these runs) would say" in v[COSREG]["evidence"]
    link = v[COSREG]["decision"].deciding
    assert link.literal.table == "table2" and link.literal.b == ("CosReg", "parameter") and link.ratio <= 1.0
    # CosReg last is no evidence against GradDrop (tied with the rest): not evaluable, naming table3
    assert v[GRADDROP]["verdict"] == "not evaluable", v[GRADDROP]["evidence"]
    assert v[GRADDROP]["evidence"].startswith("needs table3, which these runs do not give; on table2 it is not decided")
    assert v[GRADDROP]["lacking"] == ("table3",)
    # "GradDrop and CosReg the best on all three datasets": false on the CityScapes analog already
    assert v[BEST]["verdict"] == "contradicted", v[BEST]["evidence"]
    assert v[BEST]["decision"].deciding.literal.table == "table2"


def test_a_part_that_holds_on_table2_never_makes_the_claim_hold_nor_equivalent():
    best = dense_records(np.random.default_rng(2), 5, {("cosreg", "parameter"): 0.05})
    v = verdicts(best, COSREG)[COSREG]
    assert v["verdict"] == "not evaluable" and v["decision"].ratios[0] == np.inf, v["evidence"]
    assert "needs table3" in v["evidence"]
    # every row equal within the 0.01 margin: the parts given are equivalent, the claim is not
    tied = dense_records(np.random.default_rng(3), 8, noise=1e-5)
    v = verdicts(tied, COSREG)[COSREG]
    assert v["verdict"] == "not evaluable" and v["decision"].verdict == "inconclusive", v["evidence"]
    assert v["decision"].equal and len(v["decision"].equal) == len(v["decision"].open)


def test_a_true_top3_part_is_rarely_contradicted_at_its_least_favourable_point():
    """Two rows far ahead of CosReg (always established) and every other row tied with it: CosReg
    is exactly 3rd, so "top 3" is true on Table 2, and one more row established ahead of it would
    contradict the claim. Each of the 3 columns' "at least 3 of 21 rows better" gets α/3, each row
    α/3/19. The 57 tied comparisons make the bound nearly tight: measured on 400 three-seed studies
    the rate is about α, within two standard errors of it (without the Bonferroni over the
    columns, 3α)."""
    quality = {("famo", "parameter"): 0.5, ("imtl", "parameter"): 0.5}
    rng = np.random.default_rng(4)
    records = dense_records(rng, 3, quality)
    tables = claim_tables({DENSE: result_tables(records, DENSE, derived_intervals=False)})
    levels = {}
    comparisons.collect_levels(negate(claim_by_id(COSREG).formula(tables)), levels)
    assert set(levels.values()) == {1 / (3 * 19)}
    n, wrong = 400, 0
    for _ in range(n):
        wrong += verdicts(dense_records(rng, 3, quality), COSREG)[COSREG]["verdict"] == "contradicted"
    print(f"CosReg exactly 3rd on table2: contradicted in {wrong}/{n} simulated 3-seed studies")
    assert wrong / n <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / n)


def test_the_sequential_design_seeks_the_contradiction_and_ends_not_evaluable_when_it_cannot():
    rng = np.random.default_rng(5)
    close = dense_records(rng, 3, {("cosreg", "parameter"): -0.004}, noise=0.004)  # worse, inside the noise
    tables = claim_tables({DENSE: result_tables(close, DENSE, derived_intervals=False)})
    plan = assess(tables, [claim_by_id(COSREG)], tables_at=lambda m: tables)
    (state,) = plan.states
    assert state.verdict["verdict"] == "not evaluable" and state.state == "open", state
    assert state.p_decide >= 0.1 and any(row == ("CosReg", "parameter") for _, row in state.requests)
    text = summary_markdown([state.verdict], plan, lambda *_: set(range(3)), None)
    assert f"- **open** `{COSREG}` on table2 (it needs table3 to hold); P(decided by 32 seeds)" in text
    assert "(1 of them judged on the tables given, which have not contradicted them)" in text
    ahead = dense_records(rng, 3, {("cosreg", "parameter"): 0.05})  # far ahead: no contradiction to seek
    tables = claim_tables({DENSE: result_tables(ahead, DENSE, derived_intervals=False)})
    (state,) = assess(tables, [claim_by_id(COSREG)], tables_at=lambda m: tables).states
    assert state.state == "not evaluable" and not state.requests and state.p_decide < 0.1, state
