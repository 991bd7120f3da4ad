"""The `mtlcheck` command.

    mtlcheck reproduce                 # the embedded default study on CPU: sweep + report + verdicts
    mtlcheck list                      # methods (with tags) and benchmarks
    mtlcheck run --benchmark digits-dense --method mgda --level feature
    mtlcheck sweep --benchmark cityscapes --data-root /data/cityscapes --budget paper --seeds 0 1 2
    mtlcheck report --benchmark digits-dense --budget small
    mtlcheck reproduce --benchmark all             # the three embedded analogs (Tables 1-7), one report
    mtlcheck reproduce --until-decided             # seeds added where they decide the open claims
    mtlcheck runs list --status failed            # stored runs; also: show, retry, export, compare
    mtlcheck check my_pkg.module:MyAggregator     # the conformance kit on any aggregator (--config KEY=VALUE)
    mtlcheck bench --size 128 --tasks 3           # step time per method as a ratio to EW
    mtlcheck bench --peers                        # side by side with the real TorchJD and LibMTL

Every command that reads or writes runs takes --store: the results store, an SQLite file for
one host (default mtlcheck-results/runs.sqlite) or a postgresql://user@host/db URL that the
sweeps of many machines share (pip install mtlcheck[postgresql]); reports go to --out (default
mtlcheck-results/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

# Nothing here imports torch at module level: `mtlcheck --help`, `--version` and usage errors
# answer at once; each command imports what it needs.
from mtlcheck import LEVELS
from mtlcheck.study import BUDGETS as BUDGET_CHOICES

DEFAULT_STORE = Path("mtlcheck-results") / "runs.sqlite"
DEFAULT_OUT = Path("mtlcheck-results")
DEFAULT_SEEDS = (0, 1, 2)  # the paper's three seeds
ALL_BENCHMARKS = "all"  # sweep/report/reproduce --benchmark all: the three embedded analogs


class UsageError(Exception):
    """A mistake in the command or its inputs: reported as one line, exit code 2."""


def _int_at_least(minimum: int, what: str):
    """An argparse type: an int >= `minimum`, else a message saying `what` was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _parse_config(items: list[str] | None) -> dict:
    """['c=0.5', 'rescale=1'] → {'c': 0.5, 'rescale': 1} (values parsed as JSON when possible,
    else kept as strings; the method's constructor signature then checks names and types)."""
    config = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--config expects KEY=VALUE, got {item!r}")
        if key in config:
            raise UsageError(f"--config gives {key!r} twice")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def _where(args):
    from mtlcheck.study.experiments.runner import Where, check_device

    if getattr(args, "executor", "local") == "local":
        check_device(args.device)  # with ray, each worker checks its own
    return Where(data_root=args.data_root, device=args.device, weights=args.weights, progress=not args.quiet)


def _store(args, *, readonly: bool = False, create: bool = True):
    """The results store of --store; reading commands open it read-only and never create one."""
    from mtlcheck.study.experiments.store import ResultStore

    return ResultStore(args.store, readonly=readonly, create=create and not readonly)


