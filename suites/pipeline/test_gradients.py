"""The gradient engine: exactness against plain autograd, engines agree, Z structures, errors."""

import pytest
import torch
from torch import nn

from mtlcheck.aggregators import EW, MGDA, RLW, CosReg, PCGrad
from mtlcheck.gradients import NonFiniteLossError, backward_step
from mtlcheck.jacobian import Jacobian
from mtlcheck.models import MultiTaskModel
from mtlcheck.models.toy import ToyRegression


def toy(dtype=torch.float32):
    model = ToyRegression(n_tasks=3, in_features=6, hidden=8).to(dtype)
    return model, ToyRegression.make_batch(3, 7, 6, dtype=dtype)


def shared_grad(model):
    return torch.cat([p.grad.reshape(-1) for _, p in model.shared_parameters()])


def test_parameter_jacobian_is_bitwise_equal_to_per_task_autograd():
    model, batch = toy()
    result = backward_step(model, batch, MGDA())
    z = model.encode(batch)
    params = [p for _, p in model.shared_parameters()]
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params, retain_graph=True)])
        for L in model.task_losses(z, batch).values()
    ]
    assert torch.equal(result.jacobian.matrix(), torch.stack(rows))


def test_batched_engine_agrees_with_the_loop():
    model, batch = toy()
    loop = backward_step(model, batch, PCGrad(), param_gram=True).jacobian.matrix()
    model.zero_grad()
    batched = backward_step(model, batch, PCGrad(), batched=True).jacobian.matrix()
    assert torch.allclose(batched, loop, rtol=1e-5, atol=1e-7 * float(loop.abs().max()))


def test_ew_step_equals_backward_of_the_summed_loss():
    model, batch = toy(torch.float64)
    backward_step(model, batch, EW())
    engine = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    z = model.encode(batch)
    sum(model.task_losses(z, batch).values()).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(engine[n], p.grad, rtol=1e-12, atol=1e-14), n


def test_loss_only_methods_weight_every_parameter():
    model, batch = toy(torch.float64)
    result = backward_step(model, batch, RLW(seed=3))
    engine = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    z = model.encode(batch)
    L = torch.stack(list(model.task_losses(z, batch).values()))
    (result.weights * L).sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(engine[n], p.grad, rtol=1e-12, atol=1e-14), n


def test_monitoring_outputs_match_definitions():
    model, batch = toy(torch.float64)
    result = backward_step(model, batch, EW(), feature_grads=True, param_gram=True)
    z = model.encode(batch)
    losses = list(model.task_losses(z, batch).values())
    gz = torch.stack([torch.autograd.grad(L, z, retain_graph=True)[0] for L in losses])
    assert torch.allclose(result.feature_grads[0], gz)
    params = [p for _, p in model.shared_parameters()]
    G = torch.stack(
        [torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params, retain_graph=True)]) for L in losses]
    )
    assert torch.allclose(result.param_gram, G @ G.T, rtol=1e-10)


class TwoLevel(MultiTaskModel):
    """Z is a pair of tensors; task 'b' never reads the second level (an RoI-like unused level)."""

    task_names = ("a", "b")

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Linear(3, 4)
        self.enc2 = nn.Linear(3, 2)
        self.head_a = nn.Linear(6, 1)
        self.head_b = nn.Linear(4, 1)

    def encode(self, batch):
        x = batch["x"]
        return (torch.tanh(self.enc1(x)), torch.tanh(self.enc2(x)))

    def task_losses(self, z, batch):
        z1, z2 = z
        return {"a": self.head_a(torch.cat([z1, z2], 1)).pow(2).mean(), "b": self.head_b(z1).pow(2).mean()}

    def predict(self, batch):
        return {}

    def shared_parameters(self):
        return list(self.enc1.named_parameters(prefix="enc1")) + list(self.enc2.named_parameters(prefix="enc2"))


@pytest.mark.parametrize("level", ["parameter", "feature"])
def test_tuple_representation_with_an_unused_level_gives_zeros(level):
    model = TwoLevel()
    batch = {"x": torch.randn(5, 3, generator=torch.Generator().manual_seed(0))}
    result = backward_step(model, batch, MGDA(), level=level, feature_grads=True)
    assert torch.equal(result.feature_grads[1][1], torch.zeros(5, 2))  # task b, level 2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    if level == "parameter":
        enc2_rows = result.jacobian.blocks[2]  # enc2.weight block
        assert torch.equal(enc2_rows[1], torch.zeros_like(enc2_rows[1]))


def test_loss_only_method_at_feature_level_raises():
    model, batch = toy()
    with pytest.raises(ValueError, match="no feature-level variant"):
        backward_step(model, batch, EW(), level="feature")


