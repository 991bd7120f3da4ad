"""Our tables from stored runs, keyed like the paper's, with the uncertainty of every cell.

Sources (paper 001): Tables 1-3 (§3.1, §3.2: results per method and gradient level), Table 4 (§4:
relative change of the feature level against the parameter level, 100 × (feature − parameter) /
parameter) and Tables 5-7 (§5.3, §5.5: ranking similarity of GDS, GMS and FD against each test
metric, trajectories ordered by the mean of their last 50 recorded points).

`tables_of(runs)` is a pure function of the run records given, validated and grouped by
`runs.group_runs` (`result_tables(records, benchmark)` groups them first): the
benchmark's `paper_tables` plus 'relative_change', 'final_measures' and 'figure5', so the
predicates of `mtlcheck.study.paper.claims` run on them exactly as on the paper's numbers. A
(method, level) row takes the mean over seeds only when every one of its runs is 'done'; otherwise
its values are null and its note says what happened.

Uncertainty: every cell of the results and final-measure tables is a `statistics.Estimate` over
seeds (the 95 % Student-t interval of the mean; none for one seed) with its paired difference to
the Baseline on the same seeds (same seed = same initialisation and data order). The store keeps
one number per run and metric, so a bootstrap over test samples is not possible here. A relative
change (Table 4) carries the t interval of its per-seed value (feature vs parameter run of the same
seed); a ranking similarity its range over the simultaneous 95 % region of the seed means it is
computed from (`_region_ranges`). (A percentile interval over posterior draws of the means was
used before; it redrew the seed noise around already noisy means, which scrambles rankings and
pulls RS toward 50 %: the interval could lie wholly below its own value.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mtlcheck.measures.ranking import symmetric_ranking_similarity
from mtlcheck.study.benchmarks import Benchmark
from mtlcheck.study.experiments.records import RunRecord
from mtlcheck.study.paper.our_study import Study, UncertainTable
from mtlcheck.study.paper.published_tables import load_paper_tables
from mtlcheck.study.paper.result_table import BASELINE, ResultTable, Row, RowKey, relative_change_table
from mtlcheck.study.paper.runs import MEASURES, Runs, group_runs, mean, status_note
from mtlcheck.study.statistics import LEVEL, Estimate, bonferroni_level, estimate, paired

__all__ = [
    "LEVEL_TEXT",
    "PAIRED_TEXT",
    "RS_LAST_POINTS",
    "result_tables",
    "tables_of",
]

RS_LAST_POINTS = 50  # §5.5: "we took the mean of the last 50 elements"
METRIC_DECIMALS = 4  # one more than the paper prints, so a difference of exactly 0.010 is visible
PERCENT_DECIMALS = 2  # one more than Tables 4-7 print
MEASURE_DECIMALS = 4
REGION_DRAWS = 400  # region draws searched for the range of a ranking similarity (Tables 5-7)
LEVEL_TEXT = f"{100 * LEVEL:g}%"  # the confidence level as the tables' notes print it
PAIRED_TEXT = (  # how the tables' paired differences and Table 4's changes get their intervals
    "the plain paired Student-t over the seeds both rows share (same seed = same initialisation and data "
    "order), on n − 1 df: valid whatever each method's response to a seed"
)


def _table_name(paper_name: str | None, fallback: str, runs: Runs) -> str:
    base = f"Table {paper_name[5:]}" if paper_name and paper_name.startswith("table") else fallback
    return f"{base} (ours: {runs.label})"


def _results(runs: Runs, name: str) -> UncertainTable:
    """Mean over seeds of each metric, one row per (method, level), with each cell's per-seed values
    and its paired difference to the Baseline; null plus a note when a run is not done."""
    bench = runs.bench
    columns = tuple(m.label for m in bench.metrics)
    rows, estimates = [], {}
    for key in runs.keys:
        rs = runs.groups[key]
        values: dict[str, float | None] = {}
        note = None
        if runs.done(key):
            bad = []
            for m in bench.metrics:
                missing = [r.spec.label for r in rs if m.key not in (r.metrics or {})]
                if missing:
                    raise ValueError(
                        f"done run(s) {missing} have no metric {m.key!r} (have {sorted(rs[0].metrics or {})})"
                    )
                vals = [float(r.metrics[m.key]) for r in rs]
                if all(math.isfinite(v) for v in vals):
                    values[m.label] = mean(vals)
                    estimates.setdefault(key, {})[m.label] = estimate({r.spec.seed: v for r, v in zip(rs, vals)})
                else:
                    values[m.label] = None
                    bad.append(
                        f"{m.label} non-finite in seed(s) "
                        + ", ".join(str(r.spec.seed) for r, v in zip(rs, vals) if not math.isfinite(v))
                    )
            note = "; ".join(bad) or None
        else:
            values = {c: None for c in columns}
            note = status_note(rs)
        rows.append(Row(method=key[0], level=key[1], values=values, note=note))
    seed_sets = {k: tuple(r.spec.seed for r in rs) for k, rs in runs.groups.items()}
    notes = [
        f"Mean over seeds of the done runs ({runs.label}) ± the half-width of its {LEVEL_TEXT} Student-t "
        "interval over seeds (n=1: one seed, no interval); a row whose runs are not all done has null values "
        "and a note. Parameter-level rows first, then feature-level rows.",
        "Columns: "
        + ", ".join(f"{m.label} = {m.key}" for m in bench.metrics)
        + " in the units of mtlcheck's evaluation (fractions where the paper prints a percentage).",
    ]
    if len(set(seed_sets.values())) > 1:
        notes.append(
            "Seed sets differ between rows: "
            + "; ".join(
                f"{k[0]} ({k[1]}): {list(v)}"
                for k, v in sorted(seed_sets.items(), key=lambda kv: runs.keys.index(kv[0]))
            )
        )
    else:
        notes.append(f"Seeds: {list(next(iter(seed_sets.values())))}.")
    return UncertainTable(
        name=name,
        columns=columns,
        higher_is_better={m.label: m.higher_is_better for m in bench.metrics},
        rows=tuple(rows),
        units={m.label: f"{m.key} (mtlcheck evaluation of {bench.name})" for m in bench.metrics},
        printed_decimals={c: METRIC_DECIMALS for c in columns},
        notes=tuple(notes),
        origin=name,
        estimates=estimates,
        paired=_paired_to_baseline(rows, estimates),
    )


def _paired_to_baseline(
    rows: Sequence[Row], estimates: Mapping[RowKey, Mapping[str, Estimate]]
) -> dict[RowKey, dict[str, Estimate]]:
    """Per row and column: row − Baseline (parameter level) over the seeds both have (`statistics.paired`)."""
    base = estimates.get((BASELINE, "parameter"), {})
    out: dict[RowKey, dict[str, Estimate]] = {}
    for r in rows:
        if r.key == (BASELINE, "parameter"):
            continue
        for c, e in estimates.get(r.key, {}).items():
            if c in base:
                p = paired(dict(zip(e.seeds, e.values)), dict(zip(base[c].seeds, base[c].values)))
                if p is not None:
                    out.setdefault(r.key, {})[c] = p
    return out


def _relative_change(results: ResultTable, name: str) -> ResultTable:
    """Table 4 of our runs (`result_table.relative_change_table`), each cell with the estimate of its
    per-seed change 100 × (f_s − p_s) / p_s over the seeds both levels ran (same seed = same
    initialisation and data order): the paired interval the verdicts use for this table."""
    table = relative_change_table(
        results,
        name=name,
        printed_decimals=PERCENT_DECIMALS,
        notes=(
            "Methods run at both gradient levels (loss-only methods have no feature level). A positive "
            "change in a lower-is-better column is a degradation.",
            f"± : half-width of the {LEVEL_TEXT} Student-t interval of the per-seed change 100 × (f_s − p_s) / "
            "p_s (feature and parameter run of the same seed); the cell itself is the change of the means.",
        ),
    )
    if not (isinstance(results, UncertainTable) and results.estimates):
        return table
    estimates: dict[RowKey, dict[str, Estimate]] = {}
    for r in table.rows:
        for c in table.columns:
            f, p = (results.estimate(k, c) for k in (r.key, (r.method, "parameter")))
            if r.values[c] is None or f is None or p is None:
                continue
            fs, ps = dict(zip(f.seeds, f.values)), dict(zip(p.seeds, p.values))
            per_seed = {s: 100.0 * (fs[s] - ps[s]) / ps[s] for s in fs.keys() & ps.keys() if ps[s] != 0}
            if per_seed:
                estimates.setdefault(r.key, {})[c] = estimate(per_seed)
    if estimates:
        return UncertainTable(**_fields(table), estimates=estimates)
    return table


def _end_value(record: RunRecord, key: str) -> tuple[float | None, int, str | None]:
    """Mean of the last min(50, len) recorded points of trajectory[key] (§5.5); (None, 0, why) if undefined."""
    traj = (record.trajectory or {}).get(key)
    if not traj:
        return None, 0, f"no {key!r} trajectory in seed {record.spec.seed}"
    tail = [float(v) for v in traj[-RS_LAST_POINTS:]]
    if not all(math.isfinite(v) for v in tail):
        return None, len(tail), f"{key} non-finite in the last {len(tail)} points of seed {record.spec.seed}"
    return mean(tail), len(tail), None


@dataclass(frozen=True)
class _Ends:
    values: Mapping[str, Mapping[str, Mapping[int, float]]]  # measure key -> method -> seed -> end value
    left_out: Mapping[str, Mapping[str, str]]  # measure key -> method -> why
    lengths: tuple[int, ...]  # trajectory lengths seen
    used: tuple[int, ...]  # points averaged


def _ends(runs: Runs) -> _Ends:
    values: dict[str, dict[str, dict[int, float]]] = {k: {} for k, _, _ in MEASURES}
    left: dict[str, dict[str, str]] = {k: {} for k, _, _ in MEASURES}
    lengths, used = set(), set()
    for name, level in runs.keys:
        if level != "parameter":
            continue
        rs = runs.groups[(name, level)]
        for key, _, _ in MEASURES:
            if not runs.done((name, level)):
                left[key][name] = status_note(rs)
                continue
            got = [_end_value(r, key) for r in rs]
            why = [w for _, _, w in got if w]
            if why:
                left[key][name] = "; ".join(why)
                continue
            values[key][name] = {r.spec.seed: v for r, (v, _, _) in zip(rs, got)}
            used.update(n for _, n, _ in got)
            lengths.update(len(r.trajectory[key]) for r in rs)
    return _Ends(values, left, tuple(sorted(lengths)), tuple(sorted(used)))


def _points_text(ends: _Ends) -> str:
    if not ends.lengths:
        return f"mean of the last min({RS_LAST_POINTS}, length) recorded points (no trajectory had a value)"
    return (
        f"mean of the last min({RS_LAST_POINTS}, length) recorded points: trajectories of "
        f"{'/'.join(map(str, ends.lengths))} points here, so {'/'.join(map(str, ends.used))} points averaged"
    )


def _final_measures(runs: Runs, ends: _Ends, name: str) -> UncertainTable:
    columns = tuple(label for _, label, _ in MEASURES)
    rows, estimates = [], {}
    for method, level in runs.keys:
        if level != "parameter":
            continue
        vals = {}
        for key, label, _ in MEASURES:
            seeds = ends.values[key].get(method)
            vals[label] = None if seeds is None else mean(list(seeds.values()))
            if seeds is not None:
                estimates.setdefault((method, level), {})[label] = estimate(seeds)
        why = sorted({ends.left_out[key][method] for key, _, _ in MEASURES if method in ends.left_out[key]})
        rows.append(Row(method=method, level=level, values=vals, note="; ".join(why) or None))
    return UncertainTable(
        name=name,
        columns=columns,
        higher_is_better={"GDS": True, "GMS": True, "FD": False},
        rows=tuple(rows),
        units={label: f"{label} at the end of training: {_points_text(ends)}, mean over seeds" for label in columns},
        printed_decimals={c: MEASURE_DECIMALS for c in columns},
        notes=(
            f"Parameter-level runs; {_points_text(ends)} (§5.5), then the mean over seeds ± the half-width of "
            f"its {LEVEL_TEXT} Student-t interval over seeds. Lower GDS/GMS: more conflict/dominance (§5.1); "
            "lower FD: more disentangled features (§5.2).",
        ),
        origin=name,
        estimates=estimates,
        paired=_paired_to_baseline(rows, estimates),
    )


@functools.cache
def _measure_order(paper_name: str | None) -> tuple[str, ...]:
    """Row order of a ranking-similarity table: the paper's, else GDS, GMS, FD."""
    paper = load_paper_tables()
    return tuple(
        [r.method for r in paper[paper_name].rows] if paper_name in paper else [label for _, label, _ in MEASURES]
    )


