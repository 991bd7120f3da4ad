"""Rendering: a result table as Markdown (the paper's layout, with its uncertainty and marks), CSV
and JSON (every number known about each cell), and the claims' verdicts as a Markdown table.

Each renderer is a pure function of what it is given: the same table gives the same text.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence

from mtlcheck.study.paper.marks import band_mark, comparable, marked_baseline, paired_mark
from mtlcheck.study.paper.our_study import UncertainTable
from mtlcheck.study.paper.our_tables import LEVEL_TEXT, PAIRED_TEXT
from mtlcheck.study.paper.result_table import BAND, BASELINE, ResultTable, Row, RowKey
from mtlcheck.study.paper.verdicts import MAX_SEEDS, VERDICTS

__all__ = ["escape", "to_csv", "to_json", "to_markdown", "verdict_markdown"]


def escape(text: str) -> str:
    """`text` as one Markdown table cell: '|' escaped, line breaks as spaces."""
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


def to_markdown(table: ResultTable, *, marks: bool = True) -> str:
    """The table in the paper's layout: one row per method (or measure), each cell as printed with
    `printed_decimals` (+ '%' for percent units) and, on our tables, its uncertainty: 'mean ± half-
    width' of the 95 % Student-t interval over seeds, or '[lo, hi]' for a derived cell. With `marks`:

    - our tables: '(↑)', '(↓)', '(–)' from the paired per-seed differences to the Baseline
      (`paired_mark`), plus a separate '<column> band' column with the paper's mark: better / worse
      by more than 0.01, else '–' (Table 1 caption, `result_table.baseline_mark`);
    - other tables (no seeds): the 0.01-band mark in the cell, as the paper prints it.

    Tables without a Baseline row (ranking similarity, relative change) have nothing to mark against;
    the caption then says so."""
    base = marked_baseline(table) if marks else None
    measure = table.row_kind == "measure"
    seeded = isinstance(table, UncertainTable) and bool(table.paired)
    head = ["Measure" if measure else "Method"]
    for c in table.columns:
        head.append(c if measure else f"{c} ({'↑' if table.higher_is_better[c] else '↓'})")
        if base is not None and seeded:
            head.append(f"{c} band")
    lines = [
        "| " + " | ".join(escape(h) for h in head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in table.rows:
        cells = [escape(table.label(r))]
        for c in table.columns:
            marked = comparable(base, r, c)
            text = _cell_text(table, r.values[c], c, r.key, marked=marked and seeded)
            band = band_mark(table, base, r, c)
            if marked:
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
                    f"{LEVEL_TEXT} interval of the mean difference ({PAIRED_TEXT}) lies wholly on "
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
        out += "\n" + "\n".join(f"- {escape(n)}" for n in notes) + "\n"
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
            interval=f"Student-t {LEVEL_TEXT} over seeds" if e.n > 1 else "none (one seed)",
        )
    rng = table.range(r.key, c)
    if rng is not None:
        rec.update(lo=rng[0], hi=rng[1], interval=f"range over the simultaneous {LEVEL_TEXT} region of the seed means")
    p = table.paired_estimate(r.key, c)
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
    base = marked_baseline(table)

    def num(x):
        return "" if x is None else repr(float(x))

    for r in table.rows:
        row = [r.method, r.level, *(num(r.values[c]) for c in table.columns), r.note or ""]
        if seeded:
            for c in table.columns:
                rec = _cell_record(table, r, c)
                d = rec.get("vs_baseline", {})
                row += [
                    rec.get("n", ""),
                    num(rec.get("lo")),
                    num(rec.get("hi")),
                    ";".join(f"{s}:{v!r}" for s, v in rec.get("seeds", {}).items()),
                    num(d.get("mean")),
                    num(d.get("lo")),
                    num(d.get("hi")),
                    d.get("mark", ""),
                    band_mark(table, base, r, c),
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


def _deciding(v: Mapping) -> str:
    d = v.get("decision")
    link = None if d is None else d.deciding
    return "" if link is None else link.text()


def verdict_markdown(verdicts: Sequence[Mapping]) -> str:
    """A markdown table of claim verdicts, with a count per verdict first."""
    counts = Counter(v["verdict"] for v in verdicts)
    head = ", ".join(
        f"{k}: {counts.get(k, 0)}" for k in VERDICTS if counts.get(k, 0) or k not in ("error", "equivalent")
    )
    lines = [
        f"{len(verdicts)} claims — {head}.",
        "",
        "| Claim | Section | Statement | Verdict | Deciding comparison | Seeds to decide | Evidence |",
        "|---|---|---|---|---|---:|---|",
    ]
    for v in verdicts:
        seeds = "" if v.get("seeds") is None else str(v["seeds"])
        if v["verdict"] == "inconclusive" and "not decided even with" in v["evidence"]:
            seeds = f"> {MAX_SEEDS}"
        lines.append(
            "| "
            + " | ".join(escape(v[k]) for k in ("id", "section", "statement"))
            + f" | **{v['verdict']}** | {escape(_deciding(v))} | {seeds} | {escape(v['evidence'])} |"
        )
    return "\n".join(lines) + "\n"
