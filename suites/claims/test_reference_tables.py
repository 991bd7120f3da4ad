"""The paper's Tables 1-7 as reference data (reference/paper/tableN.json): schema, transcription
against the paper's text, and the loader's error cases. Source: §3.1, §3.2, §4, §5.5."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from mtlcheck.study.paper.published_tables import PAPER_DIR, load_paper_tables, load_table
from mtlcheck.study.paper.result_table import (
    ResultTable,
    admissible_marks,
    apply_relative_change,
    baseline_mark,
    mean_rank,
    rank,
    relative_change,
    relative_change_table,
    table_from_records,
    top_k,
)

PAPER_SHA256 = "3aca8ab48d354a7d2f103f22b736b51143231273b904b40757fc47223215d184"
EXCERPT = PAPER_DIR / "source_text.txt"
TABLE_FILES = sorted(PAPER_DIR.glob("table*.json"))
ARROW = {True: "(\\uparrow)", False: "(\\downarrow)"}
PRINTED_MARK = {"↑": "(\\uparrow)", "↓": "(\\downarrow)", "–": "(–)"}
EXPECTED_ROWS = {1: 14, 2: 16, 3: 16, 4: 8, 5: 3, 6: 3, 7: 3}


def _paper_text_path() -> Path | None:
    """The paper's full text (a plain-text extraction whose sha256 is PAPER_SHA256), when
    $MTLCHECK_PAPER_TEXT names it; it is not part of the repository."""
    env = os.environ.get("MTLCHECK_PAPER_TEXT")
    return Path(env) if env and Path(env).is_file() else None


def _excerpt_blocks() -> dict[int, tuple[int, list[str]]]:
    """{table number: (first paper line number, lines)} from reference/paper/source_text.txt."""
    blocks: dict[int, tuple[int, list[str]]] = {}
    current = None
    for line in EXCERPT.read_text(encoding="utf-8").splitlines():
        m = re.match(r"## table (\d+) \(lines (\d+)-(\d+)\)$", line)
        if m:
            current = int(m.group(1))
            blocks[current] = (int(m.group(2)), [])
        elif not line.startswith("# "):
            blocks[current][1].append(line)
    return blocks


def _table_lines() -> dict[int, list[str]]:
    """Each table's text lines, from the full paper when it is here (else the verbatim excerpt)."""
    blocks = _excerpt_blocks()
    path = _paper_text_path()
    if path is None:
        return {n: lines for n, (_, lines) in blocks.items()}
    paper = path.read_text(encoding="utf-8").splitlines()
    return {n: paper[start - 1 : start - 1 + len(lines)] for n, (start, lines) in blocks.items()}


BLOCKS = _table_lines()
TABLES = load_paper_tables()


def _number(table: ResultTable, value: float, column: str) -> str:
    text = f"{value:.{table.printed_decimals[column]}f}"
    return text + "%" if table.units[column].startswith("percent") else text


def _printed_line(table: ResultTable, row) -> str:
    """The row as the paper's text prints it, rebuilt from the JSON."""
    head = row.method + (f" [{row.citation}]" if row.citation is not None else "")
    cells = []
    for c in table.columns:
        cell = _number(table, row.values[c], c)
        if c in row.markers:
            cell += " " + PRINTED_MARK[row.markers[c]]
        cells.append(cell)
    return " ".join([head, *cells])


# -- provenance ------------------------------------------------------------------------------
def test_excerpt_is_verbatim_paper_text():
    path = _paper_text_path()
    if path is None:
        pytest.skip("paper text not found (set MTLCHECK_PAPER_TEXT); tables checked against the excerpt")
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == PAPER_SHA256, f"{path} is not the transcribed version"
    paper = data.decode("utf-8").splitlines()
    for n, (start, lines) in _excerpt_blocks().items():
        assert paper[start - 1 : start - 1 + len(lines)] == lines, f"table {n} excerpt differs from {path}"


# -- schema ----------------------------------------------------------------------------------
def test_one_file_per_table():
    assert [f.name for f in TABLE_FILES] == [f"table{n}.json" for n in range(1, 8)]
    assert list(TABLES) == [f"table{n}" for n in range(1, 8)]


