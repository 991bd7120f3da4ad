"""Planted bugs: each deliberately broken aggregator must FAIL the check meant to catch it,
while the unbroken method passes that same check. A check that misses its bug is broken.
The second half plants bugs in third-party-style classes that use only the public protocol
(`implements`, no private hooks), as an outside researcher's code would."""

import importlib.util
import math

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import (
    EW,
    MGDA,
    Aggregation,
    Aggregator,
    AggregatorTags,
    CAGrad,
    CosReg,
    GradVac,
    NashMTL,
    PCGrad,
    WeightingAggregator,
)
from mtlcheck.testing import check_aggregator
from suites.conformance.outsiders import ScaleFreeSolverWeighting, cagrad_dual_slsqp, frank_wolfe_min_norm, nash_lbfgs


class GlobalRngPCGrad(PCGrad):
    """Shuffles with the global torch RNG (as LibMTL's random.shuffle / TorchJD's randperm)."""

    def _order(self, n, i):
        others = [j for j in range(n) if j != i]
        return [others[k] for k in torch.randperm(len(others)).tolist()]


class MeanPretendingSum(EW):
    """Returns the mean Σg/T while its tags declare the sum."""

    def _weights(self, J, losses):
        n = J.n_tasks if J is not None else losses.shape[0]
        return torch.full((n,), 1.0 / n, dtype=torch.float64)


class SilentEWNash(NashMTL):
    """Falls back to equal weighting when the solver fails, without a word (peers' behaviour)."""

    def solve_weights(self, gram):
        try:
            return super().solve_weights(gram)
        except Exception:  # noqa: BLE001 - this is the planted bug
            return torch.ones(gram.shape[0], dtype=torch.float64)


class FirstOrderCosReg(CosReg):
    """Computes the penalty from detached gradients, so it never reaches the parameters."""

    def penalty_term(self, blocks):
        return super().penalty_term([b.detach() for b in blocks])


class SignFlippedGradVac(GradVac):
    """The '+ ρ√(1−φ̂²)' sign error: pushes g_i further away from g_j."""

    def _correction(self, norm_i, norm_j, rho, target):
        root_rho, root_target = math.sqrt(max(1 - rho**2, 0.0)), math.sqrt(max(1 - target**2, 0.0))
        return norm_i * (target * root_rho + rho * root_target) / (norm_j * (root_target + self.eps))


class MutatingPCGrad(PCGrad):
    """Projects in place, overwriting the caller's gradients."""

    def _aggregate(self, J, losses):
        out = super()._aggregate(J, losses)
        J.blocks[0].mul_(0.5)
        return out


