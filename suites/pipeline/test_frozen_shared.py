"""The engine on a partly frozen encoder (requires_grad=False on some shared parameters, as in
fine-tuning): every method at every level it supports takes the step, a frozen parameter gets no
gradient (as in plain PyTorch), and the trainable ones get what the method gives on the
gradients of the trainable parameters alone."""

import pytest
import torch

from mtlcheck import LEVELS
from mtlcheck.aggregators import get_aggregator, list_aggregators
from mtlcheck.gradients import backward_step
from mtlcheck.jacobian import Jacobian
from mtlcheck.models.toy import ToyRegression

FROZEN = "encoder.0.weight"


def _model(freeze: bool = True) -> ToyRegression:
    model = ToyRegression(n_tasks=3, in_features=4, hidden=6).double()
    if freeze:
        dict(model.named_parameters())[FROZEN].requires_grad_(False)
    return model


def _batch():
    return ToyRegression.make_batch(3, 5, 4, dtype=torch.float64)


def _cases():
    for name in list_aggregators():
        tags = get_aggregator(name).tags()
        for level in LEVELS:
            if tags.loss_only and level == "feature":
                continue
            yield pytest.param(name, level, id=f"{name}-{level}")


@pytest.mark.parametrize("name, level", list(_cases()))
def test_frozen_shared_parameter_gets_no_gradient_and_the_rest_gets_the_method(name, level):
    model, batch = _model(), _batch()
    backward_step(model, batch, get_aggregator(name), level=level)
    params = dict(model.named_parameters())
    assert params[FROZEN].grad is None
    trainable = [(n, p) for n, p in model.shared_parameters() if p.requires_grad]
    got = torch.cat([p.grad.reshape(-1) for _, p in trainable])
    assert torch.isfinite(got).all() and float(got.norm()) > 0
    tags = get_aggregator(name).tags()
    if tags.second_order:  # its penalty is on the trainable rows: finite and applied is what is asserted
        return
    z = model.encode(batch)
    losses = list(model.task_losses(z, batch).values())
    L = torch.stack([x.detach() for x in losses])
    if tags.loss_only:
        w = get_aggregator(name)(None, L).weights
        expected = torch.autograd.grad(sum(wi * li for wi, li in zip(w, losses)), [p for _, p in trainable])
    elif level == "parameter":
        rows = [torch.autograd.grad(li, [p for _, p in trainable], retain_graph=True) for li in losses]
        J = Jacobian.from_task_grads(rows, [p for _, p in trainable], [n for n, _ in trainable])
        expected = [get_aggregator(name)(J, L).direction]
    else:
        rows = [torch.autograd.grad(li, [z], retain_graph=True) for li in losses]
        J = Jacobian.from_task_grads(rows, [z], ["z0"], level="feature", activations=[z])
        direction = get_aggregator(name)(J, L).direction.reshape(z.shape)
        expected = torch.autograd.grad(z, [p for _, p in trainable], direction)
    expected = torch.cat([g.reshape(-1) for g in expected])
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12 * float(expected.norm()))


def test_frozen_parameter_step_matches_plain_pytorch_for_ew():
    """EW's step on a partly frozen encoder is the plain backward of Σ_i L_i."""
    model, batch = _model(), _batch()
    backward_step(model, batch, get_aggregator("ew"), level="parameter")
    ours = {n: p.grad for n, p in model.named_parameters()}
    plain = _model()
    z = plain.encode(batch)
    sum(plain.task_losses(z, batch).values()).backward()
    for n, p in plain.named_parameters():
        assert (ours[n] is None) == (p.grad is None), n
        if p.grad is not None:
            assert torch.allclose(ours[n], p.grad, rtol=1e-12, atol=1e-15), n


def test_the_readme_training_loop_runs_as_written_on_a_partly_frozen_model():
    """README "Using it": the training-loop snippet, imports included, executed verbatim with a
    model whose first encoder weight is frozen."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Using it", 1)[1]
    snippet = section.split("```python", 2)[2].split("```", 1)[0]
    assert "import" in snippet and "backward_step" in snippet
    model = _model()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    frozen = dict(model.named_parameters())[FROZEN].detach().clone()
    before = dict(model.named_parameters())["encoder.2.weight"].detach().clone()
    exec(compile(snippet, "README.md", "exec"), {"model": model, "batch": _batch(), "optimizer": optimizer})
    params = dict(model.named_parameters())
    assert torch.equal(params[FROZEN], frozen) and params[FROZEN].grad is None
    assert not torch.equal(params["encoder.2.weight"], before)
