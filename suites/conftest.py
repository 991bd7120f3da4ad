"""The project's own test options and set-up (not part of the installed kit plugin).

Markers: gpu, slow, experiment, claim. Options:
  --runslow                         run tests marked slow
  --require-gpu                     a gpu test without a GPU fails instead of skipping
  --budget smoke|small|paper        size of the runs claim tests use (default smoke)
  --data-root PATH                  where the user's datasets live (paper budget)
  --store FILE                      the SQLite results store claim tests read and fill (as the
                                    command line's --store; default: one under pytest's temp root)
  --out DIR                         where the verdict table goes (default: the store's folder)
Under pytest-xdist each worker is pinned to one GPU (CUDA_VISIBLE_DEVICES set in
pytest_configure, before anything initialises CUDA), `-n auto` means one worker per GPU on a
GPU machine (CPU cores otherwise), and the CPU cores are shared between workers. Hypothesis
profiles: "ci" (default: derandomized, 50 examples, no deadline), "dev", "fuzz" (2000
examples); choose with HYPOTHESIS_PROFILE.
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
}


def visible_gpus() -> list[str]:
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
    group = parser.getgroup("mtlcheck-suites", "mtlcheck's own suites")
    group.addoption("--runslow", action="store_true", help="run tests marked slow")
    group.addoption("--require-gpu", action="store_true", help="fail gpu tests when no GPU is present")
    group.addoption("--budget", choices=("smoke", "small", "paper"), default="smoke", help="run size for claim tests")
    group.addoption("--data-root", default=None, help="root directory of the user's datasets")
    group.addoption("--store", default=None, help="SQLite results store the claim tests read and fill")
    group.addoption("--out", default=None, help="folder for the verdict table (default: the store's folder)")


def pin_worker() -> None:
    """Pin an xdist worker to one GPU and give it its share of the CPU cores."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not (worker and worker.startswith("gw")):
        return
    gpus = visible_gpus()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[int(worker[2:]) % len(gpus)]
    # oversubscribed intra-op threads make small CPU ops tens of times slower (measured 55x on
    # 2 cores with 2 workers x 2 threads)
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(workers, 1)))


def load_hypothesis_profiles() -> None:
    try:
        from hypothesis import settings
    except ImportError:  # pragma: no cover - hypothesis is a test extra
        return
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, max_examples=50)
    settings.register_profile("dev", deadline=None, max_examples=50)
    settings.register_profile("fuzz", deadline=None, max_examples=2000)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    pin_worker()
    load_hypothesis_profiles()


def pytest_xdist_auto_num_workers(config):
    gpus = visible_gpus()
    return len(gpus) if gpus else None


def pytest_report_header(config):
    import torch

    return [
        f"mtlcheck suites: torch {torch.__version__}, GPUs visible: {len(visible_gpus())}, "
        f"budget={config.getoption('budget')}"
    ]


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
                item.add_marker(
                    pytest.mark.skip(reason="needs a CUDA GPU (none visible); --require-gpu makes this fail")
                )


def pytest_runtest_setup(item):
    if "gpu" in item.keywords and item.config.getoption("require_gpu") and not _gpu_available():
        pytest.fail("--require-gpu was given but no CUDA GPU is available")
