"""The result table, one type for both sides: the paper's published Tables 1-7
(`published_tables`) and our tables from stored runs (`our_tables`, `table_from_records`), so every
claim in `mtlcheck.study.paper.claims` evaluates on the paper's numbers and on ours alike; plus the
helpers the claims use.

Conventions (all from the paper):
- `higher_is_better` is per column; "better" below is always direction-aware and strict.
- The baseline band is Table 1's caption: a change of more than 0.01 is marked ↑ / ↓, anything
  within 0.01 is "–" (`baseline_mark`). Values printed to 3 decimals cannot decide a difference
  of exactly 0.010, so `admissible_marks` accepts both readings there.
- Ranks are competition ranks (1 + the number of strictly better rows; ties share a rank); the
  baseline is not ranked unless asked for.
- Table 4 holds relative changes, 100 × (feature − parameter) / parameter, of the same method
  (`relative_change`, `relative_change_table`); `apply_relative_change` derives absolute
  feature-level rows from Table 1 × (1 + change / 100).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType
from typing import Any

__all__ = [
    "ADMISSIBLE_LEVELS",
    "BAND",
    "BASELINE",
    "MARKS",
    "ResultTable",
    "Row",
    "ROW_META",
    "RowKey",
    "admissible_marks",
    "apply_relative_change",
    "baseline_mark",
    "mean_rank",
    "rank",
    "relative_change",
    "relative_change_table",
    "table_from_records",
    "top_k",
]

BASELINE = "Baseline"
BAND = 0.01  # Table 1 caption: "more than 0.01" is ↑/↓, "within 0.01" is "–"
MARKS = ("↑", "↓", "–")
ADMISSIBLE_LEVELS = ("parameter", "feature", "n/a")
ROW_KINDS = ("method", "measure")

RowKey = tuple[str, str]  # (method, level)

ROW_META = ("method", "level", "citation", "markers", "note")


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Row:
    """One printed row: a method (or, in Tables 5-7, a measure) at one gradient level."""

    method: str
    level: str
    values: Mapping[str, float | None]
    markers: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None
    citation: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _freeze(self.values))
        object.__setattr__(self, "markers", _freeze(self.markers))

    @property
    def key(self) -> RowKey:
        return (self.method, self.level)


@dataclass(frozen=True)
class ResultTable:
    """Rows × columns with a direction per column; validated on construction (ValueError names `origin`)."""

    name: str
    columns: tuple[str, ...]
    higher_is_better: Mapping[str, bool]
    rows: tuple[Row, ...]
    units: Mapping[str, str] = field(default_factory=dict)
    printed_decimals: Mapping[str, int] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    row_kind: str = "method"
    notes: tuple[str, ...] = ()
    not_reported: tuple[Mapping[str, str], ...] = ()
    origin: str = "<memory>"
    _index: Mapping[RowKey, Row] = field(default_factory=dict, init=False, repr=False, compare=False)
    _rank_cache: dict[str, dict[RowKey, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "notes", tuple(self.notes))
        for name in ("higher_is_better", "units", "printed_decimals", "source"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        object.__setattr__(self, "not_reported", tuple(_freeze(m) for m in self.not_reported))
        self._validate()
        object.__setattr__(self, "_index", MappingProxyType({r.key: r for r in self.rows}))

    # -- validation --------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        raise ValueError(f"{self.origin}: {message}")

    def _validate(self) -> None:
        cols = self.columns
        if not cols or not all(isinstance(c, str) and c for c in cols):
            self._fail("columns must be a non-empty list of non-empty strings")
        if len(set(cols)) != len(cols):
            self._fail(f"duplicate columns in {list(cols)}")
        for mapping_name in ("higher_is_better", "units", "printed_decimals"):
            unknown = sorted(set(getattr(self, mapping_name)) - set(cols))
            if unknown:
                self._fail(f"unknown column(s) {unknown} in {mapping_name}")
        missing = [c for c in cols if c not in self.higher_is_better]
        if missing:
            self._fail(f"missing higher_is_better for column(s) {missing}")
        for c, v in self.higher_is_better.items():
            if not isinstance(v, bool):
                self._fail(f"higher_is_better[{c!r}] must be true or false, got {v!r}")
        for c, d in self.printed_decimals.items():
            if not isinstance(d, int) or isinstance(d, bool) or d < 0:
                self._fail(f"printed_decimals[{c!r}] must be a non-negative integer, got {d!r}")
        if self.row_kind not in ROW_KINDS:
            self._fail(f"row_kind must be one of {ROW_KINDS}, got {self.row_kind!r}")
        seen: set[RowKey] = set()
        for i, row in enumerate(self.rows):
            where = f"row {i} ({row.method!r}, {row.level!r})"
            if not isinstance(row.method, str) or not row.method:
                self._fail(f"row {i}: method must be a non-empty string")
            if row.level not in ADMISSIBLE_LEVELS:
                self._fail(f"{where}: level must be one of {ADMISSIBLE_LEVELS}")
            if row.key in seen:
                self._fail(f"duplicate row {row.key}")
            seen.add(row.key)
            unknown = sorted(set(row.values) - set(cols))
            if unknown:
                self._fail(f"{where}: unknown column(s) {unknown}")
            absent = [c for c in cols if c not in row.values]
            if absent:
                self._fail(f"{where}: no value for column(s) {absent} (use null plus a note)")
            for c, v in row.values.items():
                if v is None:
                    if not row.note:
                        self._fail(f"{where}: null in {c!r} needs a note saying why")
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    self._fail(f"{where}: {c!r} must be a finite number or null, got {v!r}")
            unknown = sorted(set(row.markers) - set(cols))
            if unknown:
                self._fail(f"{where}: markers for unknown column(s) {unknown}")
            bad = {c: m for c, m in row.markers.items() if m not in MARKS}
            if bad:
                self._fail(f"{where}: markers must be one of {MARKS}, got {bad}")

    # -- access ------------------------------------------------------------------------------
    @property
    def title(self) -> str:
        """'Table N' for a paper table ('Table 1 + Table 4' when derived), else the table's name."""
        if "derived_from" in self.source:
            return " + ".join(self.source["derived_from"])
        n = self.source.get("table")
        return f"Table {n}" if n is not None else self.name

    def keys(self) -> tuple[RowKey, ...]:
        return tuple(r.key for r in self.rows)

    def has(self, method: str, level: str | None = None) -> bool:
        return any(r.method == method and (level is None or r.level == level) for r in self.rows)

    def row(self, method: str, level: str | None = None) -> Row:
        if level is not None:
            try:
                return self._index[(method, level)]
            except KeyError:
                raise KeyError(f"{self.title}: no row ({method!r}, {level!r})") from None
        found = [r for r in self.rows if r.method == method]
        if not found:
            raise KeyError(f"{self.title}: no row {method!r}")
        if len(found) > 1:
            raise KeyError(f"{self.title}: {method!r} has rows at levels {[r.level for r in found]}; pass level=")
        return found[0]

    def value(self, method: str, column: str, level: str | None = None) -> float | None:
        self._check_column(column)
        return self.row(method, level).values[column]

    def _check_column(self, column: str) -> None:
        if column not in self.columns:
            raise KeyError(f"{self.title}: unknown column {column!r} (columns: {list(self.columns)})")

    def is_better(self, a: float, b: float, column: str) -> bool:
        """Strictly better in `column`'s direction."""
        return a > b if self.higher_is_better[column] else a < b

    def label(self, key: RowKey | Row) -> str:
        """The row's method, with its level when the table holds that method at several levels."""
        method, level = key.key if isinstance(key, Row) else key
        if sum(r.method == method for r in self.rows) > 1:
            return f"{method} ({level})"
        return method

    def fmt(self, method: str, column: str, level: str | None = None) -> str:
        """A cell as the paper prints it, e.g. '61.3%' or '0.488'."""
        row = self.row(method, level)
        return _fmt_value(row.values[column], self.printed_decimals.get(column), self._is_percent(column))

    def cell(self, key: RowKey, column: str) -> str:
        """Evidence text naming one cell: 'CosReg AMask mAP 0.488'."""
        return f"{self.label(key)} {column} {self.fmt(key[0], column, key[1])}"

    def _is_percent(self, column: str) -> bool:
        return self.units.get(column, "").startswith("percent")