def _ranking_similarity(
    results: ResultTable, final: ResultTable, ends: _Ends, paper_name: str | None, name: str
) -> ResultTable:
    """Tables 5-7: 100 × (0.5 + |S − 0.5|), S of Eq. 9 between the methods ordered by a measure's end
    value and ordered by a test metric (better first), over the parameter-level runs of all methods.
    A method without the measure's end value or the metric's value (its runs diverged, failed or have not finished)
    makes the cell null, with the method and why in the note: over the other methods it would be
    another ranking similarity than the paper's, so the claims that read it are not evaluable.
    A metric (or measure) with one value for every ranked method orders nothing: its RS would be
    50 % from ties alone, so the cell is null with that reason, never a number a claim could use."""
    order = _measure_order(paper_name)
    by_label = {label: (key, level) for key, label, level in MEASURES}
    ends_of = {
        label: {r.method: r.values[label] for r in final.rows if r.values[label] is not None} for label in by_label
    }
    rows = []
    ranked_sets = set()
    for label in order:
        key, level = by_label[label]
        values: dict[str, float | None] = {}
        why, unranked = [], {}
        for c in results.columns:
            items, lacking = [], [f"{m} has no {label} value ({w})" for m, w in ends.left_out[key].items()]
            for r in results.rows:
                if r.level != "parameter":
                    continue
                perf, end = r.values[c], ends_of[label].get(r.method)
                if perf is None:
                    if r.method not in ends.left_out[key]:
                        lacking.append(f"{r.method} has no {c} value ({r.note})")
                    continue
                if end is not None:
                    items.append((r.method, end, perf if results.higher_is_better[c] else -perf))
            values[c] = None
            if lacking:  # ranked over the others, the cell would compare other rankings than the paper's
                unranked.setdefault("; ".join(lacking), []).append(c)
                continue
            ranked_sets.add(tuple(m for m, _, _ in items))
            if len(items) < 2:
                why.append(f"{c}: {len(items)} method(s) with both values; Eq. 9 needs 2")
            elif len({p for _, _, p in items}) == 1:
                why.append(
                    f"{c}: the same value for all {len(items)} ranked methods, so it ranks nothing "
                    "(RS would be 50% from ties alone)"
                )
            elif len({e for _, e, _ in items}) == 1:
                why.append(
                    f"{c}: {label} has the same end value for all {len(items)} ranked methods, so it ranks "
                    "nothing (RS would be 50% from ties alone)"
                )
            else:
                values[c] = 100.0 * symmetric_ranking_similarity([e for _, e, _ in items], [p for _, _, p in items])
        rows.append(
            Row(
                method=label,
                level=level,
                values=values,
                note="; ".join(
                    [
                        f"{', '.join(cs)}: not computed, as the rankings take every method and {ms}"
                        for ms, cs in unranked.items()
                    ]
                    + why
                )
                or None,
            )
        )
    ranked = " | ".join(", ".join(s) for s in sorted(ranked_sets)) or "none"
    return ResultTable(
        name=name,
        columns=results.columns,
        higher_is_better={c: True for c in results.columns},
        rows=tuple(rows),
        units={
            c: f"percent: symmetric ranking similarity (Eq. 9) between the measure's ranking of the "
            f"parameter-level runs and their ranking on {c}"
            for c in results.columns
        },
        printed_decimals={c: PERCENT_DECIMALS for c in results.columns},
        row_kind="measure",
        notes=(
            f"Ranked: the parameter-level runs of the methods {ranked} (Baseline included). Measure value "
            f"per method: {_points_text(ends)} (§5.5), mean over seeds; metric value: the results table's "
            "mean over seeds, oriented so that better is larger. Value = 100 × (0.5 + |S − 0.5|) (§5.3); "
            f"in brackets its range over the simultaneous {LEVEL_TEXT} region of the seed means it is computed "
            "from (each measure's and metric's Baseline mean and paired differences inside their intervals, "
            f"Bonferroni over those cells; {REGION_DRAWS} points searched, ends first): a confidence interval "
            "that holds the value itself.",
        ),
        origin=name,
    )


