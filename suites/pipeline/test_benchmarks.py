"""Every benchmark end to end at smoke size: real-format fixtures → loader → model → engine →
evaluation, for a gradient method at each level."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtlcheck.study.benchmarks import BENCHMARKS, get_benchmark
from mtlcheck.study.experiments.runner import Where, execute, make_spec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    mgn = tmp_path_factory.mktemp("metagraspnet")
    shutil.copytree(FIXTURES / "metagraspnet", mgn, dirs_exist_ok=True)
    for split in ("train", "test"):
        shutil.copy(mgn / "annotations.json", mgn / f"{split}.json")
    return {"cityscapes": FIXTURES / "cityscapes", "nyuv2": FIXTURES / "nyuv2" / "nyud_mt", "metagraspnet": mgn}


@pytest.mark.parametrize("level", ["parameter", "feature"])
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_trains_and_evaluates_at_smoke_size(name, level, data_roots):
    torch.set_num_threads(1)
    bench = get_benchmark(name)
    spec = make_spec(name, "mgda", level=level, budget="smoke", steps=2)
    root = data_roots.get(name)
    outcome = execute(spec, Where(data_root=str(root) if root else None))
    assert outcome.status == "done", outcome.error
    for metric in bench.metrics:
        assert metric.key in outcome.metrics, f"{name}: metric {metric.key} missing from {sorted(outcome.metrics)}"
    assert outcome.trajectory["step"] == [0]


_IMPORT_CHECK = """
import sys
from mtlcheck.study.benchmarks import get_benchmark
bench = get_benchmark(sys.argv[1])
bench.import_code()
before = set(sys.modules)
bench.make_model("smoke", None)
print(sorted(m for m in set(sys.modules) - before if m.startswith(("mtlcheck", "torchvision"))))
"""


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_import_code_imports_what_the_model_factory_needs(name):
    # a fresh interpreter: in this one, other tests have imported everything already
    done = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, name], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"{name}: make_model imported {done.stdout.strip()} after import_code()"
