"""Claims of §5: the measures, ranking similarity (§5.5, Tables 5-7) and the figures (§5.4)."""

from __future__ import annotations

from mtlcheck.study.paper.claims.common import (
    FIGURE5_COLUMN,
    GRADIENT_MANIPULATION,
    MEASURE_ROWS,
    P,
    _f_gain_all,
    _gains_all,
    _measure_cmp,
    _pair_text,
    _ranks_text,
    _require,
    _rs_text,
    _signed,
)
from mtlcheck.study.paper.claims.registry import ClaimNotEvaluable, Tables, Verdict, claim
from mtlcheck.study.paper.comparisons import Better, all_of, at_most
from mtlcheck.study.paper.result_table import BASELINE


# -- §5.5 ranking similarity -------------------------------------------------------------------
@claim(
    id="rs-metagraspnet-fd-box-vs-mask",
    section="§5.5",
    statement=(
        "On MetaGraspNet, FD has lower ranking similarities for bounding box predictions compared to GDS or "
        "GMS, but consistently out-performs traditional GDS and GMS for visible and amodal mask predictions."
    ),
    source_tables=("table5",),
    notes="'Lower compared to GDS or GMS' is checked as lower than each.",
    named=MEASURE_ROWS,
)
def _rs_mgn(tables: Tables) -> Verdict:
    t = tables["table5"]
    box = [c for c in t.columns if c.startswith("BBox")]
    mask = [c for c in t.columns if c.startswith(("VMask", "AMask"))]
    if not box or not mask:
        raise ClaimNotEvaluable(f"{t.title} lacks BBox or mask columns")
    ok_box = {c: all(_measure_cmp(t, c, "FD", m) < 0 for m in ("GDS", "GMS")) for c in box}
    ok_mask = {c: all(_measure_cmp(t, c, "FD", m) > 0 for m in ("GDS", "GMS")) for c in mask}
    text = (
        f"{t.title}: FD below both GDS and GMS on box columns {ok_box}; FD above both on mask "
        f"columns {ok_mask} | " + "; ".join(_rs_text(t, c, ("FD", "GDS", "GMS")) for c in t.columns)
    )
    return Verdict(all(ok_box.values()) and all(ok_mask.values()), text)


@claim(
    id="rs-cityscapes-fd-beats-gds-gms",
    section="§5.5",
    statement=(
        "On CityScapes, FD out-performed GMS and GDS on semantic segmentation and instance segmentation, "
        "and out-performed GMS on depth estimation."
    ),
    source_tables=("table6",),
    named=MEASURE_ROWS,
)
def _rs_cityscapes(tables: Tables) -> Verdict:
    t = tables["table6"]
    wanted = {"SS": ("GMS", "GDS"), "IS": ("GMS", "GDS"), "DE": ("GMS",)}
    checks = {f"FD>{m} on {c}": _measure_cmp(t, c, "FD", m) > 0 for c, ms in wanted.items() for m in ms}
    failed = [k for k, ok in checks.items() if not ok]
    text = (
        f"{t.title}: "
        + "; ".join(_rs_text(t, c, ("FD", "GMS", "GDS")) for c in wanted)
        + f" | failed: {failed or 'none'}"
    )
    return Verdict(not failed, text)


@claim(
    id="rs-nyuv2-fd-beats-gms",
    section="§5.5",
    statement="On NYU-v2, FD still out-performed GMS on depth estimation and normal estimation.",
    source_tables=("table7",),
    named=("FD", "GMS"),
)
def _rs_nyuv2(tables: Tables) -> Verdict:
    t = tables["table7"]
    checks = {f"FD>GMS on {c}": _measure_cmp(t, c, "FD", "GMS") > 0 for c in ("DE", "NE")}
    failed = [k for k, ok in checks.items() if not ok]
    return Verdict(
        not failed,
        f"{t.title}: "
        + "; ".join(_rs_text(t, c, ("FD", "GMS")) for c in ("DE", "NE"))
        + f" | failed: {failed or 'none'}",
    )


# -- §5.4 figures: the statement, and the parts Table 1 can check ------------------------------
FIG5_EXCEPTIONS = frozenset({"RGW", "PCGrad", "MGDA", "Aligned-MTL"})