def _figure5(final: ResultTable, label: str) -> ResultTable:
    fd_rows = tuple(
        Row(r.method, r.level, {"FD": r.values["FD"]}, note=r.note if r.values["FD"] is None else None)
        for r in final.rows
    )
    return ResultTable(
        name=f"Figure 5 final FD (ours: {label})",
        columns=("FD",),
        higher_is_better={"FD": False},
        rows=fd_rows,
        units={"FD": final.units["FD"]},
        printed_decimals={"FD": MEASURE_DECIMALS},
        notes=final.notes,
        origin="figure5",
    )


def _derive(runs: Runs, ends: _Ends, base: Mapping[str, ResultTable]) -> dict[str, ResultTable]:
    """Every table keyed like the paper's, from the two base tables ('results', 'final_measures')."""
    res_name, rel_name, rs_name = runs.bench.paper_tables
    results, final = base["results"], base["final_measures"]
    rel = _relative_change(results, _table_name(rel_name, "Relative change", runs))
    tables = {res_name: results}
    if rel_name:
        tables[rel_name] = rel
    tables["relative_change"] = rel
    tables[rs_name] = _ranking_similarity(
        results, final, ends, rs_name, _table_name(rs_name, "Ranking similarity", runs)
    )
    tables["final_measures"] = final
    tables["figure5"] = _figure5(final, runs.label)
    return tables


