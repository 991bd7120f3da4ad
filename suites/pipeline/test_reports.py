"""mtlcheck.study.paper (runs, our_tables, marks, render, figures, reports): the paper's tables, figures and
claim verdicts rebuilt from stored runs.

Fabricated records (written through the store, so they are real RunRecords) with numbers chosen
so that every expected value is checkable by hand: means over seeds, the 0.01 band of Table 1's
caption at and inside its edges, Table 4's relative change, the ranking similarity of Eq. 9 on
four methods with the last-50-points rule, and Figures 3-5. One real smoke sweep at the end.
"""

from __future__ import annotations

import math

import pytest
import torch

from mtlcheck.study.experiments.runner import make_spec, run_sweep, sweep_specs
from mtlcheck.study.experiments.spec import RunSpec
from mtlcheck.study.experiments.store import ResultStore
from mtlcheck.study.paper import figures, marks, our_tables, render, reports, runs
from mtlcheck.study.paper.claims import CLAIMS
from mtlcheck.study.paper.published_tables import load_paper_tables
from mtlcheck.study.paper.result_table import BASELINE
from mtlcheck.study.paper.verdicts import judge_all

DENSE = "digits-dense"
TIMINGS = {"train_seconds": 1.25, "eval_seconds": 0.5, "attempt_wall_s": 2.0, "steps": 12}


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "runs.sqlite")


def _traj(gds=0.1, gms=0.8, fd=0.5, n=4, every=3):
    def series(v):
        return list(v) if isinstance(v, (list, tuple)) else [float(v)] * n

    return {"step": [every * i for i in range(n)], "gds": series(gds), "gms": series(gms), "fd": series(fd)}


def _put(
    store,
    method,
    *,
    level="parameter",
    seed=0,
    metrics=None,
    traj=None,
    status="done",
    budget="smoke",
    benchmark=DENSE,
    timings=None,
    error="ValueError: boom",
    config=None,
):
    """Write one run into the store through a lease, as the runner does; returns its record."""
    if ":" in method:  # a third-party method: no registry lookup
        spec = RunSpec(benchmark, method, level=level, seed=seed, budget=budget)
    else:
        spec = make_spec(benchmark, method, level=level, seed=seed, budget=budget, method_config=config)
    lease = store.lease(spec)
    assert lease is not None, spec.label
    if status == "failed":
        lease.fail(error)
    elif status != "running":
        lease.finish(metrics or {}, traj if traj is not None else _traj(), dict(timings or TIMINGS), status=status)
    return store.get(spec)


def _dense(de, ss, is_):
    return {"depth/l1": de, "semantic/miou": ss, "instance/l1": is_}


# Two seeds; the per-seed values give exact means where a band edge is tested (equal seeds).
# columns: DE (lower is better), SS (higher), IS (lower); Baseline: DE 1.1, SS 0.5, IS 0.2
SEEDED = {
    ("ew", "parameter"): [(1.0, 0.5, 0.2), (1.2, 0.5, 0.2)],
    # DE 1.095: inside the band; SS +0.01 and IS −0.01 (better by exactly 0.01): '–'
    ("pcgrad", "parameter"): [(1.0, 0.51, 0.19), (1.19, 0.51, 0.19)],
    # SS +0.0101 ↑; IS +0.0101 (worse) ↓; DE 1.3 ↓
    ("mgda", "parameter"): [(1.3, 0.5101, 0.2101), (1.3, 0.5101, 0.2101)],
    # SS −0.01 exactly '–'; IS −0.005 '–'; DE 0.8 ↑
    ("famo", "parameter"): [(0.8, 0.49, 0.195), (0.8, 0.49, 0.195)],
    # SS −0.0101 ↓; DE equal '–'; IS 0.1 ↑
    ("pcgrad", "feature"): [(1.1, 0.4899, 0.1), (1.1, 0.4899, 0.1)],
}


@pytest.fixture
def seeded(store):
    recs = []
    for (method, level), per_seed in SEEDED.items():
        for seed, (de, ss, is_) in enumerate(per_seed):
            recs.append(
                _put(
                    store, method, level=level, seed=seed, metrics=_dense(de, ss, is_), traj=_traj(fd=0.5 + 0.01 * seed)
                )
            )
    return recs