def _fmt_value(v: float | None, decimals: int | None, percent: bool) -> str:
    if v is None:
        return "null"
    if decimals is None:
        text = f"{v:.6g}"
    elif round(v, decimals) == v:
        text = f"{v:.{decimals}f}"
    else:  # a derived value carries one more decimal than the printed ones
        text = f"{v:.{decimals + 1}f}"
    return text + ("%" if percent else "")


def table_from_records(
    name: str,
    columns: Iterable[str],
    higher_is_better: Mapping[str, bool],
    records: Iterable[Mapping[str, Any]],
    **kwargs: Any,
) -> ResultTable:
    """Build a table of our own results from dicts {'method', 'level', <column>: value, ...}."""
    columns = tuple(columns)
    rows = []
    for rec in records:
        unknown = sorted(set(rec) - set(ROW_META) - set(columns))
        if unknown:
            raise ValueError(f"{kwargs.get('origin', name)}: record {rec.get('method')!r}: unknown column(s) {unknown}")
        rows.append(
            Row(
                method=rec["method"],
                level=rec.get("level", "parameter"),
                values={c: rec[c] for c in columns if c in rec},
                markers=rec.get("markers", {}),
                note=rec.get("note"),
                citation=rec.get("citation"),
            )
        )
    kwargs.setdefault("origin", name)
    return ResultTable(name=name, columns=columns, higher_is_better=higher_is_better, rows=tuple(rows), **kwargs)


