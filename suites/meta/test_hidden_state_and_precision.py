"""Blind spots of the first pass, planted through the public protocol: state the method does not
declare (an EMA that settles on a repeated input, a step counter, state reset() forgets), float32
arithmetic inside the float64 path, and a NaN output reported once. Each planted method must fail
the check meant for it, with a message naming the cause; its correct twin passes that check."""

import math

import pytest
import torch

from mtlcheck.aggregators import EW, AggregatorTags, WeightingAggregator
from mtlcheck.testing import check_aggregator


def _record(aggregator, check):
    (record,) = check_aggregator(aggregator, on_fail=None, checks=[check])
    return record


class CosineEMA(WeightingAggregator):
    """Weights 1 + mean cosine of each task with the others, smoothed by an EMA across calls
    (initialised at the first observation, so a repeated input leaves it unchanged). With
    `declare=False` (the planted bug) it claims stateful=False."""

    def __init__(self, *, beta: float = 0.5, declare: bool = True, seed: int = 0):
        super().__init__(seed=seed)
        self.beta, self.declare = beta, declare
        self._ema = None

    @property
    def _state_attrs(self):
        return ("_ema",) if self.declare else ()

    def tags(self):
        return AggregatorTags(stateful=self.declare, nonneg_weights=True, homogeneity=None)

    def _weights(self, J, losses):
        G = J.matrix()
        U = G / G.norm(dim=1, keepdim=True).clamp_min(1e-300)
        C = U @ U.T
        n = C.shape[0]
        cos = (C.sum(1) - C.diagonal()) / max(n - 1, 1)
        self._ema = cos if self._ema is None else (1 - self.beta) * self._ema + self.beta * cos
        return 1.0 + self._ema.clamp_min(-0.99)


class CountingEW(EW):
    """EW scaled by 1 + steps/10, with a step counter it does not declare (planted) or does."""

    def __init__(self, *, declare: bool = False, seed: int = 0):
        super().__init__(seed=seed)
        self.declare = declare
        self._step = 0

    @property
    def _state_attrs(self):
        return ("_step",) if self.declare else ()

    def tags(self):
        return super().tags().replace(stateful=True)

    def _weights(self, J, losses):
        self._step = (self._step or 0) + 1  # None after reset() when declared
        return super()._weights(J, losses) * (1 + self._step / 10)


class HalfResetEMA(CosineEMA):
    """Declares its EMA but also keeps the last cosines in `_last`, used in the weights, which
    reset() (and state_dict) know nothing about."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)
        self._last = None

    def _weights(self, J, losses):
        w = super()._weights(J, losses)
        if self._last is not None:
            w = w + 0.1 * self._last.abs()
        self._last = self._ema.clone()
        return w


def test_an_ema_that_settles_on_a_repeated_input_is_found_and_named():
    record = _record(lambda: CosineEMA(declare=False), "check_stateless_idempotent")
    assert record["status"] == "failed", record
    assert "not tagged stateful" in record["exception"] and "_ema" in record["exception"]
    # the first pass's probe (the same input twice) saw nothing: the EMA is constant on it
    agg = CosineEMA(declare=False)
    G = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(agg(G).direction, agg(G).direction)
    assert _record(CosineEMA, "check_reset")["status"] == "passed"


def test_an_undeclared_step_counter_is_named():
    for check in ("check_reset", "check_state_roundtrip"):
        record = _record(CountingEW, check)
        assert record["status"] == "failed", record
        assert "_step" in record["exception"], record
        assert _record(lambda: CountingEW(declare=True), check)["status"] == "passed"


def test_state_that_reset_forgets_is_named():
    record = _record(HalfResetEMA, "check_reset")
    assert record["status"] == "failed", record
    assert "_last" in record["exception"] and "_ema" not in record["exception"].split("attribute(s)")[1]


class Float32Gram(WeightingAggregator):
    """IMTL-style equal-projection weights with the Gram taken in float32 (`planted`) or float64."""

    implements = None

    def __init__(self, *, planted: bool = True, seed: int = 0):
        super().__init__(seed=seed)
        self.planted = planted

    def tags(self):
        return AggregatorTags(family="solver", reduction="mean", homogeneity=None)

    def _weights(self, J, losses):
        G = J.matrix()
        M = (G.float() @ G.float().T).double() if self.planted else G @ G.T
        n = M.shape[0]
        w = torch.linalg.solve(M + 1e-3 * M.trace() * torch.eye(n, dtype=M.dtype), torch.ones(n, dtype=M.dtype))
        return w / w.sum()


def test_float32_inside_the_float64_path_is_found_and_named():
    record = _record(Float32Gram, "check_float64_arithmetic")
    assert record["status"] == "failed", record
    assert "float32" in record["exception"]
    assert _record(lambda: Float32Gram(planted=False), "check_float64_arithmetic")["status"] == "passed"
    # the float32/float64 agreement check cannot see it: both paths run the same float32 code
    assert _record(Float32Gram, "check_dtype_agreement")["status"] == "passed"


class NaNAtTask(WeightingAggregator):
    """Divides by a loss difference that is zero for equal losses... and NaN always (planted)."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(homogeneity=None, reduction="other")

    def identical_rows_scale(self, n_tasks):
        return None

    def _weights(self, J, losses):
        w = torch.ones(J.n_tasks, dtype=torch.float64)
        w[-1] = math.nan
        return w


def test_a_nan_output_is_reported_once_as_nan():
    """One cause, one message: the first check that meets the NaN says it in full, each later one
    refers to it; none reports what the NaN breaks (outputs that 'differ between two fresh
    instances', 'float32 and float64 disagree', a conflict)."""
    records = check_aggregator(NaNAtTask, on_fail=None)
    failed = {r["check"]: r["exception"] for r in records if r["status"] == "failed"}
    assert "check_output_contract" in failed and "check_seed_determinism" in failed
    # the base class's output check meets the NaN weights first (before the NaN direction they give)
    assert "returned non-finite weights (NaN or inf)" in failed.pop("check_output_contract")
    assert "non-finite weights on rank_deficient" in failed.pop("check_finite_on_hard_inputs")  # its own inputs
    for check, message in failed.items():
        assert message == "NonFiniteOutput: the same non-finite output as in check_output_contract", (check, message)


@pytest.mark.parametrize("check", ["check_stateless_idempotent", "check_float64_arithmetic"])
def test_the_new_checks_pass_every_builtin_default(check):
    from mtlcheck.aggregators import aggregator_class, list_aggregators
    from mtlcheck.testing.checks import check_names

    for name in list_aggregators():
        cls = aggregator_class(name)
        if check in check_names(cls):
            assert _record(cls, check)["status"] == "passed", name