# -- names -----------------------------------------------------------------------------------------
def test_paper_names_are_the_names_of_the_reference_tables():
    paper_methods = {r.method for t in load_paper_tables().values() if t.row_kind == "method" for r in t.rows}
    assert paper_methods == set(runs.PAPER_NAMES.values())
    assert set(runs.PAPER_NAMES.values()) == set(runs.PAPER_ORDER)
    from mtlcheck.aggregators import list_aggregators
    from mtlcheck.aggregators.published import PUBLISHED_VARIANTS
    from mtlcheck.study.experiments.runner import LATER_METHODS, PAPER_METHODS

    # the as-published variants keep their registry names, so they never collide with the paper's rows;
    # the methods added after the paper keep theirs too (extra rows of a report)
    later = set(LATER_METHODS)
    assert set(runs.PAPER_NAMES) == set(list_aggregators()) - set(PUBLISHED_VARIANTS) - later == set(PAPER_METHODS)
    assert later <= set(list_aggregators()) and not set(runs.LATER_NAMES.values()) & set(runs.PAPER_NAMES.values())


def test_third_party_and_configured_methods_keep_their_own_names(store):
    rec = _put(store, "my_pkg.mod:MyAggregator", metrics=_dense(1, 0.5, 0.2))
    assert runs.display_name(rec) == "my_pkg.mod:MyAggregator"
    cagrad = _put(store, "cagrad", metrics=_dense(1, 0.5, 0.2), config={"c": 0.2})
    assert runs.display_name(cagrad) == "CAGrad[c=0.2]"
    assert our_tables.result_tables([rec, cagrad], DENSE)["table2"].keys() == (
        ("CAGrad[c=0.2]", "parameter"),
        ("my_pkg.mod:MyAggregator", "parameter"),
    )


def test_methods_after_the_paper_are_extra_rows_outside_the_paper_tables_and_claims(seeded, store, tmp_path):
    upgrad = [_put(store, "upgrad", seed=s, metrics=_dense(0.9, 0.6, 0.25), traj=_traj(fd=0.4)) for s in (0, 1)]
    path = reports.write_report(seeded + upgrad, DENSE, tmp_path)
    text = path.read_text(encoding="utf-8")
    paper_part, others = text.split("## Other methods", 1)
    others, claims_part = others.split("## Claims on these runs", 1)
    assert "| UPGrad |" in others and "| UPGrad |" not in paper_part.split("## Runs", 1)[1].split("## Table 2")[1]
    assert "UPGrad" not in claims_part
    assert "UPGrad" not in (tmp_path / "table2.csv").read_text(encoding="utf-8")
    assert "UPGrad" in (tmp_path / "other_methods.csv").read_text(encoding="utf-8")
    # the claims' verdicts are those of the paper's runs alone
    alone = reports.write_report(seeded, DENSE, tmp_path / "alone").read_text(encoding="utf-8")
    assert claims_part == alone.split("## Claims on these runs", 1)[1]


def test_a_report_of_later_methods_only_has_no_paper_tables(store, tmp_path):
    recs = [_put(store, "upgrad", metrics=_dense(1, 0.5, 0.2)), _put(store, "dualproj", metrics=_dense(1, 0.5, 0.3))]
    text = reports.write_report(recs, DENSE, tmp_path).read_text(encoding="utf-8")
    assert "No run of the paper's methods" in text and "| DualProj |" in text and "## Claims" not in text


# -- Tables 1-3 ------------------------------------------------------------------------------------
def test_results_table_means_over_seeds(seeded):
    tables = our_tables.result_tables(seeded, DENSE)
    t = tables["table2"]
    assert set(tables) == {"table2", "relative_change", "table6", "final_measures", "figure5"}
    assert t.columns == ("DE", "SS", "IS")
    assert t.keys() == (
        ("Baseline", "parameter"),
        ("PCGrad", "parameter"),
        ("MGDA", "parameter"),
        ("FAMO", "parameter"),
        ("PCGrad", "feature"),
    )
    assert t.value(BASELINE, "DE") == pytest.approx(1.1)
    assert t.value("PCGrad", "DE", "parameter") == pytest.approx((1.0 + 1.19) / 2)
    assert t.value("MGDA", "IS") == 0.2101
    assert "Seeds: [0, 1]." in t.notes


