"""The claim registry: `Claim`, `Verdict`, and the `@claim(...)` decorator that registers a
predicate as a claim, in the order the section modules register them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mtlcheck.study.paper.result_table import ResultTable, RowKey

Tables = Mapping[str, ResultTable]


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
    verdict counts their cells only (suites/claims/test_calibration.py checks this). A row without
    values (its runs diverged, failed or have not finished) keeps the claims that read it from a verdict: every row of
    their tables, but for an `only_named` claim its named rows and the Baseline, and in a table of
    measures (Tables 5-7) the measures it names (`verdicts.reads`).

    `formula`: the same statement as a formula of signed paired comparisons
    (`mtlcheck.study.paper.comparisons`), built from the tables (it raises `ClaimNotEvaluable` as the
    predicate does). On our runs such a claim is decided comparison by comparison; a claim without one
    (rankings of rankings: the ranking-similarity claims, the caption's markers) by the search of a
    simultaneous region. On the point values the formula and the predicate must agree (checked at
    every verdict and in suites/claims)."""

    id: str
    section: str
    statement: str
    source_tables: tuple[str, ...]
    predicate: Callable[[Tables], Verdict] = field(repr=False)
    notes: str = ""
    named: tuple[str | RowKey, ...] = ()
    only_named: bool = False  # the verdict depends on the named rows and the Baseline only
    formula: Callable[[Tables], Any] | None = field(default=None, repr=False)

    def evaluate(self, tables: Tables) -> Verdict:
        missing = [t for t in self.source_tables if t not in tables]
        if missing:
            raise ClaimNotEvaluable(f"{self.id}: needs table(s) {missing}")
        return self.predicate(tables)


_REGISTRY: list[Claim] = []
_closed = False  # set once CLAIMS is built


def claim(
    *,
    id: str,
    section: str,
    statement: str,
    source_tables: tuple[str, ...],
    notes: str = "",
    named: tuple[str | RowKey, ...] = (),
    only_named: bool = False,
    formula: Callable[[Tables], Any] | None = None,
) -> Callable[[Callable[[Tables], Verdict]], Callable[[Tables], Verdict]]:
    """Register the decorated predicate as the `Claim` with these fields, after the claims
    registered before it (`CLAIMS` keeps this order); the predicate is returned unchanged, so one
    predicate may back several claims. ValueError when `id` is taken; RuntimeError once `CLAIMS`
    is built by the package (a later claim would be in no verdict table)."""

    def register(predicate: Callable[[Tables], Verdict]) -> Callable[[Tables], Verdict]:
        if _closed:
            raise RuntimeError(f"claim {id!r}: claims are registered in {__package__} only, before CLAIMS is built")
        if any(c.id == id for c in _REGISTRY):
            raise ValueError(f"claim {id!r} is registered twice")
        _REGISTRY.append(Claim(id, section, statement, source_tables, predicate, notes, named, only_named, formula))
        return predicate

    return register


def close() -> tuple[Claim, ...]:
    """Every claim registered, in order; no claim can be registered after this."""
    global _closed
    _closed = True
    return tuple(_REGISTRY)
