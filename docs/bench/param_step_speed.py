"""Parameter-level step and GDS/GMS monitoring against the EW step, before and after an engine
change, in one process (interleaved repeats, ratios to the EW step of the same repeat).

"before" is `mtlcheck/gradients.py` at a git revision (default HEAD~0 of --before-rev), loaded
beside the working tree's engine; "floor" is T plain backward passes with retain_graph (the
cost of the T vector-Jacobian products alone). Wall time and process CPU time (all threads) are
both reported: on a shared machine the CPU time is the steadier of the two.

    python docs/bench/param_step_speed.py --tasks 3 5 --repeats 15 --before-rev HEAD

`--together` times every T in one interleaved loop against one reference, the EW step at the
first T, and reports each extra task's cost paired per repeat: (step at T_b − step at T_a) /
(T_b − T_a) over that repeat's reference EW step. (Ratios taken at each T against its own EW step
cannot be subtracted: the EW steps of separately timed settings differ by more than a task.)

    python docs/bench/param_step_speed.py --tasks 3 7 --repeats 15 --together
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

import torch

from mtlcheck.aggregators import aggregator_class
from mtlcheck.allocator import malloc_setting
from mtlcheck.gradients import backward_step
from mtlcheck.monitor import measure
from mtlcheck.study.perf.harness import model_and_batch


def load_engine(rev: str):
    source = subprocess.run(
        ["git", "show", f"{rev}:mtlcheck/gradients.py"], capture_output=True, text=True, check=True
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("gradients_before", fh.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gradients_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cases_for(n_tasks: int, before, method: str):
    model, batch = model_and_batch(128, 2, n_tasks, "cpu", 0)
    ew, agg = aggregator_class("ew")(), aggregator_class(method)()

    def floor():
        z = model.encode(batch)
        losses = list(model.task_losses(z, batch).values())
        for i, loss in enumerate(losses):
            loss.backward(retain_graph=i < len(losses) - 1)

    cases = {
        "ew": lambda: backward_step(model, batch, ew),
        "floor": floor,
        f"{method} after": lambda: backward_step(model, batch, agg),
        "monitor after": lambda: measure(backward_step(model, batch, ew, feature_grads=True, param_gram=True)),
    }
    if before is not None:
        cases[f"{method} before"] = lambda: before.backward_step(model, batch, agg)
        cases["monitor before"] = lambda: measure(
            before.backward_step(model, batch, ew, feature_grads=True, param_gram=True)
        )
    return model, cases


def time_cases(cases, repeats: int, warmup: int = 2):
    """Interleaved repeats of every case, a (model, step) pair: the model's gradients are cleared before each step."""

    def step(case):
        model, f = case
        model.zero_grad(set_to_none=True)
        w0, c0 = time.perf_counter(), time.process_time()
        f()
        return time.perf_counter() - w0, time.process_time() - c0

    keys = list(cases)
    for _ in range(warmup):
        for k in keys:
            step(cases[k])
    wall, cpu = {k: [] for k in keys}, {k: [] for k in keys}
    gc.disable()
    try:
        for r in range(repeats):
            for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
                w, c = step(cases[k])
                wall[k].append(w)
                cpu[k].append(c)
    finally:
        gc.enable()
    return wall, cpu


def summary(times, key):
    ratios = sorted(t / e for t, e in zip(times[key], times["ew"]))
    q = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), q[0], q[2]


def together(tasks: list[int], before, method: str, repeats: int) -> None:
    cases = {}
    for n in tasks:
        model, own = cases_for(n, before, method)
        cases.update({f"{n}:{k}": (model, f) for k, f in own.items()})
    wall, cpu = time_cases(cases, repeats)
    ref = f"{tasks[0]}:ew"
    print(f"reference: the EW step at T = {tasks[0]}, {1e3 * statistics.median(wall[ref]):.0f} ms (wall)")
    print("| case | wall × reference EW | CPU-time × reference EW |")
    print("|---|---|---|")

    def row(label, w, c):
        ws, cs = sorted(w), sorted(c)
        qw, qc = statistics.quantiles(ws, n=4), statistics.quantiles(cs, n=4)
        print(
            f"| {label} | {statistics.median(ws):.2f} [{qw[0]:.2f}, {qw[2]:.2f}] | "
            f"{statistics.median(cs):.2f} [{qc[0]:.2f}, {qc[2]:.2f}] |",
            flush=True,
        )

    for key in cases:
        row(f"T = {key.replace(':', ': ')}", *[[t / e for t, e in zip(x[key], x[ref])] for x in (wall, cpu)])
    a, b = tasks[0], tasks[-1]
    for case in ("ew", "floor", f"{method} after", "monitor after"):
        per = [
            [(tb - ta) / (b - a) / e for tb, ta, e in zip(x[f"{b}:{case}"], x[f"{a}:{case}"], x[ref])]
            for x in (wall, cpu)
        ]
        row(f"each task beyond {a}: {case}", *per)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="*", default=[3, 5])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", default="mgda")
    parser.add_argument("--before-rev", default=None, help="git revision of the engine to compare with")
    parser.add_argument("--together", action="store_true", help="every T in one loop, against one EW reference")
    parser.add_argument("--tuned-malloc", action="store_true", help="apply mtlcheck.allocator.tune_malloc first")
    args = parser.parse_args()
    if args.tuned_malloc:
        from mtlcheck.allocator import tune_malloc

        tune_malloc()
    torch.set_num_threads(args.threads)
    before = load_engine(args.before_rev) if args.before_rev else None
    print(
        f"ResNet18 trunk, 128², batch 2, float32, {args.threads} threads, malloc: {malloc_setting()}, "
        f"torch {torch.__version__}, {args.repeats} interleaved repeats; ratio to EW: median [IQR]"
    )
    if args.together:
        return together(args.tasks, before, args.method, args.repeats)
    print("| T | case | wall × EW | CPU-time × EW | EW wall ms |")
    print("|---|---|---|---|---|")
    for n_tasks in args.tasks:
        model, cases = cases_for(n_tasks, before, args.method)
        wall, cpu = time_cases({k: (model, f) for k, f in cases.items()}, args.repeats)
        for key in cases:
            w, c = summary(wall, key), summary(cpu, key)
            print(
                f"| {n_tasks} | {key} | {w[0]:.2f} [{w[1]:.2f}, {w[2]:.2f}] | {c[0]:.2f} [{c[1]:.2f}, {c[2]:.2f}] | "
                f"{1e3 * statistics.median(wall['ew']):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
