"""Every Gram-based method gives the same step at any representable positive scale of G.

G Gᵀ of float32 rows at ~1e-24 underflows in the float32 products, and of float64 rows at
~1e-170 in float64; the Jacobian keeps its Gram as 4^S · Ĝ (powers of two: exact), so a method
of homogeneity k returns exactly c^k A(G) for c = 2^m, not a zero or drifting direction."""

import pytest
import torch

from mtlcheck.aggregators import aggregator_class, list_aggregators
from mtlcheck.jacobian import Jacobian
from mtlcheck.testing import samplers

# (dtype, exponent m of c = 2^m): float32 at 8e-25 and 1e18 (products overflow float32), float64
# at 8e-171 and 4e168 (the Gram overflows float64)
SCALES = [(torch.float32, -80), (torch.float32, 60), (torch.float64, -565), (torch.float64, 560)]
GRADIENT_METHODS = [
    n
    for n in list_aggregators()
    if not (t := aggregator_class(n)().tags()).loss_only and not t.second_order and t.homogeneity is not None
]


def test_the_methods_of_the_issue_are_covered():
    assert {"aligned_mtl", "cagrad", "imtl", "nash_mtl", "mgda", "pcgrad", "gradvac"} <= set(GRADIENT_METHODS)


@pytest.mark.parametrize("dtype, m", SCALES, ids=[f"{str(d)[6:]}-2^{m}" for d, m in SCALES])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_direction_at_extreme_scales(name, dtype, m):
    cls = aggregator_class(name)
    k = cls().tags().homogeneity
    G = samplers.conflicting(4, 64, torch.Generator().manual_seed(2)).to(dtype)
    losses = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    base = cls()(G, losses).direction
    got = cls()(G * 2.0**m, losses).direction
    assert torch.isfinite(got).all()
    back = got * 2.0 ** (-m * k)  # exact: compare at the scale of G (norms of 1e-170 vectors underflow)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert float(back.norm()) > 0
    assert float((back - base).norm()) <= tol * float(base.norm()), (
        f"{name}: A(2^{m} G) != 2^{m * k} A(G) (cos {float(back @ base / (back.norm() * base.norm())):.6f})"
    )


@pytest.mark.parametrize("dtype, m", SCALES, ids=[f"{str(d)[6:]}-2^{m}" for d, m in SCALES])
def test_scaled_gram_is_exact_at_extreme_scales(dtype, m):
    G = samplers.normal(3, 5000, torch.Generator().manual_seed(0)).to(dtype)
    J, Jc = Jacobian.from_matrix(G), Jacobian.from_matrix(G * 2.0**m)
    assert torch.equal(Jc.scaled_gram(), J.scaled_gram())
    assert Jc.gram_exponent == J.gram_exponent + m
    assert 1 <= float(J.scaled_gram().diagonal().max()) < 4


def test_gram_of_float32_rows_at_1e_24_is_the_true_gram():
    G = samplers.normal(3, 1000, torch.Generator().manual_seed(1))
    small = (G * 1e-24).float()
    expected = small.double() @ small.double().T  # ~1e-45: representable in float64
    got = Jacobian.from_matrix(small).gram()
    assert float((got - expected).abs().max()) <= 1e-6 * float(expected.abs().max())


def test_the_fast_path_is_unchanged_at_ordinary_scales():
    """No rescaling where nothing underflows: the Gram is the plain blockwise product."""
    from mtlcheck.jacobian import _block_gram

    blocks = (torch.randn(3, 20000, dtype=torch.float32), torch.randn(3, 7, dtype=torch.float32) * 1e-3)
    J = Jacobian(blocks, (torch.Size([20000]), torch.Size([7])), ("a", "b"))
    plain = _block_gram(blocks[0]) + _block_gram(blocks[1])
    assert torch.equal(J.gram(), (plain + plain.T) / 2)


def test_zero_rows_and_zero_blocks_stay_zero():
    G = torch.zeros(3, 10, dtype=torch.float32)
    G[0, :5] = 1e-30
    J = Jacobian.from_matrix(G)
    assert float(J.scaled_gram()[1:].abs().max()) == 0 and float(J.scaled_gram()[0, 0]) > 0
    assert torch.equal(Jacobian.from_matrix(torch.zeros(2, 4)).scaled_gram(), torch.zeros(2, 2, dtype=torch.float64))