def _fig5_runs(tables: Tables):
    t = tables["figure5"]
    if FIGURE5_COLUMN not in t.columns:
        raise ClaimNotEvaluable(f"{t.title} has no {FIGURE5_COLUMN!r} column")
    _require(t, [(BASELINE, P), *((m, P) for m in sorted(FIG5_EXCEPTIONS))])  # the named exceptions must be there
    runs = [r for r in t.rows if r.method != BASELINE and r.level == P and r.values[FIGURE5_COLUMN] is not None]
    need = 2 * len(FIG5_EXCEPTIONS) + 1  # "most, with four exceptions" needs more than 4 others below
    if len(runs) < need:
        raise ClaimNotEvaluable(
            f"{t.title} has {len(runs)} method(s) besides the {BASELINE}; 'most methods ... "
            f"with the exception of {len(FIG5_EXCEPTIONS)}' needs at least {need}"
        )
    return t, runs


def _fig5_formula(tables: Tables):
    """Every named exception not below the Baseline's FD, every other method below it. ("Most" is
    implied: at least 9 methods, so the others are more than half.)"""
    _, runs = _fig5_runs(tables)
    below = {r.method: Better("figure5", FIGURE5_COLUMN, r.key, (BASELINE, P)) for r in runs}  # lower FD is better
    return all_of(~lit if m in FIG5_EXCEPTIONS else lit for m, lit in below.items())


@claim(
    id="fig5-fd-below-baseline-except-four",
    section="§5.4, Figure 5",
    statement=(
        "Most methods applied parameter-level gradients achieved feature entangled-ness lower than baseline "
        "close to the end of training, with the exception for RGW, PCGrad, MGDA, and Aligned-MTL."
    ),
    source_tables=("figure5",),
    notes=(
        "Figure 5 prints no numbers: on the paper this claim is a statement only. On our runs, "
        "'figure5' is a table with column 'FD' (mean of the last 50 recorded values, §5.5) per "
        "parameter-level run, Baseline included. The 'clear decrease trends' part needs trajectories."
    ),
    named=tuple(sorted(FIG5_EXCEPTIONS)),
    formula=_fig5_formula,
)
def _fig5_fd_below_baseline(tables: Tables) -> Verdict:
    t, runs = _fig5_runs(tables)
    base = t.value(BASELINE, FIGURE5_COLUMN, P)
    not_below = {r.method for r in runs if not r.values[FIGURE5_COLUMN] < base}
    most = len(runs) - len(not_below) > len(runs) / 2
    return Verdict(
        not_below == FIG5_EXCEPTIONS and most,
        f"{t.title}: {BASELINE} FD {t.fmt(BASELINE, FIGURE5_COLUMN, P)}; not below it: "
        f"{sorted(not_below)} (claimed {sorted(FIG5_EXCEPTIONS)}); below: "
        f"{len(runs) - len(not_below)}/{len(runs)}",
    )


# §3.1: Nash-MTL is not reported on MetaGraspNet, so Table 1 holds the other seven.
TABLE1_GRADIENT_MANIPULATION = GRADIENT_MANIPULATION - {"Nash-MTL"}


def _fig5_complement_formula(tables: Tables):
    t = tables["table1"]
    _require(t, [(BASELINE, P), *((m, P) for m in sorted(TABLE1_GRADIENT_MANIPULATION))])
    gm = [r.key for r in t.rows if r.method in TABLE1_GRADIENT_MANIPULATION and r.level == P]
    return all_of(_f_gain_all(tables, t, k) if k[0] not in FIG5_EXCEPTIONS else ~_f_gain_all(tables, t, k) for k in gm)


@claim(
    id="fig5-exceptions-complement-of-table1-gainers",
    section="§5.4 (Table 1 part)",
    statement=(
        "These four methods (RGW, PCGrad, MGDA, Aligned-MTL) form exactly the complement of the three methods "
        "that achieved performance gain among the gradient manipulation methods, as reported in Table 1."
    ),
    source_tables=("table1",),
    notes=(
        "'Performance gain' read as in §3.1 (above the baseline on all six). A looser reading, above "
        "the baseline on a majority (≥4/6), would make the statement hold (CAGrad is above on 4/6)."
    ),
    only_named=True,
    named=tuple((m, P) for m in sorted(TABLE1_GRADIENT_MANIPULATION)),
    formula=_fig5_complement_formula,
)
def _fig5_complement(tables: Tables) -> Verdict:
    t = tables["table1"]
    _require(t, [(BASELINE, P), *((m, P) for m in sorted(TABLE1_GRADIENT_MANIPULATION))])  # a complement needs them all
    gm = [r.key for r in t.rows if r.method in TABLE1_GRADIENT_MANIPULATION and r.level == P]  # Table 1's seven
    complement = [k for k in gm if k[0] not in FIG5_EXCEPTIONS]
    parts, holds = [], len(complement) == 3
    for k in gm:
        ok, fails = _gains_all(t, k)
        expected = k in complement
        holds &= ok == expected
        above = sum(_signed(t, k, c, (BASELINE, P)) > 0 for c in t.columns)
        parts.append(
            f"{k[0]}: {'gain' if ok else 'no gain'} ({above}/{len(t.columns)} above"
            + (f"; below or equal: {'; '.join(fails)}" if fails else "")
            + ")"
        )
    return Verdict(
        holds,
        f"{t.title}, gradient manipulation methods; complement of the four = "
        f"{[k[0] for k in complement]} | " + " | ".join(parts),
    )


