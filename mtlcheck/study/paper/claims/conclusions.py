"""Claims of §6: the conclusions of this version and of the earlier one."""

from __future__ import annotations

from mtlcheck.study.paper.claims.common import (
    BEST_MIN_RANKED,
    MEASURE_ROWS,
    TOP3_MIN_RANKED,
    V1,
    V2,
    F,
    _f_change,
    _f_top3_majority,
    _gain_keys,
    _loss_keys,
    _majority,
    _measure_cmp,
    _mgn,
    _ranks_text,
    _require,
    _require_ranked,
    _rs_text,
    _top3_columns,
)
from mtlcheck.study.paper.claims.registry import ClaimNotEvaluable, Tables, Verdict, claim
from mtlcheck.study.paper.claims.surrogate import (
    SURROGATE_HELPS,
    _surrogate_only_formula,
    _surrogate_only_mgda_aligned,
)
from mtlcheck.study.paper.comparisons import Missing, all_of, any_of
from mtlcheck.study.paper.result_table import mean_rank


# -- §6 conclusions (this version) -------------------------------------------------------------
def _graddrop_cosreg_best_formula(tables: Tables):
    # a dataset these runs do not give: its part stays undecided (`Missing`)
    lacking = [Missing(n) for n in ("table1", "table4") if n not in tables]  # MetaGraspNet: Tables 1 and 4
    datasets = (
        lacking or _mgn(tables),
        tables["table2"] if "table2" in tables else [Missing("table2")],
        tables["table3"] if "table3" in tables else [Missing("table3")],
    )
    items = []
    for method in ("GradDrop", "CosReg"):
        for t in datasets:
            if isinstance(t, list):  # the parts of tables these runs do not give
                items += t
                continue
            keys = [k for k in t.keys() if k[0] == method]
            if not keys:
                raise ClaimNotEvaluable(f"{t.title} has no {method} row")
            _require_ranked(t, TOP3_MIN_RANKED, "top 3")
            items.append(any_of(_f_top3_majority(tables, t, k) for k in keys))
    return all_of(items)


@claim(
    id="conclusion-graddrop-cosreg-best",
    section=f"§6 ({V2})",
    statement="GradDrop and CosReg were the best-performing methods on all three datasets.",
    source_tables=("table1", "table2", "table3", "table4"),
    notes=(
        "'Best-performing' read with the paper's own §3.1 yardstick: top-3 on a majority of the metrics "
        "of each dataset, at either gradient level. With Table 1's parameter-level rows only, GradDrop "
        "would pass on MetaGraspNet (3/6) but CosReg would still fail (1/6)."
    ),
    named=("GradDrop", "CosReg"),
    formula=_graddrop_cosreg_best_formula,
)
def _graddrop_cosreg_best(tables: Tables) -> Verdict:
    datasets = {"MetaGraspNet": _mgn(tables), "CityScapes": tables["table2"], "NYU-v2": tables["table3"]}
    parts, holds = [], True
    for method in ("GradDrop", "CosReg"):
        for ds, t in datasets.items():
            keys = [k for k in t.keys() if k[0] == method]
            if not keys:
                raise ClaimNotEvaluable(f"{t.title} has no {method} row")
            _require_ranked(t, TOP3_MIN_RANKED, "top 3")
            need = _majority(len(t.columns))
            counts = {k: len(_top3_columns(t, k)) for k in keys}
            ok = max(counts.values()) >= need
            holds &= ok
            parts.append(
                f"{method} on {ds} ({t.title}): top-3 in "
                + ", ".join(f"{n}/{len(t.columns)} at {k[1]} level [{_ranks_text(t, k)}]" for k, n in counts.items())
                + f" -> {'best-performing' if ok else 'NOT top-3 on a majority'}"
            )
    return Verdict(holds, " | ".join(parts))


claim(
    id="conclusion-surrogate-only-mgda-alignedmtl",
    section=f"§6 ({V2})",
    statement=(
        "Only MGDA and Aligned-MTL, which have theoretical guarantees, achieved a performance gain with "
        "feature-level gradients, while others were either similar or had significant performance degrade."
    ),
    source_tables=("table4",),
    notes=(
        "Only the 'only MGDA and Aligned-MTL gain' part is checked; 'similar' is not defined (the "
        "evidence gives each other method's mean change)."
    ),
    named=tuple(sorted(SURROGATE_HELPS)),
    formula=_surrogate_only_formula,
)(_surrogate_only_mgda_aligned)  # the §4 predicate, registered again for the conclusion