def test_marks_follow_the_paired_interval_and_the_band_is_its_own_column(seeded):
    t = our_tables.result_tables(seeded, DENSE)["table2"]
    md = render.to_markdown(t)
    assert "| Method | DE (↓) | DE band | SS (↑) | SS band | IS (↓) | IS band |" in md
    # mean ± t_{1, 0.975} · sd / √2 over the two seeds: DE 1.0, 1.2 → 12.706 · 0.1414 / 1.414 = 1.2706
    assert "| Baseline | 1.1000 ± 1.2706 |  | 0.5000 ± 0.0000 |  | 0.2000 ± 0.0000 |  |" in md
    # paired per seed: DE −0.0, −0.01 (interval contains 0: –); SS +0.01 and IS −0.01 on both seeds
    # (interval [0.01, 0.01] excludes 0: ↑ in both, since IS is lower-is-better); the band says – for all
    assert "| PCGrad (parameter) | 1.0950 ± 1.2071 (–) | – | 0.5100 ± 0.0000 (↑) | – | 0.1900 ± 0.0000 (↑) | – |" in md
    # DE +0.3 / +0.1: 0.2 ± 1.27 contains 0 (–) although the band, on the means alone, says ↓
    assert "| MGDA | 1.3000 ± 0.0000 (–) | ↓ | 0.5101 ± 0.0000 (↑) | ↑ | 0.2101 ± 0.0000 (↓) | ↓ |" in md
    assert "| FAMO | 0.8000 ± 0.0000 (–) | ↑ | 0.4900 ± 0.0000 (↓) | – | 0.1950 ± 0.0000 (↑) | – |" in md
    assert "| PCGrad (feature) | 1.1000 ± 0.0000 (–) | – | 0.4899 ± 0.0000 (↓) | ↓ | 0.1000 ± 0.0000 (↑) | ↑ |" in md
    assert "paired per-seed differences" in md and "more than 0.01" in md
    unmarked = render.to_markdown(t, marks=False)
    assert "(↑)" not in unmarked.split("\n", 2)[2]
    assert "| MGDA | 1.3000 ± 0.0000 | 0.5101 ± 0.0000 | 0.2101 ± 0.0000 |" in unmarked


def test_one_seed_gives_no_interval_and_no_paired_mark(store):
    recs = [_put(store, "ew", metrics=_dense(1.0, 0.5, 0.2)), _put(store, "mgda", metrics=_dense(1.3, 0.6, 0.1))]
    t = our_tables.result_tables(recs, DENSE)["table2"]
    md = render.to_markdown(t)
    assert "| Baseline | 1.0000 (n=1) |  | 0.5000 (n=1) |  | 0.2000 (n=1) |  |" in md
    assert "| MGDA | 1.3000 (n=1) | ↓ | 0.6000 (n=1) | ↑ | 0.1000 (n=1) | ↑ |" in md
    assert marks.paired_mark(t, ("MGDA", "parameter"), "SS") == "n=1"


def test_paired_differences_see_what_the_seed_spread_hides(store):
    """The issue's case: the seed spread of the Baseline (1.757 vs 2.737) is ~100x the method's
    effect, but MGDA − Baseline on the same seed is small and consistent."""
    recs = []
    for seed, (ew, mgda) in enumerate([(1.757, 1.774), (2.737, 2.752), (2.100, 2.118)]):
        recs.append(_put(store, "ew", seed=seed, metrics=_dense(ew, 0.5, 0.2)))
        recs.append(_put(store, "mgda", seed=seed, metrics=_dense(mgda, 0.5, 0.2)))
    t = our_tables.result_tables(recs, DENSE)["table2"]
    own = t.estimate(("MGDA", "parameter"), "DE")
    diff = t.paired_estimate(("MGDA", "parameter"), "DE")
    assert own.interval[0] < t.value(BASELINE, "DE") < own.interval[1]  # unpaired: indistinguishable
    assert diff.mean == pytest.approx(0.0167, abs=1e-4) and diff.interval[0] > 0  # paired: worse, decided
    assert marks.paired_mark(t, ("MGDA", "parameter"), "DE") == "↓"
    row = next(line for line in render.to_markdown(t).splitlines() if line.startswith("| MGDA |"))
    assert row.split(" | ")[1].endswith("(↓)") and row.count("(↓)") == 1


def test_paper_table_renders_with_its_printed_values():
    md = render.to_markdown(load_paper_tables()["table1"])
    # marks are recomputed by the caption's rule: BBox mAP 0.393 − 0.383 = 0.010 is not "more than
    # 0.01", so '–' where the paper prints ↑ (reference.admissible_marks accepts both readings)
    assert "| GradVac | 0.393 (–) | 0.560 (↑) | 0.521 (–) | 0.680 (↑) | 0.495 (–) | 0.654 (↑) |" in md
    assert "| GDS | 64.3% |" in render.to_markdown(load_paper_tables()["table5"])


def test_csv_has_full_precision_and_empty_nulls(seeded, store):
    recs = seeded + [_put(store, "mgda", level="feature", status="diverged", timings={"diverged_step": 7})]
    t = our_tables.result_tables(recs, DENSE)["table2"]
    lines = render.to_csv(t).splitlines()
    per = ("n", "lo", "hi", "seeds", "diff", "diff lo", "diff hi", "mark", "band mark")
    assert lines[0] == "method,level,DE,SS,IS,note," + ",".join(f"{c} {x}" for c in ("DE", "SS", "IS") for x in per)
    assert lines[3].startswith("MGDA,parameter,1.3,0.5101,0.2101,,2,1.3,1.3,0:1.3;1:1.3,0.20000000000000007,")
    assert ",↑,↑,2,0.2101,0.2101,0:0.2101;1:0.2101," in lines[3] and lines[3].endswith(",↓,↓")
    assert lines[-1].startswith("MGDA,feature,,,,diverged at step 7 in 1/1 seeds (seed 0),,")


