"""Planted bugs for the identities of the methods added after the paper (UPGrad, DualProj, ConFIG,
FairGrad):
each wrong version must FAIL `check_method_identity` while the built-in passes it. The wrong
versions use only the public protocol (`implements`), as a third party's code would."""

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import DBMTL, AggregatorTags, ConFIG, DualProj, FairGrad, UPGrad, WeightingAggregator
from mtlcheck.testing import check_aggregator
from suites.conformance.outsiders import ScaleFreeSolverWeighting


class _ConeMethod(WeightingAggregator):
    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="mean")


class MeanProjectingUPGrad(_ConeMethod):
    """Claims UPGrad but projects the mean (DualProj's answer): the projection of the mean is not
    the mean of the projections."""

    implements = "upgrad"

    def _weights(self, J, losses):
        return DualProj()(J).weights


class RegularizedUPGrad(_ConeMethod):
    """UPGrad's QP on the Gram normalised by its Frobenius norm plus 1e-4·I (TorchJD 0.18's default
    `QuadprogProjector(reg_eps=1e-4)`), solved exactly: the projections of a perturbed problem."""

    implements = "upgrad"

    def _weights(self, J, losses):
        from mtlcheck.aggregators._dual_cone import project_weights

        M = J.gram().numpy()
        M = M / np.linalg.norm(M) + 1e-4 * np.eye(M.shape[0])
        n = M.shape[0]
        return torch.from_numpy(project_weights(M, np.eye(n) / n).sum(0))


class EarlyStoppedUPGrad(_ConeMethod):
    """min_{v ≥ u} vᵀMv by projected gradient descent, stopped after 20 iterations."""

    implements = "upgrad"

    def _weights(self, J, losses):
        M = J.gram().numpy()
        M = M / np.trace(M)
        n = M.shape[0]
        step = 1.0 / np.linalg.eigvalsh(M).max()
        total = np.zeros(n)
        for i in range(n):
            u = np.eye(n)[i] / n
            v = u.copy()
            for _ in range(20):
                v = np.maximum(v - step * (M @ v), u)
            total += v
        return torch.from_numpy(total)


class HalfSpaceDualProj(_ConeMethod):
    """Claims DualProj but projects the mean onto each violated half-space ⟨g_i, x⟩ ≥ 0 in turn
    (one pass, PCGrad-style), which leaves the cone when the constraints interact."""

    implements = "dualproj"

    def _weights(self, J, losses):
        M = J.gram()
        n = M.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        for i in range(n):
            dot = float(M[i] @ w)
            if dot < 0:
                w[i] -= dot / float(M[i, i])
        return w


class UnitSumConFIG(WeightingAggregator):
    """Claims ConFIG but takes the sum of the unit gradients (no pseudo-inverse), scaled by the
    sum of the projections: the cosines with the tasks are not equal."""

    implements = "config"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", reduction="sum")

    def _weights(self, J, losses):
        M = J.gram()
        inv = 1.0 / M.diagonal().sqrt()
        v_sq = float(inv @ M @ inv)
        return float((M @ inv).sum()) / v_sq * inv


class SwappedExponentFairGrad(ScaleFreeSolverWeighting):
    """Claims FairGrad(alpha) but solves (GGᵀw)_i = w_i^(−α) (the exponent inverted), by scipy's
    least_squares."""

    implements = "fairgrad"

    def __init__(self, *, alpha: float = 2.0, seed: int = 0):
        super().__init__(seed=seed)
        self.alpha = alpha

    def _weights(self, J, losses):
        from scipy.optimize import least_squares

        M = J.gram().numpy()
        res = least_squares(lambda w: M @ w - w ** (-self.alpha), np.ones(M.shape[0]), bounds=(1e-12, np.inf))
        return torch.from_numpy(res.x)


class UnbalancedDBMTL(DBMTL):
    """DB-MTL without its magnitude balancing: the log-loss EMA terms summed as they are."""

    def _aggregate(self, J, losses):
        out = super()._aggregate(J, losses)
        return type(out)(tuple(b.sum(0) for b in self._buffer), None)


PLANTED = [
    (MeanProjectingUPGrad, UPGrad),
    (RegularizedUPGrad, UPGrad),
    (EarlyStoppedUPGrad, UPGrad),
    (HalfSpaceDualProj, DualProj),
    (UnitSumConFIG, ConFIG),
    (SwappedExponentFairGrad, lambda: FairGrad(alpha=2.0)),
    (UnbalancedDBMTL, DBMTL),
]


def _status(aggregator, check="check_method_identity"):
    (record,) = check_aggregator(aggregator, on_fail=None, checks=[check])
    return record


@pytest.mark.parametrize("buggy, correct", PLANTED, ids=[b.__name__ for b, _ in PLANTED])
def test_planted_bug_is_caught_by_the_identity(buggy, correct):
    record = _status(buggy)
    assert record["status"] == "failed", f"check_method_identity did not catch {buggy.__name__}: {record}"
    assert _status(correct)["status"] == "passed", _status(correct)
