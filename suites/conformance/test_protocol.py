"""The kit's public protocol as an outside researcher meets it: adapters written from the README's
"Checking a third-party implementation" alone (a projection, a solver and a second-order
method), skipped checks with reasons, expectations keyed by class identity, and the fixes for
false alarms and crashes."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from mtlcheck.aggregators import (
    Aggregation,
    Aggregator,
    AggregatorTags,
    GradVac,
    SecondOrderMethod,
    WeightingAggregator,
)
from mtlcheck.testing import CheckSkipped, check_aggregator, faults, parametrize_with_checks
from mtlcheck.testing.kit import builtin_variants


# ---- "their" library: plain functions, as another project would ship them -------------------------
def their_pcgrad_mean(G: torch.Tensor) -> torch.Tensor:
    """PCGrad for T = 2..n in a fixed order, averaged (a peer's 'mean' convention)."""
    out = G.clone()
    for i in range(G.shape[0]):
        for j in range(G.shape[0]):
            dot = float(out[i] @ G[j])
            if j != i and dot < 0 and float(G[j] @ G[j]) > 0:
                out[i] = out[i] - dot / float(G[j] @ G[j]) * G[j]
    return out.mean(0)


def their_min_norm(gram: np.ndarray) -> np.ndarray:
    """Min-norm point of the hull: NNLS on ‖Lᵀw‖² + (1e3(Σw − 1))², then w / Σw."""
    n = gram.shape[0]
    lam, V = np.linalg.eigh(gram)
    L = V * np.sqrt(np.clip(lam, 0.0, None))  # gram = L Lᵀ
    A = np.vstack([L.T, 1e3 * np.ones((1, n))])
    b = np.concatenate([np.zeros(n), [1e3]])
    w, _ = nnls(A, b)
    return w / w.sum()


def their_cosine_penalty(blocks, weight=1.0):
    gram = sum(b @ b.T for b in blocks)
    norms = gram.diagonal().sqrt()
    cos = gram / torch.outer(norms, norms)
    n = gram.shape[0]
    return weight * (cos**2).sum().sub(n).div(n * n - n)


# ---- adapters written from the README alone --------------------------------------------------------
class TheirPCGrad(Aggregator):
    implements = "pcgrad"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="projection", weighted=False, reduction="mean", task_symmetric=False)

    def _aggregate(self, J, losses):
        return Aggregation(J.split(their_pcgrad_mean(J.matrix())), None)


class TheirMGDA(WeightingAggregator):
    implements = "mgda"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True)

    def _weights(self, J, losses):
        return torch.from_numpy(their_min_norm(J.gram().numpy()))


class TheirCosReg(SecondOrderMethod, WeightingAggregator):
    def __init__(self, *, weight: float = 1.0, seed: int = 0):
        super().__init__(seed=seed)
        self.weight = weight

    def tags(self):
        return AggregatorTags(family="regularizer", nonneg_weights=True, second_order=True)

    def penalty_term(self, blocks):
        return their_cosine_penalty(blocks, self.weight)

    def _weights(self, J, losses):
        return torch.ones(J.n_tasks, dtype=torch.float64)


@pytest.mark.parametrize("adapter", [TheirPCGrad, TheirMGDA, TheirCosReg])
def test_docs_only_adapters_run_every_applicable_check(adapter):
    records = check_aggregator(adapter, on_fail=None)
    assert not any("AttributeError" in (r["exception"] or "") for r in records), records
    assert [r for r in records if r["status"] == "failed"] == []
    statuses = {r["check"]: r["status"] for r in records}
    if adapter is TheirMGDA:
        assert statuses["check_method_identity"] == "passed"
        assert statuses["check_no_silent_fallback"] == "passed"  # nnls / eigh failures propagate
    if adapter is TheirPCGrad:
        assert statuses["check_conflict_reduction"] == "skipped"  # no surgery(): reported, not an error
        assert statuses["check_method_identity"] == "passed"
        assert statuses["check_projection_identity_without_conflict"] == "passed"  # honours reduction="mean"
    if adapter is TheirCosReg:
        assert statuses["check_second_order"] == "passed"


@parametrize_with_checks([TheirPCGrad])
def test_pytest_reports_a_missing_hook_as_skipped(aggregator, check):
    check(aggregator)  # check_conflict_reduction shows as SKIPPED with its reason


