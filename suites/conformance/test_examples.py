"""The kit on a real third-party library: TorchJD's aggregators through the adapters in
examples/torchjd_adapters.py (torchjd pinned in the `examples` extra). The outcome asserted here
is what the kit finds in torchjd 0.18.0; each failure is explained next to it.

Skipped when torchjd (with its cagrad / nash-mtl extras: cvxpy, ecos) is not installed:
pip install -e ".[examples]"."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

tjd = pytest.importorskip("torchjd", reason='torchjd is not installed: pip install -e ".[examples]"')
pytest.importorskip("cvxpy", reason='cvxpy (torchjd[cagrad,nash-mtl]) is not installed: pip install -e ".[examples]"')

from mtlcheck.testing import check_aggregator  # noqa: E402

_path = Path(__file__).resolve().parents[2] / "examples" / "torchjd_adapters.py"
_spec = importlib.util.spec_from_file_location("torchjd_adapters", _path)
adapters = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("torchjd_adapters", adapters)  # importable by name: the pickle round trip needs it
_spec.loader.exec_module(adapters)

RNG = ["check_no_global_rng", "check_seed_determinism"]

# adapter → (checks that fail, checks skipped), with why:
OUTCOME = {
    # Frank-Wolfe stopped at step γ < ε = 1e-3: the adapter declares that precision (solver_tol =
    # 4ε, the duality gap relative to max‖g_i‖²) and meets it; no numerical back end. Undeclared,
    # the KKT violation (~6e-2 in cosine units on a dominant task) and a conflict on a T = 5 input
    # fail (test_the_mgda_adapter_without_its_tolerance_fails).
    "MGDA": (set(), {"check_no_silent_fallback"}),
    # A BUG: on a dominant task (norms 1e4 apart) the trace-normalised ‖g_w‖ falls below the absolute
    # norm_eps = 1e-4 and the weights are set to 0 ("approximately on the pareto front"): a zero step
    # although G has full rank. Also inexact (~1e-4) on a nearly opposite pair (Clarabel's tolerance).
    "CAGrad": ({"check_method_identity"}, set()),
    "IMTLG": (set(), set()),
    "AlignedMTL": (set(), set()),
    # Task orders from the global torch RNG (documented by TorchJD): not reproducible from a seed; the
    # order differs between the calls of the homogeneity check, hence that failure too. T = 2 (no
    # order) matches PCGrad's formula exactly.
    "PCGrad": (
        set(RNG) | {"check_stateless_idempotent", "check_homogeneity"},
        {"check_conflict_reduction", "check_no_silent_fallback"},
    ),
    # Same global RNG: the state (φ̂) round trip and reset cannot reproduce the next steps either.
    # Its T = 2 output follows Eq. 4 and the EMA exactly (identity passes).
    "GradVac": (
        set(RNG) | {"check_reset", "check_state_roundtrip", "check_homogeneity"},
        {"check_conflict_reduction", "check_no_silent_fallback"},
    ),
}


def _outcome(records):
    failed = {r["check"] for r in records if r["status"] == "failed"}
    skipped = {r["check"] for r in records if r["status"] == "skipped"}
    return failed, skipped


@pytest.mark.parametrize("name", list(OUTCOME))
def test_torchjd_aggregators_under_the_kit(name):
    torch.manual_seed(0)  # TorchJD draws from the global RNG
    records = check_aggregator(getattr(adapters, name), on_fail=None)
    assert not any("AttributeError" in (r["exception"] or "") for r in records)
    assert _outcome(records) == OUTCOME[name], [r for r in records if r["status"] != "passed"]
    messages = {r["check"]: r["exception"] or "" for r in records}
    if name == "CAGrad":
        assert "misses it): violated on 'dominant task (norms 1e4 apart)'" in messages["check_method_identity"]
        G = torch.eye(3, 12, dtype=torch.float64)
        G[0] *= 1e4
        assert float(adapters.CAGrad()(G).direction.norm()) == 0.0  # the zero step, G of full rank
    if name in ("PCGrad", "GradVac"):
        assert messages["check_method_identity"] == ""  # passed


def test_the_mgda_adapter_without_its_tolerance_fails():
    """The declared solver_tol is what lets the early-stopped Frank-Wolfe pass: held to the kit's
    default, TorchJD's MGDA at ε = 1e-3 violates MGDA's KKT condition and conflicts with a task."""

    class Undeclared(adapters.MGDA):
        def tags(self):
            return super().tags().replace(solver_tol=None)

    records = check_aggregator(Undeclared, on_fail=None, checks=["check_method_identity", "check_non_conflicting"])
    assert {r["check"]: r["status"] for r in records} == {
        "check_method_identity": "failed",
        "check_non_conflicting": "failed",
    }
    assert "KKT ⟨g_i, d⟩ ≥ ‖d‖²" in records[0]["exception"] + records[1]["exception"]
    # the README's --config: a tighter ε with room to reach it, its declared tolerance shrinking with it
    tighter = check_aggregator(
        lambda: adapters.MGDA(epsilon=1e-4, max_iters=1000), on_fail=None, checks=["check_method_identity"]
    )
    assert tighter[0]["status"] == "passed", tighter


def test_torchjd_nash_mtl_falls_back_silently_and_is_not_the_bargaining_solution():
    """A BUG (inherited from the official code): cvxpy's SolverError (and ValueError) is caught and
    the previous α — initially all ones, equal weighting — is returned without a word. The 20
    sequential convex steps also stop far from α_i(GGᵀα)_i = const when task norms differ 100x
    (spread ~1 on 'conflicting'), and G = 0 or T = 1 raise cvxpy's ValueError."""
    records = check_aggregator(
        adapters.NashMTL,
        on_fail=None,
        checks=["check_no_silent_fallback", "check_method_identity", "check_zero_input", "check_single_task"],
    )
    status = {r["check"]: (r["status"], r["exception"] or "") for r in records}
    assert status["check_no_silent_fallback"][0] == "failed"
    assert (
        "cvxpy failed" in status["check_no_silent_fallback"][1]
        and "silent fallback" in status["check_no_silent_fallback"][1]
    )
    assert status["check_method_identity"][0] == "failed"
    assert "bargaining α_i (GGᵀα)_i equal for every task" in status["check_method_identity"][1]
    assert status["check_zero_input"][0] == "failed"
    assert status["check_zero_input"][1].startswith("ValueError: Parameter value must be real. (raised at ")
    assert "torchjd_adapters.py:" in status["check_zero_input"][1]  # the adapter's line that called TorchJD
    assert status["check_single_task"][0] == "failed"


