"""Verdicts of the paper's claims: three-valued on our runs, two-valued on the paper's own numbers.

On the paper's numbers (no seeds) a claim holds or is contradicted, as its predicate says. On our
runs a cell is a mean over seeds known up to an interval, and a verdict is one of

- holds / contradicted: decided at a 2.5 % one-sided level per direction (by comparisons: a wrong
  decision has probability ≤ 2.5 % whatever the truth; by region search: the region covers the
  truth with probability ≥ 95 %, searched rather than covered, so measured in
  suites/claims/test_calibration.py; ties decide nothing either way);
- equivalent: neither, and every comparison the claim turns on is equal within its margin
  (`comparisons.MARGINS`): the claim is about differences smaller than the paper would mark;
- inconclusive: neither (or one seed: no interval);
- not evaluable: the tables lack a row, column or value the claim needs (the evidence says which);
  a row whose runs did not all finish (or whose value is undefined) has null values and is removed,
  and every claim that reads it (`reads`: all rows of its tables, but for an `only_named` claim its
  named rows and the Baseline, and in a table of measures the measures it names) is not evaluable,
  its evidence naming the row and why; claims that do not read it are judged on the rest as usual.
  A claim with a comparison form that needs a table these runs do not give (Table 3 in a study of
  the CityScapes analog alone) is judged on the tables they give, its missing part never decided
  (`comparisons.Missing`): "contradicted" when the parts given decide it whatever the missing one
  says (a conjunction with a false part), else not evaluable, with how close the parts given are;
- error: the predicate raised anything else (a bug, shown rather than hidden).

Two procedures, named in the evidence:

- comparisons (claims with a `formula`, most of them): each signed paired comparison between two
  rows is tested directly on the seeds they share, "holds" by intersection–union, "contradicted"
  by Bonferroni over the comparisons that can falsify the claim (`mtlcheck.study.paper.comparisons`);
  the weakest link is reported with its interval in the column's units. A `design` spreads the
  error over looks when seeds are added until decided (`mtlcheck.study.paper.sequential`).
- region search (the rest: rankings of rankings, mean ranks): the predicate must give one answer
  everywhere in a simultaneous 95 % region of the seed means the claim reads — the Student-t
  interval over seeds of the Baseline and of each row's paired difference to it, each at level
  1 − 0.05/K for the K cells the claim depends on (Bonferroni; `only_named` claims count their
  named rows and the Baseline only); derived tables (relative change, ranking similarity) get each
  cell's range over region draws. The box is searched, not covered: corners first — every
  combination of ends for the named rows, the other rows all at their better end, their worse end
  or each at a random end — then uniform points; suites/claims/test_calibration.py measures the
  false-decision rate. For an inconclusive verdict, `seeds` is about the smallest number of seeds
  at which the same region would decide at the observed means and spreads (a planning figure).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mtlcheck.study.paper import comparisons
from mtlcheck.study.paper.claims import CLAIMS, Claim, ClaimNotEvaluable
from mtlcheck.study.paper.our_study import Box, Study, UncertainTable, with_values
from mtlcheck.study.paper.result_table import BASELINE, ResultTable, RowKey
from mtlcheck.study.statistics import LEVEL, bonferroni_level

__all__ = [
    "MAX_SEEDS",
    "UNIFORM_DRAWS",
    "VERDICTS",
    "judge",
    "judge_all",
    "reads",
    "region_level",
    "region_reads",
    "removed_rows_read",
    "without_null_rows",
]

VERDICTS = ("holds", "contradicted", "equivalent", "inconclusive", "not evaluable", "error")
UNIFORM_DRAWS = 50  # points drawn uniformly in the region after the corner patterns
SEARCH_UNIFORM = 30  # the same, per tried seed count when estimating the seeds that would decide
SEARCH_CORNERS = 300  # corner patterns per tried seed count (a planning figure, not a verdict)
MAX_SEEDS = 256

Tables = Mapping[str, ResultTable]
Removed = Mapping[str, Mapping[RowKey, str]]  # table -> removed row -> "method (level): why"


def without_null_rows(tables: Tables) -> tuple[dict[str, ResultTable], dict[str, dict[RowKey, str]]]:
    """Tables without rows that have a null value (the claims compare numbers), and what was
    removed: per table, each removed row's key → "method (level): its note" (why it has no values)."""
    out, removed = {}, {}
    for name, t in tables.items():
        keep = tuple(r for r in t.rows if all(v is not None for v in r.values.values()))
        gone = {r.key: f"{r.method} ({r.level}): {r.note}" for r in t.rows if r not in keep}
        out[name] = t if not gone else dataclasses.replace(t, rows=keep)
        if gone:
            removed[name] = gone
    return out, removed