def test_non_finite_loss_raises_the_divergence_error():
    model, batch = toy()
    batch["y"][0, 1] = float("nan")
    with pytest.raises(NonFiniteLossError, match="task1"):
        backward_step(model, batch, EW())


class Misnamed(ToyRegression):
    def task_losses(self, z, batch):
        losses = super().task_losses(z, batch)
        return {name.upper(): value for name, value in losses.items()}


def test_wrong_task_names_are_named():
    model, batch = Misnamed(n_tasks=3), ToyRegression.make_batch(3, 7, 6)
    with pytest.raises(ValueError, match="expected"):
        backward_step(model, batch, EW())


def test_bad_level_is_named():
    model, batch = toy()
    with pytest.raises(ValueError, match="level"):
        backward_step(model, batch, EW(), level="pixel")


def test_cosreg_feature_level_differs_from_the_plain_sum():
    model, batch = toy(torch.float64)
    backward_step(model, batch, CosReg(penalty=10.0), level="feature")
    reg = shared_grad(model).clone()
    model.zero_grad()
    backward_step(model, batch, EW())
    assert not torch.allclose(reg, shared_grad(model))


def test_float32_gram_is_accurate_to_1e5_against_float64():
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(3, 2_000_000, generator=gen) * 1e-2 + 1e-3
    exact = big.double() @ big.double().T
    approx = Jacobian.from_matrix(big).gram()
    assert float(((approx - exact).abs() / exact.abs().max()).max()) < 1e-5


@pytest.mark.parametrize("method", [EW, RLW])
def test_monitored_loss_only_step_takes_its_update_from_the_rows_it_computed(method):
    """With param_gram the T rows exist, so the encoder update Σ w_i g_i is formed from them
    instead of one more encoder backward; it must be the same update."""
    model, batch = toy(torch.float64)
    plain = backward_step(model, batch, method(seed=2))
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    monitored = backward_step(model, batch, method(seed=2), param_gram=True, feature_grads=True)
    assert torch.equal(monitored.weights, plain.weights)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, expected[n], rtol=1e-12, atol=1e-14), n
    model.zero_grad(set_to_none=True)
    rows = backward_step(model, batch, PCGrad(), level="parameter").jacobian
    assert torch.allclose(monitored.param_gram, rows.gram(), rtol=1e-12)


class _PartlySharedToy(ToyRegression):
    """An encoder whose first layer is left out of shared_parameters() (so it counts as a head)."""

    def shared_parameters(self):
        return list(self.encoder[2].named_parameters(prefix="encoder.2"))


def test_monitored_loss_only_step_still_reaches_encoder_parameters_outside_shared():
    model = _PartlySharedToy(n_tasks=3, in_features=6, hidden=8).double()
    batch = ToyRegression.make_batch(3, 7, 6, dtype=torch.float64)
    backward_step(model, batch, EW())
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    result = backward_step(model, batch, EW(), param_gram=True)
    assert result.param_gram is not None
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.allclose(p.grad, expected[n], rtol=1e-12, atol=1e-14), n