@pytest.mark.slow
def test_torchjd_nash_mtl_full_kit():
    """Also check_float64_arithmetic: its output responds to a 1e-8 change of G as rounding noise
    (second/first difference 0.86 and 0.013): ECOS stopped by 1e-3/1e-6 criteria, from a float32
    start (prvs_alpha is np.float32); the adapter declares no solver_tol."""
    torch.manual_seed(0)
    records = check_aggregator(adapters.NashMTL, on_fail=None)
    assert _outcome(records) == (
        {
            "check_zero_input",
            "check_single_task",
            "check_method_identity",
            "check_no_silent_fallback",
            "check_float64_arithmetic",
        },
        set(),
    )


def test_the_readme_adapter_runs_as_written():
    """The worked adapter of README "Checking a third-party implementation", executed verbatim."""
    import types

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Checking a third-party implementation", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 30
    module = types.ModuleType("readme_adapter")
    sys.modules["readme_adapter"] = module
    exec(compile(code, "README.md", "exec"), module.__dict__)
    torch.manual_seed(0)
    records = check_aggregator(module.TorchJDMGDA, on_fail=None)
    assert _outcome(records) == OUTCOME["MGDA"], [r for r in records if r["status"] != "passed"]


_quadprog = importlib.util.find_spec("qpsolvers") is not None and importlib.util.find_spec("quadprog") is not None
_needs_quadprog = pytest.mark.skipif(not _quadprog, reason='torchjd[quadprog-projector]: pip install -e ".[examples]"')
_SKIP_FALLBACK = {"check_no_silent_fallback"}  # quadprog is not one of the kit's faulted back ends

# TorchJD's methods after the paper: adapter → (checks that fail, checks skipped), with why:
LATER_OUTCOME = {
    # Its QP runs on the Gram normalised by its Frobenius norm plus 1e-4·I: a task with a small
    # gradient is weighted as if its gradient were longer, and the result conflicts with it
    # (cos −0.34 on the kit's conflicting pair of norms 11 and 0.11): not in the dual cone.
    "UPGrad": ({"check_non_conflicting", "check_method_identity"}, _SKIP_FALLBACK),
    "DualProj": ({"check_non_conflicting", "check_method_identity"}, _SKIP_FALLBACK),
    # scipy's least_squares from w = 1/T on the raw Gram, its result never checked: unconverged on a
    # dominant task (identity), tolerances in absolute units (homogeneity of degree 0 fails at 1e-3),
    # and a failed solve is returned as it is (silent fallback).
    "FairGrad": ({"check_homogeneity", "check_method_identity", "check_no_silent_fallback"}, set()),
    # The pseudo-inverse of the unit rows: equal cosines and the summed length; everything passes.
    "ConFIG": (set(), set()),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("UPGrad", marks=_needs_quadprog),
        pytest.param("DualProj", marks=_needs_quadprog),
        "FairGrad",
        "ConFIG",
    ],
)
def test_torchjd_methods_after_the_paper_under_the_kit(name):
    torch.manual_seed(0)
    records = check_aggregator(getattr(adapters, name), on_fail=None)
    assert _outcome(records) == LATER_OUTCOME[name], [r for r in records if r["status"] != "passed"]
    messages = {r["check"]: r["exception"] or "" for r in records}
    if name in ("UPGrad", "DualProj"):
        assert "d in the dual cone" in messages["check_method_identity"]
    if name == "FairGrad":
        assert "α-fair" in messages["check_method_identity"]
