"""The two floors: the library (`mtlcheck/` without `study/`) never imports the study
(`mtlcheck/study/`), installs with torch, numpy and scipy alone, and works without the study's
extra; the README's layout section names what is in the tree."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mtlcheck"
STUDY = PACKAGE / "study"
# distribution name in the `study` extra -> the module it installs
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL"}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _study_modules() -> list[str]:
    extra = _pyproject()["project"]["optional-dependencies"]["study"]
    return sorted(IMPORT_NAMES.get(n, n) for n in map(_requirement_name, extra))


def _imported_modules(path: Path):
    """Every module an `import` or `from ... import` in the file names, at any depth (lazy imports included)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from mtlcheck import study`
                yield node.lineno, f"{node.module}.{alias.name}"


# `python -m mtlcheck`: the command's launcher hands everything but `--version` to the study's command;
# nothing imports it, so the library still never loads the study
LAUNCHER = PACKAGE / "__main__.py"


def test_the_library_never_imports_the_study():
    library = [p for p in PACKAGE.rglob("*.py") if STUDY not in p.parents and p != LAUNCHER]
    assert len(library) > 20, library  # the walk found the library
    offences = [
        f"{p.relative_to(ROOT)}:{line}: imports {name}"
        for p in library
        for line, name in _imported_modules(p)
        if name == "mtlcheck.study" or name.startswith("mtlcheck.study.")
    ]
    assert not offences, "the library must not depend on the study:\n" + "\n".join(offences)


def test_nothing_imports_the_launcher():
    importers = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in PACKAGE.rglob("*.py")
        for line, name in _imported_modules(p)
        if name == "mtlcheck.__main__"
    ]
    assert not importers, importers


def test_the_import_walk_sees_lazy_imports(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from mtlcheck.study.cli import main\n    from mtlcheck import study\n")
    names = [name for _, name in _imported_modules(planted)]
    assert "mtlcheck.study.cli" in names and "mtlcheck.study" in names


def test_the_library_installs_light():
    base = {_requirement_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert base == {"torch", "numpy", "scipy"}, base
    assert {"torchvision", "pycocotools", "sklearn", "matplotlib", "tqdm", "PIL"} <= set(_study_modules())


def test_the_commands_missing_module_message_knows_the_study_extra():
    from mtlcheck.study.cli import STUDY_EXTRA_MODULES

    assert sorted(STUDY_EXTRA_MODULES) == _study_modules()


# The start of a fresh interpreter where the modules named by its first argument (and their
# submodules) are missing.
MISSING = """
import importlib.abc, io, sys, contextlib
BLOCKED = sys.argv[1].split(",")

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
"""

# Runs where every module of the study extra is missing.
WITHOUT_STUDY_EXTRA = (
    MISSING
    + """

import importlib, pkgutil
import mtlcheck
# every module of the library (the kit's pytest plugin and snapshot extension need pytest and syrupy,
# from the test extra, which the kit's users have)
library = [
    m.name for m in pkgutil.walk_packages(mtlcheck.__path__, "mtlcheck.")
    if not m.name.startswith("mtlcheck.study")
]
assert len(library) > 30, library
for name in library:
    importlib.import_module(name)

import torch
from mtlcheck.aggregators import get_aggregator
from mtlcheck.gradients import backward_step
from mtlcheck.models.toy import ToyRegression
from mtlcheck.testing import check_aggregator
from mtlcheck.testing.kit import resolve_aggregator

torch.manual_seed(0)
model = ToyRegression()
batch = ToyRegression.make_batch()
backward_step(model, batch, get_aggregator("mgda"), level="parameter")
assert all(p.grad is not None for _, p in model.shared_parameters())
assert resolve_aggregator("mgda_ub").name == "mgda"
check_aggregator(resolve_aggregator("pcgrad"))

from mtlcheck.study.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    checked = main(["check", "pcgrad"])
print("CHECK", checked, "FAILED" in out.getvalue(), "PCGrad(): " in out.getvalue())
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    listed = main(["list"])
text = out.getvalue()
print("LIST", listed, "  mgda " in text, 'dependencies: pip install "mtlcheck[study]"' in text,
      "  digits-dense" in text, repr(err.getvalue().strip()))
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    import tempfile
    listed = main(["run", "--benchmark", "digits-dense", "--method", "ew", "--steps", "1",
                   "--store", tempfile.mkdtemp() + "/runs.sqlite"])
print("STUDY", listed, err.getvalue().strip().splitlines()[-1])
print("LOADED", sorted(m for m in BLOCKED if m in sys.modules))
"""
)


def _run_without(modules: list[str], script: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", script, ",".join(modules)],
        input=stdin,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_library_works_without_the_study_extra():
    done = _run_without(_study_modules(), WITHOUT_STUDY_EXTRA)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(
        line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("CHECK", "LIST", "STUDY", "LOADED"))
    )
    assert lines["CHECK"] == "0 False True", lines["CHECK"]  # `mtlcheck check` runs the kit: exit 0, nothing failed
    # `mtlcheck list` works: the methods, and the benchmarks named with the extra they need
    assert lines["LIST"] == "0 True True True ''", lines["LIST"]
    code, _, message = lines["STUDY"].partition(" ")
    assert code == "2", lines["STUDY"]  # a study command without the study extra: one line, exit 2
    assert 'pip install "mtlcheck[study]"' in message and "Traceback" not in message, message
    assert lines["LOADED"] == "[]"


# `python -m mtlcheck ARGS` for each line of stdin: its exit code, and its output's first and last lines.
PYTHON_M = (
    MISSING
    + """
import runpy
for line in sys.stdin.read().splitlines():
    sys.argv = ["mtlcheck", *line.split()]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module("mtlcheck", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
    text = (out.getvalue() + err.getvalue()).strip().splitlines() or [""]
    print(repr((line, code, text[0], text[-1])))
print(repr(("LOADED", sorted(m for m in BLOCKED if m in sys.modules))))
"""
)


def _python_m(missing: list[str], *commands: str) -> dict:
    done = _run_without(missing, PYTHON_M, "\n".join(commands))
    assert done.returncode == 0, done.stderr[-3000:]
    results = [ast.literal_eval(line) for line in done.stdout.splitlines() if line.startswith("(")]
    return {r[0]: r[1:] for r in results}


def test_python_m_mtlcheck_without_the_study_extra():
    from mtlcheck import __version__

    ran = _python_m(_study_modules(), "--version", "check pcgrad", "run --benchmark digits-dense --method ew")
    assert ran["--version"] == (0, f"mtlcheck {__version__}", f"mtlcheck {__version__}")
    code, _, last = ran["check pcgrad"]  # the kit: library-only
    assert code == 0 and "FAILED" not in last, ran["check pcgrad"]
    code, _, last = ran["run --benchmark digits-dense --method ew"]  # a study command: one line, exit 2
    assert code == 2 and 'pip install "mtlcheck[study]"' in last, last
    assert ran["LOADED"] == ([],)


def test_python_m_mtlcheck_without_the_study():
    from mtlcheck import __version__

    ran = _python_m(["mtlcheck.study"], "--version", "list")
    assert ran["--version"] == (0, f"mtlcheck {__version__}", f"mtlcheck {__version__}")
    line = 'mtlcheck: error: the mtlcheck command comes with the study: pip install "mtlcheck[study]"'
    assert ran["list"] == (2, line, line)  # one line, exit 2


def test_python_m_mtlcheck_version():
    from mtlcheck import __version__

    done = subprocess.run(
        [sys.executable, "-m", "mtlcheck", "--version"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (0, f"mtlcheck {__version__}\n"), done.stderr


def _layout_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def test_the_readme_layout_matches_the_tree():
    listed = _layout_block()
    missing = [p for p in listed if not (ROOT / p).exists()]
    assert not missing, f"README §Layout names paths that do not exist: {missing}"
    unnamed = []
    for folder in (PACKAGE, STUDY):
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(("_", ".")) or entry.name == "study" and folder == PACKAGE:
                continue
            if entry.is_dir() and not (entry / "__init__.py").exists():
                continue  # not a package (e.g. a build artefact)
            rel = entry.relative_to(ROOT).as_posix() + ("/" if entry.is_dir() else "")
            if entry.suffix == ".py" or entry.is_dir():
                if rel not in listed:
                    unnamed.append(rel)
    assert not unnamed, f"README §Layout does not name: {unnamed}"
