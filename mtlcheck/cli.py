"""The `mtlcheck` command.

    mtlcheck reproduce                 # the embedded default study on CPU: sweep + report + verdicts
    mtlcheck list                      # methods (with tags) and benchmarks
    mtlcheck run --benchmark digits-dense --method mgda --level feature
    mtlcheck sweep --benchmark cityscapes --data-root /data/cityscapes --budget paper --seeds 0 1 2
    mtlcheck report --benchmark digits-dense --budget small
    mtlcheck check my_pkg.module:MyAggregator     # the conformance kit on any aggregator
    mtlcheck bench --size 128 --tasks 3           # step time per method as a ratio to EW
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DEFAULT_STORE = Path("mtlcheck-results") / "runs.sqlite"
DEFAULT_OUT = Path("mtlcheck-results")


def _parse_config(items: list[str] | None) -> dict:
    """['c=0.5', 'rescale=1'] → {'c': 0.5, 'rescale': 1} (values parsed as JSON when possible)."""
    config = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"mtlcheck: --config expects KEY=VALUE, got {item!r}")
        key, _, raw = item.partition("=")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def _where(args):
    from mtlcheck.experiments.runner import Where

    if args.device.startswith("cuda") and getattr(args, "executor", "local") == "local":  # ray: on the workers
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"mtlcheck: --device {args.device} requested but CUDA is not available")
    return Where(data_root=args.data_root, device=args.device, weights=args.weights, progress=not args.quiet)


def _store(args):
    from mtlcheck.experiments.store import ResultStore

    return ResultStore(args.store)


def _threads(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def cmd_list(args) -> int:
    from mtlcheck.aggregators import aggregator_class, list_aggregators
    from mtlcheck.benchmarks import BENCHMARKS

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
        print("  aliases: mgda_ub = mgda at the feature level, aligned_mtl_ub = aligned_mtl at the feature level")
    if args.what in ("benchmarks", "all"):
        print("benchmarks")
        for b in BENCHMARKS.values():
            data = "needs --data-root" if b.needs_data_root else "embedded"
            print(f"  {b.name:<16} {data:<18} tasks: {', '.join(b.task_names)}")
            print(f"  {'':<16} {b.description}")
    return 0


def cmd_run(args) -> int:
    from mtlcheck.experiments.runner import make_spec, run_spec

    _threads(args)
    spec = make_spec(args.benchmark, args.method, level=args.level, seed=args.seed, budget=args.budget,
                     steps=args.steps, method_config=_parse_config(args.config), extra=_precision(args).options())
    record = run_spec(_store(args), spec, _where(args))
    print(f"{spec.label}: {record.status}" + (f" ({record.error})" if record.error else ""))
    for key, value in sorted((record.metrics or {}).items()):
        print(f"  {key:<22} {value:.4f}")
    if record.timings:
        print(f"  train {record.timings.get('train_seconds', float('nan')):.1f}s, "
              f"{record.timings.get('seconds_per_step', float('nan')) * 1e3:.1f} ms/step")
    return 0 if record.status in ("done", "diverged") else 1


def _sweep(args):
    from mtlcheck.experiments.runner import run_sweep, sweep_specs

    specs = sweep_specs(args.benchmark, args.methods, tuple(args.levels), tuple(args.seeds), args.budget, args.steps,
                        extra=_precision(args).options())
    store = _store(args)
    t0 = time.perf_counter()
    if args.ray_address is not None and args.executor != "ray":
        raise SystemExit("mtlcheck: --ray-address needs --executor ray")
    jobs = _jobs(args)
    if args.executor == "ray":
        from mtlcheck.experiments.distributed import run_sweep_ray

        records = run_sweep_ray(store.path, specs, _where(args), num_cpus_per_run=args.threads or 1,
                                num_gpus_per_run=1 if args.device.startswith("cuda") else 0,
                                address=args.ray_address, progress=not args.quiet)
    elif jobs > 1:
        from mtlcheck.experiments.distributed import run_sweep_processes

        threads = args.threads or max(1, _cpu_count() // jobs)
        records = run_sweep_processes(store.path, specs, _where(args), jobs=jobs, threads=threads,
                                      progress=not args.quiet)
    else:
        records = run_sweep(store, specs, _where(args), progress=not args.quiet)
    return store, records, time.perf_counter() - t0


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _jobs(args) -> int:
    """--jobs, by default one worker process per CPU core on the CPU and 1 on a GPU."""
    if args.jobs is not None:
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        return args.jobs
    return 1 if args.device.startswith("cuda") else _cpu_count()


def cmd_sweep(args) -> int:
    _threads(args)
    _, records, seconds = _sweep(args)
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(records)} runs in {seconds:.0f}s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0 if counts.get("failed", 0) == 0 else 1


def _report(args, store) -> Path:
    from mtlcheck.benchmarks import get_benchmark
    from mtlcheck.reports import write_report

    from mtlcheck.precision import Precision

    precision = _precision(args)
    records = [r for r in store.runs(benchmark=args.benchmark)
               if r.spec.budget == args.budget and Precision.from_options(r.spec.options) == precision]
    if not records:
        raise SystemExit(f"mtlcheck: no stored runs for {args.benchmark} at budget {args.budget} with {precision} "
                         f"in {args.store}; run `mtlcheck sweep --benchmark {args.benchmark} --budget {args.budget}` "
                         "with the same precision options first")
    suffix = "".join(f"-{k}" if v is True else f"-{v}" for k, v in precision.options().items())
    out = Path(args.out) / f"{args.benchmark}-{args.budget}{suffix}"
    return write_report(records, get_benchmark(args.benchmark), out)


def cmd_report(args) -> int:
    path = _report(args, _store(args))
    print(path.read_text())
    print(f"report written to {path}")
    return 0


def cmd_reproduce(args) -> int:
    _threads(args)
    store, records, seconds = _sweep(args)
    path = _report(args, store)
    print(path.read_text())
    failed = [r.spec.label for r in records if r.status == "failed"]
    print(f"\n{len(records)} runs, sweep wall time {seconds:.0f}s; report, CSV tables and figures in {path.parent}")
    if failed:
        print(f"{len(failed)} run(s) failed (their errors are in the store): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_check(args) -> int:
    from mtlcheck.aggregators import aggregator_class
    from mtlcheck.testing import check_aggregator
    from mtlcheck.testing.kit import builtin_variants

    failed = 0
    for name in args.aggregators:
        for make in builtin_variants(aggregator_class(name)):
            records = check_aggregator(make, on_fail=None)
            bad = [r for r in records if r["status"] in ("failed", "xpass")]
            failed += len(bad)
            status = "ok" if not bad else f"{len(bad)} FAILED"
            print(f"{make.__mtlcheck_repr__}: {len(records)} checks, {status}")
            for r in records:
                if r["status"] != "passed":
                    print(f"  {r['status']:<6} {r['check']}: {r['exception'] or ''}{' — ' + r['reason'] if r['reason'] else ''}")
    return 1 if failed else 0


def _add_where(p):
    p.add_argument("--data-root", default=None, help="root of the real dataset (paper benchmarks)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--weights", default=None, help="local ImageNet ResNet18 state dict (never downloaded)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="SQLite results store (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_precision(p)


def _add_precision(p):
    from mtlcheck.precision import Precision

    Precision.add_arguments(p)


def _precision(args):
    from mtlcheck.precision import Precision

    return Precision.from_args(args)


def _add_sweep(p, default_benchmark=None):
    from mtlcheck.benchmarks import DEFAULT_BENCHMARK

    p.add_argument("--benchmark", default=default_benchmark or DEFAULT_BENCHMARK)
    p.add_argument("--methods", nargs="*", default=None, help="registry names (default: every method)")
    p.add_argument("--levels", nargs="*", default=["parameter", "feature"], choices=["parameter", "feature"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="default: the paper's 3 seeds")
    p.add_argument("--budget", default="small", choices=["smoke", "small", "paper"])
    p.add_argument("--steps", type=int, default=None, help="override the budget's number of steps")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report directory (default %(default)s)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="ray: one Ray task per run (pip install mtlcheck[ray]; the store must be on one node or a "
                        "filesystem with working SQLite locking); --threads CPUs and, with --device cuda, one GPU per run")
    p.add_argument("--jobs", type=int, default=None,
                   help="local executor: runs at once, one worker process each, with --threads (default: cores / "
                        "jobs) torch threads (default: one job per CPU core on the CPU, 1 with --device cuda)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    _add_where(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlcheck", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="methods and benchmarks")
    p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "benchmarks"])
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("run", help="one run (stored; never recomputed)")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--level", default="parameter", choices=["parameter", "feature"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", default="small", choices=["smoke", "small", "paper"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--config", nargs="*", default=None, help="method parameters KEY=VALUE")
    _add_where(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("sweep", help="every method × level × seed of a benchmark")
    _add_sweep(p)
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("report", help="tables, figures and claim verdicts from stored runs")
    p.add_argument("--benchmark", default=None)
    p.add_argument("--budget", default="small", choices=["smoke", "small", "paper"])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--store", default=str(DEFAULT_STORE))
    _add_precision(p)
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("reproduce", help="sweep + report + claim verdicts (default: the embedded default, small budget)")
    _add_sweep(p)
    p.set_defaults(fn=cmd_reproduce)
    p = sub.add_parser("check", help="run the conformance kit on aggregators (registry names or pkg.module:Class)")
    p.add_argument("aggregators", nargs="+")
    p.set_defaults(fn=cmd_check)
    sub.add_parser("bench", help="step time per method as a ratio to EW (options: `mtlcheck bench --help`)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the bench has its own options: hand them over untouched
        from mtlcheck import bench

        rest = argv[1:]
        bench.main(rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    args = build_parser().parse_args(argv)
    if getattr(args, "benchmark", "") is None:
        from mtlcheck.benchmarks import DEFAULT_BENCHMARK

        args.benchmark = DEFAULT_BENCHMARK
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mtlcheck: error: {exc}", file=sys.stderr)
        return 2


def console_main() -> int:
    """The `mtlcheck` command: `main` in a process whose CPU allocator is tuned for the engine
    (mtlcheck.allocator; MTLCHECK_MALLOC=default turns that off)."""
    from mtlcheck.allocator import tune_malloc

    tune_malloc()
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