def test_json_keeps_the_per_seed_values_the_interval_and_n(seeded):
    import json

    t = our_tables.result_tables(seeded, DENSE)["table2"]
    data = json.loads(render.to_json(t))
    cell = next(r for r in data["rows"] if r["method"] == "PCGrad" and r["level"] == "parameter")["cells"]["DE"]
    assert cell["seeds"] == {"0": 1.0, "1": 1.19} and cell["n"] == 2
    assert cell["mean"] == pytest.approx(1.095) and cell["lo"] < 1.095 < cell["hi"]
    assert cell["half_width"] == pytest.approx(12.7062 * math.sqrt(0.19**2 / 2) / math.sqrt(2), rel=1e-4)
    assert cell["vs_baseline"]["mark"] == "–" and cell["vs_baseline"]["mean"] == pytest.approx(-0.005)
    assert "Student-t" in cell["interval"]


# -- diverged, failed, unfinished runs are shown, never dropped ------------------------------------
def test_diverged_failed_and_unfinished_rows_are_null_with_a_note(seeded, store):
    recs = seeded + [
        _put(store, "mgda", level="feature", seed=0, status="diverged", timings={"diverged_step": 7}),
        _put(store, "mgda", level="feature", seed=1, metrics=_dense(1, 0.5, 0.2)),
        _put(store, "gradvac", seed=0, status="failed", error="Traceback ...\nValueError: solver failed"),
        _put(store, "imtl", seed=0, status="running"),
    ]
    tables = our_tables.result_tables(recs, DENSE)
    t = tables["table2"]
    mgda_f = t.row("MGDA", "feature")
    assert all(v is None for v in mgda_f.values.values())
    assert mgda_f.note == ("diverged at step 7 in 1/2 seeds (seed 0); no mean taken over the other 1 done seed(s)")
    assert t.row("GradVac").note == "failed in 1/1 seeds (seed 0: ValueError: solver failed)"
    assert t.row("IMTL").note == "not finished in 1/1 seeds (seed 0: running)"
    md = render.to_markdown(t)
    assert "| MGDA (feature) | null |  | null |  | null |  |" in md
    assert "- MGDA (feature): diverged at step 7 in 1/2 seeds (seed 0)" in md
    assert "Seed sets differ between rows" in " ".join(t.notes)
    # the same rows stay visible (null, noted) in the derived tables
    rel = tables["relative_change"].row("MGDA", "feature")
    assert all(v is None for v in rel.values.values()) and "feature-level value is null" in rel.note
    fin = tables["final_measures"].row("GradVac")
    assert fin.values["FD"] is None and "failed" in fin.note
    assert "GradVac" in tables["table6"].row("FD").note


def test_records_must_share_budget_benchmark_and_steps(store):
    a = _put(store, "ew", metrics=_dense(1, 0.5, 0.2))
    b = _put(store, "pcgrad", metrics=_dense(1, 0.5, 0.2), budget="small")
    with pytest.raises(ValueError, match="mix budgets"):
        our_tables.result_tables([a, b], DENSE)
    c = _put(store, "ew", metrics={"bbox_mAP": 0.1}, benchmark="digits-instance")
    with pytest.raises(ValueError, match="another benchmark"):
        our_tables.result_tables([a, c], DENSE)
    with pytest.raises(ValueError, match="several records for seed"):
        our_tables.result_tables([a, a], DENSE)
    with pytest.raises(ValueError, match="no run records"):
        our_tables.result_tables([], DENSE)
    with pytest.raises(ValueError, match="no metric 'instance/l1'"):
        our_tables.result_tables([_put(store, "mgda", metrics={"depth/l1": 1.0, "semantic/miou": 0.5})], DENSE)


