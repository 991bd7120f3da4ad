"""The step loop: determinism from the seed, exact resume from a checkpoint, divergence, monitoring."""

import math

import pytest
import torch
from torch.utils.data import Dataset, default_collate

from mtlcheck.aggregators import MGDA, get_aggregator
from mtlcheck.models.toy import ToyRegression
from mtlcheck.study.training import Checkpointer, StepSampler, TrainSetup, train


class ToyData(Dataset):
    def __init__(self, n=40, n_tasks=3, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=gen)
        self.y = torch.randn(n, n_tasks, generator=gen)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def evaluate(model):
    data = ToyData()
    preds = model.predict({"x": data.x})
    return {f"mse/{n}": float(((preds[n] - data.y[:, i]) ** 2).mean()) for i, n in enumerate(model.task_names)}


SETUP = TrainSetup(steps=20, batch_size=8, lr=0.05, warmup_steps=5, monitor_every=5, checkpoint_every=7)


def run(method="mgda", level="parameter", seed=0, checkpointer=None, steps=20):
    setup = TrainSetup(**{**SETUP.__dict__, "steps": steps})
    return train(
        ToyRegression(seed=seed),
        ToyData(),
        default_collate,
        get_aggregator(method),
        setup,
        level=level,
        seed=seed,
        checkpointer=checkpointer,
        evaluate=evaluate,
    )


def test_same_seed_same_metrics_and_trajectory():
    a, b = run(seed=3), run(seed=3)
    assert a.status == b.status == "done"
    assert a.metrics == b.metrics and a.trajectory == b.trajectory
    assert run(seed=4).metrics != a.metrics


def test_training_reduces_the_losses():
    out = run("ew", steps=60)
    assert out.trajectory["loss/task0"][-1] < out.trajectory["loss/task0"][0]


def test_monitor_records_measures_every_k_steps():
    out = run()
    assert out.trajectory["step"] == [0, 5, 10, 15]
    for key in ("gds", "gms", "fd", "loss/task0", "weight/task2"):
        assert len(out.trajectory[key]) == 4 and all(math.isfinite(v) for v in out.trajectory[key])
    assert all(-1 <= v <= 1 for v in out.trajectory["gds"]) and all(0 <= v <= math.log(3) for v in out.trajectory["fd"])


def test_resume_from_checkpoint_is_exact():
    saved = {}

    class Killed(Exception):
        pass

    def save(obj):
        saved["ckpt"] = obj
        if obj["step"] == 14:
            raise Killed  # the process dies right after writing its second checkpoint

    with pytest.raises(Killed):
        run("famo", checkpointer=Checkpointer(save, lambda: None))
    resumed = run("famo", checkpointer=Checkpointer(lambda obj: None, lambda: saved["ckpt"]))
    straight = run("famo")
    assert resumed.metrics == straight.metrics
    assert resumed.trajectory == straight.trajectory


@pytest.mark.parametrize("level", ["parameter", "feature"])
def test_divergence_is_reported_with_its_step(level):
    out = train(
        ToyRegression(),
        ToyData(),
        default_collate,
        MGDA(),
        TrainSetup(steps=30, batch_size=8, lr=1e6, monitor_every=1),
        level=level,
    )
    assert out.status == "diverged" and out.diverged_step is not None and out.diverged_step < 30
    assert "non-finite" in out.error


def test_step_sampler_is_a_pure_function_of_the_step():
    s = StepSampler(10, 3, seed=1, start=0, stop=9)
    batches = list(s)
    assert batches[5] == StepSampler(10, 3, seed=1, start=5, stop=6).batch_indices(5)
    assert all(len(b) == 3 for b in batches)
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepSampler(2, 3, 0, 0, 1)


def test_setup_validation_names_the_field():
    with pytest.raises(ValueError, match="batch_size"):
        TrainSetup(steps=1, batch_size=0)
    assert TrainSetup(steps=10, batch_size=1, lr=1.0, warmup_steps=4).lr_at(1) == pytest.approx(0.5)


class DropoutToy(ToyRegression):
    """Heads with dropout: the global RNG is drawn every step, so resume must restore it exactly."""

    def task_losses(self, z, batch):
        return super().task_losses(torch.nn.functional.dropout(z, 0.3, training=self.training), batch)


def test_resume_is_exact_when_the_model_draws_random_numbers():
    saved = {}

    class Killed(Exception):
        pass

    def save(obj):
        saved["ckpt"] = obj
        if obj["step"] == 7:
            raise Killed

    def run_dropout(checkpointer=None):
        return train(
            DropoutToy(),
            ToyData(),
            default_collate,
            get_aggregator("mgda"),
            SETUP,
            seed=2,
            checkpointer=checkpointer,
            evaluate=evaluate,
        )

    with pytest.raises(Killed):
        run_dropout(Checkpointer(save, lambda: None))
    resumed = run_dropout(Checkpointer(lambda obj: None, lambda: saved["ckpt"]))
    straight = run_dropout()
    assert resumed.trajectory == straight.trajectory and resumed.metrics == straight.metrics


class NaNGradient(ToyRegression):
    """Finite losses whose gradient is NaN (sqrt at 0): divergence must be reported, not raised."""

    def task_losses(self, z, batch):
        losses = super().task_losses(z, batch)
        losses["task0"] = losses["task0"] + torch.sqrt(z[:, 0] * 0.0).sum()
        return losses


@pytest.mark.parametrize("method", ["ew", "mgda", "graddrop", "moco", "excess_mtl"])
def test_nan_gradient_with_finite_loss_is_a_divergence(method):
    out = train(NaNGradient(), ToyData(), default_collate, get_aggregator(method), SETUP)
    assert out.status == "diverged" and out.diverged_step == 0, out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_multi_tensor_optimiser_steps_equal_the_per_tensor_loop(optimizer, monkeypatch):
    """train() asks for the foreach kernels; they must give the per-tensor loop's numbers exactly."""
    setup = TrainSetup(**{**SETUP.__dict__, "optimizer": optimizer})

    def go():
        return train(
            ToyRegression(seed=1), ToyData(), default_collate, get_aggregator("mgda"), setup, seed=1, evaluate=evaluate
        )

    fast = go()
    cls = getattr(torch.optim, {"sgd": "SGD", "adam": "Adam"}[optimizer])
    monkeypatch.setattr(torch.optim, cls.__name__, lambda *a, **k: cls(*a, **{**k, "foreach": False}))
    loop = go()
    assert fast.metrics == loop.metrics and fast.trajectory == loop.trajectory


def test_reseed_draws_what_manual_seed_draws():
    from mtlcheck.study.training import reseed

    torch.manual_seed(123)
    expected = torch.rand(5), torch.randn(3)
    torch.manual_seed(7)
    reseed(123, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(expected, (torch.rand(5), torch.randn(3))))