def _study(runs: Runs) -> Study:
    res_name, rel_name, rs_name = runs.bench.paper_tables
    ends = _ends(runs)
    base = {
        "results": _results(runs, _table_name(res_name, "Results", runs)),
        "final_measures": _final_measures(runs, ends, f"Final measures (ours: {runs.label})"),
    }
    r, f = frozenset({"results"}), frozenset({"final_measures"})
    depends = {res_name: r, "relative_change": r, rs_name: r | f, "final_measures": f, "figure5": f}
    if rel_name:
        depends[rel_name] = r
    views = {res_name: "results", "final_measures": "final_measures", "figure5": "final_measures"}
    return Study(base, functools.partial(_derive, runs, ends), depends, views, label=runs.label)


def _region_ranges(study: Study, name: str, draws: int = REGION_DRAWS) -> dict[RowKey, dict[str, tuple[float, float]]]:
    """Per cell of derived table `name`: [min, max] of its value over the simultaneous 95 % region of
    the seed means it is computed from (`Study.box` at level 1 − 0.05/K, K = those cells): the set of
    values the table takes where the means may be, so it holds the point value and covers the value
    at the true means whenever the region covers them (probability ≥ 95 %; the region is searched
    with `draws` draws, corners first, so the coverage is measured in suites/claims)."""
    level = bonferroni_level(LEVEL, study.cells(study.bases_of((name,))))
    out: dict[RowKey, dict[str, tuple[float, float]]] = {}
    for (key, c), b in study.box(name, level, draws=draws).items():
        out.setdefault(key, {})[c] = (b.lo, b.hi)
    return out


