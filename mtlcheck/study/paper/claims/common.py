"""What several sections' claims share: the paper's method groups, the two paper versions, and
helpers that read ranks, gains and changes from result tables."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mtlcheck.study.paper.claims.registry import ClaimNotEvaluable, Tables
from mtlcheck.study.paper.result_table import BASELINE, ResultTable, RowKey, apply_relative_change, rank

P, F = "parameter", "feature"
# §3 "Selected Methods": the gradient manipulation category (8 methods).
GRADIENT_MANIPULATION = frozenset({"PCGrad", "GradVac", "GradDrop", "RGW", "MGDA", "CAGrad", "Nash-MTL", "Aligned-MTL"})
MEASURE_ROWS = ("FD", "GDS", "GMS")  # rows of Tables 5-7
FIGURE5_COLUMN = "FD"  # final FD per parameter-level run: mean of the last 50 points (§5.5)
# the two versions of the paper whose conclusions are claims (sections of §6 and of the earlier summary)
V2 = "later version"
V1 = "earlier version (000 summary)"


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


def _rs_text(t: ResultTable, c: str, measures: Iterable[str]) -> str:
    return f"{c}: " + ", ".join(f"{m} {t.fmt(m, c)}" for m in measures)


# -- the same readings as formulas of signed paired comparisons (mtlcheck.study.paper.comparisons) --
def table_name(tables: Tables, table: ResultTable) -> str:
    """The key under which `table` is given (a formula names its tables)."""
    for name, t in tables.items():
        if t is table:
            return name
    raise ClaimNotEvaluable(f"{table.title} is derived, not one of the tables given: decided by its predicate")


def _f_gain_all(tables: Tables, table: ResultTable, key: RowKey):
    """`key` strictly better than the Baseline (parameter level) on every column."""
    from mtlcheck.study.paper.comparisons import Better, all_of

    name = table_name(tables, table)
    return all_of(Better(name, c, key, (BASELINE, P)) for c in table.columns)


def _f_change(tables: Tables, table: ResultTable, key: RowKey, gain: bool):
    """A change table's row: a gain (better than 0) on every column, or a loss (0 better) on every one."""
    from mtlcheck.study.paper.comparisons import Better, all_of

    name = table_name(tables, table)
    return all_of(Better(name, c, key, None) if gain else Better(name, c, None, key) for c in table.columns)


def _f_top3(tables: Tables, table: ResultTable, key: RowKey, column: str):
    """`key` ranks 3 or better in `column` (competition rank, Baseline excluded): at most two rows are
    strictly better than it."""
    from mtlcheck.study.paper.comparisons import Better, at_most

    name = table_name(tables, table)
    others = [r.key for r in table.rows if r.method != BASELINE and r.key != key and r.values[column] is not None]
    return at_most(2, (Better(name, column, o, key) for o in others))


def _f_top3_majority(tables: Tables, table: ResultTable, key: RowKey):
    from mtlcheck.study.paper.comparisons import AtLeast

    return AtLeast(_majority(len(table.columns)), tuple(_f_top3(tables, table, key, c) for c in table.columns))