def test_skip_reason_names_the_hook():
    (record,) = check_aggregator(TheirPCGrad, on_fail=None, checks=["check_conflict_reduction"])
    assert record["status"] == "skipped" and "surgery(J)" in record["reason"] and "ProjectionMethod" in record["reason"]
    assert issubclass(CheckSkipped, Exception)


class Float32CosReg(TheirCosReg):
    """The penalty computed in float32 (as a float32 training library would)."""

    def penalty_term(self, blocks):
        return their_cosine_penalty([b.float() for b in blocks], self.weight)


class DetachedCosReg(TheirCosReg):
    def penalty_term(self, blocks):
        return their_cosine_penalty([b.detach() for b in blocks], self.weight)


def test_second_order_float32_penalty_is_not_a_false_alarm_and_detaching_still_fails():
    assert check_aggregator(Float32CosReg, on_fail=None, checks=["check_second_order"])[0]["status"] == "passed"
    (record,) = check_aggregator(DetachedCosReg, on_fail=None, checks=["check_second_order"])
    assert record["status"] == "failed" and "double backprop" in record["exception"]


class RenamedArgument(WeightingAggregator):
    """Stores its constructor argument `scale` as `self._scale`."""

    def __init__(self, *, scale: float = 2.0, seed: int = 0):
        super().__init__(seed=seed)
        self._scale = scale

    def tags(self):
        return AggregatorTags(reduction="other", nonneg_weights=True)

    def identical_rows_scale(self, n_tasks):
        return n_tasks * self._scale

    def _weights(self, J, losses):
        return torch.full((J.n_tasks,), self._scale, dtype=torch.float64)


def test_an_argument_stored_under_another_name_is_a_failed_check_not_a_crash():
    assert repr(RenamedArgument(scale=3.0)) == "RenamedArgument(scale=?)"
    records = check_aggregator(RenamedArgument(scale=3.0), on_fail=None)
    failed = {r["check"]: r["exception"] for r in records if r["status"] == "failed"}
    assert list(failed) == ["check_registry_and_config"], failed
    assert "'scale'" in failed["check_registry_and_config"] and "own name" in failed["check_registry_and_config"]
    assert len(records) > 15  # every other check still ran


class NashMTL(WeightingAggregator):
    """A user's class that happens to share a built-in's name (equal weights)."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(nonneg_weights=True)

    def _weights(self, J, losses):
        return torch.ones(J.n_tasks, dtype=torch.float64)


class MyGradVac(GradVac):
    pass


def test_expectations_and_variants_are_keyed_by_class_identity():
    records = check_aggregator(NashMTL, on_fail=None)
    assert {r["status"] for r in records} <= {"passed", "skipped"}, [
        r for r in records if r["status"] not in ("passed", "skipped")
    ]
    assert all(r["reason"] is None for r in records if r["status"] == "passed")  # no inherited xfail reason
    assert len(builtin_variants(NashMTL)) == 1
    assert len(builtin_variants(MyGradVac)) == 1 and len(builtin_variants(GradVac)) == 3


def test_failing_backend_restores_every_reference():
    from numpy.linalg import solve as bound_solve

    original_np, original_torch = np.linalg.solve, torch.linalg.eigh
    with faults.failing_backend("numpy.linalg") as calls:
        with pytest.raises(np.linalg.LinAlgError):
            np.linalg.solve(np.eye(2), np.ones(2))
        with pytest.raises(np.linalg.LinAlgError):
            globals()["np"].linalg.pinv(np.eye(2))
    assert calls.count == 2 and np.linalg.solve is original_np and bound_solve is original_np
    with faults.failing_backend("torch.linalg"):
        with pytest.raises(torch.linalg.LinAlgError):
            torch.linalg.eigh(torch.eye(2))
    assert torch.linalg.eigh is original_torch
    with faults.failing_backend("scipy.optimize"):
        from scipy import optimize

        res = optimize.minimize(lambda x: float(x @ x), np.ones(2))
        assert not res.success and np.array_equal(res.x, np.ones(2))
    assert optimize.minimize(lambda x: float(x @ x), np.ones(2)).success


def test_identity_hard_cases_are_full_rank_and_as_described():
    from mtlcheck.testing.identities import TASK_COUNTS, hard_cases

    for n in TASK_COUNTS:
        cases = hard_cases(n)
        for label, G in cases.items():
            assert int(torch.linalg.matrix_rank(G)) == n, (label, n)
        norms = cases["dominant task (norms 1e4 apart)"].norm(dim=1)
        assert float(norms.max() / norms.min()) == pytest.approx(1e4)
        sv = torch.linalg.svdvals(cases["ill-conditioned (cond 1e3)"])
        assert n == 1 or float(sv.max() / sv.min()) == pytest.approx(1e3)
    pair = hard_cases(2)["conflicting pair"]
    assert float(torch.nn.functional.cosine_similarity(pair[0], pair[1], dim=0)) < -0.9


def test_identity_message_names_the_condition_and_the_amount():
    class SumNotMGDA(WeightingAggregator):
        implements = "mgda"

        def tags(self):
            return AggregatorTags(nonneg_weights=True, reduction="mean")

        def _weights(self, J, losses):
            return torch.full((J.n_tasks,), 1.0 / J.n_tasks, dtype=torch.float64)

    (record,) = check_aggregator(SumNotMGDA, on_fail=None, checks=["check_method_identity"])
    assert record["status"] == "failed"
    assert "KKT ⟨g_i, d⟩ ≥ ‖d‖²" in record["exception"] and "violated by" in record["exception"]
    assert "tolerance 1e-06" in record["exception"] and "dominant task" in record["exception"]


ADAPTER_MODULE = """
import torch
from mtlcheck.aggregators import AggregatorTags, WeightingAggregator

