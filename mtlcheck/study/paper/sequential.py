"""Seeds added where they decide: a group-sequential design over the claims' comparisons.

`mtlcheck reproduce --until-decided` runs in rounds. Each round judges every claim, then gives more
seeds to the rows whose comparisons can still decide an open claim, and stops a claim when it is
decided, equivalent, or futile.

Validity under optional stopping and adaptive allocation (group-sequential testing with error spent
per look: Lan & DeMets 1983; Jennison & Turnbull 2000, "Group Sequential Methods", ch. 7). The
looks are fixed seed counts, `LOOKS` = 3, 5, 8, 12, 16, 24, 32. A comparison between two rows that
share n seeds is tested on their first m seeds, m the largest look ≤ n, at one-sided level
α/len(LOOKS) (α = 2.5 % per direction; `comparisons.Design`). Whether a row gets more seeds, and when
a claim stops, depends on earlier data, but every test is an event about a fixed set of seeds
(seeds 0..m−1) at a fixed threshold, so the union bound over the looks holds whatever the
allocation and stopping rules do: a wrong "holds" or "contradicted" has probability ≤ α per claim
(suites/claims/test_sequential.py measures it on simulated studies with this very allocation).
Looks that a study never reaches leave their α unspent (conservative; `--max-seeds` can change
between runs without breaking the guarantee).

Claims decided by a region search (rankings of rankings: `verdicts`) have no comparison form. They
are judged at the largest look m whose seeds 0..m−1 every row they read has, in a simultaneous
region at 1 − 5 %/len(LOOKS) (the same union bound over the looks). Such a claim is futile when its
planning figure — the seeds at which its region would decide if the means and spreads stayed as
observed, the most hopeful reading — exceeds max_seeds (a near-tie of rankings, which no number of
seeds decides, ends here); otherwise every row it reads gets the next look's seeds.

Futility (non-binding, so it costs no error): a claim stops as futile when the predictive probability
of deciding it by `max_seeds` is below `FUTILITY`: each open comparison's spread and mean drawn from
their posterior (normal model, Jeffreys prior: σ² = s²(n − 1)/χ²_{n−1}, μ ~ N(d̄, σ²/n)), then the
seeds still to come, the comparisons taken as independent (a planning figure: at 3 seeds it is wide,
and it cannot see a winner's curse, an effect that looked large at 3 seeds because it happened to).

Allocation: for each open claim, the direction it leans to (the smaller adjusted ratio of "holds"
and "contradicted") decides which side of each open comparison would help; the comparisons are
scored by the predictive probability that this side is established by max_seeds, per CPU second of
one more seed of their rows, and the rows of the `PIVOTAL` best get seeds up to their next look
(the Baseline, compared with every row, usually among them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mtlcheck import LEVELS
from mtlcheck.study.paper import comparisons
from mtlcheck.study.paper.claims import CLAIMS, Claim
from mtlcheck.study.paper.result_table import ResultTable, RowKey
from mtlcheck.study.paper.runs import Runs, display_name
from mtlcheck.study.paper.verdicts import (
    MAX_SEEDS,
    formula_of,
    judge,
    region_reads,
    removed_rows_read,
    without_null_rows,
)
from mtlcheck.study.statistics import predictive_decision

__all__ = [
    "DESIGN",
    "FUTILITY",
    "LOOKS",
    "PIVOTAL",
    "ClaimState",
    "Plan",
    "assess",
    "next_look",
    "run_cost",
    "seeds_of",
    "summary_markdown",
]

LOOKS = (3, 5, 8, 12, 16, 24, 32)
DESIGN = comparisons.Design(LOOKS, comparisons.ALPHA)
FUTILITY = 0.10  # stop a claim whose predictive probability of being decided by max_seeds is below this
PIVOTAL = 6  # comparisons per open claim whose rows get seeds in a round
PREDICTIVE_DRAWS = 200
SETTLED = 8  # seeds from which a region claim's planning figure may stop it short of MAX_SEEDS

Tables = Mapping[str, ResultTable]
FINAL = ("holds", "contradicted", "equivalent")


def next_look(n: int, max_seeds: int) -> int | None:
    """The smallest look above n that does not exceed max_seeds (None: none left)."""
    later = [m for m in LOOKS if n < m <= max_seeds]
    return later[0] if later else None


@dataclass(frozen=True)
class ClaimState:
    """Where one claim stands: `state` is its verdict when final, else 'futile', 'open', or
    'first look only' (no comparison form, tables of one look given); `p_decide` the predictive
    probability (comparison form only) of deciding it by
    max_seeds; `requests` the rows it asks seeds for and up to how many."""

    verdict: Mapping
    state: str
    p_decide: float | None = None
    requests: Mapping[tuple[str, RowKey], int] = None  # type: ignore[assignment]

    @property
    def id(self) -> str:
        return self.verdict["id"]


Where = tuple[str, RowKey]  # (table, row): a row of the table a comparison reads


@dataclass(frozen=True)
class Plan:
    """The claims' states and the seeds each (table, row) should reach next (none: finished)."""

    states: tuple[ClaimState, ...]
    requests: Mapping[Where, int]

    def runs(self, seeds_of: Callable[[str, RowKey], set[int]]) -> int:
        """Runs the next round needs: the seeds 0..n−1 each requested row does not have yet."""
        return sum(len(set(range(n)) - seeds_of(*k)) for k, n in self.requests.items())


