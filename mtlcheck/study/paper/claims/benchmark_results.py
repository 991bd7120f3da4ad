"""Claims of §3: the results on MetaGraspNet (Table 1), CityScapes and NYU-v2 (Tables 2-3)."""

from __future__ import annotations

from mtlcheck.study.paper.claims.common import (
    TOP3_MIN_RANKED,
    F,
    P,
    _f_gain_all,
    _f_top3,
    _f_top3_majority,
    _gain_misses,
    _gains_all,
    _majority,
    _mgn,
    _ranks_text,
    _require,
    _require_ranked,
    _signed,
    _top3_columns,
)
from mtlcheck.study.paper.claims.registry import ClaimNotEvaluable, Tables, Verdict, claim
from mtlcheck.study.paper.comparisons import Better, Missing, all_of
from mtlcheck.study.paper.published_tables import load_paper_tables
from mtlcheck.study.paper.result_table import BASELINE, admissible_marks, rank

# -- §3.1 MetaGraspNet -------------------------------------------------------------------------
CONSISTENT_GAINERS = (
    ("GradVac", P),
    ("GradDrop", P),
    ("IMTL", P),
    ("DWA", P),
    ("MGDA", F),
    ("CAGrad", F),
    ("CosReg", F),
)


def _consistent_gains_formula(tables: Tables):
    t = _mgn(tables)
    _require(t, CONSISTENT_GAINERS)
    return all_of(_f_gain_all(tables, t, k) for k in CONSISTENT_GAINERS)


@claim(
    id="mgn-consistent-gains",
    section="§3.1",
    statement=(
        "GradVac, GradDrop, IMTL, DWA, MGDA-UB, (rep) CAGrad, and (rep) CosReg achieved consistent "
        "performance gain compared to the baseline on all 6 evaluation metrics."
    ),
    source_tables=("table1", "table4"),
    notes=(
        "Feature-level rows are derived from Table 1 × Table 4; a gain is a value strictly above "
        "the baseline (the 0.01 band would drop GradVac, which the paper lists)."
    ),
    only_named=True,
    named=CONSISTENT_GAINERS,
    formula=_consistent_gains_formula,
)
def _consistent_gains(tables: Tables) -> Verdict:
    t = _mgn(tables)
    _require(t, CONSISTENT_GAINERS)
    parts, holds = [], True
    for key in CONSISTENT_GAINERS:
        ok, fails = _gains_all(t, key)
        holds &= ok
        if ok:
            worst = min(t.columns, key=lambda c: _signed(t, key, c, (BASELINE, P)))
            parts.append(
                f"{t.label(key)}: above the baseline on all {len(t.columns)}, smallest margin "
                f"{t.cell(key, worst)} vs {t.fmt(BASELINE, worst, P)}"
            )
        else:
            parts.append(f"{t.label(key)}: NOT above on " + "; ".join(fails))
    others = [
        t.label(k) for k in t.keys() if k[0] != BASELINE and k not in CONSISTENT_GAINERS and not _gain_misses(t, k)
    ]
    parts.append(f"other rows above the baseline on all metrics: {others or 'none'}")
    return Verdict(holds, f"{t.title} (Baseline row): " + " | ".join(parts))


TOP3_NAMED = (("GradVac", P), ("IMTL", P), ("MGDA", F))


def _top3_majority_formula(tables: Tables):
    t = _mgn(tables)
    _require(t, TOP3_NAMED)
    _require_ranked(t, TOP3_MIN_RANKED, "top 3")
    return all_of(_f_top3_majority(tables, t, k) for k in TOP3_NAMED)


@claim(
    id="mgn-top3-majority",
    section="§3.1",
    statement="GradVac, IMTL, and (rep) MGDA achieved top-three performance under a majority (≥3) of the metrics.",
    source_tables=("table1", "table4"),
    notes=(
        "Ranked among all MetaGraspNet rows of both levels. With Table 1 rows plus MGDA-UB only, "
        "FAMO would also be top-3 on 3 metrics."
    ),
    named=TOP3_NAMED,
    formula=_top3_majority_formula,
)
def _top3_majority(tables: Tables) -> Verdict:
    t = _mgn(tables)
    _require(t, TOP3_NAMED)
    _require_ranked(t, TOP3_MIN_RANKED, "top 3")
    need = _majority(len(t.columns))  # §3.1: "a majority (≥3) of the metrics" (of 6)
    parts, holds = [], True
    for key in TOP3_NAMED:
        cols = _top3_columns(t, key)
        holds &= len(cols) >= need
        parts.append(f"{t.label(key)} top-3 in {len(cols)}/{len(t.columns)}: {_ranks_text(t, key)}")
    others = {t.label(k): len(_top3_columns(t, k)) for k in t.keys() if k[0] != BASELINE and k not in TOP3_NAMED}
    also = [f"{k} ({n})" for k, n in others.items() if n >= need]
    parts.append(f"other rows top-3 in ≥{need}: {also or 'none'}")
    return Verdict(holds, f"{t.title}, ranks among {len(t.rows) - 1} rows (baseline excluded): " + " | ".join(parts))