def _threads(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _check_out(out: str) -> Path:
    """--out as a folder this process can write (created if missing), or a UsageError."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {out}: a file is in the way (a report folder is needed)") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the report folder: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder is not writable")
    return path


def _check_executor(args) -> None:
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if args.jobs is not None and args.executor != "local":
        raise UsageError(
            "--jobs is for --executor local; with --executor ray each run is one Ray task (--threads CPUs each)"
        )
    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--executor ray needs Ray, which is not installed: pip install 'mtlcheck[ray]'")


def _unknown_name(args) -> str | None:
    """A mistyped method or benchmark name, said with a suggestion, found without importing torch
    or the study (`mtlcheck._names`); None when every name is known (or is a pkg.module:Class)."""
    from mtlcheck._names import builtin_method_names, did_you_mean, known_method_names
    from mtlcheck.study import BENCHMARK_NAMES

    if not builtin_method_names()[0]:  # an install without the sources: the registry decides, later
        return None

    methods = {"run": [getattr(args, "method", None)], "check": getattr(args, "aggregators", None)}.get(
        args.command, getattr(args, "methods", None)
    )
    names = [m for m in methods or [] if m and ":" not in m]
    if names:
        known = known_method_names()
        for name in names:
            if name not in known:
                return f"unknown aggregator {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"
    benchmark = getattr(args, "benchmark", None)
    known = BENCHMARK_NAMES + ((ALL_BENCHMARKS,) if args.command in ("sweep", "report", "reproduce") else ())
    if args.command in ("run", "sweep", "report", "reproduce") and benchmark and benchmark not in known:
        return f"unknown benchmark {benchmark!r}{did_you_mean(benchmark, known)}; known: {', '.join(known)}"
    return None


def cmd_list(args) -> int:
    from mtlcheck.aggregators import aggregator_class, level_aliases, list_aggregators

    if args.what in ("methods", "all"):
        print("methods (registry name: tags)")
        for name in list_aggregators():
            agg = aggregator_class(name)()
            t = agg.tags()
            traits = [("loss-only" if t.loss_only else "gradients"), t.family]
            traits += [k for k in ("stateful", "stochastic", "second_order", "non_conflicting") if getattr(t, k)]
            if t.requires_solver:
                traits.append(f"solver={t.requires_solver}")
            levels = "parameter" if t.loss_only else "parameter, feature"
            print(f"  {name:<13} {type(agg).__name__:<12} levels: {levels:<19} {', '.join(traits)}")
        aliases = [f"{alias} = {name} at the {level} level" for alias, (name, level) in level_aliases().items()]
        print(f"  aliases: {', '.join(aliases)}")
    if args.what in ("benchmarks", "all"):
        try:
            from mtlcheck.study.benchmarks import BENCHMARKS
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in STUDY_EXTRA_MODULES:
                raise
            from mtlcheck.study import BENCHMARK_NAMES

            print(
                f'benchmarks (each needs the study\'s dependencies: pip install "mtlcheck[study]"; '
                f"{exc.name!r} is missing)"
            )
            for name in BENCHMARK_NAMES:
                print(f"  {name}")
            return 0
        print("benchmarks")
        for b in BENCHMARKS.values():
            data = "needs --data-root" if b.needs_data_root else "embedded"
            print(f"  {b.name:<16} {data:<18} tasks: {', '.join(b.task_names)}")
            print(f"  {'':<16} {b.description}")
    return 0


def cmd_run(args) -> int:
    from mtlcheck.study.experiments.runner import make_spec, run_spec
    from mtlcheck.study.experiments.store import RunFailedError, SetupError, StoreError

    spec = make_spec(
        args.benchmark,
        args.method,
        level=args.level,
        seed=args.seed,
        budget=args.budget,
        steps=args.steps,
        method_config=_parse_config(args.config),
        extra=_run_options(args),
    )
    where = _where(args)
    where.check([spec.benchmark])
    store = _store(args)
    _threads(args)
    args._specs = [spec]
    try:
        record = run_spec(store, spec, where)
    except (SetupError, StoreError, RunFailedError):
        raise
    except Exception as exc:  # noqa: BLE001 - the computation failed: recorded in the store
        record = store.get(spec)
        tries = "" if record is None else f" (failure {record.failures}, attempt {record.attempts})"
        print(
            f"{spec.label}: failed{tries}: {type(exc).__name__}: {exc}\n"
            f"  the traceback is stored: mtlcheck runs show {spec.key} --store {args.store}",
            file=sys.stderr,
        )
        return 1
    print(f"{spec.label}: {record.status}" + (f" ({record.error})" if record.error else ""))
    for key, value in sorted((record.metrics or {}).items()):
        print(f"  {key:<22} {value:.4f}")
    if record.timings:
        print(
            f"  train {record.timings.get('train_seconds', float('nan')):.1f}s, "
            f"{record.timings.get('seconds_per_step', float('nan')) * 1e3:.1f} ms/step"
        )
    return 0 if record.status in ("done", "diverged") else 1


def _sweep(args):
    from mtlcheck.study.experiments.runner import sweep_specs

    _check_executor(args)
    specs = [
        spec
        for benchmark in _benchmarks(args)
        for spec in sweep_specs(
            benchmark,
            args.methods,
            tuple(args.levels),
            tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS),
            args.budget,
            args.steps,
            extra=_run_options(args),
        )
    ]
    return _run_specs(args, specs)


def _benchmarks(args) -> tuple[str, ...]:
    """--benchmark all: the embedded analogs of the paper's three datasets, in one store and report."""
    from mtlcheck.study.benchmarks import EMBEDDED_ANALOGS

    return EMBEDDED_ANALOGS if args.benchmark == ALL_BENCHMARKS else (args.benchmark,)


def _run_specs(args, specs):
    """Run (or find stored) `specs` with the command's executor: (store, records, wall seconds)."""
    where = _where(args)
    where.check(s.benchmark for s in specs)  # device, weights, data root: usage errors before the store opens
    store = None if args.executor == "ray" else _store(args)  # ray: created once a cluster answers
    _threads(args)
    args._specs = [*getattr(args, "_specs", []), *specs]
    t0 = time.perf_counter()
    jobs = _jobs(args)
    if args.executor == "ray":
        from mtlcheck.study.experiments.distributed import run_sweep_ray

        records = run_sweep_ray(
            args.store,
            specs,
            where,
            num_cpus_per_run=args.threads or 1,
            num_gpus_per_run=1 if args.device.startswith("cuda") else 0,
            address=args.ray_address,
            progress=not args.quiet,
        )
        store = _store(args)
    elif jobs > 1:
        from mtlcheck.study.experiments.distributed import run_sweep_processes

        threads = args.threads or max(1, _cpu_count() // jobs)
        records = run_sweep_processes(store.location, specs, where, jobs=jobs, threads=threads, progress=not args.quiet)
    else:
        from mtlcheck.study.experiments.runner import run_sweep

        records = run_sweep(store, specs, where, progress=not args.quiet)
    return store, records, time.perf_counter() - t0


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _jobs(args) -> int:
    """--jobs, by default one worker process per CPU core on the CPU and 1 on a GPU."""
    if args.jobs is not None:
        return args.jobs
    return 1 if args.device.startswith("cuda") else _cpu_count()


def cmd_sweep(args) -> int:
    _, records, seconds = _sweep(args)
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(records)} runs in {seconds:.0f}s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if getattr(records, "summary", None) is not None:  # a Ray sweep: where the runs ran, what was taken over
        print(f"ray: {records.summary.line()}")
    if counts.get("failed"):
        print(
            f"failed runs: `mtlcheck runs list --status failed --store {args.store}` shows their errors, "
            f"`mtlcheck runs retry --failed --store {args.store}` computes them again",
            file=sys.stderr,
        )
    return 0 if counts.get("failed", 0) == 0 else 1


def _study_records(args, store, benchmark: str, ended: bool = False) -> list:
    """The stored runs a report of this command reads (`paper.runs.select_report_records`)."""
    from mtlcheck.study.paper.runs import select_report_records

    return select_report_records(store, benchmark, args.budget, _precision(args), args.steps, ended=ended)


def _report(args, store, until_decided: int | None = None) -> Path:
    from mtlcheck.study.benchmarks import get_benchmark
    from mtlcheck.study.paper.reports import write_combined_report, write_report

    ended = until_decided is not None  # the design's runs: those that ended (a killed run resumes when asked)
    found = {name: _study_records(args, store, name, ended) for name in _benchmarks(args)}
    records = next(iter(found.values()))
    suffix = "".join(f"-{k}" if v is True else f"-{v}" for k, v in _precision(args).options().items())
    chosen = records[0].spec.steps
    suffix += "" if chosen is None else f"-{chosen}steps"
    suffix += "" if until_decided is None else "-until-decided"
    out = _check_out(args.out) / f"{args.benchmark}-{args.budget}{suffix}"
    if args.benchmark == ALL_BENCHMARKS:
        return write_combined_report(found, out, until_decided=until_decided)
    return write_report(records, get_benchmark(args.benchmark), out, until_decided=until_decided)


def _steps_or_default(text: str) -> str:
    if text != "default":
        _positive_int(text)
    return text


def cmd_report(args) -> int:
    path = _report(args, _store(args, readonly=True))
    print(path.read_text())
    print(f"report written to {path}")
    return 0


def cmd_reproduce(args) -> int:
    _check_out(args.out)  # before hours of runs, not after
    if args.until_decided:
        return _reproduce_until_decided(args)
    for flag, value in (("--max-seeds", args.max_seeds), ("--time-budget", args.time_budget)):
        if value is not None:
            raise UsageError(f"{flag} goes with --until-decided")
    store, records, seconds = _sweep(args)
    args.steps = "default" if args.steps is None else str(args.steps)  # report what was swept
    path = _report(args, store)
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


def _reproduce_until_decided(args) -> int:
    """Rounds of the sequential design (`mtlcheck.study.paper.sequential`): the first look at every
    method and level, then seeds only for the rows whose comparisons can still decide an open claim,
    until no claim asks for more, `--max-seeds` is reached or the next round would pass
    `--time-budget`. Interrupted, it resumes where it stopped: every run is in the store."""
    from mtlcheck.study.experiments.runner import PAPER_METHODS, sweep_specs
    from mtlcheck.study.paper.our_tables import result_tables
    from mtlcheck.study.paper.reports import claim_tables, table_benchmarks
    from mtlcheck.study.paper.runs import PAPER_NAMES
    from mtlcheck.study.paper.sequential import LOOKS, assess, run_cost, seeds_of

    if args.seeds is not None:
        raise UsageError("--until-decided chooses the seeds itself (looks at 3, 5, 8, ... seeds): drop --seeds")
    max_seeds = LOOKS[-1] if args.max_seeds is None else args.max_seeds
    if max_seeds not in LOOKS:
        raise UsageError(f"--max-seeds must be one of the design's looks {list(LOOKS)}, got {max_seeds}")
    budget, t0 = args.time_budget, time.monotonic()
    benchmarks = _benchmarks(args)
    registry = {v: k for k, v in PAPER_NAMES.items()}
    stored = _store(args)  # a --max-seeds below what is stored would leave runs the design never saw
    for name in benchmarks:
        most = max((r.spec.seed + 1 for r in stored.runs(benchmark=name) if r.spec.budget == args.budget), default=0)
        if most > max_seeds:
            raise UsageError(f"{args.store} already holds {most} seeds of {name}: --max-seeds must be >= {most}")
    args.seeds = list(range(LOOKS[0]))
    store, records, _ = _sweep(args)
    args.steps = "default" if args.steps is None else str(args.steps)
    rounds, ran = 0, len(records)
    while True:
        found = {  # what the claims read: the paper's methods' ended runs (a killed run resumes when asked)
            name: [r for r in _study_records(args, store, name, ended=True) if r.spec.method in PAPER_METHODS]
            for name in benchmarks
        }
        by_bench = {name: result_tables(recs, name, derived_intervals=False) for name, recs in found.items()}
        first = {
            name: result_tables([r for r in recs if r.spec.seed < LOOKS[0]], name, derived_intervals=False)
            for name, recs in found.items()
        }
        at = table_benchmarks(by_bench)
        cost, seeds = run_cost(found, at), seeds_of(found, at)
        plan = assess(claim_tables(by_bench), max_seeds=max_seeds, first_look=claim_tables(first), cost=cost)
        print(
            f"round {rounds}: "
            + ", ".join(f"{k} {n}" for k, n in Counter(s.state for s in plan.states).items())
            + (f"; next: {plan.runs(seeds)} run(s)" if plan.requests else "")
        )
        if not plan.requests:
            break
        need = sum(cost(*k) * len(set(range(n)) - seeds(*k)) for k, n in plan.requests.items()) / max(1, _jobs(args))
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
                    at[table], [name], (level,), tuple(missing), args.budget, _steps_arg(args), extra=_run_options(args)
                )
        if not specs:
            print("no progress: every row the design asks for has its seeds; stopping")
            break
        _, done, _ = _run_specs(args, list(dict.fromkeys(specs)))
        ran += len(done)
        rounds += 1
    path = _report(args, store, until_decided=max_seeds)
    print(path.read_text())
    print(
        f"\n{ran} runs in {rounds} added round(s), wall time {(time.monotonic() - t0) / 60:.1f} min; "
        f"report, CSV tables and figures in {path.parent}"
    )
    return 0


