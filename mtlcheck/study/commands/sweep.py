"""`mtlcheck sweep`: every method × level × seed of a benchmark; the sweep options and executors
that `reproduce` shares."""

from __future__ import annotations

import os
import sys
import time

from mtlcheck import LEVELS
from mtlcheck.study import BUDGETS
from mtlcheck.study.commands import common
from mtlcheck.study.commands.common import DEFAULT_OUT, DEFAULT_SEEDS, Command, UsageError, positive_int


def add_sweep_arguments(p) -> None:
    """The options of `sweep` and `reproduce`."""
    common.add_benchmark(p)
    p.add_argument("--methods", nargs="+", default=None, help="registry names (default: the paper's methods)")
    p.add_argument("--levels", nargs="+", default=list(LEVELS), choices=LEVELS)
    p.add_argument("--seeds", nargs="+", type=common.seed_int, default=None, help="default: the paper's 3 seeds")
    p.add_argument("--budget", default="small", choices=BUDGETS)
    p.add_argument("--steps", type=positive_int, default=None, help="override the budget's number of steps")
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
        type=positive_int,
        default=None,
        help="local executor: runs at once, one worker process each, with --threads (default: cores / "
        "jobs) torch threads (default: one job per CPU core on the CPU, 1 with --device cuda)",
    )
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    common.add_run_options(p)
    common.add_where(p)


class Sweep(Command):
    name = "sweep"
    help = "every method × level × seed of a benchmark"

    def add_arguments(self, p) -> None:
        add_sweep_arguments(p)

    def run(self, args) -> int:
        _, records, seconds = sweep(args)
        counts = {}
        for r in records:
            counts[r.status] = counts.get(r.status, 0) + 1
        print(f"{len(records)} runs in {seconds:.0f}s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        summary = getattr(records, "summary", None)  # where the runs ran, what was taken over, retried, resumed
        if summary is not None and (args.executor == "ray" or summary.eventful):
            print(f"{args.executor}: {summary.line()}")
        if counts.get("failed"):
            print(
                f"failed runs: `mtlcheck runs list --status failed --store {args.store}` shows their errors, "
                f"`mtlcheck runs retry --failed --store {args.store}` computes them again",
                file=sys.stderr,
            )
        return 0 if counts.get("failed", 0) == 0 else 1


def sweep(args):
    """The sweep of the command's options: (store, records, wall seconds)."""
    from mtlcheck.study.experiments.runner import sweep_specs

    _check_executor(args)
    specs = [
        spec
        for benchmark in common.benchmarks(args)
        for spec in sweep_specs(
            benchmark,
            args.methods,
            tuple(args.levels),
            tuple(args.seeds if args.seeds is not None else DEFAULT_SEEDS),
            args.budget,
            args.steps,
            extra=common.run_options(args),
        )
    ]
    return run_specs(args, specs)


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


def run_specs(args, specs):
    """Run (or find stored) `specs` with the command's executor: (store, records, wall seconds)."""
    where = common.where(args)
    where.check(s.benchmark for s in specs)  # device, weights, data root: usage errors before the store opens
    store = None if args.executor == "ray" else common.store(args)  # ray: created once a cluster answers
    common.threads(args)
    args._specs = [*getattr(args, "_specs", []), *specs]
    t0, since = time.perf_counter(), time.time()
    n_jobs = jobs(args)
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
        store = common.store(args)
    elif n_jobs > 1:
        from mtlcheck.study.experiments.distributed import run_sweep_processes

        threads = args.threads or max(1, _cpu_count() // n_jobs)
        records = run_sweep_processes(
            store.location, specs, where, jobs=n_jobs, threads=threads, progress=not args.quiet
        )
    else:
        from mtlcheck.study.experiments.runner import run_sweep

        records = run_sweep(store, specs, where, progress=not args.quiet)
    if args.executor != "ray":  # what the store's history says happened (Ray's sweep says it itself)
        from mtlcheck.study.experiments.distributed import SweepRecords, summarize

        records = SweepRecords(records, summarize(records, since))
    return store, records, time.perf_counter() - t0


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def jobs(args) -> int:
    """--jobs, by default one worker process per CPU core on the CPU and 1 on a GPU."""
    if args.jobs is not None:
        return args.jobs
    return 1 if args.device.startswith("cuda") else _cpu_count()