@pytest.mark.parametrize("path", TABLE_FILES, ids=lambda p: p.stem)
def test_schema(path: Path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    table = load_table(path)
    n = int(path.stem.removeprefix("table"))
    src = raw["source"]
    assert src["table"] == n and src["section"] and src["caption"] and src["paper"] and src["version"]
    assert PAPER_SHA256 in src["version"]
    assert set(raw["higher_is_better"]) == set(raw["units"]) == set(raw["printed_decimals"]) == set(raw["columns"])
    assert len(table.rows) == EXPECTED_ROWS[n]
    assert BLOCKS[n][-1].startswith(f"Table {n}:"), "the block must end with the table's caption"
    for word in re.findall(r"[A-Za-z]{5,}", src["caption"])[:6]:
        assert word in BLOCKS[n][-1], f"caption word {word!r} not in the paper's caption"
    for row in raw["rows"]:
        assert set(row) - {"method", "level", "citation", "markers", "note"} == set(raw["columns"])
    assert raw.get("notes"), "every table carries notes on how it was read"


@pytest.mark.parametrize("n", range(1, 8))
def test_header_matches_paper(n: int):
    table = TABLES[f"table{n}"]
    printed_arrows = "\\uparrow" in BLOCKS[n][0] or "\\downarrow" in BLOCKS[n][0]
    expected = " ".join(c + (" " + ARROW[table.higher_is_better[c]] if printed_arrows else "") for c in table.columns)
    assert BLOCKS[n][0] == expected


def test_method_sets_are_consistent():
    t1, t2, t3, t4 = (TABLES[f"table{n}"] for n in (1, 2, 3, 4))
    assert [r.method for r in t2.rows] == [r.method for r in t3.rows]
    assert len(t2.rows) == 16  # baseline + the 15 methods of §3
    assert {r.method for r in t2.rows} - {r.method for r in t1.rows} == {"GradNorm", "Nash-MTL"}
    assert {m["method"] for m in t1.not_reported if m["level"] == "parameter"} == {"GradNorm", "Nash-MTL"}
    assert {r.method for r in t4.rows} <= {r.method for r in t1.rows}
    assert all(r.level == "feature" for r in t4.rows)
    for n in (5, 6, 7):
        assert {r.method: r.level for r in TABLES[f"table{n}"].rows} == {
            "GDS": "parameter",
            "GMS": "parameter",
            "FD": "feature",
        }


# -- transcription against the paper text ------------------------------------------------------
@pytest.mark.parametrize("n", range(1, 8))
def test_every_row_matches_the_paper_line(n: int):
    """Rebuild each printed line from the JSON (values, decimals, % signs, markers, citations)."""
    table = TABLES[f"table{n}"]
    body = BLOCKS[n][1:-1]
    assert [_printed_line(table, r) for r in table.rows] == body


SPOT_CHECKS = [  # (table, method, level, column, column index in the printed row)
    (1, "DWA", "parameter", "BBox mAP", 0),
    (1, "CosReg", "parameter", "AMask mAP", 4),
    (1, "Uncertainty", "parameter", "VMask mAR", 3),
    (2, "CosReg", "parameter", "SS", 1),
    (2, "FAMO", "parameter", "DE", 0),
    (3, "GradDrop", "parameter", "NE", 1),
    (4, "MGDA", "feature", "AMask mAP", 4),
    (4, "CosReg", "feature", "AMask mAR", 5),
    (5, "FD", "feature", "BBox mAR", 1),
    (6, "FD", "feature", "IS", 2),
    (6, "GMS", "parameter", "IS", 2),
    (7, "GDS", "parameter", "NE", 1),
]


@pytest.mark.parametrize(
    "n,method,level,column,index", SPOT_CHECKS, ids=[f"t{s[0]}-{s[1]}-{s[3]}" for s in SPOT_CHECKS]
)
def test_spot_check_cell(n, method, level, column, index):
    """Grep the method's line in the paper's table block and read the cell at its position."""
    lines = [line for line in BLOCKS[n][1:-1] if re.match(rf"{re.escape(method)}( \[\d+\])? ", line)]
    assert len(lines) == 1, f"{method!r} not found once in table {n}"
    cells = re.findall(r"-?\d+\.\d+%?", lines[0])
    table = TABLES[f"table{n}"]
    assert cells[index] == _number(table, table.value(method, column, level), column)


# -- loader errors -----------------------------------------------------------------------------
def _minimal() -> dict:
    return {
        "source": {"paper": "p", "version": "v", "table": 9, "section": "0", "caption": "c"},
        "columns": ["A", "B"],
        "units": {"A": "fraction", "B": "percent"},
        "higher_is_better": {"A": True, "B": False},
        "printed_decimals": {"A": 3, "B": 1},
        "rows": [
            {"method": "Baseline", "level": "parameter", "A": 0.5, "B": 10.0},
            {"method": "X", "level": "parameter", "A": 0.52, "B": 9.0},
        ],
    }


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "table9.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_minimal_table_loads(tmp_path):
    table = load_table(_write(tmp_path, _minimal()))
    assert table.value("X", "B") == 9.0 and table.title == "Table 9"


def _mutate(kind: str) -> dict | str:
    d = _minimal()
    if kind == "unknown column in a row":
        d["rows"][1]["C"] = 1.0
    elif kind == "unknown column in higher_is_better":
        d["higher_is_better"]["C"] = True
    elif kind == "missing higher_is_better":
        del d["higher_is_better"]["B"]
    elif kind == "duplicate row":
        d["rows"].append(dict(d["rows"][1]))
    elif kind == "null without a note":
        d["rows"][1]["A"] = None
    elif kind == "bad marker":
        d["rows"][1]["markers"] = {"A": "up"}
    elif kind == "too many decimals":
        d["rows"][1]["A"] = 0.5201
    elif kind == "missing source key":
        del d["source"]["caption"]
    elif kind == "unknown level":
        d["rows"][1]["level"] = "rep"
    elif kind == "non-boolean direction":
        d["higher_is_better"]["A"] = "yes"
    elif kind == "not json":
        return "{not json"
    return d


ERROR_CASES = [
    "unknown column in a row",
    "unknown column in higher_is_better",
    "missing higher_is_better",
    "duplicate row",
    "null without a note",
    "bad marker",
    "too many decimals",
    "missing source key",
    "unknown level",
    "non-boolean direction",
    "not json",
]


@pytest.mark.parametrize("kind", ERROR_CASES)
def test_loader_rejects(tmp_path, kind):
    path = _write(tmp_path, _mutate(kind))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_table(path)


def test_null_with_note_is_accepted(tmp_path):
    d = _minimal()
    d["rows"][1]["A"] = None
    d["rows"][1]["note"] = "run diverged"
    table = load_table(_write(tmp_path, d))
    assert table.value("X", "A") is None and ("X", "parameter") not in rank(table, "A")


# -- helpers on the paper's tables ---------------------------------------------------------------
def test_rank_is_direction_aware_with_ties():
    t2 = TABLES["table2"]
    de = rank(t2, "DE")  # lower is better
    assert de[("CosReg", "parameter")] == 1 and de[("GradDrop", "parameter")] == 2
    assert ("Baseline", "parameter") not in de
    t1 = TABLES["table1"]
    vmap = rank(t1, "VMask mAP")  # GradDrop and DWA both print 0.533
    assert vmap[("GradDrop", "parameter")] == vmap[("DWA", "parameter")] == 2
    assert top_k(t1, "VMask mAP", 2) == {("IMTL", "parameter"), ("GradDrop", "parameter"), ("DWA", "parameter")}


def test_baseline_band():
    t1 = TABLES["table1"]
    assert baseline_mark(t1, "FAMO", "BBox mAP") == "↑"  # +0.048
    assert baseline_mark(t1, "CAGrad", "AMask mAR") == "↓"  # −0.013
    assert baseline_mark(t1, "CosReg", "AMask mAP") == "–"  # −0.002
    assert baseline_mark(t1, "GradVac", "BBox mAP") == "–"  # exactly +0.010: not "more than"
    assert admissible_marks(t1, "GradVac", "BBox mAP") == {"↑", "–"}
    assert admissible_marks(t1, "DWA", "BBox mAP") == {"–"}  # +0.007, printed ↑ (see claims)
    t2 = TABLES["table2"]
    assert baseline_mark(t2, "CosReg", "IS") == "↑"  # lower is better: 0.081 vs 0.131


def test_relative_change_round_trip():
    """Table 1 + Table 4 → absolute feature rows → relative changes give Table 4 back."""
    t1, t4 = TABLES["table1"], TABLES["table4"]
    both = apply_relative_change(t1, t4)
    assert both.value("MGDA", "BBox mAP", "feature") == pytest.approx(0.371 * 1.143, abs=5e-5)
    assert both.row("MGDA", "feature").note.startswith("derived")
    back = relative_change_table(both)
    assert [r.key for r in back.rows] == [r.key for r in t4.rows]
    for r in t4.rows:
        for c in t4.columns:
            assert relative_change(both, r.method, c) == pytest.approx(r.values[c], abs=0.05)


def test_mean_rank_keeps_the_row_order_of_ties():
    """Rows tied in mean rank stay in the table's order: a set's order changes with the process's
    hash seed, and the evidence of conclusion-v1-mgda-ub-best (top five by mean rank) changed with it."""
    both = apply_relative_change(TABLES["table1"], TABLES["table4"])
    mr = mean_rank(both)
    assert list(mr) == [k for k in both.keys() if k in mr] and len(mr) == 21
    by_rank = sorted(mr, key=mr.get)
    gradvac, cagrad = ("GradVac", "parameter"), ("CAGrad", "feature")
    assert mr[gradvac] == mr[cagrad] == 5.5 and by_rank.index(gradvac) < by_rank.index(cagrad)


def test_ambiguous_row_needs_level():
    both = apply_relative_change(TABLES["table1"], TABLES["table4"])
    with pytest.raises(KeyError, match="pass level="):
        both.row("MGDA")
    assert both.label(("MGDA", "feature")) == "MGDA (feature)" and both.label(("DWA", "parameter")) == "DWA"


def test_table_from_records_validates():
    t = table_from_records("ours", ["A"], {"A": True}, [{"method": "Baseline", "A": 1.0}])
    assert t.value("Baseline", "A") == 1.0
    with pytest.raises(ValueError, match="ours"):
        table_from_records("ours", ["A"], {"A": True}, [{"method": "X", "A": 1.0}, {"method": "X", "A": 2.0}])
    with pytest.raises(ValueError, match="missing higher_is_better"):
        table_from_records("ours", ["A", "B"], {"A": True}, [{"method": "X", "A": 1.0, "B": 2.0}])