# -- Table 4 ---------------------------------------------------------------------------------------
def test_relative_change_by_hand(seeded):
    rel = our_tables.result_tables(seeded, DENSE)["relative_change"]
    assert rel.keys() == (("PCGrad", "feature"),)
    row = rel.row("PCGrad")
    # 100 × (feature − parameter) / parameter
    assert row.values["DE"] == pytest.approx(100 * (1.1 - 1.095) / 1.095)  # +0.4566 %
    assert row.values["SS"] == pytest.approx(-3.9411764706)  # (0.4899 − 0.51) / 0.51
    assert row.values["IS"] == pytest.approx(-47.3684210526)  # (0.1 − 0.19) / 0.19
    md = render.to_markdown(rel, marks=False)
    # ±: the 95% t interval of the per-seed change (same seed): DE 100 × (1.1 − 1.0) / 1.0 = 10 % and
    # 100 × (1.1 − 1.19) / 1.19 = −7.56 %: sd 12.42, 12.706 · 12.42 / √2 = 111.58; SS and IS equal per seed
    assert "| PCGrad | 0.46 ± 111.58% | -3.94 ± 0.00% | -47.37 ± 0.00% |" in md
    e = rel.estimate(("PCGrad", "feature"), "DE")
    assert e.values == pytest.approx((10.0, 100 * (1.1 - 1.19) / 1.19))


def test_instance_benchmark_names_the_relative_change_table4(store):
    m = {f"{k}_{s}": 0.3 for k in ("bbox", "vmask", "amask") for s in ("mAP", "mAR")}
    recs = [
        _put(store, "ew", metrics=m, benchmark="digits-instance"),
        _put(store, "mgda", metrics=m, benchmark="digits-instance"),
        _put(store, "mgda", level="feature", metrics={k: 0.33 for k in m}, benchmark="digits-instance"),
    ]
    tables = our_tables.result_tables(recs, "digits-instance")
    assert tables["table4"] is tables["relative_change"]
    assert tables["table4"].value("MGDA", "BBox mAP") == pytest.approx(10.0)
    assert tables["table1"].columns == ("BBox mAP", "BBox mAR", "VMask mAP", "VMask mAR", "AMask mAP", "AMask mAR")


# -- Tables 5-7 ------------------------------------------------------------------------------------
# four methods; the first 10 of 60 recorded points scramble the order, the last 50 decide it
ENDS = {"ew": 0.5, "pcgrad": 0.4, "mgda": 0.6, "famo": 0.3}
OUTLIERS = {"ew": 0.0, "pcgrad": 100.0, "mgda": -100.0, "famo": 200.0}
METRICS = {"ew": (1.0, 0.5, 0.2), "pcgrad": (0.9, 0.6, 0.1), "mgda": (1.2, 0.4, 0.3), "famo": (0.8, 0.55, 0.4)}


@pytest.fixture
def four(store):
    recs = []
    for m, end in ENDS.items():
        fd = [OUTLIERS[m]] * 10 + [end] * 50
        gms = [-v for v in fd]
        recs.append(_put(store, m, metrics=_dense(*METRICS[m]), traj=_traj(gds=0.1, gms=gms, fd=fd, n=60, every=10)))
    return recs


def test_ranking_similarity_by_hand_on_four_methods(four):
    tables = our_tables.result_tables(four, DENSE)
    fin = tables["final_measures"]
    assert [fin.value(runs.PAPER_NAMES[m], "FD") for m in ENDS] == [0.5, 0.4, 0.6, 0.3]  # last 50 only
    rs = tables["table6"]
    assert rs.keys() == (("GMS", "parameter"), ("GDS", "parameter"), ("FD", "feature"))  # Table 6's order
    # FD ascending: FAMO .3 < PCGrad .4 < Baseline .5 < MGDA .6. Oriented metrics (better = larger):
    # DE: −DE ascending MGDA < Baseline < PCGrad < FAMO, the exact reverse: S = 0, RS = 100 %.
    assert rs.value("FD", "DE") == pytest.approx(100.0)
    # SS (0.5, 0.6, 0.4, 0.55): of the 6 pairs only PCGrad–FAMO is ordered alike: S = 1/6, RS = 5/6.
    assert rs.value("FD", "SS") == pytest.approx(100 * 5 / 6)
    # −IS (−0.2, −0.1, −0.3, −0.4): alike on B–F, P–F, M–F, unlike on B–P, B–M, P–M: S = 1/2.
    assert rs.value("FD", "IS") == pytest.approx(50.0)
    # GMS = −FD: the symmetric RS cannot tell; GDS constant: every pair tied in one vector, so
    # S = 1/2 from ties alone: no value (a tie must not read as "no better than chance")
    for c in ("DE", "SS", "IS"):
        assert rs.value("GMS", c) == pytest.approx(rs.value("FD", c))
        assert rs.value("GDS", c) is None
    assert "GDS has the same end value for all 4 ranked methods" in rs.row("GDS").note
    notes = " ".join(rs.notes)
    assert "Baseline, PCGrad, MGDA, FAMO" in notes
    assert "min(50, length)" in notes and "60 points here, so 50 points averaged" in notes
    assert "| FD | 100.00% | 83.33% | 50.00% |" in render.to_markdown(rs)


