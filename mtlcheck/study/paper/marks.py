"""Marks against the Baseline: '↑' / '↓' / '–' for a cell of a results table.

Two marks: the paper's band mark, better / worse than the Baseline by more than 0.01 on the means
(Table 1's caption, `result_table.baseline_mark`), and on our tables the paired mark, from the interval
of the per-seed difference to the Baseline (`paired_mark`), which also sees the seed-to-seed
spread. A table is marked against its one Baseline row (`marked_baseline`), in the cells where both
the row and the Baseline have a value (`comparable`).
"""

from __future__ import annotations

from mtlcheck.study.paper.our_study import TIE_WIDTH, UncertainTable
from mtlcheck.study.paper.result_table import BASELINE, ResultTable, Row, RowKey, baseline_mark

__all__ = ["band_mark", "comparable", "marked_baseline", "paired_mark"]


def marked_baseline(table: ResultTable) -> Row | None:
    """The Baseline row the table's methods are marked against; None for a table of measures or
    without a Baseline row. ValueError when the Baseline has rows at several levels."""
    if table.row_kind != "method":
        return None
    rows = [r for r in table.rows if r.method == BASELINE]
    if not rows:
        return None
    if len(rows) > 1:
        raise ValueError(f"{table.title}: Baseline at levels {[r.level for r in rows]}; marks need one Baseline row")
    return rows[0]


def comparable(base: Row | None, row: Row, column: str) -> bool:
    """Whether `row` gets a mark in `column`: it is not the Baseline and both have a value there."""
    return (
        base is not None and row.key != base.key and row.values[column] is not None and base.values[column] is not None
    )


def band_mark(table: ResultTable, base: Row | None, row: Row, column: str) -> str:
    """The paper's 0.01-band mark of a `comparable` cell, '' for any other."""
    return baseline_mark(table, row.method, column, level=row.level) if comparable(base, row, column) else ""


def paired_mark(table: UncertainTable, key: RowKey, column: str) -> str:
    """'↑' / '↓' when the t interval of the paired per-seed difference to the Baseline lies wholly on
    the better / worse side of 0 (in the column's direction), '–' when it contains 0, 'n=1' when one
    shared seed gives no interval, '' without a paired difference."""
    p = table.paired_estimate(key, column)
    if p is None:
        return ""
    if p.half_width is None:
        return "n=1"
    lo, hi = p.interval
    base = table.estimate((BASELINE, "parameter"), column)
    tie = TIE_WIDTH * (1.0 + abs(base.mean if base is not None else 0.0))  # rounding is no difference
    better_up = table.higher_is_better[column]
    if lo > tie:
        return "↑" if better_up else "↓"
    if hi < -tie:
        return "↓" if better_up else "↑"
    return "–"
