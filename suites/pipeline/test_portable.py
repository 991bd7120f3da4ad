"""Portable mode (`--portable`, `Precision(portable=True)`): bitwise the same report tables under
two simulated CPUs, the provenance a stored run records, what `runs compare` says about two stores,
and the settings it excludes (one line, exit code 2).

A simulated other CPU is a process whose kernel choices are forced by the environment: ATen's
vector kernels (ATEN_CPU_CAPABILITY), oneDNN's ISA (ONEDNN_MAX_CPU_ISA), MKL's code path and
instructions (MKL_CBWR, MKL_ENABLE_INSTRUCTIONS), glibc's libm variants (GLIBC_TUNABLES) and the
thread count. In the default mode each of these but MKL_ENABLE_INSTRUCTIONS changed a smoke run's
metrics on the machine that wrote this test; in portable mode none does."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtlcheck.precision import PortabilityError, Precision, engine_state
from mtlcheck.study.cli import main
from mtlcheck.study.experiments.inventory import explain, prediction
from mtlcheck.study.experiments.store import ResultStore

pytestmark = [pytest.mark.experiment]

ROOT = Path(__file__).resolve().parents[2]
BASE_ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "GLIBC_TUNABLES")},
    "MPLBACKEND": "Agg",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
# another CPU, as far as one machine can imitate it: no AVX2/AVX-512 kernels in ATen, SSE4.1 in
# oneDNN, MKL's AVX2 branch, glibc's libm without FMA/AVX2, two threads
OTHER_CPU = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX512F",
    "OMP_NUM_THREADS": "2",
}
REPRODUCE = ["reproduce", "--portable", "--budget", "smoke", "--methods", "ew", "mgda", "--levels", "parameter"]
REPRODUCE += ["--seeds", "0", "1", "--quiet", "--jobs", "1"]


def _reproduce(where: Path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mtlcheck.study", *REPRODUCE]
    command += ["--store", str(where / "runs.sqlite"), "--out", str(where / "out")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def two_cpus(tmp_path_factory):
    """`mtlcheck reproduce --portable` at smoke budget (EW and MGDA, two seeds) on this CPU (A)
    and on a simulated other one (B), each with its own store and report."""
    a, b = tmp_path_factory.mktemp("cpu-a"), tmp_path_factory.mktemp("cpu-b")
    _reproduce(a, BASE_ENV)
    _reproduce(b, {**BASE_ENV, **OTHER_CPU})
    return a, b


def _without_timings(report: str) -> str:
    """report.md without its "Runs" section (wall and train seconds)."""
    head, _, rest = report.partition("\n## Runs\n")
    return head + "\n## " + rest.partition("\n## ")[2]


def test_reproduce_portable_gives_bitwise_the_same_tables_under_two_simulated_cpus(two_cpus):
    a, b = (p / "out" / "digits-dense-smoke-portable" for p in two_cpus)
    files = sorted(p.relative_to(a) for p in a.iterdir())
    assert files == sorted(p.relative_to(b) for p in b.iterdir())
    tables = [f for f in files if f.suffix in (".csv", ".json")]
    assert {"table2.csv", "table2.json", "final_measures.json"} <= {f.name for f in tables}
    for name in tables + [f for f in files if f.suffix == ".png"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs between the simulated CPUs"
    report_a, report_b = ((p / "report.md").read_text() for p in (a, b))
    assert "## Runs" in report_a and "## Table 2" in _without_timings(report_a)
    assert _without_timings(report_a) == _without_timings(report_b)


def test_stored_runs_record_cpu_kernels_and_portable_flag(two_cpus):
    a, b = (ResultStore(p / "runs.sqlite", readonly=True).runs() for p in two_cpus)
    assert len(a) == len(b) == 4 and all(r.spec.options == {"portable": True} for r in a + b)
    for record in a + b:
        env, engine = record.env, record.env["engine"]
        assert env["cpu_model"] and isinstance(env["cpu_flags"], list) and "blas" in env and "onednn" in env
        assert engine["portable"] is True and engine["aten_capability"] == "DEFAULT"
        assert engine["torch_threads"] == 1 and engine["mkldnn_enabled"] is False
        assert engine["nnpack_enabled"] is False and engine["deterministic_algorithms"] is True
        assert engine["kernel_env"]["MKL_CBWR"] == "COMPATIBLE"
    assert all(r.env["engine"]["kernel_env"]["ONEDNN_MAX_CPU_ISA"] == "SSE41" for r in b)
    assert all("ONEDNN_MAX_CPU_ISA" not in r.env["engine"]["kernel_env"] for r in a)


def test_runs_compare_says_what_differs(two_cpus, capsys):
    a, b = (str(p / "runs.sqlite") for p in two_cpus)
    assert main(["runs", "compare", b, "--store", a]) == 0
    out = capsys.readouterr().out
    assert "4 identical" in out and "recorded environments differ in: settings" in out

    (ra,) = [r for r in ResultStore(a, readonly=True).runs() if r.spec.method == "mgda" and r.spec.seed == 0]
    (rb,) = [r for r in ResultStore(b, readonly=True).runs() if r.key == ra.key]
    sources = explain(ra, rb)
    assert not sources["code"] and not sources["data"] and not sources["machine"]
    assert any("ONEDNN_MAX_CPU_ISA" in s for s in sources["settings"])
    moved = dataclasses.replace(rb, env={**rb.env, "cpu_model": "Other CPU", "git_revision": "0" * 40})
    sources = explain(ra, moved)
    assert sources["machine"] == [f"cpu_model: {ra.env['cpu_model']!r} vs 'Other CPU'"]
    assert sources["code"] and "code differs" in prediction(ra, moved, sources)
    only_machine = dataclasses.replace(moved, env={**moved.env, "git_revision": ra.env["git_revision"]})
    assert "defect of portable mode" in prediction(ra, only_machine, explain(ra, only_machine))


def test_portable_excludes_the_other_precision_settings():
    for other in ({"tf32": True}, {"autocast": "bf16"}, {"channels_last": True}):
        with pytest.raises(ValueError, match=f"excludes {next(iter(other))}"):
            Precision(portable=True, **other)
    assert Precision(portable=True).options() == {"portable": True}
    assert Precision(portable=True).flags() == ["--portable"]
    assert Precision.from_options({"portable": True}) == Precision(portable=True)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tf32"], "--portable (the exact float32 step on fixed CPU kernels) excludes --tf32"),
        (["--autocast", "bf16", "--channels-last"], "excludes --autocast and --channels-last"),
        (["--threads", "2"], "--portable runs on one thread; --threads 2 contradicts it"),
        (["--device", "cuda"], "--portable is a CPU mode"),
    ],
)
def test_contradictory_settings_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    store = str(tmp_path / "runs.sqlite")
    code = main(["run", "--benchmark", "digits-dense", "--method", "ew", "--portable", *flags, "--store", store])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not Path(store).exists()


def test_portable_step_refused_in_a_process_on_other_kernels(monkeypatch):
    if not torch.backends.mkl.is_available():
        pytest.skip("the MKL half of the check needs a torch built with MKL")
    monkeypatch.setenv("MKL_CBWR", "AUTO")  # MKL already chose its code path in this process
    before = engine_state()
    with pytest.raises(PortabilityError, match="MKL_CBWR is 'AUTO'"):
        with Precision(portable=True).engine():
            pass
    assert engine_state() == before


def test_engine_switches_the_kernels_for_the_run_and_restores_them():
    code = """