def test_short_trajectories_use_every_point_and_say_so(seeded):
    rs = our_tables.result_tables(seeded, DENSE)["table6"]
    assert "4 points here, so 4 points averaged" in " ".join(rs.notes)


def test_undefined_measures_leave_their_ranking_similarity_null_by_name(store):
    recs = [
        _put(store, "ew", metrics=_dense(1, 0.5, 0.2), traj=_traj(fd=0.5)),
        _put(store, "pcgrad", metrics=_dense(0.9, 0.6, 0.1), traj=_traj(fd=[0.4, 0.4, math.nan, 0.4])),
        _put(store, "mgda", metrics=_dense(1.2, 0.4, 0.3), traj=_traj(fd=0.6)),
    ]
    tables = our_tables.result_tables(recs, DENSE)
    fd = tables["table6"].row("FD")
    # ranked on Baseline and MGDA only, it would be another ranking than the paper's: no value
    assert "not computed, as the rankings take every method and PCGrad has no FD value" in fd.note
    assert "(fd non-finite in the last 4 points of seed 0)" in fd.note
    assert all(v is None for v in fd.values.values())
    assert "PCGrad" not in tables["table6"].row("GMS").note  # PCGrad has a GMS value (all tied here)
    assert tables["final_measures"].row("PCGrad").values["FD"] is None
    assert tables["final_measures"].row("PCGrad").values["GDS"] == pytest.approx(0.1)


# -- Figures 3-5 -----------------------------------------------------------------------------------
def test_moving_average():
    assert figures.moving_average([1, 2, 3, 4, 5, 6], 3).tolist() == pytest.approx([2, 3, 4, 5])
    assert figures.moving_average([1.0, 2.0], 1).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="window"):
        figures.moving_average([1.0], 0)
    with pytest.raises(ValueError, match="at least 3"):
        figures.moving_average([1.0, 2.0], 3)


def test_curves_are_differences_to_the_same_seed_baseline_smoothed_over_a_tenth(four):
    curves, notes = figures.relative_curves(runs.group_runs(four, DENSE), "fd")
    assert [c.method for c in curves] == ["PCGrad", "MGDA", "FAMO"] and notes == []
    mgda = curves[1]
    assert (mgda.window, mgda.length) == (6, 60)  # 1/10 of 60 recorded points
    assert mgda.steps.tolist() == list(range(50, 600, 10))  # trailing window: first point at the 6th step
    assert mgda.values[0] == pytest.approx(-100.0)  # MGDA − Baseline over the outliers
    assert mgda.values[-1] == pytest.approx(0.1)  # 0.6 − 0.5 at the end
    assert mgda.values[5] == pytest.approx((5 * -100.0 + 0.1) / 6)  # points 5-10: five outliers, one end point