def reads(claim: Claim, table: ResultTable | None, key: RowKey) -> bool:
    """Whether the claim's verdict may depend on row `key` of `table`, one of its source tables: an
    `only_named` claim reads its named rows and the Baseline only; in a table of measures (Tables
    5-7, compared measure against measure by name) a claim reads the measures it names; any other
    claim reads every row (it may count, rank or select over them, as "most methods" or a top-3)."""
    return _reads_every_row(claim, table) or key[0] == BASELINE or _is_named(claim, key)


def _reads_every_row(claim: Claim, table: ResultTable | None) -> bool:
    return not claim.only_named and (table is None or table.row_kind != "measure")


def removed_rows_read(claim: Claim, tables: Tables, removed: Removed | None) -> str | None:
    """Why `claim` is not evaluable when a row it `reads` was removed from `tables` for lack of
    values (a plain sentence naming each such row and its note), else None. Judging it on the other
    rows would change what it says (a diverged method vanishing from a ranking), so it is not judged."""
    gone = {
        t: [why for key, why in (removed or {}).get(t, {}).items() if reads(claim, tables.get(t), key)]
        for t in claim.source_tables
    }
    gone = {t: rows for t, rows in gone.items() if rows}
    if not gone:
        return None
    where = "; ".join(f"in {t}, " + "; ".join(rows) for t, rows in gone.items())
    every = [t for t in gone if _reads_every_row(claim, tables.get(t))]
    reason = (
        f"it reads every row of {', '.join(every)}, and judged on the other rows only it would say "
        "something else (a method missing from a count or a ranking)"
        if every
        else "it is about these rows"
    )
    return f"Not judged: rows it needs have no values ({where}); {reason}."


def _point(claim: Claim, tables: Tables) -> tuple[str, str]:
    """(holds | contradicted | not evaluable | error, evidence) of the predicate on `tables`."""
    try:
        v = claim.evaluate(tables)
    except ClaimNotEvaluable as exc:
        return "not evaluable", str(exc)
    except KeyError as exc:  # ResultTable.row / column lookups: the row or column is missing
        return "not evaluable", f"missing: {exc.args[0] if exc.args else exc}"
    except Exception as exc:  # noqa: BLE001 - reported in the verdict table, not hidden
        return "error", f"{type(exc).__name__}: {exc}"
    return ("holds" if v.holds else "contradicted"), v.evidence


def _studies(claim: Claim, tables: Tables) -> dict[int, tuple[Study, tuple[str, ...]]]:
    """The studies the claim's source tables come from, with the tables each provides."""
    out: dict[int, tuple[Study, tuple[str, ...]]] = {}
    for name in claim.source_tables:
        t = tables.get(name)
        study = t.study if isinstance(t, UncertainTable) else None
        if study is not None:
            s, names = out.get(id(study), (study, ()))
            out[id(study)] = (s, names + (name,))
    return out


def _is_named(claim: Claim, key: RowKey) -> bool:
    return key[0] in claim.named or key in claim.named


def _corner_patterns(claim: Claim, tables: Tables, names: Sequence[str], rng: np.random.Generator):
    """Row-and-column sign patterns, most telling first: every combination of ends for the named
    rows (sampled beyond 2^8), the other rows all at their better end, all at their worse end or
    each at a random end; per table, column signs (all better; for measure tables every sign
    vector of up to 6 columns, since a ranking-similarity claim may want a measure high on some
    columns and low on others). Yields (rho: {row: ±1}, others: mode, sigma: {table: {column: ±1}})."""
    named = sorted({r.key for n in names for r in tables[n].rows if _is_named(claim, r.key)})
    if len(named) <= 8:
        rhos = [dict(zip(named, signs)) for signs in itertools.product((1.0, -1.0), repeat=len(named))]
    else:
        rhos = [dict.fromkeys(named, 1.0), dict.fromkeys(named, -1.0)]
        rhos += [{k: (-1.0 if k == f else 1.0) * s for k in named} for s in (1.0, -1.0) for f in named]
        rhos += [dict(zip(named, rng.choice((1.0, -1.0), size=len(named)))) for _ in range(200)]
    ones = {n: dict.fromkeys(tables[n].columns, 1.0) for n in names}
    sigmas = [ones]
    for n in names:
        cols = tables[n].columns
        if tables[n].row_kind == "measure" and len(cols) <= 6:
            extra = [dict(zip(cols, signs)) for signs in itertools.product((1.0, -1.0), repeat=len(cols))][1:]
        else:
            extra = [dict(zip(cols, rng.choice((1.0, -1.0), size=len(cols)))) for _ in range(2)]
        sigmas += [{**ones, n: sig} for sig in extra]
    for sigma in sigmas:
        for others in ("worse", "better", "random"):
            for rho in rhos:
                yield rho, others, sigma