class Scaled(WeightingAggregator):
    def __init__(self, *, scale: float = 1.0, seed: int = 0):
        super().__init__(seed=seed)
        self.scale = scale

    def tags(self):
        return AggregatorTags(nonneg_weights=True, reduction="other")

    def identical_rows_scale(self, n_tasks):
        return n_tasks * self.scale

    def _weights(self, J, losses):
        return torch.full((J.n_tasks,), self.scale, dtype=torch.float64)
"""


def test_cli_check_imports_from_the_working_folder_and_takes_config(tmp_path, monkeypatch, capsys):
    import sys

    from mtlcheck.study.cli import main

    (tmp_path / "kit_adapter_mod.py").write_text(ADAPTER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "kit_adapter_mod", raising=False)
    assert main(["check", "kit_adapter_mod:Scaled", "--config", "scale=2.5"]) == 0
    out = capsys.readouterr().out
    assert "Scaled(scale=2.5): " in out and "ok" in out
    assert main(["check", "kit_adapter_mod:Scaled", "--config", "nope=1"]) == 2
    assert "Scaled has no parameter(s) ['nope']" in capsys.readouterr().err
    assert main(["check", "aligned_mtl_ub", "--config", "scale_mode=rmse"]) == 0  # the alias resolves
    assert "AlignedMTL(scale_mode='rmse')" in capsys.readouterr().out


def test_one_registration_per_defining_property():
    """IDENTITIES is what the identity checks registered, and every built-in's claim is among them."""
    from mtlcheck.aggregators import aggregator_class, list_aggregators
    from mtlcheck.testing import identities

    assert identities.IDENTITIES == tuple(identities.IDENTITY_CHECKS)
    claimed = {aggregator_class(name)().implements for name in list_aggregators()} - {None}
    assert claimed <= set(identities.IDENTITIES), claimed - set(identities.IDENTITIES)
    assert "gradvac" in claimed and "gradvac" in identities.IDENTITIES


def test_the_moved_identities_name_says_where_it_went():
    """`IDENTITIES` lives with the kit's registry (`mtlcheck.testing.identities`); the old path
    `mtlcheck.aggregators.IDENTITIES` names the new one instead of a bare AttributeError."""
    import mtlcheck.aggregators as aggregators
    from mtlcheck.testing.identities import IDENTITIES

    assert "mgda" in IDENTITIES
    with pytest.raises(AttributeError, match=r"moved to mtlcheck\.testing\.identities\.IDENTITIES"):
        aggregators.IDENTITIES  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        aggregators.nonexistent  # noqa: B018
