"""Step-time benchmark: every method at both gradient levels, as a ratio to the EW step.

The model ("Model A") is a ResNet18 trunk (11.2M shared parameters) on
B×3×S×S images, Z = the C5 feature map, and T light classification heads (1×1 conv 512→64,
ReLU, global pool, linear, cross-entropy). Each repeat runs every (method, level) once in a
rotated order (interleaved, so drift in machine speed hits all alike), after warm-up; we report
the median step time, its inter-quartile range, and the median ratio to the EW step of the
same repeat. Timings are measurements, never pass/fail tests.

    python -m mtlcheck.study.perf.bench --size 128 --tasks 3 --repeats 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
from dataclasses import asdict, dataclass

import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import aggregator_class, list_aggregators
from mtlcheck.allocator import malloc_setting
from mtlcheck.gradients import backward_step
from mtlcheck.measures import feature_disentanglement
from mtlcheck.models._base import MultiTaskModel
from mtlcheck.monitor import measure
from mtlcheck.precision import Precision
from mtlcheck.study.perf.harness import (
    applicable,
    model_and_batch,
    model_options,
    no_collection,
    quartiles,
    random_batch,
    run_in_process,
    seconds,
    step_peak_mib,
)


def libmtl_style_step(model: MultiTaskModel, batch, aggregator, forward=None) -> None:
    """The baseline to beat (LibMTL's way of getting per-task gradients): T full backward passes, each task's shared
    gradients copied into a flat float32 CPU vector, the aggregator applied to that T×d matrix,
    the result written back into `.grad` slice by slice; heads keep the unweighted sum."""
    shared = [p for _, p in model.shared_parameters()]
    with forward or contextlib.nullcontext():  # e.g. autocast: the forward pass only
        z = model.encode(batch)
        losses = list(model.task_losses(z, batch).values())
    rows = []
    for i, loss in enumerate(losses):
        for p in shared:
            p.grad = None
        loss.backward(retain_graph=i < len(losses) - 1)
        rows.append(torch.cat([p.grad.detach().reshape(-1).to("cpu", torch.float32) for p in shared]))
    G = torch.stack(rows)
    direction = aggregator(G, torch.stack([loss.detach() for loss in losses]).double().cpu()).direction
    offset = 0
    for p in shared:
        n = p.numel()
        p.grad = direction[offset : offset + n].view_as(p).to(p.device)
        offset += n


MONITOR_LEVELS = ("monitor-fd", "monitor-gds-gms")
LEVEL_CHOICES = ("parameter", "feature", "parameter-batched", "libmtl-loop")


def precision_effect(
    precision: Precision,
    size: int = 128,
    batch_size: int = 2,
    n_tasks: int = 3,
    device: str = "cpu",
    batches: int = 8,
    seed: int = 0,
) -> dict:
    """How much `precision` moves what the paper measures and what MGDA decides: on `batches`
    random batches through the same model, GDS and GMS (parameter-level Gram) and MGDA's weights
    at both levels, compared with the exact float32 step. Returns max and mean |difference|."""
    exact_model, _ = model_and_batch(size, batch_size, n_tasks, device, seed)
    other_model, _ = model_and_batch(size, batch_size, n_tasks, device, seed, precision)
    gen = torch.Generator().manual_seed(seed + 1)
    diffs: dict[str, list[float]] = {"gds": [], "gms": [], "mgda_weights_parameter": [], "mgda_weights_feature": []}
    mgda = aggregator_class("mgda")
    for _ in range(batches):
        batch = random_batch(gen, size, batch_size, n_tasks, device)
        values = []
        for model, prec in ((exact_model, Precision()), (other_model, precision)):
            b = prec.prepare_batch(batch)
            with prec.backends():
                model.zero_grad(set_to_none=True)
                monitored = measure(backward_step(model, b, mgda(), param_gram=True, precision=prec))
                model.zero_grad(set_to_none=True)
                w_param = backward_step(model, b, mgda(), precision=prec).weights
                model.zero_grad(set_to_none=True)
                w_feat = backward_step(model, b, mgda(), level="feature", precision=prec).weights
            values.append((monitored["gds"], monitored["gms"], w_param, w_feat))
        (g0, m0, wp0, wf0), (g1, m1, wp1, wf1) = values
        diffs["gds"].append(abs(g1 - g0))
        diffs["gms"].append(abs(m1 - m0))
        diffs["mgda_weights_parameter"].append(float((wp1 - wp0).abs().max()))
        diffs["mgda_weights_feature"].append(float((wf1 - wf0).abs().max()))
    return {
        "precision": precision.options(),
        "batches": batches,
        **{k: {"max": max(v), "mean": statistics.fmean(v)} for k, v in diffs.items()},
    }


def _step(model, batch, aggregator, level: str, precision: Precision | None = None):
    """One training step's gradient work for a bench case (level may be a monitor pseudo-level)."""
    if level == "libmtl-loop":
        libmtl_style_step(
            model, batch, aggregator, precision.forward_context(batch["image"].device) if precision else None
        )
    elif level in MONITOR_LEVELS:  # EW with the paper's monitoring, as training runs it
        measure(
            backward_step(
                model, batch, aggregator, feature_grads=True, param_gram=level == "monitor-gds-gms", precision=precision
            )
        )
    else:
        level_ = "parameter" if level == "parameter-batched" else level
        backward_step(model, batch, aggregator, level=level_, batched=level == "parameter-batched", precision=precision)


def _monitor_summary(model, batch, rows, device, precision: Precision, every: int = 10, calls: int = 20) -> dict:
    """Monitoring cost as fractions of the EW step: the FD step and, amortised over `every`
    steps, the GDS/GMS step; plus the FD computation alone (timed directly, since its share is
    below the noise of a step-time difference)."""
    ratio = {r.level: r.ratio_to_ew for r in rows if r.method == "ew"}
    ew_ms = next(r.median_ms for r in rows if (r.method, r.level) == ("ew", "parameter"))
    model.zero_grad(set_to_none=True)
    fgrads = backward_step(
        model, batch, aggregator_class("ew")(), feature_grads=True, precision=precision
    ).feature_grads
    times = [seconds(lambda: feature_disentanglement(list(fgrads)), device) for _ in range(calls + 2)]
    fd_ms = 1e3 * statistics.median(times[2:])
    return {
        "every": every,
        "fd_ms": fd_ms,
        "fd_fraction_of_ew": fd_ms / ew_ms,
        "fd_step_extra": ratio["monitor-fd"] - 1.0,
        "gds_gms_step_extra": ratio["monitor-gds-gms"] - 1.0,
        "gds_gms_amortised_extra": (ratio["monitor-gds-gms"] - 1.0) / every,
    }


def solve_times(
    methods=None, tasks=(3, 7), dim: int = 4096, calls: int = 100, seed: int = 0, progress: bool = True
) -> list[dict]:
    """Per-call time of each method given its inputs, on a T×dim Jacobian small enough that the
    Gram and the combination cost microseconds: what remains is the weight solve (MGDA's min-norm
    problem, CAGrad's dual, Nash-MTL's Newton iterations, ...). Second-order methods have no
    solve (their penalty is part of the backward pass) and are left out."""
    from mtlcheck.jacobian import Jacobian

    names = [m for m in (methods or list_aggregators()) if not aggregator_class(m)().tags().second_order]
    gen = torch.Generator().manual_seed(seed)
    out = []
    cases = [(m, t) for m in names for t in tasks]
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="solve times", unit="case")
    for method, n_tasks in cases:
        agg = aggregator_class(method)(seed=seed)
        G = torch.randn(n_tasks, dim, generator=gen, dtype=torch.float64)
        G[0] -= 0.5 * G[1]  # some conflict, as in training
        losses = torch.rand(n_tasks, generator=gen, dtype=torch.float64) + 0.5
        tags = agg.tags()

        def call(agg=agg, G=G, losses=losses, tags=tags):
            agg(None if tags.loss_only else Jacobian.from_matrix(G), losses)
            if tags.post_step_update:
                agg.after_step(losses * 0.99)

        times = sorted([seconds(call) for _ in range(calls + 5)][5:])
        out.append(
            {
                "method": method,
                "tasks": n_tasks,
                "median_ms": 1e3 * statistics.median(times),
                "p95_ms": 1e3 * times[int(0.95 * (len(times) - 1))],
                "dim": dim,
            }
        )
    return out


