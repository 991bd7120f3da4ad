"""`mtlcheck reproduce`: sweep + report + claim verdicts; with --until-decided, seeds added in
rounds where they decide the open claims."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from mtlcheck.study.commands import common, report
from mtlcheck.study.commands.common import Command, UsageError, positive_int
from mtlcheck.study.commands.sweep import add_sweep_arguments, jobs, run_specs, sweep


class Reproduce(Command):
    name = "reproduce"
    help = "sweep + report + claim verdicts (default: the embedded default, small budget)"

    def add_arguments(self, p) -> None:
        add_sweep_arguments(p)
        p.add_argument(
            "--until-decided",
            action="store_true",
            help="add seeds in rounds (looks at 3, 5, 8, 12, 16, 24, 32) only to the rows whose comparisons can "
            "still decide an open claim, with the error spent over the looks; stops claims that are decided, "
            "equivalent or futile",
        )
        p.add_argument("--max-seeds", type=positive_int, default=None, help="with --until-decided: a look (default 32)")
        p.add_argument(
            "--time-budget",
            type=_duration,
            default=None,
            help="with --until-decided: stop before a round that would pass it (90s, 30m, 3h, 1h30m)",
        )

    def run(self, args) -> int:
        common.check_out(args.out)  # before hours of runs, not after
        if args.until_decided:
            return until_decided(args)
        for flag, value in (("--max-seeds", args.max_seeds), ("--time-budget", args.time_budget)):
            if value is not None:
                raise UsageError(f"{flag} goes with --until-decided")
        store, records, seconds = sweep(args)
        args.steps = "default" if args.steps is None else str(args.steps)  # report what was swept
        path = report.write(args, store)
        print(path.read_text())
        failed = [r.spec.label for r in records if r.status == "failed"]
        print(f"\n{len(records)} runs, sweep wall time {seconds:.0f}s; report, CSV tables and figures in {path.parent}")
        if failed:
            print(f"{len(failed)} run(s) failed (their errors are in the store): {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0


def _duration(text: str) -> float:
    """'90s', '30m', '3h', '1h30m' or plain seconds → seconds (> 0)."""
    import re

    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 3h or 1h30m, got {text!r}")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    seconds = 3600 * h + 60 * mi + se
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a time budget must be positive, got {text!r}")
    return seconds


def until_decided(args) -> int:
    """Rounds of the sequential design (`mtlcheck.study.paper.sequential`): the first look at every
    method and level, then seeds only for the rows whose comparisons can still decide an open claim,
    until no claim asks for more, `--max-seeds` is reached or the next round would pass
    `--time-budget`. Interrupted, it resumes where it stopped: every run is in the store."""
    from mtlcheck.study.experiments.runner import sweep_specs
    from mtlcheck.study.paper.our_tables import result_tables
    from mtlcheck.study.paper.reports import claim_tables, table_benchmarks
    from mtlcheck.study.paper.runs import PAPER_NAMES, display_name
    from mtlcheck.study.paper.sequential import LOOKS, assess, run_cost, seeds_of

    if args.seeds is not None:
        raise UsageError("--until-decided chooses the seeds itself (looks at 3, 5, 8, ... seeds): drop --seeds")
    max_seeds = LOOKS[-1] if args.max_seeds is None else args.max_seeds
    if max_seeds not in LOOKS:
        raise UsageError(f"--max-seeds must be one of the design's looks {list(LOOKS)}, got {max_seeds}")
    budget, t0 = args.time_budget, time.monotonic()
    benchmarks = common.benchmarks(args)
    registry = {v: k for k, v in PAPER_NAMES.items()}
    stored = common.store(args)  # a --max-seeds below what is stored would leave runs the design never saw
    for name in benchmarks:
        most = max((r.spec.seed + 1 for r in stored.runs(benchmark=name) if r.spec.budget == args.budget), default=0)
        if most > max_seeds:
            raise UsageError(f"{args.store} already holds {most} seeds of {name}: --max-seeds must be >= {most}")
    args.seeds = list(range(LOOKS[0]))
    store, records, _ = sweep(args)
    args.steps = "default" if args.steps is None else str(args.steps)
    rounds, ran = 0, len(records)
    while True:
        found = {  # what the claims read: the paper's methods' ended runs (a killed run resumes when asked), in
            # their paper configuration (a 'CAGrad[c=0.2]' or '(feature_batch=sum)' row is no row of the design)
            name: [r for r in report.study_records(args, store, name, ended=True) if display_name(r) in registry]
            for name in benchmarks
        }
        by_bench = {name: result_tables(recs, name, derived_intervals=False) for name, recs in found.items()}

        def tables_at(m: int, found=found):
            return claim_tables(
                {
                    name: result_tables([r for r in recs if r.spec.seed < m], name, derived_intervals=False)
                    for name, recs in found.items()
                }
            )

        at = table_benchmarks(by_bench)
        cost, seeds = run_cost(found, at), seeds_of(found, at)
        plan = assess(claim_tables(by_bench), max_seeds=max_seeds, tables_at=tables_at, cost=cost)
        print(
            f"round {rounds}: "
            + ", ".join(f"{k} {n}" for k, n in Counter(s.state for s in plan.states).items())
            + (f"; next: {plan.runs(seeds)} run(s)" if plan.requests else "")
        )
        if not plan.requests:
            break
        need = sum(cost(*k) * len(set(range(n)) - seeds(*k)) for k, n in plan.requests.items()) / max(1, jobs(args))
        used = time.monotonic() - t0
        if budget is not None and used + need > budget:
            print(
                f"time budget: the next round needs about {need / 60:.0f} min and {(budget - used) / 60:.0f} min are "
                "left; stopping (run the same command with a larger --time-budget to go on)"
            )
            break
        specs = []
        for (table, (method, level)), n in plan.requests.items():
            name = registry.get(method)
            if name is None:
                raise UsageError(f"the sequential design asked for seeds of {method!r}, which is not a paper method")
            missing = sorted(set(range(n)) - seeds(table, (method, level)))
            if missing:
                specs += sweep_specs(
                    at[table],
                    [name],
                    (level,),
                    tuple(missing),
                    args.budget,
                    common.steps_arg(args),
                    extra=common.run_options(args),
                )
        if not specs:
            print("no progress: every row the design asks for has its seeds; stopping")
            break
        _, done, _ = run_specs(args, list(dict.fromkeys(specs)))
        ran += len(done)
        rounds += 1
    path = report.write(args, store, until_decided=max_seeds)
    print(path.read_text())
    print(
        f"\n{ran} runs in {rounds} added round(s), wall time {(time.monotonic() - t0) / 60:.1f} min; "
        f"report, CSV tables and figures in {path.parent}"
    )
    return 0
