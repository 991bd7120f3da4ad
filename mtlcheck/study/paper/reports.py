"""The report of one benchmark's stored runs: report.md with the runs and their wall times, our
tables with their marks (`our_tables`, `render`), Figures 3-5 (`figures`) and every claim's verdict
(`verdicts`), plus one CSV and one JSON per table and the figures as PNG.

`write_report` is a function of the run records only: the same records give the same files (no
dates, no paths outside the output folder).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mtlcheck.study.benchmarks import Benchmark
from mtlcheck.study.experiments.records import RunRecord
from mtlcheck.study.experiments.runner import PAPER_METHODS
from mtlcheck.study.paper.figures import FIGURES, relative_curves, trajectory_figures
from mtlcheck.study.paper.our_tables import LEVEL_TEXT, PAIRED_TEXT, tables_of
from mtlcheck.study.paper.render import escape, to_csv, to_json, to_markdown, verdict_markdown
from mtlcheck.study.paper.result_table import BASELINE
from mtlcheck.study.paper.runs import MEASURES, Runs, group_runs, mean, seeds_text
from mtlcheck.study.paper.sequential import LOOKS, assess, run_cost, seeds_of, summary_markdown
from mtlcheck.study.paper.verdicts import judge_all

__all__ = ["claim_tables", "write_combined_report", "write_report"]

_CLAIMS_RULE = (
    "Most claims are decided comparison by comparison: each signed paired difference between two rows "
    "over the seeds they share (one-sided t, 2.5 % per direction), 'holds' by intersection-union, "
    "'contradicted' by Bonferroni over the comparisons that can falsify the claim; the deciding "
    "comparison is shown with its simultaneous interval in the column's units ('equivalent': every "
    "comparison left open is equal within its margin). Claims on rankings of rankings are decided "
    f"only where the predicate gives one answer in the whole simultaneous {LEVEL_TEXT} region of the "
    "seed means they read (Student-t intervals over seeds, Bonferroni over those cells). A wrong "
    "verdict has probability ≤ 2.5 % per claim either way by comparisons, and ≤ 5 % in all by region "
    "search (the region misses the truth); ties decide nothing."
)
_MISSING_RULE = (
    "A row without values (a run that diverged, failed or has not finished, or a value that is undefined) "
    "is not replaced: "
    "every claim that reads it is not evaluable, and its verdict names the row and why; a claim about all "
    "rows of a table (a ranking, 'most methods') reads every row, so it is not judged on the others."
)
_JUDGED_TOGETHER = "Judged over every benchmark's tables together: see ../report.md."


def _fmt_s(values: list[float]) -> str:
    return f"{mean(values):.2f}" if values else "n/a"


def _write(outdir: Path, parts: list[str]) -> Path:
    path = outdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _runs_section(runs: Runs) -> str:
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
            f"| {escape(key[0])} | {key[1]} | {seeds_text(rs)} | {st['done']} | {st['diverged']} | {st['failed']} | "
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


OTHERS = "other_methods"


def _is_paper(record: RunRecord) -> bool:
    return record.spec.method in PAPER_METHODS


def _others_section(runs: Runs, res_name: str, outdir: Path):
    """The runs of methods outside the paper's 16 (added after it, as-published variants, third
    parties'): their results table, with the Baseline's rows for reference, outside the paper's
    tables and claims."""
    if not runs.where(lambda r: not _is_paper(r)).groups:
        return []
    others = runs.where(lambda r: not _is_paper(r) or r.spec.method == "ew")
    t = tables_of(others, derived_intervals=False)[res_name]
    (outdir / f"{OTHERS}.csv").write_text(to_csv(t), encoding="utf-8")
    (outdir / f"{OTHERS}.json").write_text(to_json(t), encoding="utf-8")
    return [
        "## Other methods (extra rows: not in the paper's tables, figures or claims)",
        "",
        "Methods outside the paper's 16 (added after it, as-published variants, third parties'), laid out as "
        "the results table, with the Baseline's rows for reference; the claims below never read them.",
        "",
        to_markdown(t, marks=True),
        f"CSV: [{OTHERS}.csv]({OTHERS}.csv), JSON: [{OTHERS}.json]({OTHERS}.json)",
        "",
    ]


def _write_others_only(runs: Runs, outdir: Path) -> Path:
    bench = runs.bench
    parts = [
        f"# mtlcheck report: {bench.name}, budget {runs.budget}",
        "",
        f"{bench.description}. No run of the paper's methods: no paper tables, figures or claims.",
        "",
        "## Runs",
        "",
        _runs_section(runs),
        *_others_section(runs, bench.paper_tables[0], outdir),
    ]
    return _write(outdir, parts)


def write_report(
    records: Iterable[RunRecord], benchmark: Benchmark | str, outdir: str | Path, *, until_decided: int | None = None
) -> Path:
    """report.md (a summary of the verdicts, runs and wall times, our tables with marks, figures,
    claim verdicts), one CSV per table and Figures 3-5 as PNG in `outdir`; returns the report's path.
    The text is a function of the records only (no dates, no paths outside `outdir`).

    `until_decided` (max seeds): the verdicts of the sequential design that added the seeds
    (`sequential.assess`, error spent over its looks) instead of the fixed design's."""
    return _write_runs_report(group_runs(records, benchmark), outdir, until_decided=until_decided)