def _steps_arg(args):
    return None if args.steps in (None, "default") else int(args.steps)


def _filtered_runs(args, store):
    records = store.runs(status=args.status, benchmark=args.benchmark, method=args.method, all_epochs=args.all_epochs)
    return [
        r
        for r in records
        if (args.level is None or r.spec.level == args.level) and (args.budget is None or r.spec.budget == args.budget)
    ]


def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def cmd_runs_list(args) -> int:
    from mtlcheck.study.experiments.inventory import summary

    records = _filtered_runs(args, _store(args, readonly=True))
    if not records:
        print(f"no runs in {args.store} match")
        return 0
    print(f"{'key':<16}  {'status':<8} {'tries':>5} {'fails':>5} {'train s':>8} {'ms/step':>8}  run")
    for r in records:
        row = summary(r)
        config = f" {row['config']}" if row["config"] else ""
        print(
            f"{r.key:<16}  {r.status:<8} {r.attempts:>5} {r.failures:>5} {_fmt(row['train_seconds'], '.1f'):>8} "
            f"{_fmt(row['ms_per_step'], '.1f'):>8}  {r.spec.label}{config}"
        )
        if row["last_error"] and r.status != "done":
            print(f"{'':<18}last error: {row['last_error']}")
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(records)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


def _one_run(store, key: str):
    from mtlcheck.study.experiments.store import ResultStore

    record = store.get(ResultStore._key(key)) if len(key) == 16 else None
    if record is None:
        matches = [r for r in store.runs(all_epochs=True) if r.key.startswith(key)]
        if len(matches) != 1:
            raise UsageError(
                f"{'no' if not matches else len(matches)} stored run(s) with a key starting {key!r} in {store}"
            )
        record = matches[0]
    return record