def test_combine_keeps_its_contract_in_every_dtype():
    gen = torch.Generator().manual_seed(3)
    w = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64)
    for dtype, tol in ((torch.float64, 1e-15), (torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        B = torch.randn(3, 50_000, generator=gen).to(dtype)
        exact = w @ B.double()
        got = Jacobian.from_matrix(B).combine(w)[0]
        assert got.dtype == dtype
        assert float((got.double() - exact).abs().max() / exact.abs().max()) < tol, dtype
    J = Jacobian.from_matrix(torch.randn(3, 10, generator=gen))
    with pytest.raises(ValueError, match="shape"):
        J.combine(torch.ones(2))
    weights = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = J.combine(weights)[0]
    assert out.requires_grad  # a graph through the weights is kept
    (g,) = torch.autograd.grad(out.sum(), weights)
    assert torch.allclose(g, J.blocks[0].sum(1))


@pytest.mark.parametrize(
    "dtype, weights, scales, tol",
    [
        (torch.float16, [1e6, 1.0, 1e-7], [1e-6, 1.0, 1e4], 2e-3),  # past 65504, and an fp16 subnormal
        (torch.bfloat16, [1e39, 1.0, 1.0], [1e-36, 1.0, 1.0], 1e-2),  # past bf16's (float32's) range
        (torch.float32, [1e40, 1.0, 0.5], [1e-37, 1e3, 1.0], 1e-6),
        (torch.float16, [1e-6, 1.0, 1.0], [1e4, 1e-2, 1e-2], 1e-3),  # a subnormal weight alone: 5 bits, 1 % off
    ],
)
def test_combine_forms_weights_the_dtype_cannot_hold_in_a_wider_dtype(dtype, weights, scales, tol):
    """Weights past the block dtype's range (a DB-MTL weight max‖ĝ_j‖/‖ĝ_i‖ for a tiny row) or
    below its normal numbers: the sum is formed in the next wider dtype and rounded once, so it is
    finite where the direction fits and off by the rounding alone (before: inf, or a weight with 5
    bits), with a graph through the weights kept."""
    gen = torch.Generator().manual_seed(5)
    B = (torch.randn(3, 2_000, generator=gen, dtype=torch.float64) * torch.tensor(scales)[:, None]).to(dtype)
    w = torch.tensor(weights, dtype=torch.float64)
    exact = w @ B.double()
    for J in (Jacobian.from_matrix(B), _two_blocks(B, torch.float64)):
        got = J.combine(w)[0]
        assert got.dtype == dtype and bool(torch.isfinite(got).all())
        assert float((got.double() - exact[: got.shape[0]]).abs().max() / exact.abs().max()) < tol
    per_block = _two_blocks(B, torch.float64).combine_per_block(torch.stack([w, torch.ones(3, dtype=torch.float64)]))
    assert float((per_block[0].double() - exact[:1_000]).abs().max() / exact.abs().max()) < tol
    graph = torch.tensor(weights, dtype=torch.float64, requires_grad=True)
    out = Jacobian.from_matrix(B).combine(graph)[0]
    (g,) = torch.autograd.grad(out.double().sum(), graph)
    torch.testing.assert_close(g, B.double().sum(1), rtol=tol, atol=0)
    too_big = torch.tensor([10 * torch.finfo(dtype).max / scales[0], 0.0, 0.0], dtype=torch.float64)
    assert bool(torch.isinf(Jacobian.from_matrix(B).combine(too_big)[0]).any())  # a direction past the range


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_combination_is_the_float32_sum_rounded_once(dtype):
    """Σ_i w_i g_i of fp16/bf16 rows is formed in float32 with the weights in float32 and rounded
    once: bit for bit the float32 combination of the same values, rounded. Five fp16 rows of
    65504 weighted 1/5 give 65504 (with the weights rounded to fp16 they summed to 1.0003 and the
    direction was inf: a finite G refused)."""
    gen = torch.Generator().manual_seed(3)
    B = torch.randn(5, 3_000, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.rand(5, generator=gen, dtype=torch.float64)
    for J in (Jacobian.from_matrix(B), _two_blocks(B, dtype)):
        got = torch.cat(J.combine(w))
        assert got.dtype == dtype
        assert torch.equal(got, torch.cat(J.map_blocks(lambda b: b.float()).combine(w)).to(dtype))
    top = torch.full((5, 4), torch.finfo(dtype).max, dtype=dtype)
    fifth = torch.full((5,), 0.2, dtype=torch.float64)
    assert torch.equal(Jacobian.from_matrix(top).combine(fifth)[0], top[0])


def _two_blocks(B, second_dtype):
    """B's first 1000 columns as one block and the rest, in `second_dtype`, as another."""
    a, b = B[:, :1_000], B[:, 1_000:].to(second_dtype)
    return Jacobian((a, b), (torch.Size([a.shape[1]]), torch.Size([b.shape[1]])), ("a", "b"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gram_keeps_rows_far_smaller_than_another(dtype):
    """Rows 1, 1e-30 and 1e-25: the float32 products of the small rows underflow at any scale
    common to the block, so the fallback scales each row by its own power of two and takes the
    powers out in float64: every entry is the float64 Gram's (before, the small rows' entries
    were 0). (fp16 rows cannot be far enough apart: their float32 products keep them.)"""
    small = (1e-30, 1e-25)
    gen = torch.Generator().manual_seed(9)
    G = (torch.randn(3, 3_000, generator=gen, dtype=torch.float64) * torch.tensor([1.0, *small])[:, None]).to(dtype)
    exact = G.double() @ G.double().T
    for J in (Jacobian.from_matrix(G), _two_blocks(G, dtype)):
        got = J.gram()
        torch.testing.assert_close(
            got / exact.diagonal().sqrt().outer(exact.diagonal().sqrt()),
            exact / exact.diagonal().sqrt().outer(exact.diagonal().sqrt()),
            rtol=0,
            atol=1e-6,
        )


def test_gram_over_several_spans_and_remainders_in_every_dtype(monkeypatch):
    """Blocks are multiplied span by span (a bf16/fp16 span upcast to float32 at a time), each
    span in 8192-column chunks plus a remainder: small spans here exercise all of it."""
    from mtlcheck import jacobian

    monkeypatch.setattr(jacobian, "_GRAM_SPAN", 20_000)
    gen = torch.Generator().manual_seed(4)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        B = (torch.randn(3, 50_000, generator=gen) + 0.1).to(dtype)  # spans 20k, 20k, 10k
        exact = B.double() @ B.double().T
        got = Jacobian.from_matrix(B).gram()
        assert float(((got - exact).abs() / exact.abs().max()).max()) < 1e-5, dtype