class HiddenStateEW(EW):
    """Keeps a step counter that changes its output but declares no state."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)
        self._calls = 0

    def _weights(self, J, losses):
        self._calls += 1
        return super()._weights(J, losses) * self._calls


class ClaimsNonConflictingCAGrad(CAGrad):
    """CAGrad with c = 0.1 is not guaranteed non-conflicting, but claims it."""

    def tags(self):
        return super().tags().replace(non_conflicting=True)


PLANTED = [
    (GlobalRngPCGrad, PCGrad, "check_no_global_rng"),
    (MeanPretendingSum, EW, "check_identical_rows"),
    (SilentEWNash, NashMTL, "check_no_silent_fallback"),
    (FirstOrderCosReg, CosReg, "check_second_order"),
    (SignFlippedGradVac, GradVac, "check_conflict_reduction"),
    (MutatingPCGrad, PCGrad, "check_input_not_mutated"),
    (HiddenStateEW, EW, "check_stateless_idempotent"),
    (lambda: ClaimsNonConflictingCAGrad(c=0.1), lambda: CAGrad(c=1.0), "check_non_conflicting"),
]


# ---- third-party-style planted bugs: the public protocol only ------------------------------------
class FrankWolfeMGDA(WeightingAggregator):
    """MGDA by Frank-Wolfe (Sener & Koltun, Alg. 2) that stops after a few iterations."""

    implements = "mgda"

    def __init__(self, *, iterations: int = 5, seed: int = 0):
        super().__init__(seed=seed)
        self.iterations = iterations

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True)

    def _weights(self, J, losses):
        return frank_wolfe_min_norm(J.gram(), self.iterations)


class SlsqpCAGrad(WeightingAggregator):
    """CAGrad's dual min_w wᵀA1/T + c‖g0‖√(wᵀAw) by SLSQP; when SLSQP reports failure it either
    raises (strict) or keeps its start w = 1/T without a word (the planted bug)."""

    implements = "cagrad"

    def __init__(self, *, c: float = 0.5, maxiter: int = 500, strict: bool = False, seed: int = 0):
        super().__init__(seed=seed)
        self.c, self.maxiter, self.strict = c, maxiter, strict

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="other")

    def identical_rows_scale(self, n_tasks):
        return None

    def _weights(self, J, losses):
        A = J.gram().numpy()
        A = A / np.trace(A)
        n = A.shape[0]
        cc = self.c * math.sqrt(A.mean())
        x0 = np.full(n, 1.0 / n)
        res = cagrad_dual_slsqp(A, cc, eps=1e-16, ftol=1e-14, maxiter=self.maxiter, x0=x0)
        if not res.success and self.strict:
            raise RuntimeError(f"SLSQP failed: {res.message}")
        w = res.x if res.success else x0
        return torch.from_numpy(1.0 / n + cc / math.sqrt(w @ A @ w) * w)


class _NashBase(ScaleFreeSolverWeighting):
    """Nash-MTL's bargaining weights: argmin_α ½αᵀMα − Σ log α, M = GGᵀ/‖GGᵀ‖_F; with
    `fallback` the weights become 1 (equal weighting) whenever the solver library fails."""

    implements = "nash_mtl"

    def __init__(self, *, fallback: bool = True, seed: int = 0):
        super().__init__(seed=seed)
        self.fallback = fallback

    def _weights(self, J, losses):
        M = J.gram().numpy()
        M = M / np.linalg.norm(M)
        try:
            return torch.from_numpy(self._solve_alpha(M))
        except Exception:  # noqa: BLE001 - the planted bug when fallback=True
            if not self.fallback:
                raise
            return torch.ones(M.shape[0], dtype=torch.float64)


class ScipyNash(_NashBase):
    def _solve_alpha(self, M):
        res = nash_lbfgs(M)
        if not res.success:
            raise RuntimeError(f"L-BFGS-B failed: {res.message}")
        return res.x


class CvxpyNash(_NashBase):
    def _solve_alpha(self, M):
        import cvxpy as cp

        a = cp.Variable(M.shape[0], pos=True)
        L = np.linalg.cholesky(M + 1e-12 * np.eye(M.shape[0]))
        cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L.T @ a) - cp.sum(cp.log(a)))).solve()
        return np.asarray(a.value, dtype=np.float64)


class ThirdPartyGradVac(Aggregator):
    """GradVac (Wang et al. Eq. 4) for any T, written without surgery(); sign=-1 plants the
    '+ ρ√(1−φ̂²)' sign error."""

    implements = "gradvac"

    def __init__(self, *, beta: float = 0.5, sign: int = 1, seed: int = 0):
        super().__init__(seed=seed)
        self.beta, self.sign = beta, sign
        self._phi = None

    _state_attrs = ("_phi",)

    def tags(self):
        return AggregatorTags(family="projection", weighted=False, stateful=True, stochastic=True, task_symmetric=False)

    def _aggregate(self, J, losses):
        G = J.matrix()
        n = G.shape[0]
        phi = torch.zeros(n, n, dtype=torch.float64) if self._phi is None else self._phi
        new_phi = phi.clone()
        out = G.clone()
        for i in range(n):
            for j in torch.randperm(n, generator=self.generator).tolist():
                if j == i or float(out[i].norm()) == 0 or float(G[j].norm()) == 0:
                    continue
                rho = float(out[i] @ G[j] / (out[i].norm() * G[j].norm()))
                t = float(phi[i, j])
                if rho < t:
                    r1, r2 = math.sqrt(max(1 - rho**2, 0)), math.sqrt(max(1 - t**2, 0))
                    out[i] = out[i] + out[i].norm() * (t * r1 - self.sign * rho * r2) / (G[j].norm() * r2) * G[j]
                new_phi[i, j] = (1 - self.beta) * t + self.beta * rho
        self._phi = new_phi
        return Aggregation((out.sum(0),), None)


_has_cvxpy = importlib.util.find_spec("cvxpy") is not None

PLANTED_PUBLIC = [
    (FrankWolfeMGDA, MGDA, "check_method_identity"),  # an early-stopping min-norm solver
    (lambda: SlsqpCAGrad(maxiter=1), CAGrad, "check_method_identity"),  # SLSQP left at its start
    (SlsqpCAGrad, lambda: SlsqpCAGrad(strict=True), "check_no_silent_fallback"),
    (ScipyNash, lambda: ScipyNash(fallback=False), "check_no_silent_fallback"),
    pytest.param(
        CvxpyNash,
        lambda: CvxpyNash(fallback=False),
        "check_no_silent_fallback",
        marks=pytest.mark.skipif(not _has_cvxpy, reason="cvxpy is not installed (pip install cvxpy)"),
    ),
    (lambda: ThirdPartyGradVac(sign=-1), ThirdPartyGradVac, "check_method_identity"),
    (lambda: ThirdPartyGradVac(sign=-1), GradVac, "check_method_identity"),
]


@pytest.mark.parametrize(
    "buggy, correct, check",
    PLANTED_PUBLIC,
    ids=[
        "early-stopping-mgda",
        "cagrad-at-start",
        "cagrad-silent-start",
        "nash-scipy-ew",
        "nash-cvxpy-ew",
        "gradvac-flipped-sign",
        "gradvac-flipped-vs-builtin",
    ],
)
def test_planted_bug_is_caught_through_the_public_protocol(buggy, correct, check):
    record = _status(buggy, check)
    assert record["status"] == "failed", f"{check} did not catch the planted bug: {record}"
    assert _status(correct, check)["status"] == "passed", _status(correct, check)


def test_a_correct_third_party_method_passes_its_identity():
    assert _status(ThirdPartyGradVac, "check_method_identity")["status"] == "passed"


def _status(aggregator, check):
    (record,) = check_aggregator(aggregator, on_fail=None, checks=[check])
    return record


@pytest.mark.parametrize(
    "buggy, correct, check", PLANTED, ids=[p[2] + "-" + getattr(p[0], "__name__", "factory") for p in PLANTED]
)
def test_planted_bug_is_caught(buggy, correct, check):
    record = _status(buggy, check)
    assert record["status"] == "failed", f"{check} did not catch the planted bug: {record}"
    assert _status(correct, check)["status"] == "passed"


class EpsilonLeakPCGrad(PCGrad):
    """Adds an epsilon to the direction, so A(0) is not exactly 0."""

    def _aggregate(self, J, losses):
        out = super()._aggregate(J, losses)
        return type(out)(tuple(b + 1e-12 for b in out.blocks), out.weights)


def test_zero_input_catches_epsilon_leak():
    assert _status(EpsilonLeakPCGrad, "check_zero_input")["status"] == "failed"
    assert _status(PCGrad, "check_zero_input")["status"] == "passed"


def test_conflicting_sampler_is_hard_for_the_plain_sum():
    """The non-conflict check is only meaningful if EW conflicts on its inputs."""
    from mtlcheck.testing import samplers

    for n in (2, 3, 5):
        G = samplers.conflicting(n, 12, torch.Generator().manual_seed(0))
        assert float((G @ G.sum(0)).min()) < 0
        assert float((G @ G.T).fill_diagonal_(-1).max()) < 0  # pairwise conflicting


def test_check_aggregator_reports_every_check():
    records = check_aggregator(PCGrad, on_fail=None)
    assert {r["status"] for r in records} == {"passed", "skipped"}
    assert [r["check"] for r in records if r["status"] == "skipped"] == ["check_no_silent_fallback"]  # no solver
    assert len(records) >= 15
    with pytest.raises(AssertionError):
        check_aggregator(GlobalRngPCGrad, on_fail="raise")