def _table_at(point: ResultTable, box: Box, u_of: Callable[[RowKey, str], float]) -> ResultTable:
    """`point` with every boxed cell moved to u ∈ [−1, 1] of its box (anchors first)."""
    own = {kc: b.at(u_of(*kc)) for kc, b in box.items()}
    values: dict[RowKey, dict[str, float]] = {}
    for (key, c), b in box.items():
        v = own[(key, c)]
        if b.anchor is not None:
            v += own.get((b.anchor, c), 0.0)
        values.setdefault(key, {})[c] = v
    return with_values(point, values)


def _search(
    claim: Claim,
    tables: Tables,
    boxes: Mapping[str, Box],
    seed: int = 0,
    uniform: int = UNIFORM_DRAWS,
    corners: int | None = None,
) -> tuple[int, int]:
    """(points where the claim holds, points where it fails) in the boxes: the corner patterns (the
    first `corners` of them, all by default), then `uniform` points with every cell uniform in its
    box; stops as soon as both answers were seen."""
    rng = np.random.default_rng(seed)
    names = sorted(boxes)
    n_true = n_false = 0

    def run(u_of_table) -> bool:
        nonlocal n_true, n_false
        drawn = dict(tables)
        for n in names:
            drawn[n] = _table_at(tables[n], boxes[n], u_of_table(n))
        try:
            ok = claim.predicate(drawn).holds
        except (ClaimNotEvaluable, KeyError):
            return False
        n_true += ok
        n_false += not ok
        return n_true > 0 and n_false > 0

    for rho, others, sigma in itertools.islice(_corner_patterns(claim, tables, names, rng), corners):
        coin = {}

        def row_sign(key, rho=rho, others=others, coin=coin):
            if key in rho:
                return rho[key]
            if others == "random":
                if key not in coin:
                    coin[key] = float(rng.choice((-1.0, 1.0)))
                return coin[key]
            return 1.0 if others == "better" else -1.0

        def u_of_table(n, sigma=sigma, row_sign=row_sign):
            t = tables[n]
            return lambda key, c: row_sign(key) * sigma[n][c] * (1.0 if t.higher_is_better[c] else -1.0)

        if run(u_of_table):
            return n_true, n_false
    for _ in range(uniform):
        us = {n: {kc: float(rng.uniform(-1.0, 1.0)) for kc in boxes[n]} for n in names}
        if run(lambda n, us=us: lambda key, c: us[n][(key, c)]):
            break
    return n_true, n_false


def _decision(n_true: int, n_false: int) -> str:
    if n_true and not n_false:
        return "holds"
    if n_false and not n_true:
        return "contradicted"
    return "inconclusive"


def formula_of(claim: Claim, tables: Tables):
    """The claim's formula on `tables` when it has one and every comparison has per-seed values
    (our runs), else None."""
    if claim.formula is None:
        return None
    try:
        f = claim.formula(tables)
    except (ClaimNotEvaluable, KeyError):
        return None
    return f if comparisons.has_seeds(f, tables) else None