@claim(
    id="conclusion-fd-faithful-masks-and-cityscapes-seg",
    section=f"§6 ({V2})",
    statement=(
        "FD showed its faithfulness for visible and amodal mask predictions on MetaGraspNet and for semantic "
        "and instance segmentation on CityScapes."
    ),
    source_tables=("table5", "table6"),
    notes=(
        "Checked as: FD's ranking similarity is not below GDS's or GMS's on those columns (§5.5's "
        "stricter 'out-performed' is claim rs-cityscapes-fd-beats-gds-gms)."
    ),
    named=MEASURE_ROWS,
)
def _fd_faithful(tables: Tables) -> Verdict:
    wanted = {
        "table5": [c for c in tables["table5"].columns if c.startswith(("VMask", "AMask"))],
        "table6": ["SS", "IS"],
    }
    parts, holds = [], True
    for name, cols in wanted.items():
        t = tables[name]
        for c in cols:
            ok = all(_measure_cmp(t, c, "FD", m) >= 0 for m in ("GDS", "GMS"))
            holds &= ok
            parts.append(f"{t.title} {_rs_text(t, c, ('FD', 'GDS', 'GMS'))} ({'not beaten' if ok else 'BEATEN'})")
    return Verdict(holds, " | ".join(parts))


# -- conclusions of the earlier version (000 summary) ------------------------------------------
@claim(
    id="conclusion-v1-mgda-ub-best",
    section=f"Key conclusions ({V1})",
    statement=(
        "MGDA-UB (feature-level gradients) performs the best; it is the most suitable for complex vision MTL "
        "(MetaGraspNet)."
    ),
    source_tables=("table1", "table4"),
    notes=(
        "Evaluated on the later version's numbers (the earlier tables are not available): lowest mean "
        "rank over the six MetaGraspNet metrics among all rows of both levels."
    ),
    named=(("MGDA", F),),
)
def _mgda_ub_best(tables: Tables) -> Verdict:
    t = _mgn(tables)
    key = ("MGDA", F)
    _require(t, [key])
    _require_ranked(t, BEST_MIN_RANKED, "performs the best")
    mr = mean_rank(t)
    order = sorted(mr, key=mr.get)
    best = mr[order[0]]
    holds = mr[key] == best and sum(v == best for v in mr.values()) == 1
    top = "; ".join(f"{t.label(k)} {mr[k]:.2f}" for k in order[:5])
    return Verdict(
        holds,
        f"{t.title}, mean rank over {len(t.columns)} metrics among {len(mr)} rows "
        f"(baseline excluded): {top} | MGDA (feature) top-3 in "
        f"{len(_top3_columns(t, key))}/{len(t.columns)}: {_ranks_text(t, key)}",
    )


def _surrogate_not_general_formula(tables: Tables):
    t = tables["table4"]
    if not t.rows:
        raise ClaimNotEvaluable(f"{t.title} has no rows (no method ran at both gradient levels)")
    keys = [r.key for r in t.rows]
    return all_of(
        [
            any_of(~_f_change(tables, t, k, gain=True) for k in keys),
            any_of(_f_change(tables, t, k, gain=False) for k in keys),
        ]
    )


@claim(
    id="conclusion-v1-surrogate-not-general",
    section=f"Key conclusions ({V1})",
    statement=(
        "Feature gradients do not generalize as substitutes for parameter gradients (only MGDA and "
        "Aligned-MTL consistently improve with them)."
    ),
    source_tables=("table4",),
    formula=_surrogate_not_general_formula,
)
def _surrogate_not_general(tables: Tables) -> Verdict:
    t = tables["table4"]
    if not t.rows:
        raise ClaimNotEvaluable(f"{t.title} has no rows (no method ran at both gradient levels)")
    gains, losses = _gain_keys(t), _loss_keys(t)
    holds = len(gains) < len(t.rows) and bool(losses)
    return Verdict(
        holds,
        f"{t.title}: {len(gains)}/{len(t.rows)} methods gain on every metric "
        f"({[t.label(k) for k in gains]}); degraded on every metric: "
        f"{[t.label(k) for k in losses]}",
    )


@claim(
    id="conclusion-v1-fd-better-indicator",
    section=f"Key conclusions ({V1})",
    statement=(
        "Feature disentanglement is a better indicator of task interference than gradient similarities: "
        "rankings by FD better matched final performance (MetaGraspNet)."
    ),
    source_tables=("table5",),
    notes=(
        "Checked as: FD has the highest ranking similarity on a majority of Table 5's columns. The "
        "earlier version covered MetaGraspNet only."
    ),
    named=MEASURE_ROWS,
)
def _fd_better_indicator_v1(tables: Tables) -> Verdict:
    t = tables["table5"]
    best = [c for c in t.columns if all(_measure_cmp(t, c, "FD", m) > 0 for m in ("GDS", "GMS"))]
    need = _majority(len(t.columns))
    return Verdict(
        len(best) >= need,
        f"{t.title}: FD highest on {len(best)}/{len(t.columns)} columns "
        f"{best} | " + "; ".join(_rs_text(t, c, ("FD", "GDS", "GMS")) for c in t.columns),
    )