def _peak_rss_case(
    method: str,
    level: str,
    size: int,
    batch_size: int,
    n_tasks: int,
    threads: int | None,
    precision: Precision = Precision(),
) -> dict:
    """In this process: the peak resident set (MiB) of two steps of one case over the loaded
    model and batch, read from Linux's VmHWM after resetting it (/proc/self/clear_refs), so
    that the memory of imports and model construction is not mistaken for the step's."""
    if threads:
        torch.set_num_threads(threads)
    model, batch = model_and_batch(size, batch_size, n_tasks, "cpu", 0, precision)
    agg = aggregator_class(method)()

    def step():
        model.zero_grad(set_to_none=True)
        _step(model, batch, agg, level, precision)

    return {"method": method, "level": level, "peak_mib": step_peak_mib(step)}


def peak_memory(
    methods=None,
    levels=LEVELS,
    size: int = 128,
    batch_size: int = 2,
    n_tasks: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    precision: Precision = Precision(),
) -> list[dict]:
    """Peak memory of one step per case over the loaded model, and its ratio to EW's.

    CUDA: torch.cuda.max_memory_allocated in this process. CPU: the growth of the peak resident
    set of a fresh process per case (so one case's freed memory cannot hide another's peak),
    under the same allocator setting as this process."""
    import os

    methods = list(methods or list_aggregators())
    cases = [("ew", "parameter")] + [
        (m, lv) for m in methods for lv in levels if (m, lv) != ("ew", "parameter") and applicable(m, lv)
    ]
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="peak memory", unit="case")
    rows = []
    if device.startswith("cuda"):
        model, batch = model_and_batch(size, batch_size, n_tasks, device, 0, precision)
        for method, level in cases:
            agg = aggregator_class(method)()
            model.zero_grad(set_to_none=True)
            _step(model, batch, agg, level, precision)  # warm-up: lazily created state and workspaces
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            _step(model, batch, agg, level, precision)
            torch.cuda.synchronize()
            rows.append(
                {"method": method, "level": level, "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}
            )
    else:
        env = {**os.environ, "MTLCHECK_MALLOC": "tuned" if malloc_setting().startswith("tuned") else "default"}
        for method, level in cases:
            args = ["--peak-rss-case", method, level, *model_options(size, batch_size, n_tasks, threads)]
            rows.append(
                run_in_process(
                    "mtlcheck.study.perf.bench", args + precision.flags(), env, f"peak-memory case {method}/{level}"
                )
            )
    ew = rows[0]["peak_mib"]
    for r in rows:
        r["ratio_to_ew"] = r["peak_mib"] / ew if ew > 0 else float("nan")
    return rows


@dataclass
class BenchRow:
    method: str
    level: str
    median_ms: float
    iqr_ms: float
    ratio_to_ew: float
    ratio_iqr: float


def run(
    methods=None,
    levels=LEVELS,
    size: int = 128,
    batch_size: int = 2,
    n_tasks: int = 3,
    repeats: int = 7,
    warmup: int = 2,
    threads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    monitor: bool = False,
    precision: Precision = Precision(),
) -> dict:
    """Time one engine step per (method, level); returns {"rows": [...], "setup": {...}}.

    monitor: also time the EW step with the paper's monitoring (FD from the feature gradients
    of the two-stage step; GDS/GMS, which need the parameter-level Gram), and report their cost
    as a fraction of the EW step under "monitor" (GDS/GMS amortised over k = 10 steps)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    methods = list(methods or list_aggregators())
    model, batch = model_and_batch(size, batch_size, n_tasks, device, seed, precision)
    cases = [("ew", "parameter")] + [(m, lv) for m in methods for lv in levels if (m, lv) != ("ew", "parameter")]
    cases = [(m, lv) for m, lv in cases if applicable(m, lv)]
    if monitor:
        cases += [("ew", lv) for lv in MONITOR_LEVELS]
    aggs = {case: aggregator_class(case[0])() for case in cases}

    def step(case):
        model.zero_grad(set_to_none=True)
        return seconds(lambda: _step(model, batch, aggs[case], case[1], precision), device)

    for _ in range(warmup):
        for case in cases:
            step(case)
    times = {case: [] for case in cases}
    with no_collection():
        iterator = range(repeats)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="bench repeats", unit="repeat")
        for r in iterator:
            order = cases[r % len(cases) :] + cases[: r % len(cases)]
            for case in order:
                times[case].append(step(case))
    ew = times[("ew", "parameter")]
    rows = []
    for case in cases:
        ratios = [t / e for t, e in zip(times[case], ew)]
        q1, med, q3 = quartiles(times[case])
        r1, rmed, r3 = quartiles(ratios)
        rows.append(BenchRow(case[0], case[1], 1e3 * med, 1e3 * (q3 - q1), rmed, r3 - r1))
    result = {"rows": [asdict(r) for r in rows]}
    speedups = []  # the LibMTL-style loop over our parameter-level step, repeat by repeat
    for m in methods:
        if ("parameter" in levels or m == "ew") and (m, "libmtl-loop") in times and (m, "parameter") in times:
            q1, med, q3 = quartiles([b / a for a, b in zip(times[(m, "parameter")], times[(m, "libmtl-loop")])])
            speedups.append({"method": m, "speedup": med, "speedup_iqr": q3 - q1})
    if speedups:
        result["vs_libmtl"] = speedups
    if monitor:
        result["monitor"] = _monitor_summary(model, batch, rows, device, precision)
    setup = {
        "model": "ResNet18 trunk + light heads",
        "image_size": size,
        "batch_size": batch_size,
        "tasks": n_tasks,
        "shared_parameters": sum(p.numel() for _, p in model.shared_parameters()),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": device,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "malloc": malloc_setting(),
        "precision": precision.options() or "float32 (exact)",
    }
    if device.startswith("cuda"):
        setup["gpu"] = torch.cuda.get_device_name()
    return {"setup": setup, **result}


def to_markdown(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"Step time relative to EW — {s['model']}, {s['tasks']} tasks, batch {s['batch_size']}×3×{s['image_size']}², "
        f"{s['shared_parameters']:,} shared parameters, {s['device']} ({s.get('gpu', s['machine'])}), "
        f"{s['threads']} threads, torch {s['torch']}, malloc: {s.get('malloc', 'default')}, "
        f"precision: {s.get('precision', 'float32 (exact)')}, "
        f"median of {s['repeats']} interleaved repeats.",
        "",
        "| method | level | step ms (IQR) | × EW (IQR) |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['method']} | {r['level']} | {r['median_ms']:.1f} ({r['iqr_ms']:.1f}) | "
            f"{r['ratio_to_ew']:.2f} ({r['ratio_iqr']:.2f}) |"
        )
    if result.get("vs_libmtl"):
        lines += [
            "",
            "Speed-up of the parameter-level step over the LibMTL-style loop (same aggregator; median "
            "and IQR of the per-repeat time ratios):",
            "",
            "| method | × faster (IQR) |",
            "|---|---|",
        ]
        lines += [f"| {r['method']} | {r['speedup']:.2f} ({r['speedup_iqr']:.2f}) |" for r in result["vs_libmtl"]]
    if "monitor" in result:
        m = result["monitor"]
        lines += [
            "",
            "Monitoring cost (fraction of the EW step):",
            "",
            f"- FD computed from the two-stage step's feature gradients: {m['fd_ms']:.2f} ms = "
            f"{100 * m['fd_fraction_of_ew']:.2f} % (whole monitored step: {100 * m['fd_step_extra']:+.1f} %)",
            f"- GDS/GMS (parameter-level Gram): {100 * m['gds_gms_step_extra']:+.0f} % on a monitored step, "
            f"{100 * m['gds_gms_amortised_extra']:+.1f} % per step when monitoring every {m['every']} steps",
        ]
    if result.get("solves"):
        lines += [
            "",
            f"Per-call time given the inputs (T×{result['solves'][0]['dim']} float64 Jacobian; "
            "the weight solve dominates):",
            "",
            "| method | T | median ms | p95 ms |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {r['tasks']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} |" for r in result["solves"]
        ]
    if result.get("precision_effect"):
        e = result["precision_effect"]
        lines += [
            "",
            f"Effect of {e['precision']} against the exact float32 step ({e['batches']} batches, same model):",
            "",
            "| quantity | max abs. difference | mean |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k} | {e[k]['max']:.2e} | {e[k]['mean']:.2e} |"
            for k in ("gds", "gms", "mgda_weights_parameter", "mgda_weights_feature")
        ]
    if result.get("memory"):
        where = "CUDA max_memory_allocated" if s["device"].startswith("cuda") else "peak-RSS growth of a fresh process"
        lines += [
            "",
            f"Peak memory of a step over the loaded model ({where}):",
            "",
            "| method | level | MiB | × EW |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['method']} | {r['level']} | {r['peak_mib']:.0f} | {r['ratio_to_ew']:.2f} |" for r in result["memory"]
        ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser, argv=()) -> None:
    """The bench's options on `parser` (`mtlcheck bench`), or the peers' with --peers in `argv`."""
    if "--peers" in argv:  # the side-by-side bench against TorchJD and LibMTL has its own options
        from mtlcheck.study.perf import peers

        return peers.add_arguments(parser)
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument(
        "--peers",
        action="store_true",
        help="instead: the same model through the real TorchJD and LibMTL, side by side "
        '(needs pip install "mtlcheck[peers]"; options: mtlcheck bench --peers --help)',
    )
    parser.add_argument("--methods", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument(
        "--levels",
        nargs="*",
        default=list(LEVELS),
        choices=LEVEL_CHOICES,
        help="engine: parameter (T VJPs), feature, parameter-batched (is_grads_batched), "
        "libmtl-loop (the LibMTL-style baseline: T backward passes into a flat CPU vector)",
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--monitor", action="store_true", help="also time FD and GDS/GMS monitoring of the EW step")
    parser.add_argument("--solves", action="store_true", help="also time each method's call on its inputs at T=3 and 7")
    parser.add_argument(
        "--memory", action="store_true", help="also measure each case's peak memory (CPU: one fresh process per case)"
    )
    Precision.add_arguments(parser, portable=False)  # the bench times the default kernels
    parser.add_argument(
        "--precision-effect",
        action="store_true",
        help="also measure how --tf32/--autocast move GDS, GMS and MGDA's weights",
    )
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    parser.add_argument("--peak-rss-case", nargs=2, metavar=("METHOD", "LEVEL"), help=argparse.SUPPRESS)
    parser.set_defaults(bench=command)


def main(argv=None) -> int:
    """`mtlcheck bench [--peers] ARGS` as a program of its own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="mtlcheck bench")
    add_arguments(parser, argv)
    args = parser.parse_args(argv)
    return args.bench(args, parser)


