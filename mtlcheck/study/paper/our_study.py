"""A reproduced study with its uncertainty: tables whose cells carry their per-seed values, and draws
of every table for the verdicts (`mtlcheck.study.paper.verdicts`).

Base tables hold what the runs measured: the results (one cell per method, level and metric) and
the final measures (GDS, GMS, FD per parameter-level method). Every other table (relative change,
ranking similarity, Figure 5's final FD) is a function of those two (`Study.derive`), so a draw of
the base cells gives a draw of every table and the claims' predicates run on it unchanged.

Coordinates of a draw, per base-table column: the Baseline's mean, and for every other row its
paired difference to the Baseline over the seeds both have (same seed = same initialisation and
data order); a row without a paired Baseline uses its own mean. Two kinds of draws:

- posterior: each coordinate = mean + s/√n · T with T ~ Student t(n − 1), independently (the
  t-posterior of a normal mean under the flat prior, e.g. Gelman et al., Bayesian Data Analysis,
  §3.2); used for the probability shown beside a verdict;
- region: each coordinate inside its simultaneous interval mean ± t_{n−1, 1−α/(2K)} · s/√n
  (Bonferroni over the K coordinates a claim depends on): at the ends (a whole row at its better
  or worse end, the ends a "row is good / bad" claim turns on) or uniformly inside. A zero-width
  interval is widened to ±1e-9 × (1 + |value|) so that an exact tie is drawn both ways and never
  decides a comparison.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from mtlcheck.study.paper.result_table import BASELINE, ResultTable, Row, RowKey
from mtlcheck.study.statistics import LEVEL, Estimate

__all__ = ["TIE_WIDTH", "Study", "UncertainTable", "with_values"]

TIE_WIDTH = 1e-9  # relative half-width given to a zero-width interval: ties are drawn both ways
BASELINE_KEY: RowKey = (BASELINE, "parameter")


@dataclass(frozen=True)
class UncertainTable(ResultTable):
    """A `ResultTable` of ours: `values` are means over seeds (or point values of a derived table),
    and the cells say how well they are known.

    - `estimates[row][column]`: the per-seed values of a base cell (`statistics.Estimate`);
    - `paired[row][column]`: the row minus the Baseline on the same seeds (`Estimate`);
    - `ranges[row][column]`: (lo, hi) interval of a derived cell (its range over a confidence region);
    - `study`: the `Study` the table comes from (for draws), None for a hand-made table.
    """

    estimates: Mapping[RowKey, Mapping[str, Estimate]] = field(default_factory=dict)
    paired: Mapping[RowKey, Mapping[str, Estimate]] = field(default_factory=dict)
    ranges: Mapping[RowKey, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    study: Any = field(default=None, repr=False, compare=False)

    def estimate(self, key: RowKey, column: str) -> Estimate | None:
        return self.estimates.get(key, {}).get(column)

    def paired_estimate(self, key: RowKey, column: str) -> Estimate | None:
        return self.paired.get(key, {}).get(column)

    def range(self, key: RowKey, column: str) -> tuple[float, float] | None:
        return self.ranges.get(key, {}).get(column)

    def spread_text(self, key: RowKey, column: str) -> str:
        """' ± 0.0031' (t interval over seeds), ' [48.33, 71.67]' (interval of a derived
        cell), ' (n=1)' (one seed: no interval) or ''; in the column's printed decimals."""
        d = self.printed_decimals.get(column, 4)
        e = self.estimate(key, column)
        if e is not None and self.row(*key).values[column] is not None:
            h = e.half_width
            return " (n=1)" if h is None else f" ± {h:.{d}f}"
        r = self.range(key, column)
        if r is not None:
            return f" [{r[0]:.{d}f}, {r[1]:.{d}f}]"
        return ""

    def fmt(self, method: str, column: str, level: str | None = None) -> str:
        """The cell with its uncertainty, for evidence: '0.5210 ± 0.0031 (Δ +0.0040 ± 0.0012)' (Δ: the
        paired difference to the Baseline on the same seeds, what comparisons rest on) or
        '66.67 [50.00, 100.00]%'."""
        row = self.row(method, level)
        v = row.values[column]
        if v is None:
            return "null"
        d = self.printed_decimals.get(column)
        text = f"{v:.{d}f}" if d is not None else f"{v:.6g}"
        text += self.spread_text(row.key, column) + ("%" if self._is_percent(column) else "")
        p = self.paired_estimate(row.key, column)
        if p is not None and p.half_width is not None:
            text += f" (Δ {p.mean:+.{d if d is not None else 4}f} ± {p.half_width:.{d if d is not None else 4}f})"
        return text


