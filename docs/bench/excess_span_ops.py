"""ExcessMTL's span pass, operation by operation, and the other ways to compose it from torch
operations: is the shipped composition the cheapest one? (docs/bench/cpu_stateful_floor.md)

A synthetic float32 G and S + ε of 3 × 11.2M (a ResNet18 trunk's size at T = 3), spans of 2^20
elements (the shipped `_spans.SPAN`), every case timed once per repeat in a rotated order, in one
process; ms, median of the repeats.

    cumulative      q = g², then + (S += q), + rsqrt(S), + ·q, + row sums: the shipped pass, op by op
    sqrt-div        q / sqrt(S) in place of rsqrt(S)·q (one rounding less)
    bmm-dot         rsqrt(S) then a batched BLAS dot with q (mul and sum fused; one float32 accumulator)
    vecdot          rsqrt(S) then torch.linalg.vecdot with q
    double-buffer   S_new = S + q into a second state (a refused call could keep S), with max q per
                    span in the cache, in place of the input check's separate pass over G

    python docs/bench/excess_span_ops.py --repeats 15 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--columns", type=int, default=11_200_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    T, n = 3, args.columns
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(T, n, generator=gen)
    S = torch.rand(T, n, generator=gen) + 1
    S2 = torch.rand(T, n, generator=gen) + 1
    w = (1 << 20) // T
    q, sc = torch.empty(T * w), torch.empty(T * w)

    def spans():
        for start in range(0, n, w):
            stop = min(start + w, n)
            k = stop - start
            yield g[:, start:stop], S[:, start:stop], S2[:, start:stop], q[: T * k].view(T, k), sc[: T * k].view(T, k)

    def cumulative(upto):
        def run():
            for gc, Sc, _, qq, ss in spans():
                torch.mul(gc, gc, out=qq)
                if upto >= 2:
                    Sc.add_(qq)
                if upto >= 3:
                    torch.rsqrt(Sc, out=ss)
                if upto >= 4:
                    ss.mul_(qq)
                if upto >= 5:
                    ss.sum(1)

        return run

    def sqrt_div():
        for gc, Sc, _, qq, ss in spans():
            torch.mul(gc, gc, out=qq)
            Sc.add_(qq)
            torch.div(qq, torch.sqrt(Sc, out=ss), out=ss).sum(1)

    def bmm_dot():
        for gc, Sc, _, qq, ss in spans():
            torch.mul(gc, gc, out=qq)
            Sc.add_(qq)
            torch.bmm(torch.rsqrt(Sc, out=ss).unsqueeze(1), qq.unsqueeze(2))

    def vecdot():
        for gc, Sc, _, qq, ss in spans():
            torch.mul(gc, gc, out=qq)
            Sc.add_(qq)
            torch.linalg.vecdot(torch.rsqrt(Sc, out=ss), qq)

    def check_then_pass():
        torch.aminmax(g)
        cumulative(5)()

    def double_buffer():
        for gc, Sc, Sd, qq, ss in spans():
            torch.mul(gc, gc, out=qq)
            qq.amax()
            torch.add(Sc, qq, out=Sd)
            torch.rsqrt(Sd, out=ss).mul_(qq).sum(1)

    cases = {
        "q = g²": cumulative(1),
        "+ S += q": cumulative(2),
        "+ rsqrt(S)": cumulative(3),
        "+ ·q": cumulative(4),
        "+ row sums (shipped pass)": cumulative(5),
        "sqrt-div": sqrt_div,
        "bmm-dot": bmm_dot,
        "vecdot": vecdot,
        "input check + shipped pass": check_then_pass,
        "double-buffer (no check pass)": double_buffer,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    print(f"G and S: {T} × {n} float32, spans of 2^20 elements, {args.threads} threads, {args.repeats} repeats")
    print("| case | ms, median [min, max] |\n|---|---|")
    for name, ts in times.items():
        ms = [1e3 * t for t in ts]
        print(f"| {name} | {statistics.median(ms):.2f} [{min(ms):.2f}, {max(ms):.2f}] |")


if __name__ == "__main__":
    main()
