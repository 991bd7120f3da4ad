"""What both benches share: the model and batch, the timer, quartiles, peak memory, and one case
per fresh process. `bench` and `peers` import this module, never each other."""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import subprocess
import sys
import time

import torch

from mtlcheck.aggregators import aggregator_class
from mtlcheck.precision import Precision
from mtlcheck.study.models.classifiers import ResNetClassifiers

clock = time.perf_counter  # the timer of every measurement (a seam: tests replace it with a virtual clock)


def random_batch(gen: torch.Generator, size: int, batch_size: int, n_tasks: int, device="cpu") -> dict:
    """B random 3×S×S images and T class labels (10 classes) each."""
    return {
        "image": torch.randn(batch_size, 3, size, size, generator=gen).to(device),
        "labels": torch.randint(0, 10, (batch_size, n_tasks), generator=gen).to(device),
    }


def model_and_batch(
    size: int,
    batch_size: int,
    n_tasks: int,
    device="cpu",
    seed: int = 0,
    precision: Precision = Precision(),
    width: int = 64,
):
    """The benches' model (a ResNet18 trunk of base width `width`, 64 being ResNet18's; a narrower
    one keeps tests cheap) and a random batch, both under `precision`."""
    torch.manual_seed(seed)
    precision.apply_backends()
    model = precision.prepare_model(ResNetClassifiers(n_tasks, width=width).to(device))
    batch = random_batch(torch.Generator().manual_seed(seed), size, batch_size, n_tasks, device)
    return model, precision.prepare_batch(batch)


def applicable(method: str, level: str) -> bool:
    """Whether `method` runs at bench level `level`."""
    tags = aggregator_class(method)().tags()
    if tags.loss_only and level != "parameter":
        return False  # loss-only methods have one engine
    return not (tags.second_order and level in ("libmtl-loop", "parameter-batched"))


def seconds(fn, device="cpu") -> float:
    """The wall time of `fn()` by `clock`, the device's queue drained on both sides."""
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    t0 = clock()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return clock() - t0


@contextlib.contextmanager
def no_collection():
    """No garbage collection inside the timed repeats (the collector's state restored after)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def quartiles(xs) -> tuple[float, float, float]:
    """Q1, median, Q3 of `xs` (all three the value itself for one value)."""
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[1], q[2]


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def step_peak_mib(step) -> float:
    """In this process: the growth of the peak resident set (MiB) over two calls of `step()`, read
    from Linux's VmHWM after resetting it (/proc/self/clear_refs), so that the memory of imports
    and model construction is not mistaken for the step's."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set size to the current one
    except OSError as exc:
        raise RuntimeError(f"peak memory needs Linux's /proc/self/clear_refs ({exc})") from None
    before = _proc_status_kib("VmRSS")
    for _ in range(2):
        step()
    return (_proc_status_kib("VmHWM") - before) / 1024.0


def model_options(size: int, batch_size: int, n_tasks: int, threads: int | None) -> list[str]:
    """The command-line options that set up the bench's model and batch in a child process."""
    options = ["--size", str(size), "--batch-size", str(batch_size), "--tasks", str(n_tasks)]
    return options + (["--threads", str(threads)] if threads else [])


def run_in_process(module: str, args: list[str], env: dict, what: str) -> dict:
    """`python -m module *args` in a fresh process (its own peak memory, no state shared with this
    one); its last line of output is its result, as JSON."""
    done = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
