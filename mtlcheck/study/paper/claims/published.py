"""Claims of The as-published readings: what the authors' probable code base computes."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mtlcheck.study.paper.claims.common import (
    P,
    _majority,
    _require,
    _signed,
)
from mtlcheck.study.paper.claims.registry import ClaimNotEvaluable, Tables, Verdict, claim
from mtlcheck.study.paper.result_table import BASELINE, ResultTable

# -- as published: the authors' probable code base (danielmao2019/Pylon) ----------------------
# Under the as-published reading, Nash-MTL and GradNorm train the baseline itself (mean loss) and
# CosReg the summed loss; those three rows are therefore left out of the reference spread.
AS_PUBLISHED_EW = ("Nash-MTL", "GradNorm", "CosReg")
EW_SPREAD_QUANTILE = 0.25
EW_SPREAD_MIN_ROWS = 4


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def _ew_spread(t: ResultTable, column: str, exclude: Iterable[str]) -> tuple[float, float]:
    """(q25 of |row − Baseline| over the reference rows, printed resolution) in `column`.

    Reference rows: every method row but the Baseline and `exclude`. The resolution is one unit in
    the last printed digit (a printed difference is known to about that much; 0 when unknown)."""
    base = t.value(BASELINE, column, P)
    skip = {BASELINE, *exclude}
    devs = [abs(r.values[column] - base) for r in t.rows if r.method not in skip and r.values[column] is not None]
    if len(devs) < EW_SPREAD_MIN_ROWS:
        raise ClaimNotEvaluable(
            f"{t.title} {column}: {len(devs)} reference rows besides the Baseline and "
            f"{sorted(exclude)}; at least {EW_SPREAD_MIN_ROWS} are needed for a spread"
        )
    d = t.printed_decimals.get(column)
    return _quantile(devs, EW_SPREAD_QUANTILE), (10.0**-d if d is not None else 0.0)


def _within_ew_spread(t: ResultTable, method: str, column: str, exclude: Iterable[str]) -> tuple[bool, str]:
    """Is |method − Baseline| ≤ q25 + resolution in `column`? Returns (verdict, evidence text)."""
    q, res = _ew_spread(t, column, exclude)
    v, base = t.value(method, column, P), t.value(BASELINE, column, P)
    dev = abs(v - base)
    inside = dev <= q + res + 1e-12
    return inside, (
        f"{column} {t.fmt(method, column, P)} vs {t.fmt(BASELINE, column, P)} (|Δ| {dev:.4g} "
        f"{'≤' if inside else '>'} q25 {q:.4g} + {res:g})"
    )


def _ew_like_rows(t: ResultTable) -> str:
    """Reference rows that pass the same rule leave-one-out on every column (calibration)."""
    out = []
    try:
        for r in t.rows:
            if r.method in (BASELINE, *AS_PUBLISHED_EW) or r.level != P:
                continue
            if all(_within_ew_spread(t, r.method, c, (*AS_PUBLISHED_EW, r.method))[0] for c in t.columns):
                out.append(r.method)
    except ClaimNotEvaluable:
        return "n/a (too few rows to leave one out)"
    return str(out or "none")


@claim(
    id="published-nash-gradnorm-equal-baseline",
    section="§3.2, Tables 2-3 (as published: danielmao2019/Pylon)",
    statement=(
        "In the authors' probable code base Nash-MTL (solver NameError swallowed, α = 1/T) and GradNorm (stale "
        "weights, softmax keeps 1/T) train the baseline's mean loss; if so, their Table 2 and Table 3 rows are "
        "re-runs of the Baseline and lie within the spread expected of equal weighting on every column."
    ),
    source_tables=("table2", "table3"),
    notes=(
        "Rule (fixed before looking at which cells pass): a row is within the EW spread in a column when "
        "|row − Baseline| ≤ the 25th percentile of |row − Baseline| over the other method rows (Nash-MTL, "
        "GradNorm, CosReg left out) plus one unit of the last printed digit. The paper averages 3 runs "
        "(§3 'General Setup') and reports no spread, so the closest quarter of genuinely different methods "
        "stands in for run-to-run noise; it can fail (a row farther than most methods)."
    ),
    named=(("Nash-MTL", P), ("GradNorm", P)),
)
def _published_equal_baseline(tables: Tables) -> Verdict:
    methods = ("Nash-MTL", "GradNorm")
    parts, holds = [], True
    for name in ("table2", "table3"):
        t = tables[name]
        _require(t, [(BASELINE, P), *((m, P) for m in methods)])
        for m in methods:
            cells = [_within_ew_spread(t, m, c, AS_PUBLISHED_EW) for c in t.columns]
            n_in = sum(ok for ok, _ in cells)
            holds &= n_in == len(cells)
            parts.append(f"{t.title} {m}: within on {n_in}/{len(cells)}: " + "; ".join(s for _, s in cells))
        parts.append(f"{t.title} other rows within on every column (leave-one-out): {_ew_like_rows(t)}")
    if "table1" in tables:
        said = [f"{n['method']}: {n['reason']}" for n in tables["table1"].not_reported if n.get("method") in methods]
        if said:
            parts.append(
                f"{tables['table1'].title} does not report them ({'; '.join(said)}): not explained by "
                "the equal-weighting reading (it would train the baseline there too) unless those runs "
                "used other code (the 2024 Nash-MTL imported cvxpy at module level and solved: nash_mtl-published)"
            )
    return Verdict(
        holds,
        "EW spread per column = 25th percentile of |row − Baseline| over the rows other than "
        f"{list(AS_PUBLISHED_EW)}, plus the printed resolution | " + " | ".join(parts),
    )


@claim(
    id="published-cosreg-is-summed-ew",
    section="§3.2, Tables 2-3 (as published: danielmao2019/Pylon)",
    statement=(
        "In the authors' probable code base CosReg's penalty has no gradient, so it trains Σ L_i = T × the "
        "baseline's mean loss: the baseline with a T-times larger step, not a re-run of it; so its Table 2 and "
        "Table 3 rows must NOT coincide with the Baseline row (outside the EW spread on a majority of columns)."
    ),
    source_tables=("table2", "table3"),
    notes=(
        "A necessary condition only: a correct CosReg would pass it as well. Whether a T-times step alone "
        "explains the CosReg row needs a Baseline run at that step, which the paper does not report; the "
        "small SGD step (lr 1e-4, appendix 7) and the low mIoU (2.7% NYU-v2) make a larger step plausibly "
        "better on every metric, but the tables cannot decide it. Same EW-spread rule as "
        "published-nash-gradnorm-equal-baseline."
    ),
    named=(("CosReg", P),),
)
def _published_cosreg_not_baseline(tables: Tables) -> Verdict:
    parts, holds = [], True
    for name in ("table2", "table3"):
        t = tables[name]
        _require(t, [(BASELINE, P), ("CosReg", P)])
        cells = [_within_ew_spread(t, "CosReg", c, AS_PUBLISHED_EW) for c in t.columns]
        n_out = sum(not ok for ok, _ in cells)
        better = sum(_signed(t, ("CosReg", P), c, (BASELINE, P)) > 0 for c in t.columns)
        holds &= n_out >= _majority(len(t.columns))
        parts.append(
            f"{t.title} CosReg outside the EW spread on {n_out}/{len(cells)}, better than the Baseline "
            f"on {better}/{len(cells)}: " + "; ".join(s for _, s in cells)
        )
    return Verdict(
        holds,
        "necessary condition only (no Baseline run at a T-times step is reported, so the tables "
        "cannot say whether that step alone gives the CosReg row) | " + " | ".join(parts),
    )
