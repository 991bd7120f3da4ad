"""The feature level's batch rule: rows flattened over batch × features (Sener & Koltun, the
default) or summed over the batch before the solve (LibMTL's rep_grad), kept apart in run keys,
the CLI and reports."""

import pytest
import torch

from mtlcheck.aggregators import IMTL, MGDA, AlignedMTL, GradDrop
from mtlcheck.gradients import backward_step
from mtlcheck.jacobian import Jacobian
from mtlcheck.models.toy import ToyRegression
from mtlcheck.study.cli import build_parser
from mtlcheck.study.experiments.runner import make_spec, sweep_specs
from mtlcheck.study.paper.runs import display_name


def model_and_batch(batch_size):
    torch.manual_seed(0)
    model = ToyRegression(n_tasks=3, in_features=4, hidden=6).double()
    return model, ToyRegression.make_batch(3, batch_size, 4, seed=3, dtype=torch.float64)


def shared_grads(model):
    return torch.cat([p.grad.reshape(-1) for _, p in model.shared_parameters()])


@pytest.mark.parametrize(
    "make", [MGDA, AlignedMTL, lambda: IMTL(loss_balance=False)], ids=["mgda", "aligned_mtl", "imtl_g"]
)
def test_batch_sum_reproduces_the_batch_summed_definition(make):
    """w = A(Σ_b ∇_{Z_b} L_i) from the batch-summed rows; the encoder gets the vector-Jacobian
    product of Z with Σ_i w_i ∇_Z L_i (the per-sample rows), as LibMTL's rep.backward."""
    model, batch = model_and_batch(5)
    for p in model.parameters():
        p.grad = None
    result = backward_step(model, batch, make(), level="feature", feature_batch="sum")
    got = shared_grads(model)

    z = model.encode(batch)
    zd = z.detach().requires_grad_(True)
    losses = list(model.task_losses(zd, batch).values())
    rows = torch.stack([torch.autograd.grad(L, zd, retain_graph=True)[0] for L in losses])  # (T, B, F)
    w = make()(rows.sum(1)).weights  # the solve on Σ_b ∇_{Z_b} L_i: a (T, F) matrix
    direction = torch.einsum("t,tbf->bf", w, rows)
    expected = torch.autograd.grad(z, [p for _, p in model.shared_parameters()], direction)
    assert torch.allclose(result.weights, w, rtol=1e-12, atol=1e-14)
    assert torch.equal(result.jacobian.matrix(), rows.sum(1))  # the Jacobian the method saw
    assert torch.allclose(got, torch.cat([g.reshape(-1) for g in expected]), rtol=1e-12, atol=1e-14)


def test_the_two_rules_agree_for_one_sample_and_differ_for_a_batch():
    def weights(batch_size, rule):
        model, batch = model_and_batch(batch_size)
        return backward_step(model, batch, MGDA(), level="feature", feature_batch=rule).weights

    assert torch.allclose(weights(1, "sum"), weights(1, "flatten"), rtol=1e-12, atol=1e-14)
    assert float((weights(8, "sum") - weights(8, "flatten")).abs().max()) > 1e-3


def test_batch_summed_jacobian_keeps_a_batch_of_one():
    blocks = (torch.arange(24, dtype=torch.float64).reshape(2, 12),)
    J = Jacobian(blocks, (torch.Size([3, 2, 2]),), ("z0",), "feature")
    summed = J.batch_summed()
    assert summed.shapes == (torch.Size([1, 2, 2]),)
    assert torch.equal(summed.blocks[0], blocks[0].reshape(2, 3, 4).sum(1))
    with pytest.raises(ValueError, match="feature-level"):
        Jacobian.from_matrix(blocks[0]).batch_summed()


def test_non_weighting_methods_refuse_the_batch_sum():
    model, batch = model_and_batch(4)
    with pytest.raises(ValueError, match="feature_batch='sum'.*GradDrop"):
        backward_step(model, batch, GradDrop(), level="feature", feature_batch="sum")
    with pytest.raises(ValueError, match="feature_batch must be one of"):
        backward_step(model, batch, MGDA(), level="feature", feature_batch="mean")


def test_run_keys_keep_the_rules_apart_and_the_default_key_unchanged():
    default = make_spec("digits-dense", "mgda_ub")
    assert default.extra == ()  # no new field: the default run's key is what it was
    assert make_spec("digits-dense", "mgda_ub", extra={"feature_batch": "flatten"}) == default
    summed = make_spec("digits-dense", "mgda_ub", extra={"feature_batch": "sum"})
    from mtlcheck.study.experiments.runner import run_options

    assert summed.options == {"feature_batch": "sum"} and summed.key != default.key
    # the parameter level has no batch axis: the option is dropped, the run shared
    assert make_spec("digits-dense", "mgda", extra={"feature_batch": "sum"}) == make_spec("digits-dense", "mgda")
    # what the step loop gets as keywords: the stored value, or the default spelled out
    assert run_options(summed.options)[1] == {"feature_batch": "sum"}
    assert run_options(default.options)[1] == {"feature_batch": "flatten"}
    with pytest.raises(ValueError, match="feature_batch must be one of"):
        make_spec("digits-dense", "mgda_ub", extra={"feature_batch": "mean"})
    with pytest.raises(ValueError, match="feature_batch"):
        make_spec("digits-dense", "graddrop", level="feature", extra={"feature_batch": "sum"})
    specs = sweep_specs("digits-dense", ["mgda", "graddrop", "ew"], extra={"feature_batch": "sum"})
    assert {(s.method, s.level, s.options.get("feature_batch")) for s in specs} == {
        ("mgda", "parameter", None),
        ("mgda", "feature", "sum"),
        ("graddrop", "parameter", None),
        ("ew", "parameter", None),
    }


@pytest.mark.parametrize("command", ["run", "sweep", "reproduce"])
def test_cli_option(command):
    from mtlcheck.study.cli import _run_options

    extra = ["--method", "mgda"] if command == "run" else []
    args = build_parser().parse_args([command, "--benchmark", "digits-dense", *extra, "--feature-batch", "sum"])
    assert _run_options(args)["feature_batch"] == "sum"
    args = build_parser().parse_args([command, "--benchmark", "digits-dense", *extra])
    assert _run_options(args)["feature_batch"] == "flatten"


def test_reports_name_the_batch_summed_runs_apart():
    class Record:  # display_name reads only the spec
        def __init__(self, spec):
            self.spec = spec

    flat = display_name(Record(make_spec("digits-dense", "mgda_ub")))
    summed = display_name(Record(make_spec("digits-dense", "mgda_ub", extra={"feature_batch": "sum"})))
    assert flat == "MGDA" and summed == "MGDA (feature_batch=sum)"
