"""Shared fixtures of the claim suites: the reproduced tables (computed once per session and
shared by xdist workers through the results store)."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mtlcheck.study.benchmarks import EMBEDDED_ANALOGS
from mtlcheck.study.experiments.runner import Where, run_sweep, sweep_specs
from mtlcheck.study.experiments.store import ResultStore
from mtlcheck.study.paper.our_tables import result_tables


@dataclass(frozen=True)
class Reproduced:
    budget: str
    results: Path
    tables: dict
    per_benchmark: dict


CPU_BENCHMARKS = EMBEDDED_ANALOGS  # digits-instance, digits-dense, digits-nyu: Tables 1-7
PAPER_BENCHMARKS = ("metagraspnet", "cityscapes", "nyuv2")


@pytest.fixture(scope="session")
def reproduced(request, tmp_path_factory):
    """Tables from a full sweep of every benchmark of the chosen budget (computed once, shared by
    xdist workers through the results store)."""
    budget = request.config.getoption("budget")
    path = request.config.getoption("store")
    path = Path(path) if path else tmp_path_factory.getbasetemp().parent / "mtlcheck-claims" / "runs.sqlite"
    results = Path(request.config.getoption("out") or path.parent)
    results.mkdir(parents=True, exist_ok=True)
    store = ResultStore(path)
    data_root = request.config.getoption("data_root")
    if data_root is None:  # the embedded stand-ins (CI), in portable mode; with --data-root the paper's own
        benchmarks = CPU_BENCHMARKS
    else:
        benchmarks = PAPER_BENCHMARKS
        device = "cuda" if _cuda() else "cpu"
        where = lambda name: Where(data_root=str(Path(data_root) / name), device=device)  # noqa: E731
    tables, per_benchmark = {}, {}
    for name in benchmarks:  # MetaGraspNet-like first: Figure 5 and Table 4 are MetaGraspNet's
        if data_root is None:
            records = _portable_sweep(path, name, budget)
        else:
            records = run_sweep(store, sweep_specs(name, budget=budget), where(name), progress=False)
        failed = {r.spec.label: (r.error or "")[-300:] for r in records if r.status == "failed"}
        assert not failed, f"runs failed (a failure is not a verdict): {failed}"
        per_benchmark[name] = result_tables(records, name)
        for key, table in per_benchmark[name].items():
            tables.setdefault(key, table)
    return Reproduced(budget, results, tables, per_benchmark)


def _portable_sweep(store: Path, benchmark: str, budget: str):
    """The runs of `benchmark` at `budget` (seed 0) in portable mode: `mtlcheck sweep --portable`
    in a fresh process (ATen chooses its kernels once per process, at its first operation, and this
    one has long chosen them), so that the numbers are the same on every x86-64 CPU."""
    command = [sys.executable, "-m", "mtlcheck.study", "sweep", "--portable", "--benchmark", benchmark]
    command += ["--budget", budget, "--seeds", "0", "--store", str(store), "--jobs", "1", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode in (0, 1), f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    specs = sweep_specs(benchmark, budget=budget, extra={"portable": True})
    stored = ResultStore(store, readonly=True)
    records = [stored.get(spec) for spec in specs]
    assert all(r is not None for r in records), f"{' '.join(command)} left runs unstored:\n{done.stdout[-2000:]}"
    return records


def _cuda():
    import torch

    return torch.cuda.is_available()