import torch
from mtlcheck.precision import Precision, engine_state, portable_environment
portable_environment()
torch.set_num_threads(2)
before = engine_state()
with Precision(portable=True).engine():
    inside = engine_state()
assert engine_state() == before, (engine_state(), before)
assert inside["aten_capability"] == "DEFAULT" and inside["torch_threads"] == 1, inside
assert not inside["mkldnn_enabled"] and not inside["nnpack_enabled"] and inside["deterministic_algorithms"], inside
print("ok")
"""
    env = {**BASE_ENV, "ATEN_CPU_CAPABILITY": "avx2"}  # the portable environment overrides it
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _stored_run(where: Path, env: dict, *args: str):
    command = [sys.executable, "-m", "mtlcheck.study", "run", "--portable", *args, "--store", str(where), "--quiet"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = ResultStore(where, readonly=True).runs()
    return record


def test_a_paper_benchmark_run_is_bitwise_the_same_under_two_simulated_cpus(tmp_path):
    """MetaGraspNet's detection model (ResNet, RoI Align, proposal sampling) on the fixture data."""
    args = ["--benchmark", "metagraspnet", "--method", "mgda", "--budget", "smoke"]
    args += ["--data-root", str(ROOT / "fixtures" / "metagraspnet")]
    a = _stored_run(tmp_path / "a.sqlite", BASE_ENV, *args)
    b = _stored_run(tmp_path / "b.sqlite", {**BASE_ENV, **OTHER_CPU}, *args)
    assert a.key == b.key and a.status == b.status == "done"
    assert a.metrics == b.metrics and a.trajectory == b.trajectory
