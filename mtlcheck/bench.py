"""Step-time benchmark: every method at both gradient levels, as a ratio to the EW step.

The model is research/perf.md's "Model A": a ResNet18 trunk (11.2M shared parameters) on
B×3×S×S images, Z = the C5 feature map, and T light classification heads (1×1 conv 512→64,
ReLU, global pool, linear, cross-entropy). Each repeat runs every (method, level) once in a
rotated order (interleaved, so drift in machine speed hits all alike), after warm-up; we report
the median step time, its inter-quartile range, and the median ratio to the EW step of the
same repeat. Timings are measurements, never pass/fail tests.

    python -m mtlcheck.bench --size 128 --tasks 3 --repeats 7
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from mtlcheck.aggregators import aggregator_class, list_aggregators
from mtlcheck.gradients import backward_step
from mtlcheck.models._base import MultiTaskModel
from mtlcheck.models.backbones import ResNetTrunk


class ResNetClassifiers(MultiTaskModel):
    """ResNet18 trunk + T light classification heads (perf.md Model A, light variant)."""

    def __init__(self, n_tasks: int = 3, n_classes: int = 10, width: int = 64):
        super().__init__()
        self.task_names = tuple(f"task{i}" for i in range(n_tasks))
        self.trunk = ResNetTrunk(3, width)
        c5 = self.trunk.out_channels[-1]
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c5, 64, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))
            for _ in range(n_tasks)
        )

    def encode(self, batch):
        return self.trunk(batch["image"])[-1]

    def task_losses(self, z, batch):
        return {name: nn.functional.cross_entropy(head(z), batch["labels"][:, i])
                for i, (name, head) in enumerate(zip(self.task_names, self.heads))}

    def predict(self, batch):
        z = self.encode(batch)
        return {name: head(z).argmax(1) for name, head in zip(self.task_names, self.heads)}

    def shared_parameters(self):
        return list(self.trunk.named_parameters(prefix="trunk"))


def libmtl_style_step(model: MultiTaskModel, batch, aggregator) -> None:
    """The baseline to beat (research/perf.md §5): T full backward passes, each task's shared
    gradients copied into a flat float32 CPU vector, the aggregator applied to that T×d matrix,
    the result written back into `.grad` slice by slice; heads keep the unweighted sum."""
    shared = [p for _, p in model.shared_parameters()]
    z = model.encode(batch)
    losses = list(model.task_losses(z, batch).values())
    rows = []
    for i, loss in enumerate(losses):
        for p in shared:
            p.grad = None
        loss.backward(retain_graph=i < len(losses) - 1)
        rows.append(torch.cat([p.grad.detach().reshape(-1).to("cpu", torch.float32) for p in shared]))
    G = torch.stack(rows)
    direction = aggregator(G, torch.stack([l.detach() for l in losses]).double().cpu()).direction
    offset = 0
    for p in shared:
        n = p.numel()
        p.grad = direction[offset:offset + n].view_as(p).to(p.device)
        offset += n


@dataclass
class BenchRow:
    method: str
    level: str
    median_ms: float
    iqr_ms: float
    ratio_to_ew: float
    ratio_iqr: float


def _quartiles(xs):
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return q[0], q[1], q[2]


def run(methods=None, levels=("parameter", "feature"), size: int = 128, batch_size: int = 2, n_tasks: int = 3,
        repeats: int = 7, warmup: int = 2, threads: int | None = None, device: str = "cpu", seed: int = 0,
        progress: bool = True) -> dict:
    """Time one engine step per (method, level); returns {"rows": [...], "setup": {...}}."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    methods = list(methods or list_aggregators())
    model = ResNetClassifiers(n_tasks).to(device)
    gen = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(batch_size, 3, size, size, generator=gen).to(device),
             "labels": torch.randint(0, 10, (batch_size, n_tasks), generator=gen).to(device)}
    cases = [("ew", "parameter")] + [(m, lv) for m in methods for lv in levels if (m, lv) != ("ew", "parameter")]
    cases = [(m, lv) for m, lv in cases
             if not (aggregator_class(m)().tags().loss_only and lv != "parameter")
             and not (aggregator_class(m)().tags().second_order and lv in ("libmtl-loop", "parameter-batched"))]
    aggs = {case: aggregator_class(case[0])() for case in cases}

    def step(case):
        model.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if case[1] == "libmtl-loop":
            libmtl_style_step(model, batch, aggs[case])
        else:
            level = "parameter" if case[1] == "parameter-batched" else case[1]
            backward_step(model, batch, aggs[case], level=level, batched=case[1] == "parameter-batched")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(warmup):
        for case in cases:
            step(case)
    times = {case: [] for case in cases}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        iterator = range(repeats)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="bench repeats", unit="repeat")
        for r in iterator:
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for case in order:
                times[case].append(step(case))
    finally:
        if gc_was:
            gc.enable()
    ew = times[("ew", "parameter")]
    rows = []
    for case in cases:
        ratios = [t / e for t, e in zip(times[case], ew)]
        q1, med, q3 = _quartiles(times[case])
        r1, rmed, r3 = _quartiles(ratios)
        rows.append(BenchRow(case[0], case[1], 1e3 * med, 1e3 * (q3 - q1), rmed, r3 - r1))
    setup = {"model": "ResNet18 trunk + light heads", "image_size": size, "batch_size": batch_size, "tasks": n_tasks,
             "shared_parameters": sum(p.numel() for _, p in model.shared_parameters()), "repeats": repeats,
             "threads": torch.get_num_threads(), "device": device, "torch": torch.__version__,
             "machine": platform.processor() or platform.machine()}
    if device.startswith("cuda"):
        setup["gpu"] = torch.cuda.get_device_name()
    return {"setup": setup, "rows": [asdict(r) for r in rows]}


def to_markdown(result: dict) -> str:
    s = result["setup"]
    lines = [
        f"Step time relative to EW — {s['model']}, {s['tasks']} tasks, batch {s['batch_size']}×3×{s['image_size']}², "
        f"{s['shared_parameters']:,} shared parameters, {s['device']} ({s.get('gpu', s['machine'])}), "
        f"{s['threads']} threads, torch {s['torch']}, median of {s['repeats']} interleaved repeats.",
        "",
        "| method | level | step ms (IQR) | × EW (IQR) |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['level']} | {r['median_ms']:.1f} ({r['iqr_ms']:.1f}) | "
                     f"{r['ratio_to_ew']:.2f} ({r['ratio_iqr']:.2f}) |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="mtlcheck bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--levels", nargs="*", default=["parameter", "feature"],
                        choices=["parameter", "feature", "parameter-batched", "libmtl-loop"],
                        help="engine: parameter (T VJPs), feature, parameter-batched (is_grads_batched), "
                             "libmtl-loop (the LibMTL-style baseline: T backward passes into a flat CPU vector)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(args.methods, tuple(args.levels), args.size, args.batch_size, args.tasks, args.repeats,
                 threads=args.threads, device=args.device)
    print(to_markdown(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