def command(args, parser) -> int:
    """The bench of the parsed `args` (`parser` says usage errors)."""
    precision = Precision.from_args(args)
    if args.peak_rss_case:  # the child process of peak_memory on the CPU
        print(
            json.dumps(
                _peak_rss_case(*args.peak_rss_case, args.size, args.batch_size, args.tasks, args.threads, precision)
            )
        )
        return 0
    if args.precision_effect and precision.exact:
        parser.error("--precision-effect compares --tf32/--autocast/--channels-last against float32: give one")
    result = run(
        args.methods,
        tuple(args.levels),
        args.size,
        args.batch_size,
        args.tasks,
        args.repeats,
        threads=args.threads,
        device=args.device,
        monitor=args.monitor,
        precision=precision,
    )
    if args.precision_effect:
        result["precision_effect"] = precision_effect(precision, args.size, args.batch_size, args.tasks, args.device)
    if args.solves:
        result["solves"] = solve_times(args.methods)
    if args.memory:
        result["memory"] = peak_memory(
            args.methods,
            tuple(args.levels),
            args.size,
            args.batch_size,
            args.tasks,
            args.threads,
            args.device,
            precision=precision,
        )
    print(to_markdown(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    from mtlcheck.allocator import tune_malloc

    tune_malloc()
    sys.exit(main())
