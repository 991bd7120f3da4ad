"""The parameter-level step of the stateful methods after the paper (DB-MTL, MoCo, ExcessMTL)
against the best Gram-based method, before and after a change, in one process.

Every case is timed once per repeat in a rotated order; each ratio is a step over the step of the
best Gram-based method (the one with the lowest median) in the same repeat; median [min, max].
"before" is each method's module at a git revision (`--before-rev`), loaded beside the working
tree's (its registration skipped), on the same model and batch. Process CPU time (all threads)
is the default clock, the steadier one on a shared machine; `--wall` times wall-clock instead.

    python docs/bench/stateful_step_speed.py --tasks 3 7 --repeats 11 --threads 1 --before-rev HEAD~4
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import torch

from mtlcheck.aggregators import aggregator_class
from mtlcheck.aggregators._base import Aggregator
from mtlcheck.allocator import tune_malloc
from mtlcheck.gradients import backward_step
from mtlcheck.study.perf.harness import model_and_batch

STATEFUL = {"db_mtl": "db_mtl", "moco": "moco", "excess_mtl": "excess_mtl"}  # registry name: module
GRAM = ("mgda", "imtl", "cagrad", "upgrad")


def load_before(rev: str, module: str) -> type[Aggregator]:
    """The aggregator class of mtlcheck/aggregators/<module>.py at `rev`, not registered."""
    source = subprocess.run(
        ["git", "show", f"{rev}:mtlcheck/aggregators/{module}.py"], capture_output=True, text=True, check=True
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    name = f"{module}_before"
    spec = importlib.util.spec_from_file_location(name, fh.name)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    with mock.patch("mtlcheck.aggregators._registry.register_aggregator", lambda *a, **k: lambda cls: cls):
        spec.loader.exec_module(loaded)
    (cls,) = [
        c for c in vars(loaded).values() if isinstance(c, type) and issubclass(c, Aggregator) and c.__module__ == name
    ]
    return cls


def run(n_tasks: int, repeats: int, before_rev: str | None, clock) -> dict:
    model, batch = model_and_batch(128, 2, n_tasks, "cpu", 0)
    aggs = {m: aggregator_class(m)() for m in ("ew", *GRAM, *STATEFUL)}
    if before_rev:
        aggs.update({f"{m} before": load_before(before_rev, mod)() for m, mod in STATEFUL.items()})
    cases = list(aggs)

    def step(case):
        model.zero_grad(set_to_none=True)
        t0 = clock()
        backward_step(model, batch, aggs[case])
        return clock() - t0

    for _ in range(2):
        for case in cases:
            step(case)
    times = {case: [] for case in cases}
    gc.disable()
    try:
        for r in range(repeats):
            for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
                times[case].append(step(case))
    finally:
        gc.enable()
    best = min(GRAM, key=lambda m: statistics.median(times[m]))
    rows = {}
    for case in cases:
        ratios = sorted(t / b for t, b in zip(times[case], times[best]))
        rows[case] = (1e3 * statistics.median(times[case]), statistics.median(ratios), ratios[0], ratios[-1])
    return {"tasks": n_tasks, "best": best, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--before-rev", default=None)
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of process CPU time")
    args = parser.parse_args(argv)
    malloc = tune_malloc()  # as the mtlcheck command
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    print(
        f"ResNet18 trunk, 128², batch 2, float32, {args.threads} threads, malloc: {malloc}, torch {torch.__version__}, "
        f"{args.repeats} interleaved repeats, {'wall' if args.wall else 'process CPU'} time"
    )
    for n_tasks in args.tasks:
        result = run(n_tasks, args.repeats, args.before_rev, clock)
        print(f"\nT = {n_tasks}: × the {result['best']} step (the best Gram-based), median [min, max]\n")
        print("| case | step ms | × best Gram-based |")
        print("|---|---|---|")
        for case, (ms, med, low, high) in result["rows"].items():
            print(f"| {case} | {ms:.1f} | {med:.3f} [{low:.3f}, {high:.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
