"""Reports: the paper's tables and figures rebuilt from stored runs, and the claims judged on them.

Sources (paper 001): Tables 1-3 (§3.1, §3.2: results, ↑/↓/– against the baseline with the 0.01
band of Table 1's caption), Table 4 (§4: relative change of the feature level against the
parameter level, 100 × (feature − parameter) / parameter), Tables 5-7 (§5.3, §5.5: ranking
similarity of GDS, GMS and FD against each test metric, trajectories ordered by the mean of
their last 50 recorded points) and Figures 3-5 (§5.4: trajectories of the parameter-level runs
relative to the baseline, moving average with a window of 1/10 of the trajectory length).

Everything here is a pure function of the run records given (`mtlcheck.study.experiments.store.RunRecord`):

- `result_tables(records, benchmark)` -> `ResultTable`s keyed like the paper's files (the
  benchmark's `paper_tables`), plus 'relative_change', 'final_measures' and 'figure5', so the
  predicates of `mtlcheck.study.paper.claims` run on them exactly as on the paper's numbers;
- `to_markdown` / `to_csv` / `to_json` render one table; `trajectory_figures` writes Figures 3-5
  as PNG (one panel per method, mean over seeds with a band);
- `claim_verdicts` / `verdict_markdown` judge every claim (`mtlcheck.study.paper.verdicts`: holds /
  contradicted / inconclusive / not evaluable) and say why one cannot be judged;
- `write_report` writes report.md, one CSV and one JSON per table and the PNGs (same records,
  same text).

Rules: records of one benchmark, budget, step count and code epoch at a time (mixing raises);
a (method, level) row takes the mean over seeds only when every one of its runs is 'done';
otherwise its values are null and its note says what happened (diverged at step N in k/n
seeds, failed, not finished) — no run is dropped silently.

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

import csv
import dataclasses
import functools
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlcheck import LEVELS
from mtlcheck.aggregators import paper_name
from mtlcheck.measures.ranking import symmetric_ranking_similarity
from mtlcheck.study.benchmarks import Benchmark, get_benchmark
from mtlcheck.study.experiments.runner import PAPER_METHODS
from mtlcheck.study.experiments.store import RunRecord
from mtlcheck.study.paper.reproduced import TIE_WIDTH, Study, UncertainTable
from mtlcheck.study.paper.tables import (
    BAND,
    BASELINE,
    ResultTable,
    Row,
    RowKey,
    baseline_mark,
    load_paper_tables,
    relative_change,
)
from mtlcheck.study.paper.verdicts import MAX_SEEDS, VERDICTS, judge_all
from mtlcheck.study.statistics import LEVEL, Estimate, bonferroni_level, estimate, moderate, moderated_pairs, t_quantile

__all__ = [
    "FIGURES",
    "MEASURES",
    "PAPER_NAMES",
    "PAPER_ORDER",
    "RS_LAST_POINTS",
    "claim_verdicts",
    "display_name",
    "moving_average",
    "paired_mark",
    "result_tables",
    "to_csv",
    "to_json",
    "to_markdown",
    "trajectory_figures",
    "verdict_markdown",
    "write_report",
]

# registry name -> the paper's name (registered with each method; reference/paper/table*.json)
PAPER_NAMES: Mapping[str, str] = {m: paper_name(m) for m in PAPER_METHODS}
# row order of Tables 2-3 (Table 1 is the same order without Nash-MTL and GradNorm)
PAPER_ORDER = (
    "Baseline",
    "RGW",
    "PCGrad",
    "GradVac",
    "MGDA",
    "CAGrad",
    "GradDrop",
    "Nash-MTL",
    "Aligned-MTL",
    "IMTL",
    "RLW",
    "DWA",
    "Uncertainty",
    "GradNorm",
    "FAMO",
    "CosReg",
)
# trajectory key, the paper's row name, the gradient level the measure uses (Tables 5-7 rows)
MEASURES = (("gds", "GDS", "parameter"), ("gms", "GMS", "parameter"), ("fd", "FD", "feature"))
FIGURES = {"gds": 3, "gms": 4, "fd": 5}  # §5.4: Figure 3 GDS, Figure 4 GMS, Figure 5 FD
RS_LAST_POINTS = 50  # §5.5: "we took the mean of the last 50 elements"
METRIC_DECIMALS = 4  # one more than the paper prints, so a difference of exactly 0.010 is visible
PERCENT_DECIMALS = 2  # one more than Tables 4-7 print
MEASURE_DECIMALS = 4
POSTERIOR_DRAWS = 400  # posterior draws behind a claim's support
REGION_DRAWS = 400  # region draws searched for the range of a ranking similarity (Tables 5-7)
_LEVEL_TEXT = f"{100 * LEVEL:g}%"
_MODERATED_TEXT = (
    "empirical-Bayes moderated t, Smyth 2004: per-run variances s̃² = max((d0·s0² + d·s²)/(d0 + d), s²) "
    "on d0 + d df, d0 (capped at d) and s0² fitted by the method of moments on the log variances of "
    "the column's rows (seed effect: the median of the other rows); a paired difference uses "
    "s̃_row² + s̃_Baseline² on the smaller df; the plain t over seeds when fewer than 3 rows have a "
    "variance"
)


# -- records -------------------------------------------------------------------------------------
def display_name(record: RunRecord) -> str:
    """The paper's name of the run's method; a non-default config is appended, e.g. 'CAGrad[c=0.2]',
    and so is a non-default feature-level batch rule ('MGDA (feature_batch=sum)'), so a claim about
    the paper's CAGrad or MGDA-UB never reads a differently configured run."""
    spec = record.spec
    name = PAPER_NAMES.get(spec.method, spec.method)
    if spec.method_config:
        name += "[" + ", ".join(f"{k}={v!r}" for k, v in sorted(spec.config.items())) + "]"
    if spec.options.get("feature_batch", "flatten") != "flatten":  # LibMTL's batch-summed feature rows
        name += f" (feature_batch={spec.options['feature_batch']})"
    return name


