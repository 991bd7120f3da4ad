"""The stored runs a report reads: selected from the store (`select_report_records`), validated,
named as the paper names the methods, grouped once by (method, gradient level) (`group_runs`; the
groups then flow on, `Runs.where` narrowing them), with a note saying why a group has no values.

Rules: records of one benchmark, budget, step count and code epoch at a time (mixing raises), each
seed once per (method, level); a group counts as done only when every one of its runs is 'done',
otherwise `status_note` says what happened (diverged at step N in k/n seeds, failed, not finished)
so that no run is dropped silently.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from mtlcheck import LEVELS
from mtlcheck.aggregators import paper_name
from mtlcheck.precision import Precision
from mtlcheck.study import RUN_OPTIONS
from mtlcheck.study.benchmarks import Benchmark, get_benchmark
from mtlcheck.study.experiments.records import RunRecord
from mtlcheck.study.experiments.runner import LATER_METHODS, PAPER_METHODS, run_options

__all__ = [
    "MEASURES",
    "PAPER_NAMES",
    "PAPER_ORDER",
    "Runs",
    "display_name",
    "group_runs",
    "mean",
    "seeds_text",
    "select_report_records",
    "status_note",
]

# registry name -> the paper's name (registered with each method; reference/paper/table*.json)
PAPER_NAMES: Mapping[str, str] = {m: paper_name(m) for m in PAPER_METHODS}
# the methods added after the paper, by their own papers' names (extra rows: never the paper's names)
LATER_NAMES: Mapping[str, str] = {m: paper_name(m) for m in LATER_METHODS}
# row order of Tables 2-3 (Table 1 is the same order without Nash-MTL and GradNorm)
PAPER_ORDER = (
    "Baseline",
    "RGW",
    "PCGrad",
    "GradVac",
    "MGDA",
    "CAGrad",
    "GradDrop",
    "Nash-MTL",
    "Aligned-MTL",
    "IMTL",
    "RLW",
    "DWA",
    "Uncertainty",
    "GradNorm",
    "FAMO",
    "CosReg",
)
# trajectory key, the paper's row name, the gradient level the measure uses (Tables 5-7 rows)
MEASURES = (("gds", "GDS", "parameter"), ("gms", "GMS", "parameter"), ("fd", "FD", "feature"))


def display_name(record: RunRecord) -> str:
    """The paper's name of the run's method; a non-default config is appended, e.g. 'CAGrad[c=0.2]',
    and so is each of `RUN_OPTIONS` away from its default ('MGDA (feature_batch=sum)'), so a claim
    about the paper's CAGrad or MGDA-UB never reads a differently configured run."""
    spec = record.spec
    name = PAPER_NAMES.get(spec.method) or LATER_NAMES.get(spec.method, spec.method)
    if spec.method_config:
        name += "[" + ", ".join(f"{k}={v!r}" for k, v in sorted(spec.config.items())) + "]"
    options = spec.options
    for o in RUN_OPTIONS:
        if options.get(o.name, o.default) != o.default:
            name += f" ({o.name}={options[o.name]})"
    return name


def _order(name: str) -> tuple[int, str]:
    return (PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER), name)


@dataclass(frozen=True)
class Runs:
    """Validated records of one benchmark / budget, grouped by (display name, level)."""

    bench: Benchmark
    budget: str
    steps: int | None
    groups: Mapping[tuple[str, str], tuple[RunRecord, ...]]  # sorted by seed

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The groups in report order: parameter level first, then the paper's row order."""
        return sorted(self.groups, key=lambda k: (LEVELS.index(k[1]), _order(k[0])))

    def done(self, key: tuple[str, str]) -> bool:
        return all(r.status == "done" for r in self.groups[key])

    @property
    def label(self) -> str:
        steps = "" if self.steps is None else f", {self.steps} steps"
        return f"{self.bench.name}, {self.budget}{steps}"

    @property
    def records(self) -> list[RunRecord]:
        return [r for key in self.keys for r in self.groups[key]]

    def where(self, keep: Callable[[RunRecord], bool]) -> Runs:
        """The runs for which `keep(record)` holds, in their groups (validated once: not grouped again)."""
        kept = {k: tuple(r for r in rs if keep(r)) for k, rs in self.groups.items()}
        return replace(self, groups={k: rs for k, rs in kept.items() if rs})


def _as_benchmark(benchmark: Benchmark | str) -> Benchmark:
    if isinstance(benchmark, Benchmark):
        return benchmark
    if isinstance(benchmark, str):
        return get_benchmark(benchmark)
    raise TypeError(f"benchmark must be a Benchmark or its name, got {type(benchmark).__name__}")