def judge(
    claim: Claim,
    tables: Tables,
    removed: Removed | None = None,
    *,
    design: comparisons.Design = comparisons.FIXED,
    plan_seeds: bool = True,
) -> dict:
    """The verdict of one claim on `tables` (null rows already removed; `removed`, from
    `without_null_rows`, names them): "not evaluable" when the claim reads a removed row
    (`removed_rows_read`), else judged on `tables`;
    {"id", "section", "statement", "verdict", "evidence", "procedure", "decision", "seeds"};
    `decision` is the `comparisons.Decision` of a claim decided by comparisons (also of one judged
    on the tables given, which then has `lacking`: the tables it needs and these runs do not give,
    and `given`: the tables it was judged on),
    `seeds` the region search's planning figure (`plan_seeds=False` skips that search)."""
    out = {
        "id": claim.id,
        "section": claim.section,
        "statement": claim.statement,
        "procedure": None,
        "decision": None,
        "seeds": None,
    }
    gone = removed_rows_read(claim, tables, removed)
    if gone:
        lacking = [t for t in claim.source_tables if t not in tables]
        gone = (f"{claim.id}: needs table(s) {lacking}; " if lacking else "") + gone
        return {**out, "verdict": "not evaluable", "evidence": gone}
    point, evidence = _point(claim, tables)
    studies = _studies(claim, tables)
    bases = {sid: s.bases_of(names) for sid, (s, names) in studies.items()}
    n_min = min((s.min_seeds(bases[sid]) for sid, (s, _) in studies.items()), default=0)
    if point == "not evaluable" and studies:
        given = _on_the_tables_given(claim, tables, n_min, design, evidence)
        if given is not None:
            return {**out, **given}
    if point in ("not evaluable", "error") or not studies:
        return {**out, "verdict": point, "evidence": evidence}  # the paper's own numbers: two-valued
    said = "holds" if point == "holds" else "fails"
    if n_min < 2:
        return {
            **out,
            "verdict": "inconclusive",
            "evidence": f"one seed: no interval, so nothing is decided (on the point values the claim {said}) "
            f"| {evidence}",
        }
    f = formula_of(claim, tables)
    if f is not None:
        if comparisons.point(f, tables) != (point == "holds"):
            return {
                **out,
                "verdict": "error",
                "evidence": f"the claim's formula and its predicate disagree on the point values (a bug) | {evidence}",
            }
        d = comparisons.decide(f, tables, design)
        summary = f"{d.verdict}: {_procedure_text(f, d, design)}"
        return {
            **out,
            "verdict": d.verdict,
            "procedure": "comparisons",
            "decision": d,
            "evidence": f"{summary} | point values (mean ± 95% t half-width over seeds; Δ: paired difference "
            f"to the Baseline): {evidence}",
        }
    rows = _rows_read(claim)
    k = sum(s.cells(bases[sid], rows) for sid, (s, _) in studies.items())
    simultaneous = region_level(design)
    level = bonferroni_level(simultaneous, k)

    def boxes(seeds: int | None = None) -> dict[str, Box]:
        return {name: s.box(name, level, seeds) for s, names in studies.values() for name in names}

    n_true, n_false = _search(claim, tables, boxes())
    n_true, n_false = n_true + (point == "holds"), n_false + (point != "holds")
    verdict = _decision(n_true, n_false)
    searched = n_true + n_false
    summary = (
        f"{verdict}: "
        + {
            "holds": f"holds at all {searched} points tried",
            "contradicted": f"fails at all {searched} points tried",
            "inconclusive": "holds at some points and fails at others",
        }[verdict]
        + f" of the simultaneous {100 * simultaneous:.4g}% region (Student-t over {n_min}+ seeds, paired with the "
        "Baseline, "
        f"Bonferroni over {k} cells{' of the named rows and the Baseline' if claim.only_named else ''})"
    )
    seeds = None
    if verdict == "inconclusive" and plan_seeds:
        seeds, would = _seeds_to_decide(claim, tables, boxes, point, n_min)
        summary += (
            f"; about {seeds} seeds would decide it ({would}) if the means and spreads stayed as observed"
            if seeds
            else f"; not decided even with {MAX_SEEDS} seeds at the observed means and spreads "
            "(a tie, or differences far inside the noise)"
        )
    return {
        **out,
        "verdict": verdict,
        "procedure": "region",
        "evidence": f"{summary} | point values (mean ± 95% t half-width over seeds; "
        f"Δ: paired difference to the Baseline): {evidence}",
        "seeds": seeds,
    }


def _procedure_text(f, d: comparisons.Decision, design: comparisons.Design) -> str:
    return (
        f"{len(comparisons.literals(f))} paired comparison(s) over {d.seeds}+ shared seeds, each k-of-n part of "
        "the claim at α/(n − k + 1) per item (intersection-union for all-of, Bonferroni for any-of), "
        f"(one-sided {comparisons.ALPHA:.1%} per direction"
        + ("" if not design.looks else f", spent over the looks {list(design.looks)}")
        + f"); {comparisons.decision_text(d)}"
    )