def _order(name: str) -> tuple[int, str]:
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)


@dataclass(frozen=True)
class _Runs:
    """Validated records of one benchmark / budget, grouped by (display name, level)."""

    bench: Benchmark
    budget: str
    steps: int | None
    groups: Mapping[tuple[str, str], tuple[RunRecord, ...]]  # sorted by seed

    @property
    def keys(self) -> list[tuple[str, str]]:
        return sorted(self.groups, key=lambda k: (LEVELS.index(k[1]), _order(k[0])))

    def done(self, key: tuple[str, str]) -> bool:
        return all(r.status == "done" for r in self.groups[key])

    @property
    def label(self) -> str:
        steps = "" if self.steps is None else f", {self.steps} steps"
        return f"{self.bench.name}, {self.budget}{steps}"


def _as_benchmark(benchmark: Benchmark | str) -> Benchmark:
    if isinstance(benchmark, Benchmark):
        return benchmark
    if isinstance(benchmark, str):
        return get_benchmark(benchmark)
    raise TypeError(f"benchmark must be a Benchmark or its name, got {type(benchmark).__name__}")


def _runs(records: Iterable[RunRecord], benchmark: Benchmark | str) -> _Runs:
    bench = _as_benchmark(benchmark)
    records = list(records)
    if not records:
        raise ValueError(f"no run records given for benchmark {bench.name!r}")
    for r in records:
        if not isinstance(r, RunRecord):
            raise TypeError(f"expected RunRecords (ResultStore.runs / run_sweep), got {type(r).__name__}")
    other = sorted({r.spec.label for r in records if r.spec.benchmark != bench.name})
    if other:
        raise ValueError(f"records of another benchmark than {bench.name!r}: {other}")
    for field, what in (("budget", "budgets"), ("steps", "step counts")):
        seen = Counter(getattr(r.spec, field) for r in records)
        if len(seen) > 1:
            raise ValueError(
                f"records mix {what} {dict(sorted(seen.items(), key=str))} (runs per value); "
                f"report one {field} at a time"
            )
    epochs = Counter(r.code_epoch for r in records)
    if len(epochs) > 1:
        raise ValueError(f"records mix code epochs {dict(epochs)}; report one epoch at a time")
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(display_name(r), r.spec.level)].append(r)
    for (name, level), rs in groups.items():
        seeds = Counter(r.spec.seed for r in rs)
        dup = sorted(s for s, n in seeds.items() if n > 1)
        if dup:
            raise ValueError(
                f"{name} ({level}): several records for seed(s) {dup} "
                f"(keys {sorted(r.key for r in rs if r.spec.seed in dup)}); pass each run once"
            )
    return _Runs(
        bench,
        records[0].spec.budget,
        records[0].spec.steps,
        {k: tuple(sorted(v, key=lambda r: r.spec.seed)) for k, v in groups.items()},
    )


def _seeds(rs: Sequence[RunRecord]) -> str:
    return ", ".join(str(r.spec.seed) for r in rs)


def _status_note(rs: Sequence[RunRecord]) -> str:
    """Why a row has no values: 'diverged at step 7 in 1/3 seeds (seed 2); ...'."""
    n = len(rs)
    parts = []
    diverged = [r for r in rs if r.status == "diverged"]
    if diverged:
        steps = sorted({(r.timings or {}).get("diverged_step") for r in diverged}, key=str)
        where = "step " + ", ".join(str(s) for s in steps) if None not in steps else "an unrecorded step"
        parts.append(f"diverged at {where} in {len(diverged)}/{n} seeds (seed {_seeds(diverged)})")
    failed = [r for r in rs if r.status == "failed"]
    if failed:
        last = [(r.error or "").strip().splitlines()[-1:] or ["no error text"] for r in failed]
        parts.append(
            f"failed in {len(failed)}/{n} seeds ("
            + "; ".join(f"seed {r.spec.seed}: {line[0]}" for r, line in zip(failed, last))
            + ")"
        )
    unfinished = [r for r in rs if r.status in ("pending", "running")]
    if unfinished:
        parts.append(
            f"not finished in {len(unfinished)}/{n} seeds ("
            + ", ".join(f"seed {r.spec.seed}: {r.status}" for r in unfinished)
            + ")"
        )
    done = n - len(diverged) - len(failed) - len(unfinished)
    if done:
        parts.append(f"no mean taken over the other {done} done seed(s)")
    return "; ".join(parts)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# -- tables --------------------------------------------------------------------------------------