def _write_runs_report(
    runs: Runs,
    outdir: str | Path,
    *,
    until_decided: int | None = None,
    claims: str | None = None,
    tables: Mapping[str, Any] | None = None,
) -> Path:
    """`write_report` of grouped runs. `claims`: a line to print instead of judging the claims here
    (the combined report judges them once over every benchmark's tables). `tables`: the paper
    methods' `tables_of` when already computed."""
    bench = runs.bench
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # the paper's tables, figures and claims read the paper's methods only; any other method (added
    # after the paper, an as-published variant, a third party's) is an extra row in its own section
    paper_runs = runs.where(_is_paper)
    if not paper_runs.groups:
        return _write_others_only(runs, outdir)
    if tables is None:
        tables = tables_of(paper_runs)
    if claims is None:
        verdicts, summary = _verdicts({bench.name: paper_runs}, {bench.name: tables}, until_decided)
    else:
        verdicts, summary = [], claims
    res_name, rel_name, rs_name = bench.paper_tables
    setup = bench.setup(runs.budget, runs.steps)
    parts = [
        f"# mtlcheck report: {bench.name}, budget {runs.budget}",
        "",
        f"{bench.description}. {setup.steps} training steps, measures (GDS, GMS, FD) recorded every "
        f"{setup.monitor_every} steps. Tables keyed as the paper's: results = {res_name}, relative change = "
        f"{rel_name or 'relative_change (the paper has no such table for this benchmark)'}, ranking similarity = "
        f"{rs_name}. Values are means over seeds ± the half-width of their {LEVEL_TEXT} Student-t interval over "
        "seeds (the store keeps one number per run and metric, so the test samples cannot be resampled); derived "
        "paired differences to the Baseline and Table 4's per-seed changes use "
        f"{PAIRED_TEXT}; a ranking similarity carries in brackets its range over the "
        f"simultaneous {LEVEL_TEXT} region of the seed means it is computed from. The paper's own numbers are "
        "not in this report.",
        "",
        "## Summary",
        "",
        summary,
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
        paths = trajectory_figures(paper_runs, outdir)
    except ValueError as exc:
        if BASELINE not in str(exc):
            raise
        parts += [f"No figures: {exc}.", ""]
    else:
        for path, (key, label, _) in zip(paths, MEASURES):
            _, notes = relative_curves(paper_runs, key)
            parts += [f"![Figure {FIGURES[key]}: {label}]({path.name})", ""]
            parts += [f"- {escape(n)}" for n in notes] + ([""] if notes else [])
    parts += _others_section(runs, res_name, outdir)
    if claims is not None:
        parts += ["## Claims on these runs", "", claims, ""]
        return _write(outdir, parts)
    parts += [
        "## Claims on these runs",
        "",
        "Every claim of `mtlcheck.study.paper.claims` applied to the tables above. "
        + _MISSING_RULE
        + " "
        + _CLAIMS_RULE,
        "",
        (
            f"These verdicts are the sequential design's (`--until-decided`, up to {until_decided} seeds): each "
            f"comparison is tested on the first m seeds its rows share, m the largest of the looks {list(LOOKS)} "
            "reached, at α/7 per look, so that adding seeds where they decide keeps the error ≤ 2.5 % per "
            "claim either way; claims without a comparison form (region search) are judged at the largest look "
            "every row they read has reached, their region's 5 % spent over the looks."
            if until_decided
            else ""
        ),
        "",
        verdict_markdown(verdicts),
    ]
    return _write(outdir, parts)


def _verdicts(
    runs_by_benchmark: Mapping[str, Runs], tables_by_benchmark: Mapping[str, Mapping[str, Any]], until
) -> tuple[list[dict], str]:
    """The verdicts of every claim over these benchmarks' tables (the fixed design's, or with
    `until` the sequential design's) and the report's plain summary."""
    tables = claim_tables(tables_by_benchmark)

    def tables_at(m: int):
        return claim_tables(
            {name: tables_of(runs.where(lambda r: r.spec.seed < m)) for name, runs in runs_by_benchmark.items()}
        )

    at = table_benchmarks(tables_by_benchmark)
    plan = assess(tables, max_seeds=until or LOOKS[-1], tables_at=tables_at, cost=run_cost(runs_by_benchmark, at))
    verdicts = [s.verdict for s in plan.states] if until else judge_all(tables)
    return verdicts, summary_markdown(verdicts, plan, seeds_of(runs_by_benchmark, at), until)


def table_benchmarks(tables_by_benchmark: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Which benchmark gives each table of `claim_tables` (the sequential design asks for seeds per
    table and row)."""
    from mtlcheck.study.benchmarks import get_benchmark

    out: dict[str, str] = {}
    for name, tables in tables_by_benchmark.items():
        for key in tables:
            if key in get_benchmark(name).paper_tables or len(tables_by_benchmark) == 1:
                out[key] = name
    out["figure5"] = out.get("table1") or next(iter(tables_by_benchmark))
    return out


def claim_tables(tables_by_benchmark: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One mapping of the paper's tables from several benchmarks' `result_tables`: each
    benchmark gives its `paper_tables` (Tables 1-7 by name), and 'figure5' comes from the
    benchmark that gives Table 1 (the paper plots Figure 5 on MetaGraspNet, §5.4), or from the only
    benchmark when there is one (which then gives all its tables). ValueError when two benchmarks
    give the same table."""
    from mtlcheck.study.benchmarks import get_benchmark

    if len(tables_by_benchmark) == 1:
        return dict(next(iter(tables_by_benchmark.values())))
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, tables in tables_by_benchmark.items():
        for key in (k for k in get_benchmark(name).paper_tables if k is not None):
            if key in source:
                raise ValueError(f"{source[key]} and {name} both give {key}: report them separately")
            out[key], source[key] = tables[key], name
    fig5 = source.get("table1")
    if fig5 is not None:
        out["figure5"] = tables_by_benchmark[fig5]["figure5"]
    return out


def write_combined_report(
    records_by_benchmark: Mapping[str, Iterable[RunRecord]], outdir: str | Path, *, until_decided: int | None = None
) -> Path:
    """The report of several benchmarks' runs (`mtlcheck reproduce --benchmark all`): each
    benchmark's own report (runs, tables, figures) in `outdir/<benchmark>/`, and `outdir/report.md`
    with a summary, their result and ranking-similarity tables and one claims section judged over all
    their tables together (`claim_tables`: which benchmark feeds which table). Returns report.md's
    path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paper_runs: dict[str, Runs] = {}
    tables_by_benchmark: dict[str, dict] = {}
    sections = []
    for name, records in records_by_benchmark.items():
        runs = group_runs(records, name)
        bench = runs.bench
        paper_runs[name] = runs.where(_is_paper)
        tables = tables_of(paper_runs[name])
        tables_by_benchmark[name] = tables
        sub = _write_runs_report(runs, outdir / name, claims=_JUDGED_TOGETHER, tables=tables)
        records = runs.records
        res_name, _, rs_name = bench.paper_tables
        wall = math.fsum(float((r.timings or {}).get("attempt_wall_s", 0.0)) for r in records)
        sections += [
            f"## {name}: {len(records)} runs, {wall:.0f} s wall time (sum over runs); report: "
            f"[{name}/{sub.name}]({name}/{sub.name})",
            "",
        ]
        for key in (res_name, rs_name):
            sections += [f"### {tables[key].title}", "", to_markdown(tables[key], marks=key == res_name), ""]
    verdicts, summary = _verdicts(paper_runs, tables_by_benchmark, until_decided)
    at = table_benchmarks(tables_by_benchmark)
    feeds = ", ".join(f"{k} ← {n}" for k, n in at.items() if k.startswith(("table", "figure")))
    parts = [
        f"# mtlcheck report: {', '.join(records_by_benchmark)}",
        "",
        "One study over several benchmarks: each has its own report (runs and wall times, every table, "
        "Figures 3-5) in its folder; the claims are judged once, below, over all their tables.",
        "",
        "## Summary",
        "",
        summary,
        "",
        *sections,
        "## Claims on these runs",
        "",
        f"Every claim of `mtlcheck.study.paper.claims` judged over the tables of all benchmarks ({feeds}), "
        f"as in a single benchmark's report. {_MISSING_RULE} {_CLAIMS_RULE}",
        "",
        verdict_markdown(verdicts),
    ]
    return _write(outdir, parts)
