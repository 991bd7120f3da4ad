"""The paper's claims as predicates over result tables (§3.1, §3.2, §4, §5.4, §5.5, §6, and the
conclusions of the earlier version, arXiv:2402.03557).

A predicate takes a mapping of `ResultTable`s keyed like the paper's files ('table1' ... 'table7',
plus 'figure5' for our runs: the final FD per method, which the paper only plots) and returns a
`Verdict` whose evidence names the cells it used. The same predicates run on the paper's own
numbers (`mtlcheck.study.paper.tables.load_paper_tables()`), where their verdict is the verdict, and on our
reproduced tables, where `mtlcheck.study.paper.verdicts` runs them over a region of the seed means and decides
only when they agree everywhere in it (holds / contradicted / inconclusive).

Each claim is registered next to its predicate, `@claim(id=..., section=..., statement=...,
source_tables=..., notes=..., named=...)` over the `def`; `CLAIMS` lists them in the order
registered, which is the paper's order (§3.1 to §6, then the earlier version's conclusions and the
as-published readings).

Readings fixed once, from the paper's own wording:
- "gain over the baseline" on a metric: strictly better than the Baseline row. The 0.01 band of
  Table 1's caption cannot be what §3.1 means: §3.1 lists GradVac although two of its cells are
  printed "–" (VMask mAP 0.521, AMask mAP 0.495 vs 0.518, 0.490).
- "top 3": competition rank ≤ 3 among the methods of the dataset, the baseline excluded.
- "majority of the metrics": at least half (§3.1: "a majority (≥3)" of 6).
- MetaGraspNet methods are Table 1's parameter-level rows plus the feature-level rows derived
  from Table 4 (`mtlcheck.study.paper.tables.apply_relative_change`), since §3.1 ranks "(rep) MGDA".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mtlcheck.study.paper.tables import (
    BASELINE,
    ResultTable,
    RowKey,
    admissible_marks,
    apply_relative_change,
    mean_rank,
    rank,
)

__all__ = ["CLAIMS", "Claim", "ClaimNotEvaluable", "Verdict", "claim", "claim_by_id"]

Tables = Mapping[str, ResultTable]

P, F = "parameter", "feature"
# §3 "Selected Methods": the gradient manipulation category (8 methods).
GRADIENT_MANIPULATION = frozenset({"PCGrad", "GradVac", "GradDrop", "RGW", "MGDA", "CAGrad", "Nash-MTL", "Aligned-MTL"})
MEASURE_ROWS = ("FD", "GDS", "GMS")  # rows of Tables 5-7
FIGURE5_COLUMN = "FD"  # final FD per parameter-level run: mean of the last 50 points (§5.5)
# the two versions of the paper whose conclusions are claims (sections of §6 and of the earlier summary)
V2 = "later version"
V1 = "earlier version (000 summary)"


class ClaimNotEvaluable(LookupError):
    """The tables given do not carry what the claim needs (e.g. Figure 5 prints no numbers)."""


@dataclass(frozen=True)
class Verdict:
    """Whether a claim holds on the tables given, and the cells that decided it."""

    holds: bool
    evidence: str


@dataclass(frozen=True)
class Claim:
    """One statement of the paper (`section`), checkable on the tables named in `source_tables`.

    `named`: the rows the statement is about — method (or measure) names, any level, or (method,
    level) keys. On our runs the verdict search (`mtlcheck.study.paper.verdicts`) moves these rows to every
    combination of their interval ends, and the other rows together, since a claim turns on
    how its named rows stand against the rest. `only_named`: the predicate's verdict reads no
    other row than those (at any level) and the Baseline, so the simultaneous level of the
    verdict counts their cells only (suites/claims/test_calibration.py checks this)."""

    id: str
    section: str
    statement: str
    source_tables: tuple[str, ...]
    predicate: Callable[[Tables], Verdict] = field(repr=False)
    notes: str = ""
    named: tuple[str | RowKey, ...] = ()
    only_named: bool = False  # the verdict depends on the named rows and the Baseline only

    def evaluate(self, tables: Tables) -> Verdict:
        missing = [t for t in self.source_tables if t not in tables]
        if missing:
            raise ClaimNotEvaluable(f"{self.id}: needs table(s) {missing}")
        return self.predicate(tables)


_REGISTRY: list[Claim] = []


def claim(
    *,
    id: str,
    section: str,
    statement: str,
    source_tables: tuple[str, ...],
    notes: str = "",
    named: tuple[str | RowKey, ...] = (),
    only_named: bool = False,
) -> Callable[[Callable[[Tables], Verdict]], Callable[[Tables], Verdict]]:
    """Register the decorated predicate as the `Claim` with these fields, after the claims
    registered before it (`CLAIMS` keeps this order); the predicate is returned unchanged, so one
    predicate may back several claims. ValueError when `id` is taken; RuntimeError once `CLAIMS`
    is built at the end of this module (a later claim would be in no verdict table)."""

    def register(predicate: Callable[[Tables], Verdict]) -> Callable[[Tables], Verdict]:
        if "CLAIMS" in globals():
            raise RuntimeError(f"claim {id!r}: claims are registered in {__name__} only, before CLAIMS is built")
        if any(c.id == id for c in _REGISTRY):
            raise ValueError(f"claim {id!r} is registered twice")
        _REGISTRY.append(Claim(id, section, statement, source_tables, predicate, notes, named, only_named))
        return predicate

    return register


# -- helpers -----------------------------------------------------------------------------------
def _mgn(tables: Tables) -> ResultTable:
    """MetaGraspNet: Table 1 plus the feature-level rows derived from Table 4 (our Table 1 already
    holds the feature-level runs: then it is the table itself)."""
    t1, t4 = tables["table1"], tables["table4"]
    if all(t1.has(*r.key) for r in t4.rows):
        return t1
    return apply_relative_change(t1, t4)


def _require(table: ResultTable, keys: Iterable[RowKey]) -> None:
    missing = [k for k in keys if k not in table.keys()]
    if missing:
        raise ClaimNotEvaluable(f"{table.title} has no row(s) {missing}")


# A rank claim needs rows to rank: "top 3" among 3 rows or fewer is true of every row, and "the
# best" of 2 rows is one pairwise comparison, not a ranking.
TOP3_MIN_RANKED = 4
BEST_MIN_RANKED = 3


def _require_ranked(table: ResultTable, at_least: int, what: str) -> None:
    n = sum(r.method != BASELINE for r in table.rows)
    if n < at_least:
        raise ClaimNotEvaluable(
            f"{table.title} ranks {n} row(s) besides the {BASELINE}; '{what}' needs at least {at_least}"
        )


def _signed(table: ResultTable, key: RowKey, column: str, ref: RowKey) -> float:
    """Difference key − ref in `column`, positive when `key` is better."""
    a, b = table.value(key[0], column, key[1]), table.value(ref[0], column, ref[1])
    return (a - b) if table.higher_is_better[column] else (b - a)


def _gain_misses(table: ResultTable, key: RowKey) -> list[str]:
    """Columns where `key` is not strictly better than the baseline (or a value is missing)."""
    base = table.row(BASELINE, P).values
    row = table.row(*key).values
    return [c for c in table.columns if row[c] is None or base[c] is None or not table.is_better(row[c], base[c], c)]


def _gains_all(table: ResultTable, key: RowKey) -> tuple[bool, list[str]]:
    """Strictly better than the baseline on every column; returns the failing cells."""
    misses = _gain_misses(table, key)
    return not misses, [f"{table.cell(key, c)} vs {BASELINE} {table.fmt(BASELINE, c, P)}" for c in misses]


def _mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan


def _majority(n_columns: int) -> int:
    return math.ceil(n_columns / 2)


def _top3_columns(table: ResultTable, key: RowKey) -> list[str]:
    return [c for c in table.columns if rank(table, c).get(key, math.inf) <= 3]


def _ranks_text(table: ResultTable, key: RowKey) -> str:
    return ", ".join(f"{c} {table.fmt(key[0], c, key[1])} (#{rank(table, c).get(key, '-')})" for c in table.columns)


def _gain_keys(changes: ResultTable) -> list[RowKey]:
    """Rows of a relative-change table with a gain (> 0 in the column's direction) everywhere."""
    return [
        r.key for r in changes.rows if all(v is not None and changes.is_better(v, 0.0, c) for c, v in r.values.items())
    ]


def _loss_keys(changes: ResultTable) -> list[RowKey]:
    return [
        r.key for r in changes.rows if all(v is not None and changes.is_better(0.0, v, c) for c, v in r.values.items())
    ]


def _changes_text(changes: ResultTable, key: RowKey) -> str:
    return ", ".join(f"{c} {changes.fmt(key[0], c, key[1])}" for c in changes.columns)


def _measure_cmp(table: ResultTable, column: str, a: str, b: str) -> float:
    return table.value(a, column) - table.value(b, column)


def _pair_text(table: ResultTable, a: RowKey, b: RowKey) -> str:
    """'BBox mAP 0.393 vs 0.371; ...': rows `a` and `b` side by side in every column."""
    return "; ".join(f"{c} {table.fmt(a[0], c, a[1])} vs {table.fmt(b[0], c, b[1])}" for c in table.columns)


# -- §3.1 MetaGraspNet -------------------------------------------------------------------------
CONSISTENT_GAINERS = (
    ("GradVac", P),
    ("GradDrop", P),
    ("IMTL", P),
    ("DWA", P),
    ("MGDA", F),
    ("CAGrad", F),
    ("CosReg", F),
)


@claim(
    id="mgn-consistent-gains",
    section="§3.1",
    statement=(
        "GradVac, GradDrop, IMTL, DWA, MGDA-UB, (rep) CAGrad, and (rep) CosReg achieved consistent "
        "performance gain compared to the baseline on all 6 evaluation metrics."
    ),
    source_tables=("table1", "table4"),
    notes=(
        "Feature-level rows are derived from Table 1 × Table 4; a gain is a value strictly above "
        "the baseline (the 0.01 band would drop GradVac, which the paper lists)."
    ),
    only_named=True,
    named=CONSISTENT_GAINERS,
)
def _consistent_gains(tables: Tables) -> Verdict:
    t = _mgn(tables)
    _require(t, CONSISTENT_GAINERS)
    parts, holds = [], True
    for key in CONSISTENT_GAINERS:
        ok, fails = _gains_all(t, key)
        holds &= ok
        if ok:
            worst = min(t.columns, key=lambda c: _signed(t, key, c, (BASELINE, P)))
            parts.append(
                f"{t.label(key)}: above the baseline on all {len(t.columns)}, smallest margin "
                f"{t.cell(key, worst)} vs {t.fmt(BASELINE, worst, P)}"
            )
        else:
            parts.append(f"{t.label(key)}: NOT above on " + "; ".join(fails))
    others = [
        t.label(k) for k in t.keys() if k[0] != BASELINE and k not in CONSISTENT_GAINERS and not _gain_misses(t, k)
    ]
    parts.append(f"other rows above the baseline on all metrics: {others or 'none'}")
    return Verdict(holds, f"{t.title} (Baseline row): " + " | ".join(parts))


TOP3_NAMED = (("GradVac", P), ("IMTL", P), ("MGDA", F))


@claim(
    id="mgn-top3-majority",
    section="§3.1",
    statement="GradVac, IMTL, and (rep) MGDA achieved top-three performance under a majority (≥3) of the metrics.",
    source_tables=("table1", "table4"),
    notes=(
        "Ranked among all MetaGraspNet rows of both levels. With Table 1 rows plus MGDA-UB only, "
        "FAMO would also be top-3 on 3 metrics."
    ),
    named=TOP3_NAMED,
)
def _top3_majority(tables: Tables) -> Verdict:
    t = _mgn(tables)
    _require(t, TOP3_NAMED)
    _require_ranked(t, TOP3_MIN_RANKED, "top 3")
    need = _majority(len(t.columns))  # §3.1: "a majority (≥3) of the metrics" (of 6)
    parts, holds = [], True
    for key in TOP3_NAMED:
        cols = _top3_columns(t, key)
        holds &= len(cols) >= need
        parts.append(f"{t.label(key)} top-3 in {len(cols)}/{len(t.columns)}: {_ranks_text(t, key)}")
    others = {t.label(k): len(_top3_columns(t, k)) for k in t.keys() if k[0] != BASELINE and k not in TOP3_NAMED}
    also = [f"{k} ({n})" for k, n in others.items() if n >= need]
    parts.append(f"other rows top-3 in ≥{need}: {also or 'none'}")
    return Verdict(holds, f"{t.title}, ranks among {len(t.rows) - 1} rows (baseline excluded): " + " | ".join(parts))


@claim(
    id="table1-markers-follow-caption-band",
    section="§3.1, Table 1 caption",
    statement=(
        "Performance increase (↑) or decrease (↓) that's more than 0.01 are shown in brackets after each "
        "table entry; scores within 0.01 of the baseline are labeled '–'."
    ),
    source_tables=("table1",),
    notes="Printed differences of exactly 0.010 accept either mark (printed precision cannot decide).",
)
def _markers_follow_band(tables: Tables) -> Verdict:
    t = tables["table1"]
    marked = [(r, c) for r in t.rows for c in r.markers]
    if not marked:
        raise ClaimNotEvaluable(f"{t.title} carries no printed ↑/↓/– markers")
    bad = []
    for r, c in marked:
        ok = admissible_marks(t, r.method, c, level=r.level)
        if r.markers[c] not in ok:
            d = _signed(t, r.key, c, (BASELINE, P))
            bad.append(
                f"{t.cell(r.key, c)} vs {BASELINE} {t.fmt(BASELINE, c, P)} ({d:+.3f}) printed "
                f"{r.markers[c]}, the 0.01 rule gives {'/'.join(sorted(ok))}"
            )
    unmarked = [t.cell(r.key, c) for r in t.rows if r.method != BASELINE for c in t.columns if c not in r.markers]
    text = f"{t.title}: {len(marked)} printed markers, {len(bad)} inconsistent with the caption's 0.01 rule"
    if bad:
        text += ": " + "; ".join(bad)
    if unmarked:
        text += f"; cells without a marker: {unmarked}"
    return Verdict(not bad and not unmarked, text)


# -- §3.2 CityScapes / NYU-v2 ------------------------------------------------------------------
def _top3_everywhere(tables: Tables, method: str, except_: frozenset[tuple[str, str]] = frozenset()) -> Verdict:
    parts, holds = [], True
    for name in ("table2", "table3"):
        t = tables[name]
        _require(t, [(method, P)])
        _require_ranked(t, TOP3_MIN_RANKED, "top 3")
        for c in t.columns:
            r = rank(t, c)[(method, P)]
            if (name, c) in except_:
                better = _signed(t, (method, P), c, (BASELINE, P)) > 0
                holds &= better
                parts.append(
                    f"{t.title} {c}: {t.fmt(method, c, P)} #{r} (excepted; better than "
                    f"{BASELINE} {t.fmt(BASELINE, c, P)}: {better})"
                )
            else:
                holds &= r <= 3
                parts.append(f"{t.title} {c}: {t.fmt(method, c, P)} #{r}")
    return Verdict(holds, f"{method} ranks (baseline excluded): " + "; ".join(parts))


@claim(
    id="cosreg-top3-cityscapes-nyuv2",
    section="§3.2",
    statement="CosReg consistently reaches top 3 on both datasets (CityScapes, NYU-v2) and all evaluation metrics.",
    source_tables=("table2", "table3"),
    notes=(
        "In the authors' probable code base (danielmao2019/Pylon) CosReg's penalty has no gradient, so "
        "it trains the plain summed loss (the mean-loss baseline with a T-times larger step)."
    ),
    named=("CosReg",),
)
def _cosreg_top3(tables: Tables) -> Verdict:
    return _top3_everywhere(tables, "CosReg")


@claim(
    id="graddrop-top3-except-nyuv2-ne",
    section="§3.2",
    statement=(
        "GradDrop also achieved top 3 scores except normal estimation (NE) on NYU-v2, but still improved the baseline."
    ),
    source_tables=("table2", "table3"),
    named=("GradDrop",),
)
def _graddrop_top3(tables: Tables) -> Verdict:
    return _top3_everywhere(tables, "GradDrop", frozenset({("table3", "NE")}))


# -- §4 feature-level gradients ----------------------------------------------------------------
SURROGATE_HELPS = frozenset({("MGDA", F), ("Aligned-MTL", F)})


@claim(
    id="surrogate-gains-only-mgda-alignedmtl",
    section="§4",
    statement=(
        "Only MGDA and Aligned-MTL achieved consistent performance gain under all evaluation metrics "
        "when feature-level gradients replace parameter-level gradients."
    ),
    source_tables=("table4",),
    named=tuple(sorted(SURROGATE_HELPS)),
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


@claim(
    id="surrogate-degrades-gradvac-rgw-imtl",
    section="§4",
    statement="GradVac, RGW, and IMTL got significant performance degradation with feature-level gradients.",
    source_tables=("table4",),
    notes="'Significant' is not defined; checked as a negative change on every metric.",
    only_named=True,
    named=SURROGATE_HURTS,
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


# -- §5.5 ranking similarity -------------------------------------------------------------------
def _rs_text(t: ResultTable, c: str, measures: Iterable[str]) -> str:
    return f"{c}: " + ", ".join(f"{m} {t.fmt(m, c)}" for m in measures)


@claim(
    id="rs-metagraspnet-fd-box-vs-mask",
    section="§5.5",
    statement=(
        "On MetaGraspNet, FD has lower ranking similarities for bounding box predictions compared to GDS or "
        "GMS, but consistently out-performs traditional GDS and GMS for visible and amodal mask predictions."
    ),
    source_tables=("table5",),
    notes="'Lower compared to GDS or GMS' is checked as lower than each.",
    named=MEASURE_ROWS,
)
def _rs_mgn(tables: Tables) -> Verdict:
    t = tables["table5"]
    box = [c for c in t.columns if c.startswith("BBox")]
    mask = [c for c in t.columns if c.startswith(("VMask", "AMask"))]
    if not box or not mask:
        raise ClaimNotEvaluable(f"{t.title} lacks BBox or mask columns")
    ok_box = {c: all(_measure_cmp(t, c, "FD", m) < 0 for m in ("GDS", "GMS")) for c in box}
    ok_mask = {c: all(_measure_cmp(t, c, "FD", m) > 0 for m in ("GDS", "GMS")) for c in mask}
    text = (
        f"{t.title}: FD below both GDS and GMS on box columns {ok_box}; FD above both on mask "
        f"columns {ok_mask} | " + "; ".join(_rs_text(t, c, ("FD", "GDS", "GMS")) for c in t.columns)
    )
    return Verdict(all(ok_box.values()) and all(ok_mask.values()), text)


@claim(
    id="rs-cityscapes-fd-beats-gds-gms",
    section="§5.5",
    statement=(
        "On CityScapes, FD out-performed GMS and GDS on semantic segmentation and instance segmentation, "
        "and out-performed GMS on depth estimation."
    ),
    source_tables=("table6",),
    named=MEASURE_ROWS,
)
def _rs_cityscapes(tables: Tables) -> Verdict:
    t = tables["table6"]
    wanted = {"SS": ("GMS", "GDS"), "IS": ("GMS", "GDS"), "DE": ("GMS",)}
    checks = {f"FD>{m} on {c}": _measure_cmp(t, c, "FD", m) > 0 for c, ms in wanted.items() for m in ms}
    failed = [k for k, ok in checks.items() if not ok]
    text = (
        f"{t.title}: "
        + "; ".join(_rs_text(t, c, ("FD", "GMS", "GDS")) for c in wanted)
        + f" | failed: {failed or 'none'}"
    )
    return Verdict(not failed, text)


@claim(
    id="rs-nyuv2-fd-beats-gms",
    section="§5.5",
    statement="On NYU-v2, FD still out-performed GMS on depth estimation and normal estimation.",
    source_tables=("table7",),
    named=("FD", "GMS"),
)
def _rs_nyuv2(tables: Tables) -> Verdict:
    t = tables["table7"]
    checks = {f"FD>GMS on {c}": _measure_cmp(t, c, "FD", "GMS") > 0 for c in ("DE", "NE")}
    failed = [k for k, ok in checks.items() if not ok]
    return Verdict(
        not failed,
        f"{t.title}: "
        + "; ".join(_rs_text(t, c, ("FD", "GMS")) for c in ("DE", "NE"))
        + f" | failed: {failed or 'none'}",
    )


# -- §5.4 figures: the statement, and the parts Table 1 can check ------------------------------
FIG5_EXCEPTIONS = frozenset({"RGW", "PCGrad", "MGDA", "Aligned-MTL"})


@claim(
    id="fig5-fd-below-baseline-except-four",
    section="§5.4, Figure 5",
    statement=(
        "Most methods applied parameter-level gradients achieved feature entangled-ness lower than baseline "
        "close to the end of training, with the exception for RGW, PCGrad, MGDA, and Aligned-MTL."
    ),
    source_tables=("figure5",),
    notes=(
        "Figure 5 prints no numbers: on the paper this claim is a statement only. On our runs, "
        "'figure5' is a table with column 'FD' (mean of the last 50 recorded values, §5.5) per "
        "parameter-level run, Baseline included. The 'clear decrease trends' part needs trajectories."
    ),
    named=tuple(sorted(FIG5_EXCEPTIONS)),
)
def _fig5_fd_below_baseline(tables: Tables) -> Verdict:
    t = tables["figure5"]
    if FIGURE5_COLUMN not in t.columns:
        raise ClaimNotEvaluable(f"{t.title} has no {FIGURE5_COLUMN!r} column")
    _require(t, [(BASELINE, P), *((m, P) for m in sorted(FIG5_EXCEPTIONS))])  # the named exceptions must be there
    base = t.value(BASELINE, FIGURE5_COLUMN, P)
    runs = [r for r in t.rows if r.method != BASELINE and r.level == P and r.values[FIGURE5_COLUMN] is not None]
    need = 2 * len(FIG5_EXCEPTIONS) + 1  # "most, with four exceptions" needs more than 4 others below
    if len(runs) < need:
        raise ClaimNotEvaluable(
            f"{t.title} has {len(runs)} method(s) besides the {BASELINE}; 'most methods ... "
            f"with the exception of {len(FIG5_EXCEPTIONS)}' needs at least {need}"
        )
    not_below = {r.method for r in runs if not r.values[FIGURE5_COLUMN] < base}
    most = len(runs) - len(not_below) > len(runs) / 2
    return Verdict(
        not_below == FIG5_EXCEPTIONS and most,
        f"{t.title}: {BASELINE} FD {t.fmt(BASELINE, FIGURE5_COLUMN, P)}; not below it: "
        f"{sorted(not_below)} (claimed {sorted(FIG5_EXCEPTIONS)}); below: "
        f"{len(runs) - len(not_below)}/{len(runs)}",
    )


# §3.1: Nash-MTL is not reported on MetaGraspNet, so Table 1 holds the other seven.
TABLE1_GRADIENT_MANIPULATION = GRADIENT_MANIPULATION - {"Nash-MTL"}


@claim(
    id="fig5-exceptions-complement-of-table1-gainers",
    section="§5.4 (Table 1 part)",
    statement=(
        "These four methods (RGW, PCGrad, MGDA, Aligned-MTL) form exactly the complement of the three methods "
        "that achieved performance gain among the gradient manipulation methods, as reported in Table 1."
    ),
    source_tables=("table1",),
    notes=(
        "'Performance gain' read as in §3.1 (above the baseline on all six). A looser reading, above "
        "the baseline on a majority (≥4/6), would make the statement hold (CAGrad is above on 4/6)."
    ),
    only_named=True,
    named=tuple((m, P) for m in sorted(TABLE1_GRADIENT_MANIPULATION)),
)
def _fig5_complement(tables: Tables) -> Verdict:
    t = tables["table1"]
    _require(t, [(BASELINE, P), *((m, P) for m in sorted(TABLE1_GRADIENT_MANIPULATION))])  # a complement needs them all
    gm = [r.key for r in t.rows if r.method in TABLE1_GRADIENT_MANIPULATION and r.level == P]  # Table 1's seven
    complement = [k for k in gm if k[0] not in FIG5_EXCEPTIONS]
    parts, holds = [], len(complement) == 3
    for k in gm:
        ok, fails = _gains_all(t, k)
        expected = k in complement
        holds &= ok == expected
        above = sum(_signed(t, k, c, (BASELINE, P)) > 0 for c in t.columns)
        parts.append(
            f"{k[0]}: {'gain' if ok else 'no gain'} ({above}/{len(t.columns)} above"
            + (f"; below or equal: {'; '.join(fails)}" if fails else "")
            + ")"
        )
    return Verdict(
        holds,
        f"{t.title}, gradient manipulation methods; complement of the four = "
        f"{[k[0] for k in complement]} | " + " | ".join(parts),
    )


@claim(
    id="fig3-uncertainty-poor-gradvac-strong",
    section="§5.4 (Table 1 part)",
    statement=(
        "Uncertainty Weighting had poor performance on the test set (Table 1), and GradVac had stronger performance."
    ),
    source_tables=("table1",),
    notes="Read against the baseline: Uncertainty below it on every metric, GradVac above it on every metric.",
    only_named=True,
    named=(("Uncertainty", P), ("GradVac", P)),
)
def _fig3_uncertainty_gradvac(tables: Tables) -> Verdict:
    t = tables["table1"]
    _require(t, [("Uncertainty", P), ("GradVac", P)])
    unc_worse = [c for c in t.columns if _signed(t, ("Uncertainty", P), c, (BASELINE, P)) < 0]
    gv_ok, gv_fails = _gains_all(t, ("GradVac", P))
    holds = len(unc_worse) == len(t.columns) and gv_ok
    return Verdict(
        holds,
        f"{t.title}: Uncertainty below {BASELINE} on {len(unc_worse)}/{len(t.columns)} "
        f"({_ranks_text(t, ('Uncertainty', P))}); GradVac above on all: {gv_ok} {gv_fails or ''}",
    )


@claim(
    id="fig3-pcgrad-alignedmtl-undecided",
    section="§5.4 (Table 1 part)",
    statement="PCGrad and Aligned-MTL are hard to conclude one is superior to the other on the test set.",
    source_tables=("table1",),
    notes="Checked as: neither is better than the other on more than half of the metrics.",
    only_named=True,
    named=(("PCGrad", P), ("Aligned-MTL", P)),
)
def _fig3_pcgrad_aligned(tables: Tables) -> Verdict:
    t = tables["table1"]
    a, b = ("PCGrad", P), ("Aligned-MTL", P)
    _require(t, [a, b])
    a_wins = [c for c in t.columns if _signed(t, a, c, b) > 0]
    b_wins = [c for c in t.columns if _signed(t, b, c, a) > 0]
    half = len(t.columns) / 2
    return Verdict(
        len(a_wins) <= half and len(b_wins) <= half,
        f"{t.title}: PCGrad better on {a_wins}, Aligned-MTL better on {b_wins} | " + _pair_text(t, a, b),
    )


@claim(
    id="fig4-famo-beats-mgda",
    section="§5.4 (Table 1 part)",
    statement="FAMO achieved significantly better performance results than MGDA.",
    source_tables=("table1",),
    notes=(
        "Checked as better on every metric. The sentence cites Figure 4 (GMS) for 'almost the same GDS "
        "curves'; the curves themselves are not checkable."
    ),
    only_named=True,
    named=(("FAMO", P), ("MGDA", P)),
)
def _fig4_famo_mgda(tables: Tables) -> Verdict:
    t = tables["table1"]
    a, b = ("FAMO", P), ("MGDA", P)
    _require(t, [a, b])
    wins = [c for c in t.columns if _signed(t, a, c, b) > 0]
    return Verdict(
        len(wins) == len(t.columns),
        f"{t.title}: FAMO better than MGDA on {len(wins)}/{len(t.columns)} | " + _pair_text(t, a, b),
    )


# -- §6 conclusions (this version) -------------------------------------------------------------
@claim(
    id="conclusion-graddrop-cosreg-best",
    section=f"§6 ({V2})",
    statement="GradDrop and CosReg were the best-performing methods on all three datasets.",
    source_tables=("table1", "table2", "table3", "table4"),
    notes=(
        "'Best-performing' read with the paper's own §3.1 yardstick: top-3 on a majority of the metrics "
        "of each dataset, at either gradient level. With Table 1's parameter-level rows only, GradDrop "
        "would pass on MetaGraspNet (3/6) but CosReg would still fail (1/6)."
    ),
    named=("GradDrop", "CosReg"),
)
def _graddrop_cosreg_best(tables: Tables) -> Verdict:
    datasets = {"MetaGraspNet": _mgn(tables), "CityScapes": tables["table2"], "NYU-v2": tables["table3"]}
    parts, holds = [], True
    for method in ("GradDrop", "CosReg"):
        for ds, t in datasets.items():
            keys = [k for k in t.keys() if k[0] == method]
            if not keys:
                raise ClaimNotEvaluable(f"{t.title} has no {method} row")
            _require_ranked(t, TOP3_MIN_RANKED, "top 3")
            need = _majority(len(t.columns))
            counts = {k: len(_top3_columns(t, k)) for k in keys}
            ok = max(counts.values()) >= need
            holds &= ok
            parts.append(
                f"{method} on {ds} ({t.title}): top-3 in "
                + ", ".join(f"{n}/{len(t.columns)} at {k[1]} level [{_ranks_text(t, k)}]" for k, n in counts.items())
                + f" -> {'best-performing' if ok else 'NOT top-3 on a majority'}"
            )
    return Verdict(holds, " | ".join(parts))


claim(
    id="conclusion-surrogate-only-mgda-alignedmtl",
    section=f"§6 ({V2})",
    statement=(
        "Only MGDA and Aligned-MTL, which have theoretical guarantees, achieved a performance gain with "
        "feature-level gradients, while others were either similar or had significant performance degrade."
    ),
    source_tables=("table4",),
    notes=(
        "Only the 'only MGDA and Aligned-MTL gain' part is checked; 'similar' is not defined (the "
        "evidence gives each other method's mean change)."
    ),
    named=tuple(sorted(SURROGATE_HELPS)),
)(_surrogate_only_mgda_aligned)  # the §4 predicate, registered again for the conclusion


@claim(
    id="conclusion-fd-faithful-masks-and-cityscapes-seg",
    section=f"§6 ({V2})",
    statement=(
        "FD showed its faithfulness for visible and amodal mask predictions on MetaGraspNet and for semantic "
        "and instance segmentation on CityScapes."
    ),
    source_tables=("table5", "table6"),
    notes=(
        "Checked as: FD's ranking similarity is not below GDS's or GMS's on those columns (§5.5's "
        "stricter 'out-performed' is claim rs-cityscapes-fd-beats-gds-gms)."
    ),
    named=MEASURE_ROWS,
)
def _fd_faithful(tables: Tables) -> Verdict:
    wanted = {
        "table5": [c for c in tables["table5"].columns if c.startswith(("VMask", "AMask"))],
        "table6": ["SS", "IS"],
    }
    parts, holds = [], True
    for name, cols in wanted.items():
        t = tables[name]
        for c in cols:
            ok = all(_measure_cmp(t, c, "FD", m) >= 0 for m in ("GDS", "GMS"))
            holds &= ok
            parts.append(f"{t.title} {_rs_text(t, c, ('FD', 'GDS', 'GMS'))} ({'not beaten' if ok else 'BEATEN'})")
    return Verdict(holds, " | ".join(parts))


# -- conclusions of the earlier version (000 summary) ------------------------------------------
@claim(
    id="conclusion-v1-mgda-ub-best",
    section=f"Key conclusions ({V1})",
    statement=(
        "MGDA-UB (feature-level gradients) performs the best; it is the most suitable for complex vision MTL "
        "(MetaGraspNet)."
    ),
    source_tables=("table1", "table4"),
    notes=(
        "Evaluated on the later version's numbers (the earlier tables are not available): lowest mean "
        "rank over the six MetaGraspNet metrics among all rows of both levels."
    ),
    named=(("MGDA", F),),
)
def _mgda_ub_best(tables: Tables) -> Verdict:
    t = _mgn(tables)
    key = ("MGDA", F)
    _require(t, [key])
    _require_ranked(t, BEST_MIN_RANKED, "performs the best")
    mr = mean_rank(t)
    order = sorted(mr, key=mr.get)
    best = mr[order[0]]
    holds = mr[key] == best and sum(v == best for v in mr.values()) == 1
    top = "; ".join(f"{t.label(k)} {mr[k]:.2f}" for k in order[:5])
    return Verdict(
        holds,
        f"{t.title}, mean rank over {len(t.columns)} metrics among {len(mr)} rows "
        f"(baseline excluded): {top} | MGDA (feature) top-3 in "
        f"{len(_top3_columns(t, key))}/{len(t.columns)}: {_ranks_text(t, key)}",
    )


@claim(
    id="conclusion-v1-surrogate-not-general",
    section=f"Key conclusions ({V1})",
    statement=(
        "Feature gradients do not generalize as substitutes for parameter gradients (only MGDA and "
        "Aligned-MTL consistently improve with them)."
    ),
    source_tables=("table4",),
)
def _surrogate_not_general(tables: Tables) -> Verdict:
    t = tables["table4"]
    if not t.rows:
        raise ClaimNotEvaluable(f"{t.title} has no rows (no method ran at both gradient levels)")
    gains, losses = _gain_keys(t), _loss_keys(t)
    holds = len(gains) < len(t.rows) and bool(losses)
    return Verdict(
        holds,
        f"{t.title}: {len(gains)}/{len(t.rows)} methods gain on every metric "
        f"({[t.label(k) for k in gains]}); degraded on every metric: "
        f"{[t.label(k) for k in losses]}",
    )


@claim(
    id="conclusion-v1-fd-better-indicator",
    section=f"Key conclusions ({V1})",
    statement=(
        "Feature disentanglement is a better indicator of task interference than gradient similarities: "
        "rankings by FD better matched final performance (MetaGraspNet)."
    ),
    source_tables=("table5",),
    notes=(
        "Checked as: FD has the highest ranking similarity on a majority of Table 5's columns. The "
        "earlier version covered MetaGraspNet only."
    ),
    named=MEASURE_ROWS,
)
def _fd_better_indicator_v1(tables: Tables) -> Verdict:
    t = tables["table5"]
    best = [c for c in t.columns if all(_measure_cmp(t, c, "FD", m) > 0 for m in ("GDS", "GMS"))]
    need = _majority(len(t.columns))
    return Verdict(
        len(best) >= need,
        f"{t.title}: FD highest on {len(best)}/{len(t.columns)} columns "
        f"{best} | " + "; ".join(_rs_text(t, c, ("FD", "GDS", "GMS")) for c in t.columns),
    )


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


CLAIMS: tuple[Claim, ...] = tuple(_REGISTRY)  # every claim, in the order registered above


def claim_by_id(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(claim_id)
