"""The input check that refuses NaN and inf: with the Gram for a method that reads it, an aminmax per
block for one that does not (`tags().reads_gram`), before any state changes."""

from unittest import mock

import pytest
import torch

from mtlcheck.aggregators import get_aggregator, list_aggregators
from mtlcheck.gradients import backward_step
from mtlcheck.jacobian import Jacobian, NonFiniteInputError, all_finite
from mtlcheck.models.toy import ToyRegression
from mtlcheck.testing import samplers


def _gradient_methods():
    return [n for n in list_aggregators() if not get_aggregator(n).tags().loss_only]


@pytest.mark.parametrize("level", ["parameter", "feature"])
@pytest.mark.parametrize("name", _gradient_methods())
def test_reads_gram_says_whether_the_method_computes_the_gram_of_its_input(name, level):
    """A method tagged reads_gram=False that computed the Gram would pay for a sum and a Gram; one
    tagged True that never reads it pays for a Gram where a sum would do."""
    agg = get_aggregator(name)
    reads = []
    for step in range(3):  # stateful methods: their first and later steps
        G = samplers.normal(3, 40, torch.Generator().manual_seed(step))
        if level == "parameter":
            J = Jacobian.from_matrix(G)
        else:  # a batch of 4 rows of 10 features, with the activations GradDrop reads
            z = torch.randn(4, 10, generator=torch.Generator().manual_seed(10 + step), dtype=torch.float64)
            J = Jacobian((G,), (torch.Size([4, 10]),), ("z0",), "feature", (z,))
        agg._n_tasks = 3
        agg._aggregate(J, torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
        reads.append("scaled_block_grams" in J._cache)
    assert reads == [agg.tags().reads_gram] * 3, f"{name} ({level}): computed the Gram of G at steps {reads}"


def test_is_finite_finds_nan_and_inf_in_any_block_and_dtype():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        blocks = (torch.ones(3, 5, dtype=dtype), torch.ones(3, 7, dtype=dtype))
        J = Jacobian(blocks, (torch.Size([5]), torch.Size([7])), ("a", "b"))
        assert J.is_finite()
        for bad in (float("nan"), float("inf"), -float("inf")):
            broken = blocks[1].clone()
            broken[2, 6] = bad
            assert not Jacobian((blocks[0], broken), J.shapes, J.names).is_finite(), (dtype, bad)


def test_all_finite_over_a_list_of_tensors_of_any_shape():
    tensors = [torch.ones(3, 4), torch.zeros(0), torch.ones(2, 2, 2, dtype=torch.float64), torch.ones(2, 5).T]
    assert all_finite(tensors) and all_finite([])
    for bad in (float("nan"), float("inf")):
        broken = [t.clone() for t in tensors]
        broken[2][1, 0, 1] = bad
        assert not all_finite(broken)
        assert not all_finite([torch.tensor([1 + 0j, complex(0, bad)])])  # the imaginary part too
    assert all_finite([torch.tensor([1 + 2j, 3 - 1j])])


def test_is_finite_accepts_finite_entries_whose_sum_overflows():
    for dtype, big in ((torch.float32, 3e38), (torch.float64, 1.7e308), (torch.bfloat16, 3e38)):
        block = torch.full((2, 4), big, dtype=dtype)
        summed = block.sum(dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        assert not torch.isfinite(summed), dtype  # the check's sum overflows; the entries are finite
        assert Jacobian.from_matrix(block).is_finite(), dtype


@pytest.mark.parametrize("name", [n for n in _gradient_methods() if not get_aggregator(n).tags().reads_gram])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_method_that_reads_no_gram_refuses_nan_and_inf_and_keeps_its_state(name, bad):
    agg = get_aggregator(name)
    losses = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    agg(samplers.normal(3, 40, torch.Generator().manual_seed(0)), losses)
    before = agg.state_dict()
    G = samplers.normal(3, 40, torch.Generator().manual_seed(1))
    blocks = (G[:, :25], G[:, 25:].clone())
    blocks[1][1, 3] = bad
    J = Jacobian(blocks, (torch.Size([25]), torch.Size([15])), ("conv.weight", "fc.bias"))
    with pytest.raises(NonFiniteInputError, match=r"G block 'fc.bias' contains NaN or inf"):
        agg(J, losses)
    after = agg.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        _assert_same(before[key], after[key], f"{name}: state {key!r} changed by the refused input")


def _assert_same(a, b, message):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), message
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), message
        for x, y in zip(a, b):
            _assert_same(x, y, message)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), message
        for k in a:
            _assert_same(a[k], b[k], message)
    else:
        assert a == b or (a != a and b != b), message


def test_the_engine_forms_no_gram_for_a_method_that_reads_none_unless_monitoring():
    model = ToyRegression(n_tasks=3, in_features=6, hidden=8).double()
    batch = ToyRegression.make_batch(3, 7, 6, dtype=torch.float64)
    agg = get_aggregator("excess_mtl")
    with mock.patch.object(Jacobian, "_scaled_block_grams", side_effect=AssertionError("a Gram was formed")):
        result = backward_step(model, batch, agg)
    assert result.param_gram is None
    model.zero_grad(set_to_none=True)
    monitored = backward_step(model, batch, agg, param_gram=True)
    rows = monitored.jacobian.matrix()
    assert torch.allclose(monitored.param_gram, rows @ rows.T, rtol=1e-12)