# -- ranking -----------------------------------------------------------------------------------
def rank(
    table: ResultTable, column: str, *, exclude: Iterable[str] = (BASELINE,), keys: Iterable[RowKey] | None = None
) -> dict[RowKey, int]:
    """Competition rank per row in `column` (1 = best); rows with null are left out."""
    table._check_column(column)
    excluded = tuple(exclude)
    default = excluded == (BASELINE,) and keys is None
    if default and column in table._rank_cache:
        return dict(table._rank_cache[column])
    wanted = None if keys is None else set(keys)
    pool = [
        (r.key, r.values[column])
        for r in table.rows
        if r.method not in excluded and r.values[column] is not None and (wanted is None or r.key in wanted)
    ]
    ranks = {k: 1 + sum(table.is_better(w, v, column) for _, w in pool) for k, v in pool}
    if default:
        table._rank_cache[column] = dict(ranks)
    return ranks


def top_k(table: ResultTable, column: str, k: int = 3, **kwargs: Any) -> frozenset[RowKey]:
    """Rows ranked k or better in `column` (ties at rank k are all in)."""
    return frozenset(key for key, r in rank(table, column, **kwargs).items() if r <= k)


def mean_rank(table: ResultTable, columns: Iterable[str] | None = None, **kwargs: Any) -> dict[RowKey, float]:
    """Mean competition rank over `columns` (default: all), for rows ranked in every column, in the
    table's row order (so tied rows keep that order when sorted by rank)."""
    cols = tuple(columns or table.columns)
    ranks = [rank(table, c, **kwargs) for c in cols]
    return {k: sum(r[k] for r in ranks) / len(cols) for k in table.keys() if all(k in r for r in ranks)}


# -- baseline band (Table 1 caption) -----------------------------------------------------------
_BAND = Decimal(repr(BAND))  # compared on the printed decimals, exactly


def _diff_vs_baseline(table: ResultTable, method: str, column: str, level: str | None) -> Decimal:
    """`method` − the Baseline in `column` on the exact decimals of the two values, positive when better."""
    value = table.value(method, column, level)
    base = table.value(BASELINE, column)
    if value is None or base is None:
        raise ValueError(f"{table.title}: no value to compare for {method!r} / {BASELINE!r} in {column!r}")
    diff = Decimal(repr(float(value))) - Decimal(repr(float(base)))
    return diff if table.higher_is_better[column] else -diff


def baseline_mark(table: ResultTable, method: str, column: str, *, level: str | None = None) -> str:
    """'↑' better than the Baseline by more than `BAND`, '↓' worse by more than `BAND`, else '–'
    (Table 1 caption)."""
    diff = _diff_vs_baseline(table, method, column, level)
    return "↑" if diff > _BAND else "↓" if diff < -_BAND else "–"


def admissible_marks(table: ResultTable, method: str, column: str, *, level: str | None = None) -> frozenset[str]:
    """Marks consistent with the printed values: a printed difference of exactly `BAND` may hide a
    true difference on either side of it, so both '–' and the arrow are admissible there."""
    diff = _diff_vs_baseline(table, method, column, level)
    if abs(diff) == _BAND:
        return frozenset({"–", "↑" if diff > 0 else "↓"})
    return frozenset({baseline_mark(table, method, column, level=level)})


