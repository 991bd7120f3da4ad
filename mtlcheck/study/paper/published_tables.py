"""The paper's published numbers: Tables 1-7 as validated `ResultTable`s, read from
`reference/paper/tableN.json` (transcribed from the lines of `reference/paper/source_text.txt`).
Read-only: nothing here writes a reference file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mtlcheck.study.paper.result_table import ROW_META, ResultTable, Row

__all__ = ["PAPER_DIR", "load_paper_tables", "load_table", "table_from_dict"]

# a wheel ships the tables as package data (mtlcheck/study/paper/_reference, copied at build time by setup.py);
# a source checkout or an editable install reads the top-level reference/, their source of truth
_PACKAGED = Path(__file__).resolve().parent / "_reference" / "paper"
PAPER_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[3] / "reference" / "paper"

_TOP_REQUIRED = ("source", "columns", "units", "higher_is_better", "printed_decimals", "rows")
_TOP_OPTIONAL = ("row_kind", "notes", "not_reported")
_SOURCE_REQUIRED = ("paper", "version", "table", "section", "caption")


def table_from_dict(data: Any, origin: str, name: str | None = None) -> ResultTable:
    """Validate the JSON schema of `reference/paper/tableN.json` and build the table."""

    def fail(message: str) -> ValueError:
        return ValueError(f"{origin}: {message}")

    if not isinstance(data, dict):
        raise fail("top level must be an object")
    missing = [k for k in _TOP_REQUIRED if k not in data]
    if missing:
        raise fail(f"missing key(s) {missing}")
    unknown = sorted(set(data) - set(_TOP_REQUIRED) - set(_TOP_OPTIONAL))
    if unknown:
        raise fail(f"unknown key(s) {unknown}")
    source = data["source"]
    if not isinstance(source, dict) or any(k not in source for k in _SOURCE_REQUIRED):
        raise fail(f"source must be an object with {list(_SOURCE_REQUIRED)}")
    columns = data["columns"]
    if not isinstance(columns, list):
        raise fail("columns must be a list")
    for key in ("units", "higher_is_better", "printed_decimals"):
        if not isinstance(data[key], dict):
            raise fail(f"{key} must be an object")
    missing = [c for c in columns if c not in data["units"] or c not in data["printed_decimals"]]
    if missing:
        raise fail(f"missing units or printed_decimals for column(s) {missing}")
    if not isinstance(data["rows"], list) or not data["rows"]:
        raise fail("rows must be a non-empty list")
    rows = []
    for i, raw in enumerate(data["rows"]):
        if not isinstance(raw, dict) or "method" not in raw or "level" not in raw:
            raise fail(f"row {i} must be an object with 'method' and 'level'")
        unknown = sorted(set(raw) - set(ROW_META) - set(columns))
        if unknown:
            raise fail(f"row {i} ({raw['method']!r}): unknown column(s) {unknown}")
        markers = raw.get("markers", {})
        if not isinstance(markers, dict):
            raise fail(f"row {i} ({raw['method']!r}): markers must be an object")
        rows.append(
            Row(
                method=raw["method"],
                level=raw["level"],
                values={c: raw[c] for c in columns if c in raw},
                markers=markers,
                note=raw.get("note"),
                citation=raw.get("citation"),
            )
        )
    table = ResultTable(
        name=name or Path(origin).stem,
        columns=tuple(columns),
        higher_is_better=data["higher_is_better"],
        rows=tuple(rows),
        units=data["units"],
        printed_decimals=data["printed_decimals"],
        source=source,
        row_kind=data.get("row_kind", "method"),
        notes=tuple(data.get("notes", ())),
        not_reported=tuple(data.get("not_reported", ())),
        origin=origin,
    )
    # Transcribed values carry no more decimals than the paper prints.
    for row in table.rows:
        for c, v in row.values.items():
            d = table.printed_decimals[c]
            if v is not None and round(v, d) != v:
                raise fail(f"({row.method!r}, {row.level!r}) {c!r} = {v!r} has more than {d} decimals")
    return table


def load_table(path: str | Path) -> ResultTable:
    """Load and validate one table file; every error is a ValueError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read table: {exc}") from exc
    return table_from_dict(data, origin=str(path))


@lru_cache(maxsize=8)
def _load_dir(directory: str) -> Mapping[str, ResultTable]:
    files = sorted(Path(directory).glob("table*.json"))
    if not files:
        raise FileNotFoundError(f"{directory}: no table*.json files")
    return MappingProxyType({f.stem: load_table(f) for f in files})


def load_paper_tables(directory: str | Path = PAPER_DIR) -> Mapping[str, ResultTable]:
    """The paper's tables keyed 'table1' ... 'table7' (read-only, cached)."""
    return _load_dir(str(Path(directory).resolve()))