def _table_name(paper_name: str | None, fallback: str, runs: _Runs) -> str:
    base = f"Table {paper_name[5:]}" if paper_name and paper_name.startswith("table") else fallback
    return f"{base} (ours: {runs.label})"


def _results(runs: _Runs, name: str) -> UncertainTable:
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
                    values[m.label] = _mean(vals)
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
            note = _status_note(rs)
        rows.append(Row(method=key[0], level=key[1], values=values, note=note))
    seed_sets = {k: tuple(r.spec.seed for r in rs) for k, rs in runs.groups.items()}
    notes = [
        f"Mean over seeds of the done runs ({runs.label}) ± the half-width of its {_LEVEL_TEXT} Student-t "
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
    """Per row and column: row − Baseline (parameter level) over the seeds both have, the variances
    moderated per column across the rows (`statistics.moderated_pairs`)."""
    base_key = (BASELINE, "parameter")
    out: dict[RowKey, dict[str, Estimate]] = {}
    for c in {c for v in estimates.values() for c in v}:
        values = {
            r.key: dict(zip(e.seeds, e.values))
            for r in rows
            for e in [estimates.get(r.key, {}).get(c)]
            if e is not None
        }
        for k, p in moderated_pairs(values, base_key).items():
            out.setdefault(k, {})[c] = p
    return {r.key: out[r.key] for r in rows if r.key in out}


def _moderated(estimates: Mapping[RowKey, Mapping[str, Estimate]]) -> dict[RowKey, dict[str, Estimate]]:
    """Each column's estimates with their variances moderated together (`statistics.moderate`: one
    column of one table is one family of cells measured the same way)."""
    out: dict[RowKey, dict[str, Estimate]] = {k: dict(v) for k, v in estimates.items()}
    for c in {c for v in estimates.values() for c in v}:
        for k, e in moderate({k: v[c] for k, v in estimates.items() if c in v}).items():
            out[k][c] = e
    return out


def _relative_change(results: ResultTable, name: str) -> ResultTable:
    """Table 4: 100 × (feature − parameter) / parameter of the same method (`reference.relative_change`).

    On a results table with per-seed values each cell also gets the estimate of the per-seed change
    100 × (f_s − p_s) / p_s over the seeds both levels ran (same seed = same initialisation and
    data order): the paired interval the verdicts use for this table."""
    rows, estimates = [], {}
    seeded = isinstance(results, UncertainTable) and bool(results.estimates)
    for r in results.rows:
        if r.level != "feature" or not results.has(r.method, "parameter"):
            continue
        base = results.row(r.method, "parameter")
        values: dict[str, float | None] = {}
        why = []
        for c in results.columns:
            new, old = r.values[c], base.values[c]
            if new is None or old is None:
                values[c] = None
                why.append(f"{c}: {'feature' if new is None else 'parameter'}-level value is null")
            elif old == 0:
                values[c] = None
                why.append(f"{c}: parameter-level value is 0")
            else:
                values[c] = relative_change(results, r.method, c)
                f, p = (results.estimate(k, c) if seeded else None for k in (r.key, base.key))
                if f is not None and p is not None:
                    fs, ps = dict(zip(f.seeds, f.values)), dict(zip(p.seeds, p.values))
                    per_seed = {s: 100.0 * (fs[s] - ps[s]) / ps[s] for s in fs.keys() & ps.keys() if ps[s] != 0}
                    if per_seed:
                        estimates.setdefault(r.key, {})[c] = estimate(per_seed)
        notes = [
            n for n in (f"feature: {r.note}" if r.note else None, f"parameter: {base.note}" if base.note else None) if n
        ]
        rows.append(Row(method=r.method, level="feature", values=values, note="; ".join(why + notes) if why else None))
    table = ResultTable(
        name=name,
        columns=results.columns,
        higher_is_better=results.higher_is_better,
        rows=tuple(rows),
        units={
            c: f"percent relative change of {c}: 100 × (feature − parameter) / parameter, same method"
            for c in results.columns
        },
        printed_decimals={c: PERCENT_DECIMALS for c in results.columns},
        notes=(
            "Methods run at both gradient levels (loss-only methods have no feature level). A positive "
            "change in a lower-is-better column is a degradation.",
            f"± : half-width of the {_LEVEL_TEXT} Student-t interval of the per-seed change 100 × (f_s − p_s) / "
            "p_s (feature and parameter run of the same seed), its variance moderated across the column's "
            f"methods ({_MODERATED_TEXT}); the cell itself is the change of the means.",
        ),
        origin=name,
    )
    if estimates:
        return UncertainTable(**_fields(table), estimates=_moderated(estimates))
    return table


def _end_value(record: RunRecord, key: str) -> tuple[float | None, int, str | None]:
    """Mean of the last min(50, len) recorded points of trajectory[key] (§5.5); (None, 0, why) if undefined."""
    traj = (record.trajectory or {}).get(key)
    if not traj:
        return None, 0, f"no {key!r} trajectory in seed {record.spec.seed}"
    tail = [float(v) for v in traj[-RS_LAST_POINTS:]]
    if not all(math.isfinite(v) for v in tail):
        return None, len(tail), f"{key} non-finite in the last {len(tail)} points of seed {record.spec.seed}"
    return _mean(tail), len(tail), None


@dataclass(frozen=True)
class _Ends:
    values: Mapping[str, Mapping[str, Mapping[int, float]]]  # measure key -> method -> seed -> end value
    left_out: Mapping[str, Mapping[str, str]]  # measure key -> method -> why
    lengths: tuple[int, ...]  # trajectory lengths seen
    used: tuple[int, ...]  # points averaged


def _ends(runs: _Runs) -> _Ends:
    values: dict[str, dict[str, dict[int, float]]] = {k: {} for k, _, _ in MEASURES}
    left: dict[str, dict[str, str]] = {k: {} for k, _, _ in MEASURES}
    lengths, used = set(), set()
    for name, level in runs.keys:
        if level != "parameter":
            continue
        rs = runs.groups[(name, level)]
        for key, _, _ in MEASURES:
            if not runs.done((name, level)):
                left[key][name] = _status_note(rs)
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


def _final_measures(runs: _Runs, ends: _Ends, name: str) -> UncertainTable:
    columns = tuple(label for _, label, _ in MEASURES)
    rows, estimates = [], {}
    for method, level in runs.keys:
        if level != "parameter":
            continue
        vals = {}
        for key, label, _ in MEASURES:
            seeds = ends.values[key].get(method)
            vals[label] = None if seeds is None else _mean(list(seeds.values()))
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
            f"its {_LEVEL_TEXT} Student-t interval over seeds. Lower GDS/GMS: more conflict/dominance (§5.1); "
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
        why = [f"{m}: {w}" for m, w in ends.left_out[key].items()]
        for c in results.columns:
            items = []
            for r in results.rows:
                if r.level != "parameter":
                    continue
                perf, end = r.values[c], ends_of[label].get(r.method)
                if perf is None:
                    if r.method not in ends.left_out[key]:
                        why.append(f"{r.method}: no {c} value ({r.note})")
                    continue
                if end is not None:
                    items.append((r.method, end, perf if results.higher_is_better[c] else -perf))
            ranked_sets.add(tuple(m for m, _, _ in items))
            values[c] = None
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
                note=("left out: " + "; ".join(dict.fromkeys(why))) if why else None,
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
            f"in brackets its range over the simultaneous {_LEVEL_TEXT} region of the seed means it is computed "
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


def _derive(runs: _Runs, ends: _Ends, base: Mapping[str, ResultTable]) -> dict[str, ResultTable]:
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


def _study(runs: _Runs) -> Study:
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
    """Our tables from stored runs, keyed like the paper's: the benchmark's `paper_tables`
    (results, relative change when the paper has one, ranking similarity) plus 'relative_change'
    (always; the same table as the paper-named one when there is one), 'final_measures' (GDS, GMS,
    FD at the end of training per parameter-level method) and 'figure5' (its FD column, the input
    of the Figure 5 claim). Raises ValueError for mixed budgets, steps, benchmarks or duplicates.

    Every table is a `study.UncertainTable` bound to the same `Study`: base cells (results, final
    measures) carry their per-seed values and paired differences to the Baseline; derived cells
    (relative change, ranking similarity) a percentile interval over posterior draws (none with
    one seed, or with `derived_intervals=False`, which skips the draws behind them)."""
    study = _study(_runs(records, benchmark))
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


# -- rendering -----------------------------------------------------------------------------------
def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell_text(
    table: ResultTable, value: float | None, column: str, key: RowKey | None = None, marked: bool = False
) -> str:
    """The printed value, its uncertainty on our tables (`UncertainTable.spread_text`; a '(n=1)' is
    left to the mark of a `marked` cell) and '%' for percent units."""
    if value is None:
        return "null"
    d = table.printed_decimals.get(column)
    text = f"{value:.{d}f}" if d is not None else f"{value:.6g}"
    if key is not None and isinstance(table, UncertainTable):
        spread = table.spread_text(key, column)
        text += "" if marked and spread == " (n=1)" else spread
    return text + ("%" if table.units.get(column, "").startswith("percent") else "")


def _baseline_for_marks(table: ResultTable) -> Row | None:
    rows = [r for r in table.rows if r.method == BASELINE]
    if not rows:
        return None
    if len(rows) > 1:
        raise ValueError(f"{table.title}: Baseline at levels {[r.level for r in rows]}; marks need one Baseline row")
    return rows[0]


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


def to_markdown(table: ResultTable, *, marks: bool = True) -> str:
    """The table in the paper's layout: one row per method (or measure), each cell as printed with
    `printed_decimals` (+ '%' for percent units) and, on our tables, its uncertainty: 'mean ± half-
    width' of the 95 % Student-t interval over seeds, or '[lo, hi]' for a derived cell. With `marks`:

    - our tables: '(↑)', '(↓)', '(–)' from the paired per-seed differences to the Baseline
      (`paired_mark`), plus a separate '<column> band' column with the paper's mark: better / worse
      by more than 0.01, else '–' (Table 1 caption, `reference.baseline_mark`);
    - other tables (no seeds): the 0.01-band mark in the cell, as the paper prints it.

    Tables without a Baseline row (ranking similarity, relative change) have nothing to mark against;
    the caption then says so."""
    base = _baseline_for_marks(table) if marks and table.row_kind == "method" else None
    measure = table.row_kind == "measure"
    seeded = isinstance(table, UncertainTable) and bool(table.paired)
    head = ["Measure" if measure else "Method"]
    for c in table.columns:
        head.append(c if measure else f"{c} ({'↑' if table.higher_is_better[c] else '↓'})")
        if base is not None and seeded:
            head.append(f"{c} band")
    lines = [
        "| " + " | ".join(_esc(h) for h in head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in table.rows:
        cells = [_esc(table.label(r))]
        for c in table.columns:
            comparable = (
                base is not None and r.key != base.key and r.values[c] is not None and base.values[c] is not None
            )
            text = _cell_text(table, r.values[c], c, r.key, marked=comparable and seeded)
            band = baseline_mark(table, r.method, c, level=r.level) if comparable else ""
            if comparable:
                mark = paired_mark(table, r.key, c) if seeded else band
                text += f" ({mark})" if mark else ""
            cells.append(text)
            if base is not None and seeded:
                cells.append(band)
        lines.append("| " + " | ".join(cells) + " |")
    if not table.rows:
        lines.append("| (no rows) |" + " |" * (len(head) - 1))
    caption = []
    if marks and table.row_kind == "method":
        if base is None:
            caption.append("No Baseline row: no ↑/↓/– marks.")
        else:
            if seeded:
                caption.append(
                    f"Marks in brackets against {BASELINE} ({base.level}), from the paired per-seed "
                    f"differences (same seed = same initialisation and data order): ↑ / ↓ when the "
                    f"{_LEVEL_TEXT} interval of the mean difference ({_MODERATED_TEXT}) lies wholly on "
                    "the better / worse side of 0 in the column's direction (↑ higher is better, ↓ lower "
                    "is better in the header), – when it contains 0, n=1 when one seed gives no interval."
                )
                caption.append(
                    f"'band' columns: the paper's mark (Table 1 caption), ↑ / ↓ better / worse by more "
                    f"than {BAND} on the means, – within {BAND}; it ignores the seed-to-seed spread."
                )
            else:
                caption.append(
                    f"Marks against {BASELINE} ({base.level}): ↑ / ↓ better / worse by more than {BAND} "
                    "in the column's direction (↑ higher is better, ↓ lower is better in the header), "
                    f"– within {BAND} (Table 1 caption)."
                )
            nulls = [c for c in table.columns if base.values[c] is None]
            if nulls:
                caption.append(f"No marks in {nulls}: the Baseline has no value there.")
    out = "\n".join(lines) + "\n"
    notes = list(caption) + list(table.notes) + [f"{table.label(r)}: {r.note}" for r in table.rows if r.note]
    if notes:
        out += "\n" + "\n".join(f"- {_esc(n)}" for n in notes) + "\n"
    return out


def _cell_record(table: ResultTable, r: Row, c: str) -> dict:
    """Everything known about one cell: value and, on our tables, the per-seed values, n, the
    interval (t over seeds, or percentile over draws) and the paired difference to the Baseline."""
    rec: dict = {"mean" if isinstance(table, UncertainTable) else "value": r.values[c]}
    if not isinstance(table, UncertainTable) or r.values[c] is None:
        return rec
    e = table.estimate(r.key, c)
    if e is not None:
        rec.update(
            n=e.n,
            seeds=dict(zip(e.seeds, e.values)),
            sd=e.sd,
            half_width=e.half_width,
            lo=None if e.interval is None else e.interval[0],
            hi=None if e.interval is None else e.interval[1],
            interval=f"Student-t {_LEVEL_TEXT} over seeds" if e.n > 1 else "none (one seed)",
        )
    rng = table.range(r.key, c)
    if rng is not None:
        rec.update(lo=rng[0], hi=rng[1], interval=f"range over the simultaneous {_LEVEL_TEXT} region of the seed means")
    p = table.paired_estimate(r.key, c)
    if e is not None and e.prior is not None:
        rec.update(df=e.df, scale=e.scale, interval=f"{_LEVEL_TEXT} {e.model}")
    if p is not None:
        rec["vs_baseline"] = {
            "mean": p.mean,
            "n": p.n,
            "half_width": p.half_width,
            "df": p.df,
            "scale": p.scale,
            "interval": p.model,
            "lo": None if p.interval is None else p.interval[0],
            "hi": None if p.interval is None else p.interval[1],
            "mark": paired_mark(table, r.key, c),
        }
    return rec


def to_csv(table: ResultTable) -> str:
    """method, level, one column per metric (the mean, full precision, empty for null), note; on our
    tables then per metric: n, lo, hi (the interval), per-seed values ('seed:value;...'), the
    paired difference to the Baseline (mean, lo, hi) and both marks (paired, 0.01 band)."""
    seeded = isinstance(table, UncertainTable)
    extra = ("n", "lo", "hi", "seeds", "diff", "diff lo", "diff hi", "mark", "band mark")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "method",
            "level",
            *table.columns,
            "note",
            *([f"{c} {x}" for c in table.columns for x in extra] if seeded else []),
        ]
    )
    base = _baseline_for_marks(table) if table.row_kind == "method" else None

    def num(x):
        return "" if x is None else repr(float(x))

    for r in table.rows:
        row = [r.method, r.level, *(num(r.values[c]) for c in table.columns), r.note or ""]
        if seeded:
            for c in table.columns:
                rec = _cell_record(table, r, c)
                d = rec.get("vs_baseline", {})
                band = (
                    baseline_mark(table, r.method, c, level=r.level)
                    if base is not None and r.key != base.key and r.values[c] is not None and base.values[c] is not None
                    else ""
                )
                row += [
                    rec.get("n", ""),
                    num(rec.get("lo")),
                    num(rec.get("hi")),
                    ";".join(f"{s}:{v!r}" for s, v in rec.get("seeds", {}).items()),
                    num(d.get("mean")),
                    num(d.get("lo")),
                    num(d.get("hi")),
                    d.get("mark", ""),
                    band,
                ]
        w.writerow(row)
    return buf.getvalue()


def to_json(table: ResultTable) -> str:
    """The table as JSON: title, columns, directions, notes and per row and column `_cell_record`."""
    return (
        json.dumps(
            {
                "title": table.title,
                "columns": list(table.columns),
                "higher_is_better": dict(table.higher_is_better),
                "units": dict(table.units),
                "notes": list(table.notes),
                "rows": [
                    {
                        "method": r.method,
                        "level": r.level,
                        "note": r.note,
                        "cells": {c: _cell_record(table, r, c) for c in table.columns},
                    }
                    for r in table.rows
                ],
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )


# -- figures -------------------------------------------------------------------------------------
def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average, 'valid' part only: out[i] = mean(values[i : i + window]) (§5.4).
    A NaN in a window makes that point NaN (a gap in the plot), never a silently smaller window."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"moving_average: window must be an int >= 1, got {window!r}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < window:
        raise ValueError(f"moving_average: need a 1-D series of at least {window} values, got shape {x.shape}")
    return np.convolve(x, np.ones(window) / window, mode="valid")


@dataclass(frozen=True)
class _Curve:
    method: str
    steps: np.ndarray
    values: np.ndarray  # smoothed mean over seeds of (method − baseline)
    seeds: tuple[int, ...]
    window: int
    length: int
    half_width: np.ndarray | None = None  # per step: t interval over seeds of the smoothed difference


def _curves(runs: _Runs, key: str) -> tuple[list[_Curve], list[str]]:
    """Per parameter-level method: mean over seeds of trajectory − Baseline's trajectory of the same
    seed on their common steps, smoothed with window max(1, length // 10) (§5.4)."""
    base = {r.spec.seed: r for r in runs.groups.get((BASELINE, "parameter"), ()) if r.status == "done"}
    curves, notes = [], []
    for name, level in runs.keys:
        if level != "parameter" or name == BASELINE:
            continue
        pairs = [
            (r, base[r.spec.seed]) for r in runs.groups[(name, level)] if r.status == "done" and r.spec.seed in base
        ]
        skipped = [r for r in runs.groups[(name, level)] if r.status != "done" or r.spec.seed not in base]
        if skipped:
            notes.append(
                f"{name}: seed(s) {_seeds(skipped)} left out ("
                + ", ".join(r.status if r.status != "done" else "no done Baseline run of that seed" for r in skipped)
                + ")"
            )
        per_seed = []
        for r, b in pairs:
            mine = dict(zip((r.trajectory or {}).get("step", []), (r.trajectory or {}).get(key, [])))
            theirs = dict(zip((b.trajectory or {}).get("step", []), (b.trajectory or {}).get(key, [])))
            per_seed.append({s: float(mine[s]) - float(theirs[s]) for s in mine.keys() & theirs.keys()})
        common = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
        if not common:
            if pairs:
                notes.append(f"{name}: no recorded step in common with the Baseline")
            continue
        window = max(1, len(common) // 10)
        smoothed = np.array([moving_average([d[s] for s in common], window) for d in per_seed])
        half = None
        if len(per_seed) > 1:  # Student-t interval over seeds at every step (smoothing is linear)
            half = t_quantile(LEVEL, len(per_seed) - 1) * smoothed.std(axis=0, ddof=1) / math.sqrt(len(per_seed))
        curves.append(
            _Curve(
                name,
                np.array(common[window - 1 :]),
                smoothed.mean(axis=0),
                tuple(r.spec.seed for r, _ in pairs),
                window,
                len(common),
                half,
            )
        )
    return curves, notes


def _figure_path(outdir: Path, key: str) -> Path:
    return outdir / f"figure{FIGURES[key]}_{key}.png"


def trajectory_figures(records: Iterable[RunRecord], benchmark: Benchmark | str, outdir: str | Path) -> list[Path]:
    """Figures 3 (GDS), 4 (GMS), 5 (FD) as PNG: each parameter-level method's trajectory minus the
    Baseline's (same seed), moving average over 1/10 of the length (at least 1 point), mean over
    seeds with a band of its 95 % Student-t interval over seeds (no band with one seed). One small
    panel per method on a shared y axis, so that 15 curves never overlap. Raises ValueError when
    there is no done parameter-level Baseline run to subtract."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = _runs(records, benchmark)
    if not any(r.status == "done" for r in runs.groups.get((BASELINE, "parameter"), ())):
        raise ValueError(
            f"{runs.label}: no done parameter-level {BASELINE} (ew) run; Figures 3-5 plot the "
            "trajectories relative to it"
        )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = [n for n, lv in runs.keys if lv == "parameter" and n != BASELINE]
    cmap = colormaps["tab20"]
    paths = []
    for key, label, _ in MEASURES:
        curves, _ = _curves(runs, key)
        ncols = min(4, max(1, len(curves)))
        nrows = max(1, math.ceil(len(curves) / ncols))
        fig = Figure(figsize=(3.2 * ncols + 0.6, 2.3 * nrows + 1.1))
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax in axes[len(curves) :]:
            ax.set_visible(False)
        if not curves:
            axes[0].set_visible(True)
            axes[0].text(0.5, 0.5, "no curves", ha="center", va="center", transform=axes[0].transAxes)
        for ax, c in zip(axes, curves):
            i = names.index(c.method) % 20  # the 10 dark tab20 colours first, then the 10 light ones
            color = cmap(2 * i if i < 10 else 2 * (i - 10) + 1)
            ax.axhline(0.0, color="black", lw=0.8, ls="--")
            if c.half_width is not None:
                ax.fill_between(
                    c.steps, c.values - c.half_width, c.values + c.half_width, color=color, alpha=0.25, lw=0
                )
            ax.plot(c.steps, c.values, color=color, lw=1.6, marker="." if len(c.steps) < 30 else None)
            n = len(c.seeds)
            ax.set_title(f"{c.method} (n={n}{', no band' if n < 2 else ''})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in axes[(nrows - 1) * ncols :]:
            ax.set_xlabel("training step", fontsize=8)
        for ax in axes[::ncols]:
            ax.set_ylabel(f"Δ{label} vs {BASELINE}", fontsize=8)
        windows = sorted({(c.window, c.length) for c in curves})
        smooth = ", ".join(f"window {w} of {n} points" for w, n in windows) or "no curves"
        fig.suptitle(
            f"Figure {FIGURES[key]}: {label} − {BASELINE} {label} (same seed), {runs.bench.name}, budget "
            f"{runs.budget}; parameter-level runs, moving average ({smooth});\nline: mean over seeds, band: "
            f"{_LEVEL_TEXT} Student-t interval over seeds, dashed: the {BASELINE}",
            fontsize=9,
        )
        fig.tight_layout()
        path = _figure_path(outdir, key)
        fig.savefig(path, dpi=100, metadata={"Software": None})
        paths.append(path)
    return paths


# -- claims --------------------------------------------------------------------------------------
def claim_verdicts(tables: Mapping[str, ResultTable]) -> list[dict]:
    """Every claim of `claims.CLAIMS` on `tables` (`verdicts.judge_all`): {"id", "section",
    "statement", "verdict", "evidence", "support", "seeds"}.

    On our tables (`result_tables`) the verdict is holds / contradicted / inconclusive, decided in a
    simultaneous 95 % region of the seed means (`mtlcheck.study.paper.verdicts`); on tables without seeds (the
    paper's) holds / contradicted as the predicate says. "not evaluable": the tables lack a table,
    row, column or value the claim needs (the evidence names it); "error": the predicate raised
    anything else (a bug, shown rather than hidden). Rows with a null value (diverged, failed,
    undefined) are removed first and named."""
    return judge_all(tables)


def verdict_markdown(verdicts: Sequence[Mapping]) -> str:
    """A markdown table of claim verdicts, with a count per verdict first."""
    counts = Counter(v["verdict"] for v in verdicts)
    head = ", ".join(f"{k}: {counts.get(k, 0)}" for k in VERDICTS if counts.get(k, 0) or k != "error")
    lines = [
        f"{len(verdicts)} claims — {head}.",
        "",
        "| Claim | Section | Statement | Verdict | Support | Seeds to decide | Evidence |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for v in verdicts:
        support = "" if v.get("support") is None else f"{v['support']:.0%}"
        seeds = "" if v.get("seeds") is None else str(v["seeds"])
        if v["verdict"] == "inconclusive" and "not decided even with" in v["evidence"]:
            seeds = f"> {MAX_SEEDS}"
        lines.append(
            "| "
            + " | ".join(_esc(v[k]) for k in ("id", "section", "statement"))
            + f" | **{v['verdict']}** | {support} | {seeds} | {_esc(v['evidence'])} |"
        )
    return "\n".join(lines) + "\n"


# -- the report ----------------------------------------------------------------------------------
def _fmt_s(values: list[float]) -> str:
    return f"{_mean(values):.2f}" if values else "n/a"


def _runs_section(runs: _Runs) -> str:
    lines = [
        "| Method | Level | Seeds | done | diverged | failed | unfinished | train s (mean) | eval s (mean) "
        "| wall s (sum) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = Counter()
    wall_total = 0.0
    for key in runs.keys:
        rs = runs.groups[key]
        st = Counter(r.status for r in rs)
        total.update(st)
        tm = [r.timings or {} for r in rs]
        train = [float(t["train_seconds"]) for t in tm if "train_seconds" in t]
        ev = [float(t["eval_seconds"]) for t in tm if "eval_seconds" in t]
        wall = [float(t["attempt_wall_s"]) for t in tm if "attempt_wall_s" in t]
        wall_total += math.fsum(wall)
        lines.append(
            f"| {_esc(key[0])} | {key[1]} | {_seeds(rs)} | {st['done']} | {st['diverged']} | {st['failed']} | "
            f"{st['pending'] + st['running']} | {_fmt_s(train)} | {_fmt_s(ev)} | "
            f"{f'{math.fsum(wall):.2f}' if wall else 'n/a'} |"
        )
    n = sum(total.values())
    summary = (
        f"{n} runs: {total['done']} done, {total['diverged']} diverged, {total['failed']} failed, "
        f"{total['pending'] + total['running']} unfinished; total wall time {wall_total:.2f} s "
        "(sum of the stored `attempt_wall_s`; train/eval seconds from the stored timings)."
    )
    return summary + "\n\n" + "\n".join(lines) + "\n"


def write_report(records: Iterable[RunRecord], benchmark: Benchmark | str, outdir: str | Path) -> Path:
    """report.md (runs and wall times, our tables with marks, figures, claim verdicts), one CSV per
    table and Figures 3-5 as PNG in `outdir`; returns the report's path. The text is a function of
    the records only (no dates, no paths outside `outdir`)."""
    records = list(records)
    runs = _runs(records, benchmark)
    bench = runs.bench
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tables = result_tables(records, bench)
    res_name, rel_name, rs_name = bench.paper_tables
    setup = bench.setup(runs.budget, runs.steps)
    parts = [
        f"# mtlcheck report: {bench.name}, budget {runs.budget}",
        "",
        f"{bench.description}. {setup.steps} training steps, measures (GDS, GMS, FD) recorded every "
        f"{setup.monitor_every} steps. Tables keyed as the paper's: results = {res_name}, relative change = "
        f"{rel_name or 'relative_change (the paper has no such table for this benchmark)'}, ranking similarity = "
        f"{rs_name}. Values are means over seeds ± the half-width of their {_LEVEL_TEXT} Student-t interval over "
        "seeds (the store keeps one number per run and metric, so the test samples cannot be resampled); derived "
        f"paired differences to the Baseline and Table 4's per-seed changes use variances moderated across the "
        f"column's rows ({_MODERATED_TEXT}); a ranking similarity carries in brackets its range over the "
        f"simultaneous {_LEVEL_TEXT} region of the seed means it is computed from. The paper's own numbers are "
        "not in this report.",
        "",
        "## Runs",
        "",
        _runs_section(runs),
    ]
    sections = [
        (res_name, "Results per method and gradient level (Tables 1-3 layout)."),
        (
            "relative_change",
            "Feature-level vs parameter-level runs of the same method, "
            "100 × (feature − parameter) / parameter (Table 4 layout).",
        ),
        (rs_name, "Ranking similarity of each measure against each test metric (Tables 5-7 layout)."),
        ("final_measures", "The measures' end-of-training values that the ranking similarity ranks."),
    ]
    for key, what in sections:
        t = tables[key]
        fname = f"{key}.csv"
        jname = f"{key}.json"
        (outdir / fname).write_text(to_csv(t), encoding="utf-8")
        (outdir / jname).write_text(to_json(t), encoding="utf-8")
        parts += [
            f"## {t.title}",
            "",
            what,
            "",
            to_markdown(t, marks=key == res_name),
            f"CSV: [{fname}]({fname}), JSON: [{jname}]({jname}) (per-seed values, mean, interval, n)",
            "",
        ]
    parts += [
        "The `figure5` table given to the claims is the FD column of the final measures.",
        "",
        "## Figures 3-5: trajectories relative to the Baseline",
        "",
    ]
    try:
        paths = trajectory_figures(records, bench, outdir)
    except ValueError as exc:
        if BASELINE not in str(exc):
            raise
        parts += [f"No figures: {exc}.", ""]
    else:
        for path, (key, label, _) in zip(paths, MEASURES):
            _, notes = _curves(runs, key)
            parts += [f"![Figure {FIGURES[key]}: {label}]({path.name})", ""]
            parts += [f"- {_esc(n)}" for n in notes] + ([""] if notes else [])
    parts += [
        "## Claims on these runs",
        "",
        "Every claim of `mtlcheck.study.paper.claims` applied to the tables above (rows with null values removed). "
        "A verdict is decided (holds / contradicted) only when the claim's predicate gives that answer "
        f"everywhere in a simultaneous {_LEVEL_TEXT} region of the seed means it depends on (Student-t "
        "intervals over seeds of the Baseline and of each row's paired difference to it, the latter with "
        f"variances moderated per column ({_MODERATED_TEXT}), Bonferroni over those cells); otherwise it "
        "is inconclusive, with the number of seeds that would decide it at the "
        "observed means and spreads. Support: the fraction of posterior draws of the means on which the "
        "claim holds (a summary, not the decision rule: see `mtlcheck.study.paper.verdicts`).",
        "",
        verdict_markdown(claim_verdicts(tables)),
    ]
    path = outdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