def cmd_runs_show(args) -> int:
    from mtlcheck.study.experiments.inventory import full

    record = _one_run(_store(args, readonly=True), args.key)
    data = full(record)
    error, data["error"] = data["error"], None
    for when in ("created", "started", "finished"):
        if data[when] is not None:
            data[when] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data[when]))
    print(
        json.dumps(
            {k: v for k, v in data.items() if v is not None and k not in ("trajectory", "env")}, indent=2, default=str
        )
    )
    if error:
        print(f"\nstored error:\n{error}")
    return 0


def cmd_runs_retry(args) -> int:
    store = _store(args, create=False)
    if args.keys:
        records = [_one_run(store, k) for k in args.keys]
    elif args.failed:
        args.status = "failed"
        records = _filtered_runs(args, store)
    else:
        raise UsageError("runs retry: name the runs (KEY ...) or pass --failed (with optional filters)")
    reset = [r for r in records if store.retry(r.key)]
    for r in reset:
        print(f"{r.key}  {r.spec.label}: failures reset (was {r.failures}); the next run or sweep computes it")
    skipped = [r for r in records if r not in reset]
    for r in skipped:
        print(f"{r.key}  {r.spec.label}: {r.status}, nothing to retry")
    print(f"{len(reset)} run(s) will be retried")
    return 0


