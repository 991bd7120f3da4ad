"""The engine's reusable Jacobian blocks: reused when nothing refers to them any more, never
overwritten while a result, a view or a `.grad` can still read them, exact after any change."""

import torch
from torch import nn

from mtlcheck.aggregators import EW, MGDA, PCGrad
from mtlcheck.aggregators._base import Aggregation
from mtlcheck.gradients import backward_step, jacobian_buffers
from mtlcheck.models.toy import ToyRegression


def toy(seed=0, n_tasks=3, hidden=8):
    model = ToyRegression(n_tasks=n_tasks, in_features=6, hidden=hidden, seed=seed)
    return model, ToyRegression.make_batch(n_tasks, 7, 6, seed=seed)


def autograd_rows(model, batch):
    z = model.encode(batch)
    params = [p for _, p in model.shared_parameters()]
    return torch.stack(
        [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(L, params, retain_graph=True)])
            for L in model.task_losses(z, batch).values()
        ]
    )


def pointers(result):
    return [b.data_ptr() for b in result.jacobian.blocks]


def test_blocks_are_reused_once_the_result_is_dropped_and_stay_exact():
    model, batch = toy()
    _, other = toy(seed=1)
    first = backward_step(model, batch, MGDA())
    before = pointers(first)
    del first
    model.zero_grad(set_to_none=True)
    second = backward_step(model, other, MGDA())
    assert pointers(second) == before  # filled in place
    assert torch.equal(second.jacobian.matrix(), autograd_rows(model, other))  # bit for bit


def test_a_result_still_held_is_never_overwritten():
    model, batch = toy()
    _, other = toy(seed=1)
    first = backward_step(model, batch, MGDA())
    kept = first.jacobian.matrix().clone()
    model.zero_grad(set_to_none=True)
    second = backward_step(model, other, MGDA())
    assert set(pointers(second)).isdisjoint(pointers(first))
    assert torch.equal(first.jacobian.matrix(), kept)
    assert torch.equal(second.jacobian.matrix(), autograd_rows(model, other))


def test_a_view_of_a_row_still_held_is_never_overwritten():
    model, batch = toy()
    _, other = toy(seed=1)
    first = backward_step(model, batch, PCGrad())
    row = first.jacobian.blocks[0][1]
    kept = row.clone()
    del first
    backward_step(model, other, PCGrad())
    assert torch.equal(row, kept)


def test_grad_never_aliases_the_blocks_even_when_the_method_returns_a_row():
    model, batch = toy()
    _, other = toy(seed=1)
    first_row = MGDA()
    first_row._aggregate = lambda J, losses: Aggregation(
        tuple(b[0] for b in J.blocks), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    )
    result = backward_step(model, batch, first_row)
    rows = autograd_rows(model, batch)
    grads = [p.grad for _, p in model.shared_parameters()]
    buffers = result.jacobian.blocks
    assert all(g.untyped_storage().data_ptr() != b.untyped_storage().data_ptr() for g, b in zip(grads, buffers))
    assert torch.equal(torch.cat([g.reshape(-1) for g in grads]), rows[0])
    del result, buffers
    model.zero_grad(set_to_none=True)
    backward_step(model, other, MGDA())  # may reuse the blocks: the first step's .grad must not move
    assert torch.equal(torch.cat([g.reshape(-1) for g in grads]), rows[0])


def test_existing_grad_is_accumulated_out_of_place_as_before():
    model, batch = toy()
    backward_step(model, batch, MGDA())
    direction = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    backward_step(model, batch, MGDA())  # second run, on reused blocks: the same update bit for bit
    assert all(torch.equal(p.grad, direction[n]) for n, p in model.named_parameters())
    existing = {n: torch.full_like(p, 0.25) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = existing[n]
    backward_step(model, batch, MGDA())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, torch.full_like(p, 0.25) + direction[n]), n
        assert torch.equal(existing[n], torch.full_like(p, 0.25)), n  # the user's tensor is left as it was


def test_two_models_alternating_and_a_change_of_shapes_stay_exact():
    a, batch_a = toy(seed=0)
    b, batch_b = toy(seed=1, hidden=5)
    for _ in range(2):
        for model, batch in ((a, batch_a), (b, batch_b)):
            model.zero_grad(set_to_none=True)
            assert torch.equal(backward_step(model, batch, MGDA()).jacobian.matrix(), autograd_rows(model, batch))
    a.encoder[2] = nn.Linear(8, 8, bias=False)  # one parameter fewer
    a.zero_grad(set_to_none=True)
    result = backward_step(a, batch_a, MGDA())
    assert result.jacobian.dim == sum(p.numel() for _, p in a.shared_parameters())
    assert torch.equal(result.jacobian.matrix(), autograd_rows(a, batch_a))


def test_monitored_step_reuses_the_blocks_and_keeps_its_gram():
    model, batch = toy()
    first = backward_step(model, batch, EW(), param_gram=True)
    gram = first.param_gram.clone()
    del first
    model.zero_grad(set_to_none=True)
    again = backward_step(model, batch, EW(), param_gram=True)
    assert torch.equal(again.param_gram, gram)
    rows = autograd_rows(model, batch).double()
    assert torch.allclose(again.param_gram, rows @ rows.T, rtol=1e-6)


def test_buffers_follow_the_number_of_tasks_and_dtype():
    model, _ = toy()
    params = [p for _, p in model.shared_parameters()]
    three = jacobian_buffers(model, params, 3)
    assert [tuple(b.shape) for b in three] == [(3, p.numel()) for p in params]
    ptrs = [b.data_ptr() for b in three]
    del three
    assert [b.data_ptr() for b in jacobian_buffers(model, params, 3)] == ptrs  # unreferenced: the same blocks
    assert all(b.shape[0] == 4 for b in jacobian_buffers(model, params, 4))
    model.double()
    assert all(b.dtype == torch.float64 for b in jacobian_buffers(model, params, 4))


def test_without_torchs_use_count_every_step_gets_new_blocks(monkeypatch):
    import mtlcheck.gradients as engine

    monkeypatch.setattr(engine, "_storage_use_count", None)
    model, batch = toy()
    first = backward_step(model, batch, MGDA())
    before = pointers(first)
    del first  # reusable now, but the engine cannot tell: it must allocate
    _, other = toy(seed=1)
    second = backward_step(model, other, MGDA())
    assert set(pointers(second)).isdisjoint(before)
    assert torch.equal(second.jacobian.matrix(), autograd_rows(model, other))