@claim(
    id="table1-markers-follow-caption-band",
    section="§3.1, Table 1 caption",
    statement=(
        "Performance increase (↑) or decrease (↓) that's more than 0.01 are shown in brackets after each "
        "table entry; scores within 0.01 of the baseline are labeled '–'."
    ),
    source_tables=("table1",),
    notes="Printed differences of exactly 0.010 accept either mark (printed precision cannot decide).",
)
def _markers_follow_band(tables: Tables) -> Verdict:
    t = tables["table1"]
    if not any(r.markers for r in t.rows):
        # a claim about how the paper prints its table: no run bears on it, the paper's own does
        holds, text = _markers_checked(load_paper_tables()["table1"])
        raise ClaimNotEvaluable(
            f"{t.title} carries no printed ↑/↓/– markers (the claim is about how the paper prints its table, "
            f"which no run bears on); on the paper's own table it is {'true' if holds else 'false'}: {text}"
        )
    return Verdict(*_markers_checked(t))


def _markers_checked(t) -> tuple[bool, str]:
    """Whether every printed marker of `t` is one the 0.01 rule admits (and every cell has one)."""
    marked = [(r, c) for r in t.rows for c in r.markers]
    bad = []
    for r, c in marked:
        ok = admissible_marks(t, r.method, c, level=r.level)
        if r.markers[c] not in ok:
            d = _signed(t, r.key, c, (BASELINE, P))
            bad.append(
                f"{t.cell(r.key, c)} vs {BASELINE} {t.fmt(BASELINE, c, P)} ({d:+.3f}) printed "
                f"{r.markers[c]}, the 0.01 rule gives {'/'.join(sorted(ok))}"
            )
    unmarked = [t.cell(r.key, c) for r in t.rows if r.method != BASELINE for c in t.columns if c not in r.markers]
    text = f"{t.title}: {len(marked)} printed markers, {len(bad)} inconsistent with the caption's 0.01 rule"
    if bad:
        text += ": " + "; ".join(bad)
    if unmarked:
        text += f"; cells without a marker: {unmarked}"
    return not bad and not unmarked, text


# -- §3.2 CityScapes / NYU-v2 ------------------------------------------------------------------
def _top3_everywhere(tables: Tables, method: str, except_: frozenset[tuple[str, str]] = frozenset()) -> Verdict:
    parts, holds = [], True
    for name in ("table2", "table3"):
        t = tables[name]
        _require(t, [(method, P)])
        _require_ranked(t, TOP3_MIN_RANKED, "top 3")
        for c in t.columns:
            r = rank(t, c)[(method, P)]
            if (name, c) in except_:
                better = _signed(t, (method, P), c, (BASELINE, P)) > 0
                holds &= better
                parts.append(
                    f"{t.title} {c}: {t.fmt(method, c, P)} #{r} (excepted; better than "
                    f"{BASELINE} {t.fmt(BASELINE, c, P)}: {better})"
                )
            else:
                holds &= r <= 3
                parts.append(f"{t.title} {c}: {t.fmt(method, c, P)} #{r}")
    return Verdict(holds, f"{method} ranks (baseline excluded): " + "; ".join(parts))


def _top3_everywhere_formula(method: str, except_: frozenset[tuple[str, str]] = frozenset()):
    def formula(tables: Tables):
        items = []
        for name in ("table2", "table3"):
            if name not in tables:  # a study without that dataset: its part stays undecided
                items.append(Missing(name))
                continue
            t = tables[name]
            _require(t, [(method, P)])
            _require_ranked(t, TOP3_MIN_RANKED, "top 3")
            for c in t.columns:
                if (name, c) in except_:
                    items.append(Better(name, c, (method, P), (BASELINE, P)))
                else:
                    items.append(_f_top3(tables, t, (method, P), c))
        return all_of(items)

    return formula


@claim(
    id="cosreg-top3-cityscapes-nyuv2",
    section="§3.2",
    statement="CosReg consistently reaches top 3 on both datasets (CityScapes, NYU-v2) and all evaluation metrics.",
    source_tables=("table2", "table3"),
    notes=(
        "In the authors' probable code base (danielmao2019/Pylon) CosReg's penalty has no gradient, so "
        "it trains the plain summed loss (the mean-loss baseline with a T-times larger step)."
    ),
    named=("CosReg",),
    formula=_top3_everywhere_formula("CosReg"),
)
def _cosreg_top3(tables: Tables) -> Verdict:
    return _top3_everywhere(tables, "CosReg")


@claim(
    id="graddrop-top3-except-nyuv2-ne",
    section="§3.2",
    statement=(
        "GradDrop also achieved top 3 scores except normal estimation (NE) on NYU-v2, but still improved the baseline."
    ),
    source_tables=("table2", "table3"),
    named=("GradDrop",),
    formula=_top3_everywhere_formula("GradDrop", frozenset({("table3", "NE")})),
)
def _graddrop_top3(tables: Tables) -> Verdict:
    return _top3_everywhere(tables, "GradDrop", frozenset({("table3", "NE")}))
