"""TF32, bf16 autocast and channels-last: each does what it says, on the CPU at small scale (the
GPU speed of each is measured by `mtlcheck bench`, never asserted)."""

import re
import sqlite3

import pytest
import torch

from mtlcheck.aggregators import get_aggregator
from mtlcheck.gradients import backward_step
from mtlcheck.precision import Precision
from mtlcheck.study.cli import main
from mtlcheck.study.experiments.runner import make_spec
from mtlcheck.study.perf import bench, harness


def test_settings_are_validated_and_round_trip_through_spec_options():
    with pytest.raises(ValueError, match="autocast must be None or one of \\['bf16'\\], got 'fp16'"):
        Precision(autocast="fp16")
    with pytest.raises(ValueError, match="booleans"):
        Precision(tf32=1)
    p = Precision(autocast="bf16", channels_last=True)
    assert p.options() == {"autocast": "bf16", "channels_last": True} and Precision().options() == {}
    spec = make_spec("digits-dense", "mgda", budget="smoke", extra=p.options())
    assert Precision.from_options(spec.options) == p
    assert spec.key != make_spec("digits-dense", "mgda", budget="smoke").key  # results differ: keys differ
    with pytest.raises(ValueError, match="autocast"):
        make_spec("digits-dense", "mgda", budget="smoke", extra={"autocast": "int8"})
    with pytest.raises(ValueError, match=r"unknown run option\(s\) \['channelslast'\]"):
        make_spec("digits-dense", "mgda", budget="smoke", extra={"channelslast": True})
    # an explicit default is the default run, not a second one
    assert (
        make_spec("digits-dense", "mgda", budget="smoke", extra={"tf32": False}).key
        == make_spec("digits-dense", "mgda", budget="smoke").key
    )


def test_gram_stays_exact_inside_autocast():
    from mtlcheck.jacobian import Jacobian

    G = torch.randn(3, 200_000, generator=torch.Generator().manual_seed(0))
    exact = G.double() @ G.double().T
    with torch.autocast("cpu", dtype=torch.bfloat16):  # e.g. a user's own autocast around the step
        gram = Jacobian.from_matrix(G).gram()
    assert float(((gram - exact).abs() / exact.abs().max()).max()) < 1e-5


def test_tf32_switches_are_set_explicitly_both_ways():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        Precision(tf32=True).apply_backends()
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        Precision().apply_backends()  # PyTorch's own default allows TF32 in cuDNN: "off" must say so
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _direction(model, batch, method, level, precision):
    model.zero_grad(set_to_none=True)
    result = backward_step(model, batch, get_aggregator(method), level=level, feature_grads=True, precision=precision)
    flat = torch.cat([p.grad.reshape(-1) for _, p in model.shared_parameters()])
    return result, flat


@pytest.mark.parametrize("level", ["parameter", "feature"])
def test_bf16_autocast_runs_the_forward_in_bf16_and_keeps_float32_gradients(level):
    # 64 px: C5 is 2×2, so layer4's batch norm sees 16 values per channel. At 32 px (1×1, four
    # values) the network is so ill-conditioned that bf16 leaves even the EW direction at a
    # cosine of 0.07 to float32's — a real effect, reported by `mtlcheck bench --precision-effect`.
    model, batch = harness.model_and_batch(64, 4, 3, "cpu", 0)
    exact, d_exact = _direction(model, batch, "mgda", level, Precision())
    low, d_low = _direction(model, batch, "mgda", level, Precision(autocast="bf16"))
    assert exact.feature_grads[0].dtype == torch.float32
    assert low.feature_grads[0].dtype == torch.bfloat16  # Z came out of an autocast forward
    assert d_low.dtype == torch.float32 and torch.isfinite(d_low).all()
    assert torch.isfinite(low.weights).all() and float(low.weights.sum()) == pytest.approx(1.0)
    # an 8-bit mantissa perturbs the step (cosine 0.92 measured here), but it is the same step;
    # a backward run under autocast or a dtype mix-up would leave it unrelated (cosine ~0)
    assert float(torch.nn.functional.cosine_similarity(d_low, d_exact, dim=0)) > 0.8
    assert not torch.equal(d_low, d_exact)


