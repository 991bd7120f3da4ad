"""Claims of §4: the feature-level (\"fast surrogate\") gradients (Table 4 and Tables 1-3's -UB rows)."""

from __future__ import annotations

from mtlcheck.study.paper.claims.common import (
    F,
    _changes_text,
    _f_change,
    _gain_keys,
    _loss_keys,
    _mean,
    _require,
)
from mtlcheck.study.paper.claims.registry import Tables, Verdict, claim
from mtlcheck.study.paper.comparisons import all_of

# -- §4 feature-level gradients ----------------------------------------------------------------
SURROGATE_HELPS = frozenset({("MGDA", F), ("Aligned-MTL", F)})


def _surrogate_only_formula(tables: Tables):
    t = tables["table4"]
    _require(t, sorted(SURROGATE_HELPS))
    return all_of(
        _f_change(tables, t, r.key, gain=True) if r.key in SURROGATE_HELPS else ~_f_change(tables, t, r.key, gain=True)
        for r in t.rows
    )


@claim(
    id="surrogate-gains-only-mgda-alignedmtl",
    section="§4",
    statement=(
        "Only MGDA and Aligned-MTL achieved consistent performance gain under all evaluation metrics "
        "when feature-level gradients replace parameter-level gradients."
    ),
    source_tables=("table4",),
    named=tuple(sorted(SURROGATE_HELPS)),
    formula=_surrogate_only_formula,
)
def _surrogate_only_mgda_aligned(tables: Tables) -> Verdict:
    t = tables["table4"]
    _require(t, sorted(SURROGATE_HELPS))  # "only X and Y" needs X and Y in the table (partial sweeps)
    gains = set(_gain_keys(t))
    parts = [f"{t.label(k)}: {_changes_text(t, k)}" for k in sorted(gains)]
    rest = [
        f"{t.label(r.key)} {sum(t.is_better(v, 0.0, c) for c, v in r.values.items())}/"
        f"{len(t.columns)} positive (mean {_mean(r.values.values()):+.2f}%)"
        for r in t.rows
        if r.key not in gains
    ]
    return Verdict(
        gains == SURROGATE_HELPS,
        f"{t.title}: gains on every metric: {[t.label(k) for k in sorted(gains)]} "
        f"(claimed {sorted(m for m, _ in SURROGATE_HELPS)}); " + "; ".join(parts) + " | others: " + "; ".join(rest),
    )


SURROGATE_HURTS = (("GradVac", F), ("RGW", F), ("IMTL", F))


def _surrogate_degrades_formula(tables: Tables):
    t = tables["table4"]
    _require(t, SURROGATE_HURTS)
    return all_of(_f_change(tables, t, k, gain=False) for k in SURROGATE_HURTS)


@claim(
    id="surrogate-degrades-gradvac-rgw-imtl",
    section="§4",
    statement="GradVac, RGW, and IMTL got significant performance degradation with feature-level gradients.",
    source_tables=("table4",),
    notes="'Significant' is not defined; checked as a negative change on every metric.",
    only_named=True,
    named=SURROGATE_HURTS,
    formula=_surrogate_degrades_formula,
)
def _surrogate_degrades(tables: Tables) -> Verdict:
    t = tables["table4"]
    _require(t, SURROGATE_HURTS)
    losses = set(_loss_keys(t))
    parts = [
        f"{t.label(k)} {'negative everywhere' if k in losses else 'NOT negative everywhere'}: {_changes_text(t, k)}"
        for k in SURROGATE_HURTS
    ]
    return Verdict(all(k in losses for k in SURROGATE_HURTS), f"{t.title}: " + "; ".join(parts))