def with_values(table: ResultTable, values: Mapping[RowKey, Mapping[str, float | None]]) -> ResultTable:
    """A plain `ResultTable` like `table` (rows, notes, units kept) with the given finite cell values.

    Draws build thousands of these; `table` was validated when it was made and only finite floats
    replace its values, so the copy skips the validation and rebuilds the row index itself."""
    rows = tuple(
        Row(r.method, r.level, {c: values.get(r.key, {}).get(c, r.values[c]) for c in table.columns}, note=r.note)
        for r in table.rows
    )
    out = object.__new__(ResultTable)
    for f in dataclasses.fields(ResultTable):
        object.__setattr__(out, f.name, getattr(table, f.name))
    object.__setattr__(out, "rows", rows)
    object.__setattr__(out, "_index", MappingProxyType({r.key: r for r in rows}))
    object.__setattr__(out, "_rank_cache", {})
    return out


@dataclass(frozen=True)
class _Coordinate:
    """One drawn quantity: the cell itself, or its paired difference to `anchor` (same column)."""

    table: str
    key: RowKey
    column: str
    estimate: Estimate
    anchor: RowKey | None
    sign: float  # +1 when larger is better in the column


@dataclass(frozen=True)
class CellBox:
    """Where one cell may lie: value = (anchor's value, if any) + a coordinate in [lo, hi] around
    `center`. Anchored cells are paired differences to the Baseline of the same column."""

    center: float
    lo: float
    hi: float
    anchor: RowKey | None = None

    def at(self, u: float) -> float:
        """The coordinate at u ∈ [−1, 1]: −1 → lo, 0 → center, +1 → hi (piecewise linear)."""
        return self.center + u * ((self.hi - self.center) if u >= 0 else (self.center - self.lo))


Box = Mapping[tuple[RowKey, str], CellBox]