def _predictive(f, tables: Tables, max_seeds: int, rng: np.random.Generator) -> float:
    """Predictive probability that `f` is decided (either way) at max_seeds (module doc)."""
    look = DESIGN.look(range(max_seeds))
    if look is None:
        return 0.0
    n_final, alpha = look
    ev = comparisons.evidence(f, tables, comparisons.Design((), 1.0))  # every literal on all its seeds
    at_looks = comparisons.evidence(f, tables, DESIGN)
    draws: dict = {}
    for lit, (signed, raw, *_) in ev.items():
        n = signed.n
        if n >= n_final or n < 2:
            e = at_looks[lit]
            draws[lit] = (np.full(PREDICTIVE_DRAWS, e[3]), np.full(PREDICTIVE_DRAWS, e[4]), e[2], signed, raw)
            continue
        s = signed.sd
        if s == 0.0:
            t = np.full(PREDICTIVE_DRAWS, math.copysign(math.inf, signed.mean) if signed.mean else 0.0)
        else:  # σ and μ from their posterior (Jeffreys prior), then the seeds still to come
            sigma = s * np.sqrt((n - 1) / rng.chisquare(n - 1, PREDICTIVE_DRAWS))
            mu = signed.mean + sigma / math.sqrt(n) * rng.standard_normal(PREDICTIVE_DRAWS)
            future = mu + sigma / math.sqrt(n_final - n) * rng.standard_normal(PREDICTIVE_DRAWS)
            t = (n * signed.mean + (n_final - n) * future) / n_final / (sigma / math.sqrt(n_final))
        draws[lit] = (stats.t.sf(t, n_final - 1), stats.t.cdf(t, n_final - 1), alpha, signed, raw)
    decided = 0
    for i in range(PREDICTIVE_DRAWS):
        ev_i = {lit: (sg, rw, a, float(pp[i]), float(pn[i])) for lit, (pp, pn, a, sg, rw) in draws.items()}
        decided += min(comparisons.ratios(f, ev_i)) <= 1.0
    return decided / PREDICTIVE_DRAWS


