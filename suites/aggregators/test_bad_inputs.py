"""Inputs that used to give silent NaN or dropped gradients now raise a typed error naming them."""

import pytest
import torch

from mtlcheck.aggregators import FAMO, IMTL, GradDrop, Uncertainty
from mtlcheck.jacobian import Jacobian, NonFiniteInputError
from mtlcheck.testing import samplers


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_famo_after_step_refuses_non_finite_losses(bad):
    agg = FAMO()
    agg(None, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="after_step.*NaN or inf"):
        agg.after_step(torch.tensor([1.0, bad, 0.5]))
    # the state is untouched: the next step's weights are still finite and sum to 1
    w = agg(None, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)).weights
    assert torch.isfinite(w).all() and float(w.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("cls, kwargs", [(Uncertainty, {}), (IMTL, {"loss_balance": True})])
def test_loss_balancing_refuses_negative_losses(cls, kwargs):
    """For L < 0 the objectives ½(e^{−s}L + s) (Uncertainty) and e^{s}L − s (IMTL-L) are unbounded
    below in s: the probe (lr 0.1, 300 steps) ran Uncertainty's weight to NaN."""
    agg = cls(lr=0.1, momentum=0.0, **kwargs)
    G = samplers.normal(2, 8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"losses must be >= 0.*unbounded below"):
        agg(None if agg.tags().loss_only else G, torch.tensor([1.0, -0.5], dtype=torch.float64))


def test_uncertainty_weights_stay_finite_at_zero_loss():
    agg = Uncertainty(lr=0.1, momentum=0.0)
    for _ in range(300):
        w = agg(None, torch.tensor([0.0, 1.0], dtype=torch.float64)).weights
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_graddrop_refuses_non_finite_activations(bad):
    n, B, F = 3, 2, 5
    blocks = (torch.randn(n, B * F, dtype=torch.float64),)
    Z = torch.randn(B, F, dtype=torch.float64)
    Z[1, 2] = bad
    J = Jacobian(blocks, (torch.Size([B, F]),), ("z0",), "feature", (Z,))
    with pytest.raises(NonFiniteInputError, match="activations Z of block 'z0'"):
        GradDrop()(J)
    assert issubclass(NonFiniteInputError, ValueError)