def cmd_runs_export(args) -> int:
    from mtlcheck.study.experiments.inventory import export_csv, export_json

    records = _filtered_runs(args, _store(args, readonly=True))
    out = Path(args.out)
    fmt = args.format or out.suffix.lstrip(".").lower()
    if fmt not in ("json", "csv"):
        raise UsageError(
            f"runs export: cannot tell the format of {args.out!r}: name it .json or .csv, or pass --format"
        )
    if out.parent != Path("") and not out.parent.is_dir():
        raise UsageError(f"runs export: folder {out.parent} does not exist")
    try:
        paths = [export_json(records, out)] if fmt == "json" else list(export_csv(records, out))
    except OSError as exc:
        raise UsageError(f"runs export: cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"{len(records)} runs written to {', '.join(map(str, paths))}")
    return 0


def cmd_runs_compare(args) -> int:
    from mtlcheck.study.experiments.inventory import SOURCES, compare, explain, prediction
    from mtlcheck.study.experiments.store import ResultStore

    a = _filtered_runs(args, _store(args, readonly=True))
    b = _filtered_runs(args, ResultStore(args.other, readonly=True))
    result = compare(a, b, tol=args.tol)
    print(
        f"A = {args.store}, B = {args.other}: {len(result.same) + len(result.different)} runs in both "
        f"(finished), {len(result.same)} identical"
        + (f" within {args.tol:g}" if args.tol else "")
        + f", {len(result.different)} different, {len(result.unfinished)} unfinished in one, "
        f"{len(result.only_a)} only in A, {len(result.only_b)} only in B"
    )
    pairs = result.same + [(ra, rb) for ra, rb, _ in result.different]
    differing = sorted({s for ra, rb in pairs for s, notes in explain(ra, rb).items() if notes}, key=SOURCES.index)
    print(
        "recorded environments differ in: "
        + (", ".join(differing) if differing else "nothing (code, data, settings and machine the same)")
    )
    for ra, rb, diffs in result.different:
        print(f"  {ra.key}  {ra.spec.label}")
        for metric, (va, vb) in diffs.items():
            delta = f"  (B - A = {vb - va:+.6g})" if isinstance(va, float) and isinstance(vb, float) else ""
            print(f"      {metric:<24} A {va!s:<14} B {vb!s:<14}{delta}")
        sources = explain(ra, rb)
        for source in SOURCES:
            if sources[source]:
                print(f"      {source} differs: " + "; ".join(sources[source]))
        print(f"      → {prediction(ra, rb, sources)}")
    for what, records in (("only in A", result.only_a), ("only in B", result.only_b)):
        for r in records:
            print(f"  {what}: {r.key}  {r.spec.label} ({r.status})")
    return 0 if result.identical else 1


def cmd_check(args) -> int:
    from mtlcheck.testing import check_aggregator
    from mtlcheck.testing.kit import builtin_variants, resolve_aggregator

    if os.getcwd() not in sys.path and "" not in sys.path:  # like `python -m`: modules of the working folder
        sys.path.insert(0, os.getcwd())
    from mtlcheck.testing.kit import where

    config = _parse_config(args.config)
    failed = 0
    for name in args.aggregators:
        try:
            cls = resolve_aggregator(name)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's module failed to import: one line, where
            raise ValueError(f"cannot import {name}: {type(exc).__name__}: {exc}{where(exc)}") from None
        if config:  # checked as `run` checks it: names and types, then the constructor's own checks
            checked = cls.check_config(config)
            try:
                cls(**checked)
            except Exception as exc:  # noqa: BLE001 - the user's constructor: one line, where it raised
                raise ValueError(
                    f"{name}: cannot construct {cls.__name__} with --config {config}: "
                    f"{type(exc).__name__}: {exc}{where(exc)}"
                ) from None
            config = checked
        try:
            factories = builtin_variants(cls, config)
        except Exception as exc:  # noqa: BLE001 - the user's constructor: one line, where it raised
            raise ValueError(
                f"{name}: constructing {cls.__name__} raised {type(exc).__name__}: {exc}{where(exc)}"
            ) from None
        for make in factories:
            records = check_aggregator(make, on_fail=None)
            bad = [r for r in records if r["status"] in ("failed", "xpass")]
            failed += len(bad)
            skipped = sum(r["status"] == "skipped" for r in records)
            status = ("ok" if not bad else f"{len(bad)} FAILED") + (f", {skipped} skipped" if skipped else "")
            print(f"{make.__mtlcheck_repr__}: {len(records)} checks, {status}")
            for r in records:
                if r["status"] != "passed":
                    detail = r["exception"] or ""
                    if r["reason"]:
                        detail = f"{detail} — {r['reason']}" if detail else r["reason"]
                    print(f"  {r['status']:<7} {r['check']}: {detail}")
                    if args.verbose and r.get("traceback") and r["status"] == "failed":
                        print("    " + r["traceback"].rstrip().replace("\n", "\n    "))
    if failed and not args.verbose:
        print("(mtlcheck check -v prints the full traceback of each failure)")
    return 1 if failed else 0


def _add_where(p):
    p.add_argument("--data-root", default=None, help="root of the real dataset (paper benchmarks)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--weights", default=None, help="local ImageNet ResNet18 state dict (never downloaded)")
    _add_store(p)
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_precision(p)


def _add_store(p):
    p.add_argument(
        "--store",
        default=str(DEFAULT_STORE),
        help="results store: an SQLite file (one host) or a postgresql://user[:password]@host[:port]/dbname URL "
        "(many hosts; pip install 'mtlcheck[postgresql]') (default %(default)s)",
    )


def _add_precision(p):
    from mtlcheck.precision import Precision

    Precision.add_arguments(p)


def _precision(args):
    from mtlcheck.precision import Precision

    return Precision.from_args(args)


def _add_feature_batch(p):
    p.add_argument(
        "--feature-batch",
        default="flatten",
        choices=["flatten", "sum"],
        help="feature level: solve on the rows flattened over batch x features (Sener & Koltun, "
        "default) or summed over the batch (LibMTL's rep_grad)",
    )


def _run_options(args) -> dict:
    """The `extra` options of the runs asked for: precision flags and the feature-level batch rule."""
    return {**_precision(args).options(), "feature_batch": args.feature_batch}


def _add_sweep(p):
    p.add_argument(
        "--benchmark",
        default=None,
        help="benchmark name (default: the embedded digits-dense); 'all': the three embedded analogs, one report",
    )
    p.add_argument("--methods", nargs="+", default=None, help="registry names (default: the paper's methods)")
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    p.add_argument("--seeds", nargs="+", type=_non_negative_int, default=None, help="default: the paper's 3 seeds")
    p.add_argument("--budget", default="small", choices=BUDGET_CHOICES)
    p.add_argument("--steps", type=_positive_int, default=None, help="override the budget's number of steps")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report directory (default %(default)s)")
    p.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="ray: one Ray task per run on the cluster of --ray-address (pip install mtlcheck[ray]); only this "
        "process's node writes --store (the nodes need no shared filesystem), and a dead node's runs resume "
        "elsewhere from their checkpoints; run this command on a node of the cluster (not ray://); --threads "
        "CPUs and, with --device cuda, one GPU per run",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="local executor: runs at once, one worker process each, with --threads (default: cores / "
        "jobs) torch threads (default: one job per CPU core on the CPU, 1 with --device cuda)",
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    _add_feature_batch(p)
    _add_where(p)


def build_parser() -> argparse.ArgumentParser:
    from mtlcheck import __version__

    parser = argparse.ArgumentParser(
        prog="mtlcheck",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="version", version=f"mtlcheck {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="methods and benchmarks")
    p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "benchmarks"])
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("run", help="one run (stored; never recomputed)")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--method", required=True)
    p.add_argument(
        "--level",
        default=None,
        choices=LEVELS,
        help="gradient level (default: parameter; the -UB aliases are the feature level)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--budget", default="small", choices=BUDGET_CHOICES)
    p.add_argument("--steps", type=_positive_int, default=None)
    p.add_argument("--config", nargs="+", default=None, help="method parameters KEY=VALUE (JSON values)")
    _add_feature_batch(p)
    _add_where(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("sweep", help="every method × level × seed of a benchmark")
    _add_sweep(p)
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("report", help="tables, figures and claim verdicts from stored runs (store opened read-only)")
    p.add_argument(
        "--benchmark",
        default=None,
        help="benchmark name (default: the embedded digits-dense); 'all': the three embedded analogs, one report",
    )
    p.add_argument("--budget", default="small", choices=BUDGET_CHOICES)
    p.add_argument(
        "--steps",
        type=_steps_or_default,
        default=None,
        help="the runs with this step count ('default': the budget's own); needed when several are stored",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report directory (default %(default)s)")
    _add_store(p)
    _add_precision(p)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser(
        "reproduce", help="sweep + report + claim verdicts (default: the embedded default, small budget)"
    )
    _add_sweep(p)
    p.add_argument(
        "--until-decided",
        action="store_true",
        help="add seeds in rounds (looks at 3, 5, 8, 12, 16, 24, 32) only to the rows whose comparisons can "
        "still decide an open claim, with the error spent over the looks; stops claims that are decided, "
        "equivalent or futile",
    )
    p.add_argument("--max-seeds", type=_positive_int, default=None, help="with --until-decided: a look (default 32)")
    p.add_argument(
        "--time-budget",
        type=_duration,
        default=None,
        help="with --until-decided: stop before a round that would pass it (90s, 30m, 3h, 1h30m)",
    )
    p.set_defaults(fn=cmd_reproduce)
    p = sub.add_parser(
        "check",
        help="run the conformance kit on aggregators (registry names, aliases such as "
        "mgda_ub, or pkg.module:Class importable from the working folder)",
    )
    p.add_argument("aggregators", nargs="+")
    p.add_argument(
        "--config",
        nargs="*",
        default=None,
        metavar="KEY=VALUE",
        help="constructor arguments (values parsed as JSON when possible); without it, built-ins are "
        "checked at their default and their documented parameter variants",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the full traceback of each failure")
    p.set_defaults(fn=cmd_check)
    _add_runs(sub)
    sub.add_parser("bench", help="step time per method as a ratio to EW (options: `mtlcheck bench --help`)")
    return parser


def _add_runs(sub) -> None:
    """`mtlcheck runs {list,show,retry,export,compare}`; plain `mtlcheck runs` lists."""
    runs = sub.add_parser("runs", help="stored runs: list, show, retry failed ones, export, compare two stores")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    p = rsub.add_parser("list", help="status, attempts, failures, timings and last error of each run")
    _add_store(p)
    _add_run_filters(p)
    p.set_defaults(fn=cmd_runs_list)
    p = rsub.add_parser("show", help="one run in full (spec, metrics, timings, history, stored traceback)")
    p.add_argument("key", help="the run's key (or a unique prefix of it)")
    _add_store(p)
    p.set_defaults(fn=cmd_runs_show)
    p = rsub.add_parser("retry", help="give failed runs their attempts back (they compute on the next run/sweep)")
    p.add_argument("keys", nargs="*", help="run keys (or unique prefixes)")
    p.add_argument("--failed", action="store_true", help="every failed run matching the filters")
    _add_store(p)
    _add_run_filters(p, status=False)
    p.set_defaults(fn=cmd_runs_retry)
    p = rsub.add_parser("export", help="runs as JSON (everything) or CSV (one row per run + trajectories)")
    p.add_argument("out", help="file to write: .json, or .csv (+ <name>-trajectories.csv)")
    p.add_argument("--format", default=None, choices=["json", "csv"], help="default: from the file's suffix")
    _add_store(p)
    _add_run_filters(p)
    p.set_defaults(fn=cmd_runs_export)
    p = rsub.add_parser("compare", help="runs of --store (A) and OTHER (B) with the same spec: metric differences")
    p.add_argument("other", help="the other results store (an SQLite file or a postgresql:// URL)")
    p.add_argument("--tol", type=float, default=0.0, help="absolute tolerance on metric values (default: exact)")
    _add_store(p)
    _add_run_filters(p)
    p.set_defaults(fn=cmd_runs_compare)


def _add_run_filters(p, status: bool = True) -> None:
    if status:
        p.add_argument("--status", default=None, choices=["pending", "running", "done", "failed", "diverged"])
    p.add_argument("--benchmark", default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--level", default=None, choices=LEVELS)
    p.add_argument("--budget", default=None, choices=BUDGET_CHOICES)
    p.add_argument("--all-epochs", action="store_true", help="include runs of earlier code epochs")


# what the `study` extra installs (import names): a command that needs one says so instead of a traceback
STUDY_EXTRA_MODULES = ("torchvision", "pycocotools", "sklearn", "matplotlib", "tqdm", "PIL")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in STUDY_EXTRA_MODULES:
            raise
        print(
            f"mtlcheck: error: this command needs the study's dependencies, and {exc.name!r} is not installed: "
            'pip install "mtlcheck[study]" (the library alone gives `mtlcheck check` and `mtlcheck --version`)',
            file=sys.stderr,
        )
        return 2


def _main(argv: list[str] | None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the bench has its own options: hand them over untouched
        from mtlcheck.study.perf import bench

        rest = argv[1:]
        return bench.main(rest[1:] if rest[:1] == ["--"] else rest)
    if argv[:1] == ["runs"] and (len(argv) == 1 or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))):
        argv.insert(1, "list")  # plain `mtlcheck runs [filters]` lists
    args = build_parser().parse_args(argv)
    mistyped = _unknown_name(args)
    if mistyped:
        print(f"mtlcheck: error: {mistyped}", file=sys.stderr)
        return 2
    if getattr(args, "benchmark", "") is None and args.command in ("run", "sweep", "report", "reproduce"):
        from mtlcheck.study.benchmarks import DEFAULT_BENCHMARK

        args.benchmark = DEFAULT_BENCHMARK
    from mtlcheck.study.experiments.interrupts import exit_code, second_signal_exits, terminate_as_interrupt
    from mtlcheck.study.experiments.store import RunFailedError, SetupError, StoreError

    try:
        _portable(args)
        with terminate_as_interrupt():  # SIGTERM stops a command as Ctrl-C does (exit 143, not 130)
            return args.fn(args)
    except KeyboardInterrupt as exc:
        with second_signal_exits(exit_code(exc)):
            print(f"\nmtlcheck: interrupted. {_where_it_stopped(args)}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:  # `mtlcheck runs | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SetupError as exc:
        print(
            f"mtlcheck: error: {exc}\n(not counted as a failure of the run: fix the data or device and run the "
            "same command again)",
            file=sys.stderr,
        )
        return 2
    except (UsageError, ValueError, FileNotFoundError, StoreError, RunFailedError) as exc:
        print(f"mtlcheck: error: {exc}", file=sys.stderr)
        return 2


_NOT_PORTABLE = (("--tf32", "tf32"), ("--autocast", "autocast"), ("--channels-last", "channels_last"))


def _portable(args) -> None:
    """--portable: contradictions are usage errors; a command that computes gets the portable
    environment before torch's first operation (mtlcheck.precision.PORTABLE_ENV)."""
    if not getattr(args, "portable", False):
        return
    others = [f for f, on in _NOT_PORTABLE if getattr(args, on, None)]
    if others:
        raise UsageError(f"--portable (the exact float32 step on fixed CPU kernels) excludes {' and '.join(others)}")
    if getattr(args, "threads", None) not in (None, 1):
        raise UsageError(f"--portable runs on one thread; --threads {args.threads} contradicts it")
    if getattr(args, "device", "cpu") != "cpu":
        raise UsageError(f"--portable is a CPU mode (bitwise the same on every x86-64 CPU); --device {args.device}")
    if args.command in ("run", "sweep", "reproduce"):
        from mtlcheck.precision import portable_environment, portable_problems

        portable_environment()
        problems = portable_problems()
        if problems:
            raise UsageError(f"--portable needs a fresh process: {'; '.join(problems)}")


def _where_it_stopped(args) -> str:
    """For Ctrl-C: which runs of this command are stored, which one was stopped, and how to resume."""
    specs = getattr(args, "_specs", None)
    if not specs:
        return "Nothing was stored by this command."
    try:
        from mtlcheck.study.experiments.store import ResultStore

        store = ResultStore(args.store, readonly=True)
        records = [store.get(s) for s in specs]
    except Exception as exc:  # noqa: BLE001 - the message must still come out
        return f"Could not read the store {args.store} ({exc}); run the same command again to resume."
    finished = sum(1 for r in records if r is not None and r.is_finished)
    stopped = [
        r
        for r in records
        if r is not None
        and r.status == "pending"
        and r.history
        and r.history[-1].get("event") == "released"
        and "interrupted in" in str(r.history[-1].get("reason"))
    ]  # by this process or its workers
    parts = [f"{finished} of {len(specs)} run(s) finished and stored in {args.store}."]
    for r in stopped:
        ckpt = store.has_checkpoint(r.key)
        parts.append(
            f"Stopped in {r.spec.label} ({r.key}), released "
            + ("with its checkpoint: it resumes from there." if ckpt else "before its first checkpoint.")
        )
    parts.append("Run the same command again to resume.")
    return " ".join(parts)


def console_main() -> int:
    """The `mtlcheck` command: `main` in a process whose CPU allocator is tuned for the engine
    (mtlcheck.allocator; MTLCHECK_MALLOC=default turns that off)."""
    from mtlcheck.allocator import tune_malloc

    tune_malloc()
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
