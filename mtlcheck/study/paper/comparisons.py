"""Claims as signed paired comparisons, decided by intersection–union and Bonferroni–union tests.

Most of the paper's claims are statements about pairs of cells: "FAMO beats MGDA on every metric",
"GradVac is above the Baseline on all six", "PCGrad's FD is not below the Baseline's", "CosReg is
top-3" (at most two rows better than it). Such a claim is a formula over *literals*:

- `Better(table, column, a, b)`: row `a` is strictly better than row `b` in that column (b = None:
  better than 0, for a table of changes); `~lit`, its negation (not better);
- `AtLeast(k, items)`: at least k of the items hold; `all_of`, `any_of`, `at_most` are its cases;
- `Missing(table)`: the part of the claim that a table these runs do not give would decide (a
  claim about CityScapes *and* NYU-v2 judged on a study of the CityScapes analog alone). It is
  never established either way, so a formula that has one can still be decided by its other parts
  where logic allows: a conjunction is contradicted by any false conjunct, whatever the missing
  one says (three-valued logic). The levels below count only the items that can be declared, so
  a missing part costs nothing and the multiplicity counts the cells read.

Each literal is decided by a one-sided paired t test on the per-seed differences of its two rows
over the seeds they share (`statistics.one_sided`): computed directly between the two rows, so a
comparison of two non-Baseline rows never goes through two Baseline-anchored intervals. A
literal with p ≤ α on its side is *established*.

"holds" is declared when the literals established true satisfy the formula; "contradicted" when the
literals established false satisfy its negation. Levels (one-sided α = 2.5 % at the root, the two
sides of a 95 % interval):

- a k-of-n node gives α/(n − k + 1) to each item. If fewer than k items are true, at least
  n − k + 1 are false, and declaring the node needs at least k − t of the false ones declared (t
  true ones): by Markov's inequality on their count, probability ≤ (n − t)·α'/(k − t) ≤ (n − k + 1)·α'.
  So an all-of node passes its α to every item (intersection–union test, Berger 1982,
  "Multiparameter hypothesis testing and acceptance sampling", Technometrics 24: no Bonferroni for
  "holds"), an any-of node gives α/n (Bonferroni; the negation of an all-of node is an any-of node,
  so "contradicted" of a conjunction pays the Bonferroni over its items, as it must), "top-3 among
  16" (at most 2 of 15 better) α/3 rather than α/15;
- a literal reached twice keeps the smaller α.

Induction over the formula shows that a wrong "holds" (or "contradicted") has probability ≤ α
whatever the true means: ties decide nothing (a tied literal is established either way with
probability ≤ α) and the multiplicity counts only the cells the claim reads. The ratio p/α of a
literal, and at a k-of-n node the k-th smallest ratio of its items, is the claim's adjusted
p-value for that direction: ≤ 1 exactly when it is declared, and the literal it comes from is the
*weakest link* reported beside the verdict, with its difference and simultaneous interval in the
column's units.

"equivalent": neither is declared, and every literal left open is equal within the column's margin
(`MARGINS`: the paper's 0.01 band of Table 1's caption for metrics, stated for the others) by two
one-sided tests at its level (Schuirmann 1987): the claim turns on differences smaller than any
the paper would mark.

A `design` maps each literal's shared seed count to the look it belongs to and that look's α
(`mtlcheck.study.paper.sequential`): the fixed design spends the whole α at the seeds there are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from mtlcheck.study.paper.result_table import ResultTable, RowKey
from mtlcheck.study.statistics import Estimate, equivalent, improvement, one_sided, paired

__all__ = [
    "ALPHA",
    "FIXED",
    "AtLeast",
    "Missing",
    "Better",
    "Decision",
    "Design",
    "Formula",
    "Link",
    "all_of",
    "any_of",
    "can_be_established",
    "at_most",
    "decide",
    "literals",
    "margin",
    "missing_tables",
    "negate",
    "point",
]

ALPHA = 0.025  # one-sided level at the root of each direction: the sides of a 95 % interval
IMPROVEMENT_FROM = 10  # seeds from which the probability of improvement is shown


@dataclass(frozen=True)
class Better:
    """Row `a` strictly better than row `b` in `column` of `table` (either None: the value 0, for a
    table of changes); `negated`: not better."""

    table: str
    column: str
    a: RowKey | None
    b: RowKey | None = None
    negated: bool = False

    def __invert__(self) -> Better:
        return replace(self, negated=not self.negated)

    @property
    def positive(self) -> Better:
        return replace(self, negated=False)

    def text(self) -> str:
        a, b = ("0" if k is None else f"{k[0]} ({k[1]})" for k in (self.a, self.b))
        return f"{a} {'not better than' if self.negated else 'better than'} {b} on {self.column} [{self.table}]"


@dataclass(frozen=True)
class AtLeast:
    """At least `k` of `items` hold."""

    k: int
    items: tuple[Formula, ...]

    def __invert__(self) -> AtLeast:
        return negate(self)


@dataclass(frozen=True)
class Missing:
    """The part of a claim that `table` would decide, absent from these runs: never established
    either way (its negation is itself missing)."""

    table: str

    def __invert__(self) -> Missing:
        return self

    def text(self) -> str:
        return f"the part {self.table} would decide (not in these runs)"


Formula = Better | AtLeast | Missing


def all_of(items: Iterable[Formula]) -> AtLeast:
    items = tuple(items)
    return AtLeast(len(items), items)


def any_of(items: Iterable[Formula]) -> AtLeast:
    return AtLeast(1, tuple(items))


def at_most(k: int, items: Iterable[Formula]) -> AtLeast:
    """At most `k` of `items` hold: at least n − k of their negations."""
    items = tuple(items)
    return AtLeast(len(items) - k, tuple(negate(i) for i in items))


def negate(f: Formula) -> Formula:
    """¬f with the negation pushed to the literals: ¬(≥k of n) = ≥(n − k + 1) of the negations."""
    if isinstance(f, (Better, Missing)):
        return ~f
    return AtLeast(len(f.items) - f.k + 1, tuple(negate(i) for i in f.items))


def literals(f: Formula) -> list[Better]:
    """The literals of `f` (positive form), each once, in order."""
    out: dict[Better, None] = {}

    def walk(g: Formula) -> None:
        if isinstance(g, Better):
            out[g.positive] = None
        elif isinstance(g, AtLeast):
            for i in g.items:
                walk(i)

    walk(f)
    return list(out)


def missing_tables(f: Formula) -> list[str]:
    """The tables of the `Missing` parts of `f`, each once, in order."""
    if isinstance(f, Missing):
        return [f.table]
    if isinstance(f, Better):
        return []
    return list(dict.fromkeys(t for i in f.items for t in missing_tables(i)))


def point(f: Formula, tables: Mapping[str, ResultTable]) -> bool:
    """`f` on the point values (the means; the paper's own numbers); KeyError for a `Missing` part."""
    if isinstance(f, Missing):
        raise KeyError(f"{f.table}: not in these runs")
    if isinstance(f, Better):
        t = tables[f.table]
        a, b = (0.0 if k is None else t.row(*k).values[f.column] for k in (f.a, f.b))
        if a is None or b is None:
            raise KeyError(f"{t.title}: no value for {f.text()}")
        return t.is_better(a, b, f.column) != f.negated
    return sum(point(i, tables) for i in f.items) >= f.k


def margin(table: ResultTable, column: str) -> float:
    """The margin within which two cells of `column` count as equal (`MARGINS` by the table's kind)."""
    if table.row_kind == "measure":
        return MARGINS["ranking similarity"]
    if "change" in (table.units.get(column, "") + table.title).lower() or table.origin in ("table4", "relative_change"):
        return MARGINS["relative change"]
    return MARGINS["metric"]


MARGINS = {
    "metric": 0.01,  # Table 1's caption: differences within 0.01 of the Baseline are marked '–'
    "relative change": 1.0,  # percentage points of a Table 4 change
    "ranking similarity": 5.0,  # percentage points of a ranking similarity (Tables 5-7)
}


@dataclass(frozen=True)
class Design:
    """When a literal may be decided and at what level: `looks` (seed counts, ascending; empty: a
    fixed design, one look at the seeds there are) and the one-sided α each look spends. A literal
    whose rows share n seeds is tested on the first m of them, m the largest look ≤ n, at
    `alpha_at(m)`; below the first look it is not tested."""

    looks: tuple[int, ...] = ()
    alpha: float = ALPHA

    def look(self, seeds: Iterable[int]) -> tuple[int, float] | None:
        """(m, α) of the look a comparison over the shared `seeds` is tested at: the fixed design,
        every seed at α; else the largest look m whose seeds 0..m−1 are all there (a hole or a seed
        beyond the prefix is not read, so each look always tests the same seeds); None below."""
        seeds = set(seeds)
        if not self.looks:
            return (len(seeds), self.alpha) if len(seeds) >= 2 else None
        seen = [m for m in self.looks if seeds.issuperset(range(m))]
        if not seen:
            return None
        m = seen[-1]
        return m, self.alpha_at(m)

    def alpha_at(self, m: int) -> float:
        return self.alpha / len(self.looks) if self.looks else self.alpha


FIXED = Design()


@dataclass(frozen=True)
class Link:
    """One literal with its evidence: the paired differences in the better direction (`signed`),
    the look it was tested at, its level in the pass that reads it, and its ratio p/α there."""

    literal: Better
    signed: Estimate | None
    raw: Estimate | None  # a − b (or a) in the column's units, for the reader
    alpha: float
    ratio: float

    def text(self, decimals: int = 4) -> str:
        if self.raw is None or self.raw.n < 2:
            return f"{self.literal.text()}: too few shared seeds to test"
        if self.alpha <= 0:
            return f"{self.literal.text()}: {self.raw.n} shared seeds, below the first look: not tested"
        h = self.raw.half_width_at(1.0 - 2.0 * self.alpha)
        what = "Δ" if None not in (self.literal.a, self.literal.b) else "change"
        out = (
            f"{self.literal.text()}: {what} {self.raw.mean:+.{decimals}f}, simultaneous interval "
            f"[{self.raw.mean - h:+.{decimals}f}, {self.raw.mean + h:+.{decimals}f}] over {self.raw.n} seeds "
            f"(one-sided level {self.alpha:.2g}, p/α = {self.ratio:.3g})"
        )
        if self.signed is not None and self.signed.n >= IMPROVEMENT_FROM:
            out += "; " + improvement(self.signed).text()
        return out


@dataclass(frozen=True)
class Decision:
    """The verdict of a formula on our tables, with the weakest link of each direction."""

    verdict: str  # holds | contradicted | equivalent | inconclusive
    holds: Link | None  # the literal that bounds the "holds" direction (ratio ≤ 1: declared)
    fails: Link | None  # the same for "contradicted"
    ratios: tuple[float, float]  # adjusted p-values (×α) of holds and contradicted
    open: tuple[Link, ...]  # literals established neither way
    equal: tuple[Link, ...]  # of those, the ones equal within their margin
    seeds: int  # smallest shared seed count among the literals

    @property
    def deciding(self) -> Link | None:
        """The link that decides (or would decide) the claim."""
        if self.verdict == "holds":
            return self.holds
        if self.verdict == "contradicted":
            return self.fails
        cands = [x for x in (self.holds, self.fails) if x is not None]
        return min(cands, key=lambda x: x.ratio) if cands else None


def collect_levels(f: Formula, out: dict[Better, float], alpha: float = 1.0) -> None:
    """Into `out`: the level of each signed literal of `f` when "f is established" is tested at
    `alpha` (a k-of-n node: α/(n − k + 1) to each item, so α for all-of and α/n for any-of; the
    smaller where a literal recurs)."""
    if isinstance(f, Better):
        out[f] = min(out.get(f, 1.0), alpha)
        return
    if isinstance(f, Missing):
        return
    if f.k <= 0:
        return
    # a missing part is never declared: the node is declared by k of its n' other items, and the
    # Markov bound of the module doc holds with n' in place of n
    n = sum(not isinstance(i, Missing) for i in f.items)
    child = alpha / max(1, n - f.k + 1)
    for i in f.items:
        collect_levels(i, out, child)


def _ratio(f: Formula, ratio_of: Callable[[Better], tuple[float, Better]]) -> tuple[float, Better | None]:
    if isinstance(f, Better):
        return ratio_of(f)
    if isinstance(f, Missing):
        return math.inf, None
    if f.k <= 0:
        return 0.0, None
    if f.k > len(f.items):
        return math.inf, None
    rs = sorted((_ratio(i, ratio_of) for i in f.items), key=lambda r: r[0])
    return rs[f.k - 1]


def can_be_established(f: Formula) -> bool:
    """Whether some outcome of the comparisons would establish `f` (False: a conjunction with a
    `Missing` part, which can only be contradicted)."""
    return _ratio(f, lambda lit: (0.0, lit))[0] < math.inf


def _differences(lit: Better, tables: Mapping[str, ResultTable]) -> tuple[Estimate, Estimate] | None:
    """(signed, raw) per-seed differences of a literal's rows over their shared seeds: signed > 0
    when `a` is better; None when the table carries no per-seed values (the paper's numbers)."""
    t = tables[lit.table]
    est = getattr(t, "estimate", None)
    if est is None:
        return None
    per_seed = {}
    for k in (lit.a, lit.b):
        if k is not None:
            e = est(k, lit.column)
            if e is None:
                return None
            per_seed[k] = dict(zip(e.seeds, e.values))
    if not per_seed:
        return None
    seeds = next(iter(per_seed.values()))
    a, b = (dict.fromkeys(seeds, 0.0) if k is None else per_seed[k] for k in (lit.a, lit.b))
    sign = 1.0 if t.higher_is_better[lit.column] else -1.0
    raw = paired(a, b)
    if raw is None:
        return None
    signed = Estimate(raw.seeds, tuple(sign * v for v in raw.values), raw.level)
    return signed, raw


def has_seeds(f: Formula, tables: Mapping[str, ResultTable]) -> bool:
    """Whether every literal of `f` has per-seed values (our runs) to be tested on."""
    return all(_differences(lit, tables) is not None for lit in literals(f))


Evidence = Mapping[Better, tuple[Estimate | None, Estimate | None, float, float, float]]


def evidence(f: Formula, tables: Mapping[str, ResultTable], design: Design = FIXED) -> dict:
    """Per literal of `f` (positive form): (signed, raw, α of its look, p₊, p₋), tested on the seeds
    0..m−1 of its look (`Design.look`; the fixed design: every shared seed); untested (α = 0, p = 1)
    below the first look."""
    out = {}
    for lit in literals(f):
        d = _differences(lit, tables)
        if d is None:
            raise KeyError(f"no per-seed values for {lit.text()}")
        signed, raw = d
        look = design.look(signed.seeds)
        if look is None:
            out[lit] = (signed, raw, 0.0, 1.0, 1.0)
            continue
        m, a = look
        if design.looks:  # the look's seeds 0..m−1, by id
            signed, raw = signed.only(range(m)), raw.only(range(m))
        out[lit] = (signed, raw, a, *one_sided(signed))
    return out


def _pass(g: Formula, ev: Evidence) -> tuple[float, Link | None, dict[Better, float]]:
    """(adjusted ratio, weakest link, relative level of each signed literal) of "g is established"."""
    levels: dict[Better, float] = {}
    collect_levels(g, levels)

    def ratio_of(lit: Better) -> tuple[float, Better]:
        _, _, a, p_pos, p_neg = ev[lit.positive]
        alpha = a * levels[lit]
        return ((p_neg if lit.negated else p_pos) / alpha if alpha > 0 else math.inf), lit

    r, lit = _ratio(g, ratio_of)
    if lit is None:
        return r, None, levels
    signed, raw, a, _, _ = ev[lit.positive]
    return r, Link(lit, signed, raw, a * levels[lit], ratio_of(lit)[0]), levels


def ratios(f: Formula, ev: Evidence) -> tuple[float, float]:
    """Adjusted ratios (≤ 1: declared) of "holds" and "contradicted" on the evidence given."""
    return _pass(f, ev)[0], _pass(negate(f), ev)[0]


def decide(f: Formula, tables: Mapping[str, ResultTable], design: Design = FIXED) -> Decision:
    """The three-valued (four with "equivalent") verdict of `f` on our tables (module doc)."""
    ev = evidence(f, tables, design)
    r_hold, hold_link, hold_levels = _pass(f, ev)
    r_fail, fail_link, fail_levels = _pass(negate(f), ev)
    if r_hold <= 1.0:
        verdict = "holds"
    elif r_fail <= 1.0:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    open_, equal = [], []
    for lit, (signed, raw, a, p_pos, p_neg) in ev.items():
        rel = min(levels.get(x, 1.0) for levels in (hold_levels, fail_levels) for x in (lit, ~lit))
        alpha = a * rel
        if alpha > 0 and min(p_pos, p_neg) <= alpha:
            continue  # established one way
        link = Link(lit, signed, raw, alpha, min(p_pos, p_neg) / alpha if alpha > 0 else math.inf)
        open_.append(link)
        if alpha > 0 and raw is not None and equivalent(raw, margin(tables[lit.table], lit.column), alpha):
            equal.append(link)
    if verdict == "inconclusive" and open_ and len(equal) == len(open_) and not missing_tables(f):
        verdict = "equivalent"
    seeds = min((e[0].n for e in ev.values() if e[0] is not None), default=0)
    return Decision(verdict, hold_link, fail_link, (r_hold, r_fail), tuple(open_), tuple(equal), seeds)


def decision_text(d: Decision) -> str:
    """The weakest link of the verdict (or of each direction when undecided), in words."""
    if d.verdict in ("holds", "contradicted"):
        link = d.deciding
        return (
            "decided by the formula's structure alone"
            if link is None
            else f"decided by the weakest link: {link.text()}"
        )
    parts = []
    for name, link, r in (("holds", d.holds, d.ratios[0]), ("contradicted", d.fails, d.ratios[1])):
        if link is not None:
            parts.append(f"closest to '{name}' (adjusted p/α = {r:.3g}): {link.text()}")
    if d.verdict == "equivalent":
        parts.insert(0, f"all {len(d.open)} comparison(s) left open are equal within their margins")
    return "; ".join(parts)