class Study:
    """Base tables with per-seed cells, and `derive(base) -> {name: table}` for every table.

    `depends[name]`: the base tables that table `name` is computed from (a claim's simultaneous
    level counts the cells of those only). `views[name]`: the base table whose cells table `name`
    shows unchanged (its box is then exact; other tables get the range of their cells over region
    draws of the base cells)."""

    def __init__(
        self,
        base: Mapping[str, UncertainTable],
        derive: Callable[[Mapping[str, ResultTable]], dict[str, ResultTable]],
        depends: Mapping[str, frozenset[str]],
        views: Mapping[str, str] | None = None,
        label: str = "",
        level: float = LEVEL,
    ):
        self.base = dict(base)
        self.derive = derive
        self.depends = dict(depends)
        self.views = dict(views or {})
        self.label = label
        self.level = level
        self._coords = {name: self._coordinates(name, t) for name, t in self.base.items()}
        self._cache: dict[tuple, Any] = {}

    # -- what is known ---------------------------------------------------------------------------
    @staticmethod
    def _coordinates(name: str, t: UncertainTable) -> list[_Coordinate]:
        base = BASELINE_KEY if any(t.estimate(BASELINE_KEY, c) for c in t.columns) else None
        out = []
        for r in t.rows:
            for c in t.columns:
                e = t.estimate(r.key, c)
                if e is None or r.values[c] is None:
                    continue
                p = t.paired_estimate(r.key, c) if r.key != base else None
                sign = 1.0 if t.higher_is_better[c] else -1.0
                if p is not None and base is not None and t.estimate(base, c) is not None:
                    out.append(_Coordinate(name, r.key, c, p, base, sign))
                else:
                    out.append(_Coordinate(name, r.key, c, e, None, sign))
        # anchors first, so that a drawn difference can be added to its anchor's drawn value
        return sorted(out, key=lambda k: k.anchor is not None)

    def cells(self, bases: frozenset[str] | None = None, rows: Callable[[RowKey], bool] | None = None) -> int:
        """Number of drawn coordinates (cells with a value) in the given base tables (default: all),
        of the rows `rows` accepts (default: all)."""
        return sum(
            1 for k, v in self._coords.items() if bases is None or k in bases for c in v if rows is None or rows(c.key)
        )

    def estimates(self, bases: frozenset[str] | None = None) -> list[Estimate]:
        """The drawn coordinates' estimates in the given base tables (default: all)."""
        return [c.estimate for k, v in self._coords.items() if bases is None or k in bases for c in v]

    def min_seeds(self, bases: frozenset[str] | None = None, rows: Callable[[RowKey], bool] | None = None) -> int:
        """The fewest seeds of a drawn cell in the given base tables, of the rows `rows` accepts."""
        ns = [
            c.estimate.n
            for k, v in self._coords.items()
            if bases is None or k in bases
            for c in v
            if rows is None or rows(c.key)
        ]
        return min(ns) if ns else 0

    def rows_of(self, bases: frozenset[str], rows: Callable[[RowKey], bool] | None = None) -> set[RowKey]:
        """The rows (method, level) with a value in the given base tables that `rows` accepts
        (default: all)."""
        return {
            r.key
            for b in bases
            for r in self.base[b].rows
            if (rows is None or rows(r.key)) and any(v is not None for v in r.values.values())
        }

    def bases_of(self, tables: tuple[str, ...]) -> frozenset[str]:
        return frozenset().union(*(self.depends.get(t, frozenset()) for t in tables))

    def tables(self) -> dict[str, ResultTable]:
        """The point tables: the base tables as given, the derived ones computed from them."""
        return self.derive(self.base)

    # -- draws -----------------------------------------------------------------------------------
    def _draws(
        self,
        key: tuple,
        n: int,
        seed: int,
        sampler: Callable[[np.random.Generator], Callable[[str, _Coordinate], np.ndarray]],
    ) -> list[dict[str, ResultTable]]:
        """`n` draws of every table, cached under `key`. On a miss, `sampler(rng)` (rng seeded by
        `seed`) gives `offset`; each base coordinate is drawn at `offset(table, k)` (its own mean
        plus its deviation), plus its anchor's draw for a paired difference."""
        if key not in self._cache:
            offset = sampler(np.random.default_rng(seed))
            drawn: dict[str, dict[RowKey, dict[str, np.ndarray]]] = {}
            for name, coords in self._coords.items():
                cols: dict[RowKey, dict[str, np.ndarray]] = {}
                for k in coords:
                    x = offset(name, k)
                    if k.anchor is not None:
                        x = x + cols[k.anchor][k.column]
                    cols.setdefault(k.key, {})[k.column] = x
                drawn[name] = cols
            self._cache[key] = self._build(drawn, n)
        return self._cache[key]

    def _build(self, drawn: dict[str, dict[RowKey, dict[str, np.ndarray]]], n: int) -> list[dict[str, ResultTable]]:
        out = []
        for i in range(n):
            base = {
                name: with_values(t, {k: {c: float(v[i]) for c, v in cols.items()} for k, cols in drawn[name].items()})
                for name, t in self.base.items()
            }
            out.append(self.derive(base))
        return out

    def posterior(self, n: int = 400, seed: int = 0) -> list[dict[str, ResultTable]]:
        """`n` draws of every table from the cells' t-posteriors (cells with one seed stay at their
        value: callers must check `min_seeds`)."""

        def sampler(rng: np.random.Generator):
            def offset(_name: str, k: _Coordinate) -> np.ndarray:
                e = k.estimate
                x = np.full(n, e.mean)
                if e.n >= 2:
                    x = x + e.scale / math.sqrt(e.n) * (
                        rng.standard_normal(size=n) if math.isinf(e.df) else rng.standard_t(e.df, size=n)
                    )
                return x

            return offset

        return self._draws(("posterior", n, seed), n, seed, sampler)

    def half_width(self, k: _Coordinate | Estimate, level: float, seeds: int | None = None) -> float:
        """`Estimate.half_width_at`: t_{m−1, (1+level)/2} · s / √m with m = `seeds` or the cell's n;
        at least the tie width."""
        e = k.estimate if isinstance(k, _Coordinate) else k
        h = e.half_width_at(level, seeds) or 0.0
        return max(h, TIE_WIDTH * (1.0 + abs(e.mean)))

    def region(
        self, level: float, n: int = 300, seed: int = 1, seeds: int | None = None
    ) -> list[dict[str, ResultTable]]:
        """`n` draws of every table with each base coordinate inside its `level` t interval: 70 % of
        the draws put each row at its better or worse end (one coin per row and table), the rest
        uniformly inside. `seeds` replaces every n by that many seeds at the observed spread."""

        def sampler(rng: np.random.Generator):
            corner = rng.random(n) < 0.7
            ends: dict[str, dict[RowKey, np.ndarray]] = {}

            def offset(name: str, k: _Coordinate) -> np.ndarray:
                if name not in ends:  # a table's coins before its first coordinate's draw
                    rows = sorted({c.key for c in self._coords[name]})
                    ends[name] = {r: rng.choice((-1.0, 1.0), size=n) for r in rows}
                h = self.half_width(k, level, seeds)
                u = np.where(corner, ends[name][k.key] * k.sign, rng.uniform(-1.0, 1.0, size=n))
                return k.estimate.mean + h * u

            return offset

        return self._draws(("region", level, n, seed, seeds), n, seed, sampler)

    def box(self, name: str, level: float, seeds: int | None = None, draws: int = 120) -> Box:
        """Where each cell of table `name` may lie at per-coordinate `level`: exact t intervals for a
        view of a base table (paired with the Baseline), else the cell's range over `draws` region
        draws of the base cells at `level` (and its point value; a third of the draws when planning
        `seeds`), or, when the derived table carries per-seed estimates of its own (the relative
        change, paired per seed), their t intervals at `level`."""
        derived = name not in self.views
        if derived and seeds is not None:
            draws = max(40, draws // 3)
        key = ("box", name, level, seeds, draws)
        if key in self._cache:
            return self._cache[key]
        point = self.tables()[name]
        out: dict[tuple[RowKey, str], CellBox] = {}
        if derived and isinstance(point, UncertainTable) and point.estimates:  # its own per-seed estimates
            for r in point.rows:
                for c in point.columns:
                    e = point.estimate(r.key, c)
                    if e is not None and r.values[c] is not None:
                        h = self.half_width(e, level, seeds)
                        out[(r.key, c)] = CellBox(e.mean, e.mean - h, e.mean + h)
        elif not derived:
            for k in self._coords[self.views[name]]:
                if k.key in point.keys() and k.column in point.columns:
                    h = self.half_width(k, level, seeds)
                    out[(k.key, k.column)] = CellBox(
                        k.estimate.mean,
                        k.estimate.mean - h,
                        k.estimate.mean + h,
                        k.anchor if k.anchor in point.keys() else None,
                    )
        else:
            region = self.region(level, draws, seeds=seeds)
            for r in point.rows:
                for c in point.columns:
                    v = r.values[c]
                    if v is None:
                        continue
                    xs = [v] + [x for d in region for x in [d[name].row(*r.key).values[c]] if x is not None]
                    out[(r.key, c)] = CellBox(v, min(xs), max(xs))
        self._cache[key] = out
        return out
