"""Where the stateful methods' extra time goes: their aggregation of one parameter-level Jacobian,
split into what it is made of, next to a Gram-based method's, in one process.

The Jacobian is a real one (a ResNet18 trunk's T task gradients, 128², batch 2, float32) and is
aggregated over and over; every case is timed once per repeat in a rotated order, median
[min, max] in ms of wall time. The parts:

    gram        J.gram(): what a Gram-based method's step spends on G beyond its T backward passes
    check       the input check of a method that reads no Gram (`Jacobian.max_abs`: one aminmax pass
                over G, which also bounds the state's update)
    rmw floor   S += G over a T × d state: one read-modify-write pass, the least that any
                update of a T × d state from G costs with one operation
    excess span ExcessMTL's state update and risk sums as shipped (`_update_and_risks`: q = g²,
                S += q, rsqrt(S)·q, row sums, span by span, scratch shared by the blocks),
                without the check
    excess span before  the same as it was before (S.addcmul_(g, g), rsqrt(S)·g·g, row sums,
                scratch per block)
    excess fused the same computation as one torch.compile kernel per block (`--compiled`: needs
                a C++ compiler), its row sums accumulated in float64

and the whole aggregations: mgda, imtl (Gram-based), excess_mtl, moco, db_mtl, and with
`--before-rev REV` "excess_mtl before", ExcessMTL's module at that git revision, with the
paired difference after − before, repeat by repeat.

    python docs/bench/stateful_floor.py --tasks 3 7 --repeats 21 --threads 2 --compiled
    for i in 1 2 3 4; do python docs/bench/stateful_floor.py --tasks 3 7 --before-rev 942f171; done
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

from mtlcheck.aggregators import aggregator_class
from mtlcheck.aggregators._spans import column_spans, row_sums, span_scratch
from mtlcheck.aggregators.excess_mtl import _update_and_risks
from mtlcheck.allocator import tune_malloc
from mtlcheck.gradients import backward_step
from mtlcheck.jacobian import Jacobian
from mtlcheck.study.perf.harness import model_and_batch


def _excess_span_before(state, blocks):
    """ExcessMTL's span pass before it squared g once into a shared scratch span."""
    risk = torch.zeros(blocks[0].shape[0], dtype=torch.float64)
    for s, b in zip(state, blocks):
        scratch, n = span_scratch(b), b.shape[0]
        for start, stop in column_spans(b):
            sc, bc = s[:, start:stop], b[:, start:stop]
            sc.addcmul_(bc, bc)
            tmp = scratch[: n * (stop - start)].view(n, stop - start)
            risk += row_sums(torch.rsqrt(sc, out=tmp).mul_(bc).mul_(bc))
    return risk


def _fused(s, g):
    s.addcmul_(g, g)
    return (torch.rsqrt(s) * g * g).sum(1, dtype=torch.float64)


def run(n_tasks: int, repeats: int, compiled: bool, before_rev: str | None = None) -> dict[str, list[float]]:
    model, batch = model_and_batch(128, 2, n_tasks, "cpu", 0)
    J = backward_step(model, batch, aggregator_class("mgda")()).jacobian
    blocks = tuple(b.clone() for b in J.blocks)
    state = tuple(torch.rand_like(b) + 1e-7 for b in blocks)
    aggs = {m: aggregator_class(m)() for m in ("mgda", "imtl", "excess_mtl", "moco", "db_mtl")}
    if before_rev:
        from stateful_step_speed import load_before  # (beside this script)

        aggs["excess_mtl before"] = load_before(before_rev, "excess_mtl")()
    losses = torch.rand(n_tasks, dtype=torch.float64) + 0.5

    def fresh():
        return Jacobian(blocks, J.shapes, J.names, "parameter")

    cases = {
        "gram": lambda: fresh().gram(),
        "check": lambda: fresh().max_abs(),
        "rmw floor": lambda: [s.add_(b) for s, b in zip(state, blocks)],
        "excess span": lambda: _update_and_risks(state, blocks),
        "excess span before": lambda: _excess_span_before(state, blocks),
    }
    if compiled:
        kernel = torch.compile(_fused, dynamic=True)
        cases["excess fused"] = lambda: [kernel(s, b) for s, b in zip(state, blocks)]
        exact = sum((b.double() ** 2 / (s.double() + b.double() ** 2).sqrt()).sum(1) for s, b in zip(state, blocks))
        shipped = _update_and_risks(tuple(s.clone() for s in state), blocks)
        fused = sum(kernel(s.clone(), b) for s, b in zip(state, blocks))
        err = {name: float(((r - exact).abs() / exact).max()) for name, r in (("shipped", shipped), ("fused", fused))}
        print(f"T = {n_tasks}: the risks' max relative error against float64 arithmetic: {err}")
    cases.update({m: (lambda a=a: a(fresh(), losses)) for m, a in aggs.items()})
    for f in cases.values():  # warm-up (and the kernel's compilation)
        f()
    times = {c: [] for c in cases}
    names = list(cases)
    gc.disable()
    try:
        for r in range(repeats):
            for c in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter()
                cases[c]()
                times[c].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compiled", action="store_true", help="also time the torch.compile kernel")
    parser.add_argument("--before-rev", default=None, help="also time ExcessMTL's module at this git revision")
    args = parser.parse_args(argv)
    malloc = tune_malloc()
    torch.set_num_threads(args.threads)
    print(
        f"ResNet18 trunk's Jacobian, 128², batch 2, float32, {args.threads} threads, malloc: {malloc}, "
        f"torch {torch.__version__}, {args.repeats} interleaved repeats, wall time"
    )
    for n_tasks in args.tasks:
        times = run(n_tasks, args.repeats, args.compiled, args.before_rev)
        print(f"\nT = {n_tasks}\n\n| case | ms, median [min, max] |\n|---|---|")
        for c, ts in times.items():
            print(f"| {c} | {1e3 * statistics.median(ts):.2f} [{1e3 * min(ts):.2f}, {1e3 * max(ts):.2f}] |")
        if args.before_rev:
            diff = [1e3 * (a - b) for a, b in zip(times["excess_mtl"], times["excess_mtl before"])]
            print(
                f"| excess_mtl − before, paired | {statistics.median(diff):+.2f} [{min(diff):+.2f}, {max(diff):+.2f}] |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
