"""Build step: the paper's reference tables (the top-level `reference/`, their source of truth)
ship inside the wheel as package data, `mtlcheck/study/paper/_reference/`. Everything else is in pyproject.toml.
An editable install (`pip install -e .`) reads `reference/` directly (mtlcheck/study/paper/published_tables.py)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithReference(build_py):
    def run(self):
        super().run()
        source = Path(__file__).resolve().parent / "reference"
        if not source.is_dir():
            raise FileNotFoundError(f"{source} is missing: the wheel would ship without the paper's reference tables")
        shutil.copytree(
            source, Path(self.build_lib) / "mtlcheck" / "study" / "paper" / "_reference", dirs_exist_ok=True
        )


setup(cmdclass={"build_py": BuildPyWithReference})