def _requests(d: comparisons.Decision, f, max_seeds: int, cost: Callable[[str, RowKey], float]) -> dict[Where, int]:
    """Rows (and the seeds to reach, their next look) of the `PIVOTAL` open comparisons that can
    best decide the claim in the direction it leans to (the smaller adjusted ratio): each scored by
    the predictive probability that its needed side is established by max_seeds, per CPU second of
    one more seed of its rows (module doc)."""
    # a claim that cannot hold (a part missing) leans to "contradicted" even before its first look
    toward = comparisons.negate(f) if d.ratios[1] < d.ratios[0] or not comparisons.can_be_established(f) else f
    levels: dict = {}
    comparisons.collect_levels(toward, levels)
    horizon = DESIGN.look(range(max_seeds))
    scored = []
    for link in d.open:
        lit = link.literal.positive
        n = link.signed.n if link.signed is not None else 0
        target = next_look(n, max_seeds)
        if target is None or horizon is None:
            continue
        needed = [(side, levels[x]) for side, x in ((1, lit), (-1, ~lit)) if x in levels]
        p = max(
            (predictive_decision(link.signed, horizon[0], horizon[1] * rel, side) for side, rel in needed), default=0.0
        )
        rows = [(lit.table, k) for k in (lit.a, lit.b) if k is not None]
        if None in (lit.a, lit.b):  # a change between the levels of one method: both levels' runs
            rows += [(lit.table, (k[0], level)) for _, k in list(rows) for level in LEVELS if level != k[1]]
        seconds = sum(cost(*k) for k in rows)
        scored.append((p / max(seconds, 1e-9), p, rows, target))
    scored.sort(key=lambda x: -x[0])
    out: dict[Where, int] = {}
    for _, p, rows, target in scored[:PIVOTAL]:
        if p <= 0.0:
            continue
        for k in rows:
            out[k] = max(out.get(k, 0), target)
    return out


def assess(
    tables: Tables,
    claims: Sequence[Claim] = CLAIMS,
    *,
    max_seeds: int = LOOKS[-1],
    tables_at: Callable[[int], Tables] | None = None,
    cost: Callable[[str, RowKey], float] | None = None,
    seed: int = 0,
) -> Plan:
    """Judge every claim under the sequential design and plan the next round (module doc). A claim
    that reads a row without values (in `tables` or at the first look; `verdicts.reads`) is "not
    evaluable", names the row, and asks for no seeds.
    `tables_at(m)`: the tables of every row's seeds 0..m−1, on which claims without a comparison
    form are judged at the largest look their rows have all reached (default: `tables`, taken as
    one look); `cost(table, row)`: CPU seconds of one run of that table's row (default 1)."""
    cost = cost or (lambda _t, _k: 1.0)
    rng = np.random.default_rng(seed)
    usable, removed = without_null_rows(tables)
    looked: dict[int, tuple] = {}

    def at_look(m: int):
        if m not in looked:
            looked[m] = without_null_rows(tables_at(m)) if tables_at is not None else (usable, removed)
        return looked[m]

    # a row removed (a run of it diverged, failed or is not finished) keeps every claim that reads it
    # from a verdict, whatever its path: judged without it, the claim would say something else
    states, requests = [], {}
    for c in claims:
        if removed_rows_read(c, usable, removed):
            states.append(ClaimState(judge(c, usable, removed), "not evaluable", requests={}))
            continue
        f = formula_of(c, usable)
        if f is None:
            state = _region_state(c, at_look, max_seeds, tables_at is None)
        else:
            state = _comparisons_state(c, f, usable, removed, max_seeds, cost, rng)
        states.append(state)
        for k, n in state.requests.items():
            requests[k] = max(requests.get(k, 0), n)
    return Plan(tuple(states), requests)


def _comparisons_state(c: Claim, f, usable: Tables, removed, max_seeds: int, cost, rng) -> ClaimState:
    """A claim with a comparison form: judged at its comparisons' looks; futile below `FUTILITY`,
    else the seeds of its pivotal comparisons' rows (module doc)."""
    v = judge(c, usable, removed, design=DESIGN)
    # a claim that needs a table these runs do not give is judged on the others (`verdicts`): it
    # stays open while they may still contradict it, and is "not evaluable" when they will not
    partial = v["verdict"] == "not evaluable" and v["decision"] is not None
    if v["verdict"] in (*FINAL, "not evaluable", "error") and not partial:
        return ClaimState(v, v["verdict"], requests={})
    ended = "not evaluable" if partial else "futile"
    p = _predictive(f, usable, max_seeds, rng)
    if p < FUTILITY:
        return ClaimState(v, ended, p, {})
    asked = _requests(v["decision"], f, max_seeds, cost)
    return ClaimState(v, "open" if asked else ended, p, asked)


