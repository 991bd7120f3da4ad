"""The installed pytest11 plugin in someone else's project: it must not collide with the
project's own options (the pytest docs' --runslow example), must not import torch at start-up,
and its aggregator option must work (aliases included)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
import pytest

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")
    parser.addoption("--budget", default="tiny")

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: mark test as slow to run")

def pytest_collection_modifyitems(config, items):
    if not config.getoption("--runslow"):
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="need --runslow option to run"))
"""

TESTS = """
import sys
import pytest

def test_plugin_loaded_without_torch(request):
    assert request.config.getoption("mtlcheck_aggregator") == ["mgda_ub"]
    assert request.config.getoption("budget") == "tiny"
    assert "torch" not in sys.modules

@pytest.mark.slow
def test_slow():
    pass
"""

KIT_TESTS = """
def test_conformance(aggregator_check):
    make, check = aggregator_check
    check(make)
"""


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MTLCHECK_AGGREGATOR="")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_project_defining_runslow_runs_with_mtlcheck_installed(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_mine.py").write_text(TESTS)
    (tmp_path / "test_kit.py").write_text(KIT_TESTS)
    run = _run(tmp_path, "-q", "-rs", "--mtlcheck-aggregator", "mgda_ub", "test_mine.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout and "need --runslow option to run" in run.stdout
    run = _run(
        tmp_path,
        "-v",
        "--runslow",
        "--mtlcheck-aggregator",
        "mgda_ub",
        "-k",
        "slow or check_zero_input or check_method_identity",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "test_mine.py::test_slow PASSED" in run.stdout  # --runslow is the project's own option
    assert "test_kit.py::test_conformance[MGDA()-check_method_identity] PASSED" in run.stdout, (
        run.stdout
    )  # mgda_ub → MGDA