def group_runs(records: Iterable[RunRecord], benchmark: Benchmark | str) -> Runs:
    """`records` validated (see the module's rules; ValueError or TypeError naming the offending
    records) and grouped by (display name, level), each group sorted by seed."""
    bench = _as_benchmark(benchmark)
    records = list(records)
    if not records:
        raise ValueError(f"no run records given for benchmark {bench.name!r}")
    for r in records:
        if not isinstance(r, RunRecord):
            raise TypeError(f"expected RunRecords (ResultStore.runs / run_sweep), got {type(r).__name__}")
    other = sorted({r.spec.label for r in records if r.spec.benchmark != bench.name})
    if other:
        raise ValueError(f"records of another benchmark than {bench.name!r}: {other}")
    for field, what in (("budget", "budgets"), ("steps", "step counts")):
        seen = Counter(getattr(r.spec, field) for r in records)
        if len(seen) > 1:
            raise ValueError(
                f"records mix {what} {dict(sorted(seen.items(), key=str))} (runs per value); "
                f"report one {field} at a time"
            )
    epochs = Counter(r.code_epoch for r in records)
    if len(epochs) > 1:
        raise ValueError(f"records mix code epochs {dict(epochs)}; report one epoch at a time")
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(display_name(r), r.spec.level)].append(r)
    for (name, level), rs in groups.items():
        seeds = Counter(r.spec.seed for r in rs)
        dup = sorted(s for s, n in seeds.items() if n > 1)
        if dup:
            raise ValueError(
                f"{name} ({level}): several records for seed(s) {dup} "
                f"(keys {sorted(r.key for r in rs if r.spec.seed in dup)}); pass each run once"
            )
    return Runs(
        bench,
        records[0].spec.budget,
        records[0].spec.steps,
        {k: tuple(sorted(v, key=lambda r: r.spec.seed)) for k, v in groups.items()},
    )


def select_report_records(
    store, benchmark: str, budget: str, precision: Precision, steps: str | None = None, *, ended: bool = False
) -> list[RunRecord]:
    """The stored runs a report of `benchmark` at `budget` reads: those run under `precision` (both
    feature-level batch rules: separate rows) and `steps` ("default" or a count; None: the one step
    count stored), and with `ended` only those that ended (done, diverged or failed: not in progress,
    nor left behind by a killed process). ValueError saying what is stored when nothing matches."""
    records = [
        r
        for r in store.runs(benchmark=benchmark)
        if r.spec.budget == budget and run_options(r.spec.options)[0] == precision
    ]
    if not records:
        raise ValueError(
            f"no stored runs for {benchmark} at budget {budget} with {precision} in {store}; run "
            f"`mtlcheck sweep --benchmark {benchmark} --budget {budget}` with the same precision options first"
        )
    stored = {r.spec.steps for r in records}
    if steps is not None:
        wanted = None if steps == "default" else int(steps)
        records = [r for r in records if r.spec.steps == wanted]
        if not records:
            raise ValueError(
                f"no stored runs for {benchmark} at budget {budget} with --steps {steps}; stored: {_steps_text(stored)}"
            )
    elif len(stored) > 1:
        raise ValueError(
            f"the stored runs of {benchmark} at budget {budget} have several step counts "
            f"({_steps_text(stored)}): choose one with --steps"
        )
    return [r for r in records if r.is_finished or r.status == "failed"] if ended else records


def _steps_text(steps) -> str:
    return ", ".join(sorted("default" if s is None else str(s) for s in steps))


def seeds_text(rs: Sequence[RunRecord]) -> str:
    """'0, 1, 2': the seeds of the runs."""
    return ", ".join(str(r.spec.seed) for r in rs)


def status_note(rs: Sequence[RunRecord]) -> str:
    """Why a group has no values: 'diverged at step 7 in 1/3 seeds (seed 2); ...'."""
    n = len(rs)
    parts = []
    diverged = [r for r in rs if r.status == "diverged"]
    if diverged:
        steps = sorted({(r.timings or {}).get("diverged_step") for r in diverged}, key=str)
        where = "step " + ", ".join(str(s) for s in steps) if None not in steps else "an unrecorded step"
        parts.append(f"diverged at {where} in {len(diverged)}/{n} seeds (seed {seeds_text(diverged)})")
    failed = [r for r in rs if r.status == "failed"]
    if failed:
        last = [(r.error or "").strip().splitlines()[-1:] or ["no error text"] for r in failed]
        parts.append(
            f"failed in {len(failed)}/{n} seeds ("
            + "; ".join(f"seed {r.spec.seed}: {line[0]}" for r, line in zip(failed, last))
            + ")"
        )
    unfinished = [r for r in rs if r.status in ("pending", "running")]
    if unfinished:
        parts.append(
            f"not finished in {len(unfinished)}/{n} seeds ("
            + ", ".join(f"seed {r.spec.seed}: {r.status}" for r in unfinished)
            + ")"
        )
    done = n - len(diverged) - len(failed) - len(unfinished)
    if done:
        parts.append(f"no mean taken over the other {done} done seed(s)")
    return "; ".join(parts)


def mean(values: Sequence[float]) -> float:
    """The exactly rounded mean (`math.fsum`)."""
    return math.fsum(values) / len(values)
