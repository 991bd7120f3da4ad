"""The mtlcheck pytest plugin (registered through the `pytest11` entry point).

Markers: gpu, slow, experiment, claim, conformance. Options (group "mtlcheck"):
  --aggregator NAME|pkg.mod:Class   check only these aggregators (repeatable; env MTLCHECK_AGGREGATOR)
  --runslow                         run tests marked slow
  --require-gpu                     a gpu test without a GPU fails instead of skipping
  --budget smoke|small|paper        size of the runs claim tests use (default smoke)
  --data-root PATH                  where the user's datasets live (paper budget)
  --results-dir PATH                the results store claim tests read and fill
Under pytest-xdist each worker is pinned to one GPU (CUDA_VISIBLE_DEVICES set in
pytest_configure, before anything initialises CUDA) and `-n auto` means one worker per GPU on a
GPU machine (CPU cores otherwise). The `aggregator_check` fixture parametrizes a test over every
(selected aggregator × applicable conformance check).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MARKERS = {
    "gpu": "needs a CUDA GPU (skipped without one unless --require-gpu)",
    "slow": "slow test, run with --runslow",
    "experiment": "trains models and writes the results store",
    "claim": "checks a claim of the paper",
    "conformance": "aggregator conformance check",
}


def _visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def pytest_addoption(parser):
    group = parser.getgroup("mtlcheck")
    group.addoption("--aggregator", action="append", default=[], metavar="NAME",
                    help="aggregator to check: a registered name or pkg.module:Class (repeatable)")
    group.addoption("--runslow", action="store_true", help="run tests marked slow")
    group.addoption("--require-gpu", action="store_true", help="fail gpu tests when no GPU is present")
    group.addoption("--budget", choices=("smoke", "small", "paper"), default="smoke", help="run size for claim tests")
    group.addoption("--data-root", default=None, help="root directory of the user's datasets")
    group.addoption("--results-dir", default=None, help="results store directory")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and worker.startswith("gw"):
        gpus = _visible_gpus()
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]
        # share the cores between workers: oversubscribed intra-op threads make small CPU ops
        # tens of times slower (measured 55x on 2 cores with 2 workers x 2 threads)
        import torch

        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(workers, 1)))
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - hypothesis is a test extra
        return
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, max_examples=50)
    settings.register_profile("dev", deadline=None, max_examples=50)
    settings.register_profile("fuzz", deadline=None, max_examples=2000)


def pytest_xdist_auto_num_workers(config):
    gpus = _visible_gpus()
    return len(gpus) if gpus else None


def pytest_report_header(config):
    import torch

    gpus = _visible_gpus()
    lines = [f"mtlcheck: torch {torch.__version__}, GPUs visible: {len(gpus)}, budget={config.getoption('budget')}"]
    selected = _selected_aggregators(config)
    lines.append(f"mtlcheck: aggregators under check: {', '.join(selected)}")
    env = {k: v for k, v in os.environ.items() if k.startswith("MTLCHECK_")}
    if env:
        lines.append(f"mtlcheck: environment {env}")
    return lines


def _gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    runslow = config.getoption("runslow")
    require_gpu = config.getoption("require_gpu")
    has_gpu = None
    for item in items:
        if "slow" in item.keywords and not runslow:
            item.add_marker(pytest.mark.skip(reason="slow test: use --runslow to run it"))
        if "gpu" in item.keywords:
            if has_gpu is None:
                has_gpu = _gpu_available()
            if not has_gpu and not require_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none visible); --require-gpu makes this fail"))


def pytest_runtest_setup(item):
    if "gpu" in item.keywords and item.config.getoption("require_gpu") and not _gpu_available():
        pytest.fail("--require-gpu was given but no CUDA GPU is available")


def _selected_aggregators(config) -> list[str]:
    chosen = list(config.getoption("aggregator") or [])
    env = os.environ.get("MTLCHECK_AGGREGATOR")
    if not chosen and env:
        chosen = [s for s in env.split(",") if s]
    if chosen:
        return chosen
    from mtlcheck.aggregators import list_aggregators

    return list_aggregators()


def pytest_generate_tests(metafunc):
    if "aggregator_check" not in metafunc.fixturenames:
        return
    from mtlcheck.aggregators import aggregator_class
    from mtlcheck.testing.kit import builtin_variants, iter_checks

    factories = []
    for name in _selected_aggregators(metafunc.config):
        cls = aggregator_class(name)
        factories.extend(builtin_variants(cls))
    params = []
    for make, check, reason in iter_checks(factories):
        marks = [pytest.mark.conformance]
        if reason:
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
        params.append(pytest.param((make, check), marks=marks, id=f"{make.__mtlcheck_repr__}-{check.__name__}"))
    metafunc.parametrize("aggregator_check", params)
