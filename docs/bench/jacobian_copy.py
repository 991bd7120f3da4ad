"""What the copy into the Jacobian costs, and what keeping autograd's own per-task tensors would save.

After the T vector-Jacobian products, a parameter-level step spends its time above the floor on
three passes over the task gradients: copying each task's gradients into the (T, n_k) blocks,
the Gram matrix and Σ w_i g_i. This times, on the shared parameters of the bench's ResNet18
trunk (11.2M) and T random task gradients, each interleaved in one process (median and IQR of
per-repeat times, in ms and as a fraction of the EW step of the same model and batch):

- ``copy``: the engine's copy of T per-task gradient sets into the reused blocks;
- ``gram``: the engine's Gram (float32 products over 8192-column chunks, summed in float64);
- ``combine``: the engine's Σ w_i g_i per block (into new tensors, as `.grad` is None after
  ``zero_grad()``);
- ``combine into kept``: the same arithmetic into buffers kept from the previous step;
- ``gram, no copy``: the same Gram from the per-task tensors, chunk by chunk (each (T, 8192)
  chunk stacked from the T tensors: the smallest stack a batched product needs);
- ``dots, no copy``: the Gram from T(T+1)/2 float32 dot products per parameter (fewer calls,
  not the engine's rounding);
- ``combine, no copy``: Σ w_i g_i from the per-task tensors (one scaled copy and T − 1 axpys).

    python docs/bench/jacobian_copy.py --tasks 3 7 --repeats 15 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mtlcheck.aggregators import get_aggregator
from mtlcheck.gradients import backward_step, jacobian_buffers
from mtlcheck.jacobian import _GRAM_CHUNK, Jacobian, _block_gram
from mtlcheck.study.models.classifiers import ResNetClassifiers
from mtlcheck.study.perf.harness import random_batch


def _gram_no_copy(per_task: list[list[torch.Tensor]]) -> torch.Tensor:
    t = len(per_task)
    acc = torch.zeros(t, t, dtype=torch.float64)
    for k in range(len(per_task[0])):
        rows = [per_task[i][k].reshape(-1) for i in range(t)]
        n = rows[0].numel()
        for start in range(0, n, _GRAM_CHUNK):
            chunk = torch.stack([r[start : start + _GRAM_CHUNK] for r in rows])
            acc += (chunk @ chunk.T).to(torch.float64)
    return acc


def _dots_no_copy(per_task: list[list[torch.Tensor]]) -> torch.Tensor:
    t = len(per_task)
    acc = torch.zeros(t, t, dtype=torch.float64)
    for k in range(len(per_task[0])):
        rows = [per_task[i][k].reshape(-1) for i in range(t)]
        for i in range(t):
            for j in range(i + 1):
                acc[i, j] += float(torch.dot(rows[i], rows[j]))
    return acc + acc.tril(-1).T


def _combine_into(out: list[torch.Tensor], blocks, w: list[float]) -> None:
    for o, b in zip(out, blocks):
        torch.mul(b[0], w[0], out=o)
        for i in range(1, len(w)):
            o.add_(b[i], alpha=w[i])


def _combine_no_copy(per_task: list[list[torch.Tensor]], w: list[float]) -> list[torch.Tensor]:
    out = [g * w[0] for g in per_task[0]]
    for i in range(1, len(per_task)):
        torch._foreach_add_(out, per_task[i], alpha=w[i])
    return out


def measure(n_tasks: int, repeats: int, size: int = 128, batch_size: int = 2) -> dict:
    torch.manual_seed(0)
    model = ResNetClassifiers(n_tasks)
    batch = random_batch(torch.Generator().manual_seed(0), size, batch_size, n_tasks, "cpu")
    params = [p for _, p in model.shared_parameters()]
    gen = torch.Generator().manual_seed(1)
    per_task = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(n_tasks)]
    blocks = jacobian_buffers(model, params, n_tasks)
    w = torch.rand(n_tasks, generator=gen).tolist()
    ew = get_aggregator("ew")

    def ew_step():
        model.zero_grad(set_to_none=True)
        backward_step(model, batch, ew, level="parameter")

    def copy():
        for i in range(n_tasks):
            for b, p, g in zip(blocks, params, per_task[i]):
                b[i].view(p.shape).copy_(g)

    kept = [torch.empty(p.numel()) for p in params]
    jac = Jacobian(tuple(blocks), tuple(p.shape for p in params), tuple(map(str, range(len(params)))), "parameter")
    cases = {
        "EW step": ew_step,
        "copy": copy,
        "gram": lambda: torch.stack([_block_gram(b) for b in blocks]),
        "combine": lambda: jac.combine(torch.tensor(w)),
        "combine into kept": lambda: _combine_into(kept, blocks, w),
        "gram, no copy": lambda: _gram_no_copy(per_task),
        "dots, no copy": lambda: _dots_no_copy(per_task),
        "combine, no copy": lambda: _combine_no_copy(per_task, w),
    }
    for fn in cases.values():  # warm-up
        fn()
    times = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated order
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    # the no-copy Gram sums the same float32 chunk products in the same order: equal to the engine's
    exact = torch.equal(_gram_no_copy(per_task), torch.stack([_block_gram(b) for b in blocks]).sum(0))
    ew_ms = 1e3 * statistics.median(times["EW step"])
    rows = []
    for name in names:
        ms = [1e3 * s for s in times[name]]
        q = statistics.quantiles(ms, n=4)
        rows.append((name, statistics.median(ms), q[2] - q[0], statistics.median(ms) / ew_ms))
    return {"n_tasks": n_tasks, "rows": rows, "gram_equal": exact}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="*", default=[3, 7])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"ResNet18 trunk, 128², batch 2, float32, {args.threads} threads, torch {torch.__version__}, "
        f"{platform.machine()}; {args.repeats} interleaved repeats; median (IQR) ms and × the EW step"
    )
    for n in args.tasks:
        res = measure(n, args.repeats)
        print(f"\n**T = {n}** (the no-copy Gram equal to the engine's bit for bit: {res['gram_equal']})\n")
        print("| pass | ms (IQR) | × EW step |\n|---|---|---|")
        for name, med, iqr, ratio in res["rows"]:
            print(f"| {name} | {med:.1f} ({iqr:.1f}) | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
