"""Planted bugs: each deliberately broken aggregator must FAIL the check meant to catch it,
while the unbroken method passes that same check. A check that misses its bug is broken."""

import math

import pytest
import torch

from mtlcheck.aggregators import CAGrad, CosReg, EW, GradVac, NashMTL, PCGrad
from mtlcheck.testing import check_aggregator


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


def _status(aggregator, check):
    (record,) = check_aggregator(aggregator, on_fail=None, checks=[check])
    return record


@pytest.mark.parametrize("buggy, correct, check", PLANTED, ids=[p[2] + "-" + getattr(p[0], "__name__", "factory") for p in PLANTED])
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
    assert {r["status"] for r in records} == {"passed"}
    assert len(records) >= 15
    with pytest.raises(AssertionError):
        check_aggregator(GlobalRngPCGrad, on_fail="raise")