def _region_state(c: Claim, at_look: Callable[[int], tuple], max_seeds: int, one_look: bool) -> ClaimState:
    """A claim judged by region search (no comparison form): judged at the largest look m whose
    seeds 0..m−1 every row it turns on has (`verdicts.region_reads`), its region's 5 % spent over
    the looks (`region_level`); futile when its planning figure (the seeds that would decide it if
    the means and spreads stayed as observed) says not even `verdicts.MAX_SEEDS` would, or, from
    the look at `SETTLED` seeds on, more than `max_seeds` (before that the figure is too noisy to
    stop on); else those rows get the next look's seeds. Below the first look it is not judged:
    its rows get the first look's seeds. `one_look`: the tables given are one look; no seeds are
    asked."""
    m = None
    for look in (x for x in LOOKS if x <= max_seeds):
        reached, _ = region_reads(c, at_look(look)[0])
        if reached < look:
            break
        m = look
    if one_look:
        v = judge(c, *at_look(LOOKS[0] if m is None else m), design=DESIGN)
        final = v["verdict"] in (*FINAL, "not evaluable", "error")
        return ClaimState(v, v["verdict"] if final else "first look only", requests={})
    target = None if m is None else next_look(m, max_seeds)
    # no planning figure at the seed limit: it sets every row to one count, and may name fewer seeds
    # than the rows already have
    v = judge(c, *at_look(LOOKS[0] if m is None else m), design=DESIGN, plan_seeds=target is not None)
    if m is None and v["verdict"] not in ("not evaluable", "error"):
        v = {
            **v,
            "verdict": "inconclusive",
            "evidence": f"not judged: a row it reads lacks some of the seeds 0..{LOOKS[0] - 1} of the first look | "
            + v["evidence"],
        }
        _, read = region_reads(c, at_look(LOOKS[0])[0])
        return ClaimState(v, "open", requests={(t, key): LOOKS[0] for t, keys in read.items() for key in keys})
    if v["verdict"] in (*FINAL, "not evaluable", "error"):
        return ClaimState(v, v["verdict"], requests={})
    if target is None:  # every row it turns on has the last look's seeds: nothing more to give
        return ClaimState({**v, "at_seed_limit": m}, "futile", requests={})
    beyond = v["seeds"] is None or (m >= SETTLED and v["seeds"] > max_seeds)
    if beyond:
        return ClaimState(v, "futile", requests={})
    _, read = region_reads(c, at_look(m)[0])
    return ClaimState(v, "open", requests={(table, key): target for table, keys in read.items() for key in keys})


def _by_row(runs_by_benchmark: Mapping[str, Runs | Iterable], at: Mapping[str, str]):
    """(table, row) → that benchmark's records of the row (`at`: the benchmark giving each table),
    from each benchmark's `Runs` as grouped, or from its records (grouped here by row)."""
    groups: dict[tuple[str, RowKey], list] = {}
    for name, runs in runs_by_benchmark.items():
        if isinstance(runs, Runs):
            groups.update(((name, row), list(rs)) for row, rs in runs.groups.items())
            continue
        for r in runs:
            groups.setdefault((name, (display_name(r), r.spec.level)), []).append(r)
    return lambda table, row: groups.get((at.get(table, ""), row), [])


def run_cost(runs_by_benchmark: Mapping[str, Runs | Iterable], at: Mapping[str, str]) -> Callable[[str, RowKey], float]:
    """CPU seconds of one run of a (table, row): the mean wall time of the row's finished runs in
    the benchmark that gives the table (1 s for a row never run)."""
    rows = _by_row(runs_by_benchmark, at)

    def cost(table: str, row: RowKey) -> float:
        t = [r.finished - r.started for r in rows(table, row) if r.status == "done" and r.started and r.finished]
        t = [x for x in t if x > 0]
        return sum(t) / len(t) if t else 1.0

    return cost