def test_figures_are_written(four, tmp_path):
    paths = figures.trajectory_figures(runs.group_runs(four, DENSE), tmp_path / "figs")
    assert [p.name for p in paths] == ["figure3_gds.png", "figure4_gms.png", "figure5_fd.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_figures_need_a_baseline(store, tmp_path):
    recs = [_put(store, "pcgrad", metrics=_dense(1, 0.5, 0.2))]
    with pytest.raises(ValueError, match="no done parameter-level Baseline"):
        figures.trajectory_figures(runs.group_runs(recs, DENSE), tmp_path)


# -- claims ----------------------------------------------------------------------------------------
def test_every_claim_gets_a_verdict_and_missing_inputs_are_named(seeded):
    verdicts = judge_all(our_tables.result_tables(seeded, DENSE))
    assert [v["id"] for v in verdicts] == [c.id for c in CLAIMS]
    assert {v["verdict"] for v in verdicts} <= {"holds", "contradicted", "inconclusive", "not evaluable"}
    by_id = {v["id"]: v for v in verdicts}
    assert by_id["cosreg-top3-cityscapes-nyuv2"]["verdict"] == "not evaluable"
    assert "needs table(s) ['table3']" in by_id["cosreg-top3-cityscapes-nyuv2"]["evidence"]
    # every method has the same FD trajectory here: FD ranks nothing, so its RS is left out (not 50 %)
    rs = by_id["rs-cityscapes-fd-beats-gds-gms"]
    assert rs["verdict"] == "not evaluable" and "FD has the same end value for all 4" in rs["evidence"]
    fig5 = by_id["fig5-fd-below-baseline-except-four"]
    assert fig5["verdict"] == "not evaluable" and "('RGW', 'parameter')" in fig5["evidence"]
    for v in verdicts:
        assert v["evidence"] and v["statement"] and v["section"]
    md = render.verdict_markdown(verdicts)
    assert md.startswith(f"{len(CLAIMS)} claims — ")
    assert md.count("\n| ") == len(CLAIMS) + 1


def _instance(values):
    return {
        f"{k}_{s}": values[i]
        for i, (k, s) in enumerate((k, s) for k in ("bbox", "vmask", "amask") for s in ("mAP", "mAR"))
    }


def test_claims_judge_our_instance_tables(store):
    bench = "digits-instance"
    recs = [
        _put(store, "ew", metrics=_instance([0.3] * 6), benchmark=bench),
        _put(store, "famo", metrics=_instance([0.35] * 6), benchmark=bench),
        _put(store, "mgda", metrics=_instance([0.31, 0.31, 0.31, 0.31, 0.31, 0.36]), benchmark=bench),
        _put(store, "mgda", level="feature", metrics=_instance([0.4] * 6), benchmark=bench),
    ]
    by_id = {v["id"]: v for v in judge_all(our_tables.result_tables(recs, bench))}
    fig4 = by_id["fig4-famo-beats-mgda"]
    # one seed: no interval, nothing decided, although the point values contradict the claim
    assert fig4["verdict"] == "inconclusive" and "one seed" in fig4["evidence"]
    assert "the claim fails" in fig4["evidence"] and "FAMO better than MGDA on 5/6" in fig4["evidence"]
    only = by_id["surrogate-gains-only-mgda-alignedmtl"]
    assert only["verdict"] == "not evaluable" and "Aligned-MTL" in only["evidence"]
    assert by_id["table1-markers-follow-caption-band"]["verdict"] == "not evaluable"
    assert "no printed" in by_id["table1-markers-follow-caption-band"]["evidence"]
    assert by_id["conclusion-v1-surrogate-not-general"]["verdict"] == "inconclusive"
    # 'the best' of MGDA (feature) among 3 rows besides the Baseline: evaluable, one seed: inconclusive
    assert by_id["conclusion-v1-mgda-ub-best"]["verdict"] == "inconclusive"


def test_three_seeds_decide_a_clear_paired_difference(store):
    bench = "digits-instance"
    recs = []
    for seed, shift in enumerate((0.0, 0.05, -0.04)):  # a seed effect shared by every method
        recs += [
            _put(store, "ew", seed=seed, metrics=_instance([0.3 + shift] * 6), benchmark=bench),
            _put(store, "famo", seed=seed, benchmark=bench, metrics=_instance([0.35 + shift + 0.0002 * seed] * 6)),
            _put(
                store,
                "mgda",
                seed=seed,
                benchmark=bench,
                metrics=_instance([0.31 + shift - 0.0002 * seed] * 5 + [0.36 + shift + 0.0001 * seed]),
            ),
        ]
    by_id = {v["id"]: v for v in judge_all(our_tables.result_tables(recs, bench))}
    fig4 = by_id["fig4-famo-beats-mgda"]
    # FAMO − Baseline ≈ +0.05 and MGDA − Baseline ≈ +0.06 on AMask mAR on every seed: MGDA is
    # better there whatever the seed, so 'FAMO better on every metric' is contradicted
    assert fig4["verdict"] == "contradicted", fig4["evidence"]
    assert (
        "decided by the weakest link: FAMO (parameter) not better than MGDA (parameter) on AMask mAR [table1]: "
        "Δ -0.0099, simultaneous interval [-0.0105, -0.0093] over 3 seeds" in fig4["evidence"]
    )
    # Δ ± : the paired t over the 3 seeds
    cell = "AMask mAR 0.3535 ± 0.1118 (Δ +0.0502 ± 0.0005) vs 0.3634 ± 0.1119 (Δ +0.0601 ± 0.0002)"
    assert cell in fig4["evidence"]


def test_rows_without_values_make_claims_not_evaluable_and_are_named(store):
    bench = "digits-instance"
    recs = [
        _put(store, "ew", metrics=_instance([0.3] * 6), benchmark=bench),
        _put(store, "famo", metrics=_instance([0.35] * 6), benchmark=bench),
        _put(store, "mgda", status="diverged", timings={"diverged_step": 3}, benchmark=bench),
    ]
    v = {v["id"]: v for v in judge_all(our_tables.result_tables(recs, bench))}["fig4-famo-beats-mgda"]
    assert v["verdict"] == "not evaluable"
    assert (
        "Not judged: rows it needs have no values (in table1, MGDA (parameter): diverged at step 3 in 1/1 seeds "
        "(seed 0)); it is about these rows." == v["evidence"]
    )


# -- the report ------------------------------------------------------------------------------------
def test_write_report_is_deterministic_and_complete(seeded, tmp_path):
    a = reports.write_report(seeded, DENSE, tmp_path / "a")
    b = reports.write_report(list(reversed(seeded)), DENSE, tmp_path / "b")
    text = a.read_text(encoding="utf-8")
    assert text == b.read_text(encoding="utf-8")
    for name in ("table2.csv", "relative_change.csv", "table6.csv", "final_measures.csv"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()
        assert f"]({name})" in text
    for name in ("figure3_gds.png", "figure4_gms.png", "figure5_fd.png"):
        assert (a.parent / name).stat().st_size > 0 and f"]({name})" in text
    assert "10 runs: 10 done, 0 diverged, 0 failed, 0 unfinished; total wall time 20.00 s" in text
    assert "| PCGrad | parameter | 0, 1 | 2 | 0 | 0 | 0 | 1.25 | 0.50 | 4.00 |" in text
    assert all(c.id in text for c in CLAIMS)
    assert str(tmp_path) not in text


def test_report_without_a_baseline_says_why_there_are_no_figures(store, tmp_path):
    recs = [_put(store, "pcgrad", metrics=_dense(1, 0.5, 0.2)), _put(store, "mgda", metrics=_dense(1, 0.5, 0.3))]
    text = reports.write_report(recs, DENSE, tmp_path).read_text(encoding="utf-8")
    assert "No figures: " in text and "no done parameter-level Baseline (ew) run" in text
    assert "No Baseline row: no ↑/↓/– marks." in text
    assert not list(tmp_path.glob("*.png"))


# -- end to end on real runs -----------------------------------------------------------------------
def test_smoke_sweep_to_report(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        store = ResultStore(tmp_path / "runs.sqlite")
        specs = sweep_specs(DENSE, methods=["ew", "mgda", "pcgrad", "famo"], budget="smoke", seeds=(0,))
        records = run_sweep(store, specs, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(records) == 6  # ew and famo weight losses only: parameter level only
    path = reports.write_report(store.runs(benchmark=DENSE), DENSE, tmp_path / "report")
    text = path.read_text(encoding="utf-8")
    assert "# mtlcheck report: digits-dense, budget smoke" in text
    for title in (
        "## Table 2 (ours: digits-dense, smoke)",
        "## Relative change (ours: digits-dense, smoke)",
        "## Table 6 (ours: digits-dense, smoke)",
        "## Final measures (ours: digits-dense, smoke)",
    ):
        assert title in text
    assert len(list(path.parent.glob("figure*.png"))) == 3
    assert "| MGDA (feature) |" in text and "6 runs: 6 done" in text
    tables = our_tables.result_tables(records, DENSE)
    # one seed of 12 steps: a metric equal for every method ranks nothing, and its RS cells say so
    for r in tables["table6"].rows:
        for c, v in r.values.items():
            assert v is not None or f"{c}: the same value for all" in r.note or "same end value" in r.note
    assert all(c.id in text for c in CLAIMS)
    print(text)


# -- selection and grouping ------------------------------------------------------------------------
def test_a_report_selects_its_budget_precision_and_step_count(store):
    from mtlcheck.precision import Precision

    a = _put(store, "ew", seed=0)
    _put(store, "ew", seed=1, budget="small")
    assert [r.key for r in runs.select_report_records(store, DENSE, "smoke", Precision())] == [a.key]
    with pytest.raises(ValueError, match="no stored runs for digits-dense at budget paper"):
        runs.select_report_records(store, DENSE, "paper", Precision())
    with pytest.raises(ValueError, match=r"with --steps 5; stored: default"):
        runs.select_report_records(store, DENSE, "smoke", Precision(), "5")
    assert runs.select_report_records(store, DENSE, "smoke", Precision(), "default") == [a]
    spec = make_spec(DENSE, "mgda", seed=0, budget="smoke", steps=5)
    store.lease(spec).finish({}, _traj(), dict(TIMINGS))
    with pytest.raises(ValueError, match=r"several step counts \(5, default\): choose one with --steps"):
        runs.select_report_records(store, DENSE, "smoke", Precision())
    assert [r.spec.method for r in runs.select_report_records(store, DENSE, "smoke", Precision(), "5")] == ["mgda"]
    _put(store, "pcgrad", seed=0, status="running")
    chosen = runs.select_report_records(store, DENSE, "smoke", Precision(), "default", ended=True)
    assert [r.spec.method for r in chosen] == ["ew"]  # the run in progress is left out


def test_a_report_groups_the_records_once(seeded, tmp_path, monkeypatch):
    calls = []
    group_runs = runs.group_runs

    def counted(*args, **kwargs):
        calls.append(1)
        return group_runs(*args, **kwargs)

    for module in (runs, reports, our_tables, figures):
        monkeypatch.setattr(module, "group_runs", counted, raising=False)
    reports.write_report(seeded, DENSE, tmp_path)
    assert len(calls) == 1