def _on_the_tables_given(claim: Claim, tables: Tables, n_min: int, design: comparisons.Design, why: str) -> dict | None:
    """A claim that needs a table these runs do not give, judged by its comparisons on the tables
    they give (its formula with `comparisons.Missing` parts): "contradicted" (or "holds") where the
    parts given decide it whatever the missing ones say — a conjunction with a false conjunct — else
    "not evaluable", with how far the parts given are from deciding it. None when its formula has
    no comparison on the tables given, or its rows have fewer than 2 seeds (`n_min`)."""
    if claim.formula is None or all(t in tables for t in claim.source_tables):
        return None
    try:
        f = claim.formula(tables)
    except KeyError:  # a formula that needs every table
        return None
    except ClaimNotEvaluable as exc:  # a table given lacks what the claim needs: say so
        return {"verdict": "not evaluable", "evidence": f"{why}; and on the tables given: {exc}"}
    missing, lits = comparisons.missing_tables(f), comparisons.literals(f)
    if not missing or not lits or not comparisons.has_seeds(f, tables) or n_min < 2:
        return None
    d = comparisons.decide(f, tables, design)
    read = tuple(dict.fromkeys(lit.table for lit in lits))
    lacking, given = ", ".join(missing), ", ".join(read)
    if d.verdict in ("holds", "contradicted"):
        verdict = d.verdict
        head = f"{verdict} on {given} alone, whatever {lacking} (not in these runs) would say"
    else:
        verdict = "not evaluable"
        head = f"needs {lacking}, which these runs do not give; on {given} it is not decided"
    return {
        "verdict": verdict,
        "procedure": "comparisons",
        "decision": d,
        "lacking": tuple(missing),
        "given": read,
        "evidence": f"{head}: {_procedure_text(f, d, design)} | the claim on every table: {why}",
    }


def region_level(design: comparisons.Design = comparisons.FIXED) -> float:
    """The simultaneous level of a region search: 95 %, its 5 % spent evenly over the design's looks
    (a union bound over the looks, as the comparisons spend their α)."""
    return 1.0 - (1.0 - LEVEL) / max(1, len(design.looks))


def _rows_read(claim: Claim) -> Callable[[RowKey], bool] | None:
    """The base rows a region search reads: the named rows and the Baseline for an `only_named`
    claim, every row otherwise (None)."""
    if not claim.only_named:
        return None
    methods = {n if isinstance(n, str) else n[0] for n in claim.named} | {BASELINE}
    return lambda key: key[0] in methods


def _rows_asked(claim: Claim, tables: Tables) -> Callable[[RowKey], bool]:
    """The base rows whose seeds a region-search claim turns on: the named rows (a (method, level)
    name at that level only) and the Baseline for an `only_named` claim; the parameter-level rows
    when every source table is a table of measures (Tables 5-7 rank parameter-level runs); every
    row otherwise."""
    measures = all(t in tables and tables[t].row_kind == "measure" for t in claim.source_tables)

    def asked(key: RowKey) -> bool:
        if claim.only_named and not (key[0] == BASELINE or _is_named(claim, key)):
            return False
        return not measures or key[1] == "parameter"

    return asked


def region_reads(claim: Claim, tables: Tables) -> tuple[int, dict[str, set[RowKey]]]:
    """For a claim judged by region search: the fewest seeds of a cell of the rows it turns on
    (`_rows_asked`), and those base rows (method, level) with values, keyed by one of its source
    tables per study (where seeds are asked)."""
    seeds, out = [], {}
    rows = _rows_asked(claim, tables)
    for s, names in _studies(claim, tables).values():
        bases = s.bases_of(names)
        seeds.append(s.min_seeds(bases, rows))
        out[names[0]] = s.rows_of(bases, rows)
    return (min(seeds) if seeds else 0), out


def _seeds_to_decide(claim: Claim, tables: Tables, boxes, point: str, n: int) -> tuple[int | None, str]:
    def decided(m: int) -> str | None:
        t, f = _search(claim, tables, boxes(m), uniform=SEARCH_UNIFORM, corners=SEARCH_CORNERS)
        d = _decision(t + (point == "holds"), f + (point != "holds"))
        return None if d == "inconclusive" else d

    lo, hi, found = n, None, None
    m = max(n + 1, 2 * n)
    while m <= MAX_SEEDS:
        found = decided(m)
        if found:
            hi = m
            break
        lo, m = m, 2 * m
    if hi is None:
        return None, ""
    while hi - lo > max(1, hi // 8):  # smallest decided count in (lo, hi], to within an eighth
        mid = (lo + hi) // 2
        d = decided(mid)
        if d:
            hi, found = mid, d
        else:
            lo = mid
    return hi, found


def judge_all(tables: Tables, claims: Sequence[Claim] = CLAIMS, **options) -> list[dict]:
    """`judge` (with `options`) for every claim, rows with a null value (diverged, failed, undefined)
    removed first: a claim that reads one is not evaluable and names it (`removed_rows_read`). One
    dict per claim (`judge`), in the order of `claims`.

    On our tables (`our_tables.result_tables`) the verdict is holds / contradicted / inconclusive; on
    tables without seeds (the paper's) holds / contradicted as the predicate says. "not evaluable":
    the tables lack a table, row, column or value the claim needs (the evidence names it); "error":
    the predicate raised anything else (a bug, shown rather than hidden)."""
    usable, removed = without_null_rows(tables)
    return [judge(c, usable, removed, **options) for c in claims]