def seeds_of(
    runs_by_benchmark: Mapping[str, Runs | Iterable], at: Mapping[str, str]
) -> Callable[[str, RowKey], set[int]]:
    """The seeds of a (table, row) among the records given."""
    rows = _by_row(runs_by_benchmark, at)
    return lambda table, row: {r.spec.seed for r in rows(table, row)}


def summary_markdown(
    verdicts: Sequence[Mapping], plan: Plan, seeds: Callable[[str, RowKey], set[int]], until_decided: int | None
) -> str:
    """A plain summary: what was decided and by which comparison, what stays open and what deciding
    it would cost (the sequential design's next round and its predictive probability)."""
    states = {s.id: s for s in plan.states}
    counts = Counter(v["verdict"] for v in verdicts)
    order = ("holds", "contradicted", "equivalent", "inconclusive", "not evaluable", "error")
    lines = [f"{len(verdicts)} claims: " + ", ".join(f"{k} {counts[k]}" for k in order if counts[k]) + "."]
    horizon = until_decided or LOOKS[-1]
    for v in verdicts:
        d = v.get("decision")
        link = None if d is None else d.deciding
        link_text = "" if link is None else link.text()
        s = states.get(v["id"])
        p = "" if s is None or s.p_decide is None else f"; P(decided by {horizon} seeds) ≈ {s.p_decide:.0%}"
        if v["verdict"] in FINAL:
            alone = f" on {', '.join(v['given'])} alone" if v.get("lacking") else ""
            lines.append(f"- **{v['verdict']}** `{v['id']}`{alone}" + (f": {link_text}" if link_text else ""))
        elif v["verdict"] in ("inconclusive", "error"):
            tag = {
                "futile": "undecided (futile)",
                "first look only": "undecided (no comparison form: judged on the seeds given)",
            }.get(s.state if s is not None else "", "open" if v["verdict"] == "inconclusive" else "error")
            if s is not None and s.state == "futile" and s.verdict.get("at_seed_limit"):
                limit = s.verdict["at_seed_limit"]
                p = f"; still undecided with {limit} seeds of every row it turns on, the seed limit"
            elif s is not None and s.state == "futile" and s.verdict.get("procedure") == "region":
                would = s.verdict.get("seeds")  # the sequential design's figure, not the fixed design's
                p = "; its region would not decide it by {} seeds even if the means stayed as observed ({})".format(
                    horizon, f"about {would} would" if would else f"nor by {MAX_SEEDS}"
                )
            lines.append(f"- **{tag}** `{v['id']}`{p}" + (f"; closest: {link_text}" if link_text else ""))
        elif v["verdict"] == "not evaluable" and d is not None:  # judged on the tables given (`verdicts`)
            if s is not None and s.state == "open":
                lines.append(
                    f"- **open** `{v['id']}` on {', '.join(v['given'])} (it needs {', '.join(v['lacking'])} to "
                    f"hold){p}" + (f"; closest: {link_text}" if link_text else "")
                )
    if counts["not evaluable"]:
        given = sum(v["verdict"] == "not evaluable" and v.get("decision") is not None for v in verdicts)
        lines.append(
            f"- **not evaluable**: {counts['not evaluable']} claim(s) need a table these runs do not give, or a "
            "row without values (its runs diverged, failed or have not finished); the verdicts name what is "
            "missing and why"
            + (f" ({given} of them judged on the tables given, which have not contradicted them)." if given else ".")
        )
    more = plan.runs(seeds)
    rows = ", ".join(f"{k[0]} ({k[1]}) of {t} to {n} seeds" for (t, k), n in plan.requests.items())
    if until_decided:
        lines.append(
            f"\nStopped with {more} run(s) still asked for ({rows}): the time budget ran out."
            if more
            else "\nFinished: every claim is final, futile, or at the seed limit."
            if not plan.requests
            else f"\nStopped: the rows asked for ({rows}) have their seeds, and no comparison moved to a new look."
        )
    elif more:
        lines.append(
            f"\nTo decide what is open, `mtlcheck reproduce --until-decided` would next run {more} run(s) "
            f"({rows}), adding seeds only where a comparison can still decide."
        )
    return "\n".join(lines)
