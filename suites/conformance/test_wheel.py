"""The built wheel works outside the repository: build it (PEP 517, setuptools' backend) from a
copy of the sources, install it with --no-deps into a fresh virtual environment whose
dependencies come from this environment's site-packages (a .pth file: installing torch anew
would take minutes and gigabytes), then, from a temporary folder, run `mtlcheck check`,
`mtlcheck run` + `mtlcheck report` on a small store (the report needs the paper's reference
tables, shipped as package data), and the kit from a throwaway project's pytest.

Slow (about a minute: one training run, three interpreter start-ups with torch); CI runs it
with --runslow (.ci/run)."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("mtlcheck", "reference", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")

KIT_TEST = """
import mtlcheck
from mtlcheck.testing import parametrize_with_checks
from mtlcheck.aggregators import MGDA

def test_installed_from_the_wheel():
    assert "site-packages" in mtlcheck.__file__, mtlcheck.__file__

@parametrize_with_checks([MGDA])
def test_kit(aggregator, check):
    check(aggregator)

def test_plugin_fixture(aggregator_check):
    make, check = aggregator_check
    check(make)
"""


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _run(cmd, cwd, env, timeout=900):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_and_works_outside_the_repository(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_reference"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "MTLCHECK_AGGREGATOR")}
    _run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(dist)!r})"], src, clean
    )
    (wheel,) = dist.glob("mtlcheck-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, clean)
    python = venv / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, clean).strip()
    )
    (site / "outer_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        tmp_path,
        clean,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(clean, PATH=f"{venv / 'bin'}{os.pathsep}{clean.get('PATH', '')}", MPLBACKEND="Agg")
    where = _run(
        [
            str(python),
            "-c",
            "import mtlcheck.study.paper.published_tables as r; print(r.PAPER_DIR); print(len(r.load_paper_tables()))",
        ],
        work,
        env,
    )
    assert str(site) in where and "_reference" in where, where  # the packaged tables, not the repository's
    assert str(REPO) not in where

    out = _run([str(venv / "bin" / "mtlcheck"), "check", "pcgrad"], work, env)
    assert "PCGrad(): " in out and "FAILED" not in out, out
    listed = _run([str(venv / "bin" / "mtlcheck"), "list", "methods"], work, env)
    assert "  mgda " in listed, listed
    typo = subprocess.run(
        [str(venv / "bin" / "mtlcheck"), "check", "mgdaa"], cwd=work, env=env, capture_output=True, text=True
    )
    assert typo.returncode == 2 and "did you mean 'mgda'" in typo.stderr, typo.stderr

    if _has("torchjd"):  # the README's worked TorchJD adapter, saved as the README says: no false alarm
        readme = (REPO / "README.md").read_text()
        adapter = readme.split("## Checking a third-party implementation", 1)[1].split("```python", 1)[1]
        (work / "my_adapters.py").write_text(adapter.split("```", 1)[0])
        out = _run([str(venv / "bin" / "mtlcheck"), "check", "my_adapters:TorchJDMGDA"], work, env)
        assert "TorchJDMGDA(): " in out and "FAILED" not in out, out

    store = work / "runs.sqlite"
    _run(
        [
            str(venv / "bin" / "mtlcheck"),
            "run",
            "--benchmark",
            "digits-dense",
            "--method",
            "ew",
            "--budget",
            "smoke",
            "--steps",
            "2",
            "--store",
            str(store),
            "--quiet",
        ],
        work,
        env,
    )
    report = _run(
        [
            str(venv / "bin" / "mtlcheck"),
            "report",
            "--benchmark",
            "digits-dense",
            "--budget",
            "smoke",
            "--store",
            str(store),
            "--out",
            str(work / "report"),
        ],
        work,
        env,
    )
    assert "report written to" in report

    project = work / "their_project"
    project.mkdir()
    (project / "test_their_method.py").write_text(KIT_TEST)
    out = _run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--mtlcheck-aggregator",
            "pcgrad",
            "-k",
            "installed or check_zero_input or check_method_identity",
        ],
        project,
        env,
    )
    assert "5 passed" in out, out  # installed + two checks of MGDA (decorator) and of PCGrad (plugin fixture)
