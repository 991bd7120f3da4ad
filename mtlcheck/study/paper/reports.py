"""The report of one benchmark's stored runs: report.md with the runs and their wall times, our
tables with their marks (`results`, `render`), Figures 3-5 (`figures`) and every claim's verdict
(`verdicts`), plus one CSV and one JSON per table and the figures as PNG.

`write_report` is a function of the run records only: the same records give the same files (no
dates, no paths outside the output folder).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from mtlcheck.study.benchmarks import Benchmark
from mtlcheck.study.experiments.runner import PAPER_METHODS
from mtlcheck.study.experiments.store import RunRecord
from mtlcheck.study.paper.figures import FIGURES, relative_curves, trajectory_figures
from mtlcheck.study.paper.render import escape, to_csv, to_json, to_markdown, verdict_markdown
from mtlcheck.study.paper.results import LEVEL_TEXT, PAIRED_TEXT, result_tables
from mtlcheck.study.paper.runs import MEASURES, Runs, group_runs, mean, seeds_text
from mtlcheck.study.paper.sequential import LOOKS, assess, run_cost, seeds_of, summary_markdown
from mtlcheck.study.paper.tables import BASELINE
from mtlcheck.study.paper.verdicts import judge_all

__all__ = ["write_report"]


def _fmt_s(values: list[float]) -> str:
    return f"{mean(values):.2f}" if values else "n/a"


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


def _others_section(others: list[RunRecord], paper: list[RunRecord], bench: Benchmark, res_name: str, outdir: Path):
    """The runs of methods outside the paper's 16 (added after it, as-published variants, third
    parties'): their results table, with the Baseline's rows for reference, outside the paper's
    tables and claims."""
    if not others:
        return []
    baseline = [r for r in paper if r.spec.method == "ew"]
    t = result_tables(others + baseline, bench, derived_intervals=False)[res_name]
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


def _write_others_only(records, runs: Runs, others, outdir: Path) -> Path:
    bench = runs.bench
    parts = [
        f"# mtlcheck report: {bench.name}, budget {runs.budget}",
        "",
        f"{bench.description}. No run of the paper's methods: no paper tables, figures or claims.",
        "",
        "## Runs",
        "",
        _runs_section(runs),
        *_others_section(others, [], bench, bench.paper_tables[0], outdir),
    ]
    path = outdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_report(
    records: Iterable[RunRecord],
    benchmark: Benchmark | str,
    outdir: str | Path,
    *,
    until_decided: int | None = None,
) -> Path:
    """report.md (a summary of the verdicts, runs and wall times, our tables with marks, figures,
    claim verdicts), one CSV per table and Figures 3-5 as PNG in `outdir`; returns the report's path.
    The text is a function of the records only (no dates, no paths outside `outdir`).

    `until_decided` (max seeds): the verdicts of the sequential design that added the seeds
    (`sequential.assess`, error spent over its looks) instead of the fixed design's."""
    records = list(records)
    runs = group_runs(records, benchmark)
    bench = runs.bench
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    # the paper's tables, figures and claims read the paper's methods only; any other method (added
    # after the paper, an as-published variant, a third party's) is an extra row in its own section
    paper = [r for r in records if r.spec.method in PAPER_METHODS]
    others = [r for r in records if r.spec.method not in PAPER_METHODS]
    if not paper:
        return _write_others_only(records, runs, others, outdir)
    tables = result_tables(paper, bench)
    paper_runs = group_runs(paper, bench)
    plan = assess(
        tables,
        max_seeds=until_decided or LOOKS[-1],
        first_look=result_tables([r for r in paper if r.spec.seed < LOOKS[0]], bench),
        cost=run_cost(paper),
    )
    verdicts = [s.verdict for s in plan.states] if until_decided else judge_all(tables)
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
        summary_markdown(verdicts, plan, seeds_of(paper), until_decided),
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
        paths = trajectory_figures(paper, bench, outdir)
    except ValueError as exc:
        if BASELINE not in str(exc):
            raise
        parts += [f"No figures: {exc}.", ""]
    else:
        for path, (key, label, _) in zip(paths, MEASURES):
            _, notes = relative_curves(paper_runs, key)
            parts += [f"![Figure {FIGURES[key]}: {label}]({path.name})", ""]
            parts += [f"- {escape(n)}" for n in notes] + ([""] if notes else [])
    parts += _others_section(others, paper, bench, res_name, outdir)
    parts += [
        "## Claims on these runs",
        "",
        "Every claim of `mtlcheck.study.paper.claims` applied to the tables above (rows with null values removed). "
        "Most claims are decided comparison by comparison: each signed paired difference between two rows "
        "over the seeds they share (one-sided t, 2.5 % per direction), 'holds' by intersection-union, "
        "'contradicted' by Bonferroni over the comparisons that can falsify the claim; the deciding "
        "comparison is shown with its simultaneous interval in the column's units ('equivalent': every "
        "comparison left open is equal within its margin). Claims on rankings of rankings are decided "
        f"only where the predicate gives one answer in the whole simultaneous {LEVEL_TEXT} region of the "
        "seed means they read (Student-t intervals over seeds, Bonferroni over those cells). A wrong "
        "verdict has probability ≤ 2.5 % per claim either way; ties decide nothing.",
        "",
        (
            f"These verdicts are the sequential design's (`--until-decided`, up to {until_decided} seeds): each "
            f"comparison is tested on the first m seeds its rows share, m the largest of the looks {list(LOOKS)} "
            "reached, at α/7 per look, so that adding seeds where they decide keeps the error ≤ 2.5 % per "
            "claim either way; claims without a comparison form are judged on the first look's seeds."
            if until_decided
            else ""
        ),
        "",
        verdict_markdown(verdicts),
    ]
    path = outdir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