def result_tables(
    records: Iterable[RunRecord], benchmark: Benchmark | str, *, derived_intervals: bool = True
) -> dict[str, ResultTable]:
    """`tables_of` the records grouped (`runs.group_runs`)."""
    return tables_of(group_runs(records, benchmark), derived_intervals=derived_intervals)


def tables_of(runs: Runs, *, derived_intervals: bool = True) -> dict[str, ResultTable]:
    """Our tables from grouped runs, keyed like the paper's: the benchmark's `paper_tables`
    (results, relative change when the paper has one, ranking similarity) plus 'relative_change'
    (always; the same table as the paper-named one when there is one), 'final_measures' (GDS, GMS,
    FD at the end of training per parameter-level method) and 'figure5' (its FD column, the input
    of the Figure 5 claim). Raises ValueError for mixed budgets, steps, benchmarks or duplicates.

    Every table is a `our_study.UncertainTable` bound to the same `Study`: base cells (results,
    final measures) carry their per-seed values and paired differences to the Baseline; a relative
    change with per-seed values the t interval of its per-seed change; other derived cells their
    range over the simultaneous 95 % region of the seed means (`_region_ranges`; none with one
    seed, or with `derived_intervals=False`, which skips the search behind them)."""
    if not runs.groups:
        raise ValueError(f"no run records given for benchmark {runs.bench.name!r}")
    study = _study(runs)
    point = study.tables()
    intervals = derived_intervals and study.min_seeds() >= 2
    out: dict[str, ResultTable] = {}
    done: dict[int, ResultTable] = {}  # one table under two names (table4 = relative_change) stays one
    for name, t in point.items():
        if id(t) in done:
            out[name] = done[id(t)]
        elif isinstance(t, UncertainTable):
            out[name] = dataclasses.replace(t, study=study)
        elif name == "figure5":
            final = point["final_measures"]
            out[name] = UncertainTable(
                **_fields(t),
                study=study,
                estimates={k: {"FD": v["FD"]} for k, v in final.estimates.items() if "FD" in v},
                paired={k: {"FD": v["FD"]} for k, v in final.paired.items() if "FD" in v},
            )
        else:
            ranges = _region_ranges(study, name) if intervals else {}
            out[name] = UncertainTable(**_fields(t), study=study, ranges=ranges)
        done[id(t)] = out[name]
    return out


def _fields(t: ResultTable) -> dict:
    return {f.name: getattr(t, f.name) for f in dataclasses.fields(ResultTable) if f.init}