@pytest.mark.parametrize("method", ["ew", "pcgrad", "graddrop", "imtl", "cagrad", "aligned_mtl", "gradvac", "rgw"])
def test_every_kind_of_method_takes_bf16_feature_gradients(method):
    """Each kind of method (sum, projection, masking, solver, SVD, EMA state, random weights) gives
    under bf16 autocast the step it gives in float32, up to bf16's perturbation (cosines 0.87–0.93
    measured at 64 px; an upcast forgotten or applied twice would leave an unrelated step)."""
    model, batch = harness.model_and_batch(64, 4, 3, "cpu", 0)
    level = "parameter" if method == "ew" else "feature"
    _, d_exact = _direction(model, batch, method, level, Precision())
    _, d = _direction(model, batch, method, level, Precision(autocast="bf16"))
    assert torch.isfinite(d).all() and float(d.abs().max()) > 0
    assert float(torch.nn.functional.cosine_similarity(d, d_exact, dim=0)) > 0.7


def _jacobian(precision, dtype=torch.float32):
    model, batch = harness.model_and_batch(32, 4, 3, "cpu", 0, precision)
    if dtype == torch.float64:
        model.double()
        batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    return _direction(model, batch, "mgda", "parameter", precision)[0].jacobian.matrix().double()


def test_channels_last_jacobian_is_as_accurate_as_the_contiguous_one():
    cl = Precision(channels_last=True)
    assert harness.model_and_batch(32, 4, 3, "cpu", 0, cl)[1]["image"].is_contiguous(memory_format=torch.channels_last)
    truth = _jacobian(Precision(), torch.float64)

    def error(J):
        return float((J - truth).norm() / truth.norm())

    # float32 in another memory order (other conv kernels, other summation order): its error
    # against float64 is of the contiguous float32 step's size (2.5e-4 vs 0.9e-4 measured here)
    assert error(_jacobian(cl)) <= 4 * error(_jacobian(Precision()))


def test_precision_effect_reports_the_bf16_shift_of_gds_and_mgda_weights():
    effect = bench.precision_effect(Precision(autocast="bf16"), size=64, batch_size=2, batches=2)
    assert effect["precision"] == {"autocast": "bf16"} and effect["batches"] == 2
    bounds = {"gds": 2.0, "gms": 1.0, "mgda_weights_parameter": 1.0, "mgda_weights_feature": 1.0}  # ranges
    for key, bound in bounds.items():
        assert 0 <= effect[key]["mean"] <= effect[key]["max"] <= bound
    assert effect["gds"]["max"] > 0  # bf16 does move GDS


def test_run_with_bf16_autocast_is_stored_apart_and_reported_apart(tmp_path, capsys):
    store = str(tmp_path / "runs.sqlite")
    common = ["--benchmark", "digits-dense", "--budget", "smoke", "--store", store, "--quiet"]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    assert main(["run", "--method", "ew", *common, "--autocast", "bf16", "--tf32"]) == 0
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved  # restored
    assert main(["run", "--method", "ew", *common]) == 0
    with sqlite3.connect(store) as db:
        assert db.execute("select count(*) from runs where status = 'done'").fetchone()[0] == 2
    capsys.readouterr()
    report = ["report", "--benchmark", "digits-dense", "--budget", "smoke", "--store", store]
    report += ["--out", str(tmp_path / "reports")]
    assert main([*report, "--autocast", "bf16", "--tf32"]) == 0
    assert (tmp_path / "reports" / "digits-dense-smoke-tf32-bf16").is_dir()
    capsys.readouterr()
    assert main([*report, "--channels-last"]) == 2
    assert re.search(
        "no stored runs for digits-dense at budget smoke with .*channels_last=True", capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "precision", [Precision(), Precision(tf32=True), Precision(autocast="bf16", channels_last=True)]
)
def test_command_line_flags_round_trip(precision):
    """One declaration of the flags serves the CLI and the bench (whose memory cases re-launch
    themselves with `flags()`)."""
    import argparse

    parser = argparse.ArgumentParser()
    Precision.add_arguments(parser)
    assert Precision.from_args(parser.parse_args(precision.flags())) == precision
