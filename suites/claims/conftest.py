"""Shared fixtures of the claim suites: the reproduced tables (computed once per session and
shared by xdist workers through the results store)."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mtlcheck.study.benchmarks import EMBEDDED_ANALOGS
from mtlcheck.study.experiments.runner import Where, run_sweep, sweep_specs
from mtlcheck.study.experiments.store import ResultStore
from mtlcheck.study.paper.results import result_tables


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
    threads = None
    if data_root is None:  # the embedded stand-ins (CI); with --data-root the paper's own, at any budget
        benchmarks, where = CPU_BENCHMARKS, lambda name: Where()
        threads = 1  # CPU float reductions depend on the thread count: one thread keeps the
        #              snapshots the same with or without xdist workers
    else:
        benchmarks = PAPER_BENCHMARKS
        device = "cuda" if _cuda() else "cpu"
        where = lambda name: Where(data_root=str(Path(data_root) / name), device=device)  # noqa: E731
    tables, per_benchmark = {}, {}
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for name in benchmarks:  # MetaGraspNet-like first: Figure 5 and Table 4 are MetaGraspNet's
            records = run_sweep(store, sweep_specs(name, budget=budget), where(name), progress=False)
            failed = {r.spec.label: (r.error or "")[-300:] for r in records if r.status == "failed"}
            assert not failed, f"runs failed (a failure is not a verdict): {failed}"
            per_benchmark[name] = result_tables(records, name)
            for key, table in per_benchmark[name].items():
                tables.setdefault(key, table)
    finally:
        torch.set_num_threads(saved_threads)
    return Reproduced(budget, results, tables, per_benchmark)


def _cuda():
    import torch

    return torch.cuda.is_available()