def _fig3_uncertainty_formula(tables: Tables):
    t = tables["table1"]
    _require(t, [("Uncertainty", P), ("GradVac", P)])
    worse = [Better("table1", c, (BASELINE, P), ("Uncertainty", P)) for c in t.columns]
    return all_of([*worse, _f_gain_all(tables, t, ("GradVac", P))])


@claim(
    id="fig3-uncertainty-poor-gradvac-strong",
    section="§5.4 (Table 1 part)",
    statement=(
        "Uncertainty Weighting had poor performance on the test set (Table 1), and GradVac had stronger performance."
    ),
    source_tables=("table1",),
    notes="Read against the baseline: Uncertainty below it on every metric, GradVac above it on every metric.",
    only_named=True,
    named=(("Uncertainty", P), ("GradVac", P)),
    formula=_fig3_uncertainty_formula,
)
def _fig3_uncertainty_gradvac(tables: Tables) -> Verdict:
    t = tables["table1"]
    _require(t, [("Uncertainty", P), ("GradVac", P)])
    unc_worse = [c for c in t.columns if _signed(t, ("Uncertainty", P), c, (BASELINE, P)) < 0]
    gv_ok, gv_fails = _gains_all(t, ("GradVac", P))
    holds = len(unc_worse) == len(t.columns) and gv_ok
    return Verdict(
        holds,
        f"{t.title}: Uncertainty below {BASELINE} on {len(unc_worse)}/{len(t.columns)} "
        f"({_ranks_text(t, ('Uncertainty', P))}); GradVac above on all: {gv_ok} {gv_fails or ''}",
    )


def _fig3_pcgrad_aligned_formula(tables: Tables):
    t = tables["table1"]
    a, b = ("PCGrad", P), ("Aligned-MTL", P)
    _require(t, [a, b])
    half = len(t.columns) // 2
    return all_of(at_most(half, (Better("table1", c, x, y) for c in t.columns)) for x, y in ((a, b), (b, a)))


@claim(
    id="fig3-pcgrad-alignedmtl-undecided",
    section="§5.4 (Table 1 part)",
    statement="PCGrad and Aligned-MTL are hard to conclude one is superior to the other on the test set.",
    source_tables=("table1",),
    notes="Checked as: neither is better than the other on more than half of the metrics.",
    only_named=True,
    named=(("PCGrad", P), ("Aligned-MTL", P)),
    formula=_fig3_pcgrad_aligned_formula,
)
def _fig3_pcgrad_aligned(tables: Tables) -> Verdict:
    t = tables["table1"]
    a, b = ("PCGrad", P), ("Aligned-MTL", P)
    _require(t, [a, b])
    a_wins = [c for c in t.columns if _signed(t, a, c, b) > 0]
    b_wins = [c for c in t.columns if _signed(t, b, c, a) > 0]
    half = len(t.columns) / 2
    return Verdict(
        len(a_wins) <= half and len(b_wins) <= half,
        f"{t.title}: PCGrad better on {a_wins}, Aligned-MTL better on {b_wins} | " + _pair_text(t, a, b),
    )


def _fig4_formula(tables: Tables):
    t = tables["table1"]
    _require(t, [("FAMO", P), ("MGDA", P)])
    return all_of(Better("table1", c, ("FAMO", P), ("MGDA", P)) for c in t.columns)


@claim(
    id="fig4-famo-beats-mgda",
    section="§5.4 (Table 1 part)",
    statement="FAMO achieved significantly better performance results than MGDA.",
    source_tables=("table1",),
    notes=(
        "Checked as better on every metric. The sentence cites Figure 4 (GMS) for 'almost the same GDS "
        "curves'; the curves themselves are not checkable."
    ),
    only_named=True,
    named=(("FAMO", P), ("MGDA", P)),
    formula=_fig4_formula,
)
def _fig4_famo_mgda(tables: Tables) -> Verdict:
    t = tables["table1"]
    a, b = ("FAMO", P), ("MGDA", P)
    _require(t, [a, b])
    wins = [c for c in t.columns if _signed(t, a, c, b) > 0]
    return Verdict(
        len(wins) == len(t.columns),
        f"{t.title}: FAMO better than MGDA on {len(wins)}/{len(t.columns)} | " + _pair_text(t, a, b),
    )