# -- feature vs parameter level (Table 4) ------------------------------------------------------
def relative_change(
    table: ResultTable, method: str, column: str, *, level: str = "feature", base_level: str = "parameter"
) -> float:
    """Percent change of `method` at `level` relative to the same method at `base_level` (Table 4)."""
    new = table.value(method, column, level)
    old = table.value(method, column, base_level)
    if new is None or old is None or old == 0:
        raise ValueError(f"{table.title}: cannot take a relative change of {method!r} in {column!r}")
    return 100.0 * (new - old) / old


def relative_change_table(
    table: ResultTable,
    *,
    name: str = "table4",
    level: str = "feature",
    base_level: str = "parameter",
    printed_decimals: int | None = None,
    notes: Iterable[str] = (),
) -> ResultTable:
    """Table 4 from a table holding methods at both levels (our runs, or Table 1 + Table 4): one row
    per method at `level` that also has a `base_level` row, 100 × (level − base_level) / base_level
    per column (`relative_change`). A cell is null when either value is null or the base value is 0,
    and its row's note says why, followed by the notes of the two rows it comes from."""
    rows = []
    for r in table.rows:
        if r.level != level or not table.has(r.method, base_level):
            continue
        base = table.row(r.method, base_level)
        values: dict[str, float | None] = {}
        why: dict[str, list[str]] = {}  # reason -> its columns
        for c in table.columns:
            new, old = r.values[c], base.values[c]
            if new is None or old is None:
                values[c] = None
                why.setdefault(f"{level if new is None else base_level}-level value is null", []).append(c)
            elif old == 0:
                values[c] = None
                why.setdefault(f"{base_level}-level value is 0", []).append(c)
            else:
                values[c] = relative_change(table, r.method, c, level=level, base_level=base_level)
        reasons = [f"{', '.join(cs)}: {w}" for w, cs in why.items()]
        sources = [f"{row.level}: {row.note}" for row in (r, base) if row.note]
        rows.append(
            Row(method=r.method, level=level, values=values, note="; ".join(reasons + sources) if why else None)
        )
    return ResultTable(
        name=name,
        columns=table.columns,
        higher_is_better=table.higher_is_better,
        rows=tuple(rows),
        units={
            c: f"percent relative change of {c}: 100 × ({level} − {base_level}) / {base_level}, same method"
            for c in table.columns
        },
        printed_decimals={} if printed_decimals is None else {c: printed_decimals for c in table.columns},
        notes=tuple(notes),
        origin=name,
    )


def apply_relative_change(
    base: ResultTable, changes: ResultTable, *, base_level: str = "parameter", extra_decimals: int = 1
) -> ResultTable:
    """`base` plus one derived row per row of `changes` (e.g. Table 1 + Table 4 → feature-level rows).

    Derived value = base value × (1 + change / 100), rounded to the base table's printed decimals
    plus `extra_decimals`. Rows already present in `base` are kept as they are (not derived).
    """
    if tuple(changes.columns) != tuple(base.columns):
        raise ValueError(
            f"{changes.title} columns {list(changes.columns)} differ from {base.title} columns {list(base.columns)}"
        )
    rows = list(base.rows)
    for ch in changes.rows:
        if base.has(ch.method, ch.level) or not base.has(ch.method, base_level):
            continue
        src = base.row(ch.method, base_level)
        values: dict[str, float | None] = {}
        for c in base.columns:
            b, rel = src.values[c], ch.values[c]
            if b is None or rel is None:
                values[c] = None
                continue
            v = b * (1.0 + rel / 100.0)
            d = base.printed_decimals.get(c)
            values[c] = round(v, d + extra_decimals) if d is not None else v
        note = f"derived: {base.title} {ch.method} ({base_level}) × (1 + {changes.title} change / 100)"
        rows.append(Row(method=ch.method, level=ch.level, values=values, note=note, citation=ch.citation))
    return replace(
        base,
        rows=tuple(rows),
        name=f"{base.name}+{changes.name}",
        source={**base.source, "derived_from": [base.title, changes.title]},
        origin=f"apply_relative_change({base.origin}, {changes.origin})",
    )
