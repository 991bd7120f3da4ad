"""Inputs at the edges of the number range, options and saved states that a method cannot take:
each is refused with a typed error that names it, before any state changes, or computed without
overflow; never a NaN, a silent wrong result or a raw error from inside torch."""

import copy
import math

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import aggregator_class, get_aggregator, list_aggregators
from mtlcheck.aggregators._base import Aggregation, Aggregator, AggregatorTags, WeightingAggregator
from mtlcheck.aggregators._simplex import project_onto_simplex, projected_step
from mtlcheck.jacobian import NonFiniteGradientError, NonFiniteOutputError

L3 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)


def _G(dtype=torch.float64, scale=1.0, seed=0):
    return (torch.randn(3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)


def _same_next_steps(refused, fresh, calls):
    """The refused method's next calls equal those of a twin that never saw the refused input."""
    for G, losses in calls:
        a, b = refused(G, losses), fresh(G, losses)
        assert torch.equal(a.direction, b.direction)


def _gradient_methods():
    return [n for n in list_aggregators() if not get_aggregator(n).tags().loss_only]


# -- refused before the state changes ---------------------------------------------------------
@pytest.mark.parametrize("dtype, scale", [(torch.float32, 2e38), (torch.float64, 1e308)])
def test_moco_refuses_gradients_its_average_cannot_hold_and_keeps_its_state(dtype, scale):
    """y − β(y − g) needs g − y in range: past half the dtype's largest value MoCo refuses, and its
    tracked Y is what it was (a raw lerp would store inf and break every later call). (fp16/bf16
    gradients are tracked in float32, which holds any of them.)"""
    moco, twin = get_aggregator("moco"), get_aggregator("moco")
    moco(_G(dtype)), twin(_G(dtype))
    big = _G(dtype)
    big[0, 0] = scale
    with pytest.raises(NonFiniteGradientError, match="MoCo.*overflow.*state is unchanged"):
        moco(big)
    _same_next_steps(moco, twin, [(_G(dtype, seed=s), None) for s in (1, 2, 3)])


@pytest.mark.parametrize("name", ["moco", "db_mtl", "excess_mtl"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradients_get_the_float32_run_rounded_once(name, dtype):
    """The per-block state of half-precision gradients is kept in float32 (and the combination is
    formed in float32): over five steps, each direction is, bit for bit, that of the same gradients
    given as float32, rounded to their dtype. The rows differ by 1e6 and entries of 4e4 appear: an
    fp16 EMA of the small row (near fp16's subnormals) was 2-45 % off from the second step, and an
    fp16 MoCo average of 4e4 was refused as past half fp16's range."""
    half, single = get_aggregator(name), get_aggregator(name)
    rows = torch.tensor([[1.0], [1e-6], [0.3]], dtype=torch.float64)
    for step in range(5):
        G = (_G(seed=step) * rows * (4e4 if step == 3 else 1.0)).to(dtype)
        a, b = half(G, L3), single(G.float(), L3)
        assert a.direction.dtype == dtype
        assert torch.equal(a.direction, b.direction.to(dtype)), (step, a.direction, b.direction)
    state = next(v for k, v in half.state_dict()["method"].items() if k in ("_y", "_buffer", "_sq_sum_eps"))
    assert all(s.dtype == torch.float32 for s in state)


@pytest.mark.parametrize("name", ["moco", "db_mtl"])
def test_a_state_saved_in_half_precision_loads_widened(name):
    """A Y or B saved in fp16 (before it was kept in float32) loads as float32 (exact), and the next
    steps take fp16 gradients."""
    agg = get_aggregator(name)
    agg(_G(torch.float16), L3)
    state = agg.state_dict()
    key = "_y" if name == "moco" else "_buffer"
    old = {**state, "method": {**state["method"], key: tuple(s.half() for s in state["method"][key])}}
    twin = get_aggregator(name)
    twin.load_state_dict(old)
    assert all(s.dtype == torch.float32 for s in twin.state_dict()["method"][key])
    assert torch.isfinite(twin(_G(torch.float16, seed=1), L3).direction).all()


def test_moco_reads_the_gram_of_y_scaled_so_that_no_scale_of_g_overflows():
    """Gradients of 1e160 (float64): Y Yᵀ is past float64's range, the λ step is not."""
    moco = get_aggregator("moco")
    moco(_G())
    out = moco(_G(scale=1e160))
    assert torch.isfinite(out.direction).all() and out.direction.abs().max() > 1e150
    assert torch.isfinite(moco(_G()).direction).all()


def test_db_mtl_refuses_a_loss_whose_log_gradient_overflows_and_keeps_its_state():
    db, twin = get_aggregator("db_mtl"), get_aggregator("db_mtl")
    db(_G(), L3), twin(_G(), L3)
    for losses, dtype in (([1e-310, 1.0, 1.0], torch.float64), ([1e-300, 1.0, 1.0], torch.float32)):
        fresh, fresh_twin = get_aggregator("db_mtl"), get_aggregator("db_mtl")
        with pytest.raises(ValueError, match=r"∇log L_i = g_i / L_i overflow.*state is unchanged"):
            fresh(_G(dtype), torch.tensor(losses, dtype=torch.float64))
        _same_next_steps(fresh, fresh_twin, [(_G(dtype, seed=s), L3) for s in (1, 2)])
    with pytest.raises(ValueError, match="overflow"):
        db(_G(), torch.tensor([1e-310, 1.0, 1.0], dtype=torch.float64))
    _same_next_steps(db, twin, [(_G(seed=s), L3) for s in (1, 2, 3)])


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e20), (torch.float64, 1e160)])  # squares past the range
def test_excess_mtl_refuses_squares_its_sum_cannot_hold_and_keeps_its_state(dtype, scale):
    ex, twin = get_aggregator("excess_mtl"), get_aggregator("excess_mtl")
    ex(_G(dtype)), twin(_G(dtype))
    with pytest.raises(NonFiniteGradientError, match="squared gradients.*overflow.*state is unchanged"):
        ex(_G(dtype, scale=scale))
    _same_next_steps(ex, twin, [(_G(dtype, seed=s), None) for s in (1, 2, 3)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_excess_mtl_sums_half_precision_squares_in_float32(dtype):
    """fp16 squares of gradients past 256 overflow, and a bf16 sum stops growing: the running sum
    is float32, so half-precision gradients get float32's weights (to their rounding)."""
    rows = torch.tensor([[1.0], [3.0], [0.3]], dtype=torch.float64)
    half, single = get_aggregator("excess_mtl"), get_aggregator("excess_mtl")
    for step in range(6):
        G = _G(seed=step) * rows * (300.0 if step == 5 else 1.0)
        w_half, w_single = half(G.to(dtype)).weights, single(G.to(dtype).float()).weights
    assert half.state_dict()["method"]["_sq_sum_eps"][0].dtype == torch.float32
    torch.testing.assert_close(w_half, w_single, rtol=0, atol=1e-12)
    assert not torch.allclose(w_single, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("name", ["db_mtl", "moco", "excess_mtl"])
@pytest.mark.parametrize(
    "first, then",
    [
        (torch.float32, torch.float64),
        (torch.float32, torch.float16),
        (torch.float16, torch.bfloat16),
        (torch.bfloat16, torch.float32),
    ],
)
def test_a_change_of_dtype_between_steps_is_refused_by_name(name, first, then):
    """Also between dtypes whose state is float32 alike (fp16, bf16, float32): the gradients' dtypes
    are kept beside the state (before, such a change was taken silently, and float32 gradients of
    1e6 then fp16 ones moved MoCo's and DB-MTL's state before their fp16 direction was refused)."""
    agg, twin = get_aggregator(name), get_aggregator(name)
    agg(_G(first, scale=1e6 if first == torch.float32 else 1.0), L3)
    twin(_G(first, scale=1e6 if first == torch.float32 else 1.0), L3)
    with pytest.raises(ValueError, match=r"dtype changed.*gradients were.*call reset\(\) first"):
        agg(_G(then), L3)
    assert repr(agg.state_dict()) == repr(twin.state_dict())
    agg.reset()
    assert torch.isfinite(agg(_G(then), L3).direction).all()


# -- computed without overflow -----------------------------------------------------------------
@pytest.mark.parametrize("name, option", [("moco", "beta_sigma"), ("moco", "gamma_sigma"), ("db_mtl", "beta_sigma")])
@pytest.mark.parametrize("power", [2000.0, 2000, 2**40])
def test_a_schedule_power_past_the_float_range_decays_to_zero(name, option, power):
    """rate / step^power for step 2 and a power of 2000 is 0, not an OverflowError (nor, for the
    integer 2^40, an exact integer power that never ends)."""
    agg = get_aggregator(name, **{option: power})
    for _ in range(3):
        assert torch.isfinite(agg(_G(), L3).direction).all()


def test_simplex_steps_of_any_size_stay_on_the_simplex():
    x = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    v = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(projected_step(x, 0.1, v), project_onto_simplex(x - 0.1 * v), rtol=0, atol=1e-15)
    for step, exponent in ((1e308, 0), (1.0, 3000), (1e300, 200)):  # c·v past float64's range
        assert projected_step(x, step, v, exponent).tolist() == [0.0, 0.0, 1.0]
    tied = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)  # the limit: the tied entries' own projection
    assert projected_step(x, 1.0, tied, 3000).tolist() == pytest.approx([0.35, 0.0, 0.65])


def test_project_onto_simplex_takes_minus_inf_and_huge_gaps_and_refuses_nan():
    assert project_onto_simplex(torch.tensor([0.3, -math.inf, -math.inf], dtype=torch.float64)).tolist() == [1, 0, 0]
    assert project_onto_simplex(torch.tensor([0.0, -1e308, -1.5e308], dtype=torch.float64)).tolist() == [1, 0, 0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):  # against the KKT form: x = max(y − θ, 0), Σx = 1
        y = torch.randn(5, generator=gen, dtype=torch.float64) * 3
        x = project_onto_simplex(y)
        theta = float((y - x)[x > 0].mean())
        torch.testing.assert_close(x, (y - theta).clamp_min(0), rtol=0, atol=1e-14)
        assert abs(float(x.sum()) - 1) < 1e-14
    for bad in (math.nan, math.inf):
        with pytest.raises(FloatingPointError, match="NaN or \\+inf"):
            project_onto_simplex(torch.tensor([0.1, bad], dtype=torch.float64))


@pytest.mark.parametrize("name, options, G", [("modo", {"gamma": 1e308}, 1.0), ("modo", {"gamma": 1e30}, 1e150)])
def test_modo_steps_past_the_float_range_give_a_vertex(name, options, G):
    agg = get_aggregator(name, **options)
    for _ in range(2):
        w = agg(_G(scale=G)).weights
        assert torch.isfinite(w).all() and abs(float(w.sum()) - 1) < 1e-12


def test_sdmgrad_with_a_huge_learning_rate_stays_on_the_simplex():
    w = get_aggregator("sdmgrad", lr=1e308)(_G()).weights
    assert torch.isfinite(w).all() and float(w.min()) >= 0


def test_stch_with_a_tiny_mu_is_the_max_not_nan():
    """softmax(f/μ) → the indicator of the largest f as μ → 0 (equal f: uniform)."""
    w = get_aggregator("stch", mu=1e-310)(None, L3).weights
    assert w.tolist() == [0.0, 0.0, 1.0]
    assert get_aggregator("stch", mu=1e-310)(None, torch.ones(3, dtype=torch.float64)).weights.tolist() == [1, 1, 1]


# -- outputs that overflow are refused -----------------------------------------------------------
def test_a_finite_g_whose_direction_overflows_the_dtype_is_refused():
    """ConFIG's fp16 step past 65504 (three identical rows of 2e4): an error naming the dtype, not
    a direction of inf."""
    G = (_G()[:1].repeat(3, 1) * 2e4).half()
    with pytest.raises(NonFiniteOutputError, match="ConFIG.*non-finite direction.*torch.float16"):
        get_aggregator("config")(G)
    assert torch.isfinite(get_aggregator("config")(G / 8).direction).all()


def test_a_loss_weighting_whose_direction_overflows_the_dtype_is_refused():
    """GLS's weight L/(T L_i) is 33 for a loss of 1e-3 among 1s: on fp16 rows of 3e4 the direction
    passes 65504."""
    losses = torch.tensor([1e-3, 1.0, 1.0], dtype=torch.float64)
    with pytest.raises(NonFiniteOutputError, match="GLS.*non-finite direction.*torch.float16"):
        get_aggregator("gls")((_G() * 3e4 / _G().abs().max()).half(), losses)


def test_non_finite_weights_are_refused():
    class InfiniteWeights(WeightingAggregator):
        def tags(self):
            return AggregatorTags(inputs=frozenset({"losses"}), reduction="other")

        def _weights(self, J, losses):
            return torch.tensor([math.inf, 1.0, 1.0], dtype=torch.float64)

    with pytest.raises(NonFiniteOutputError, match="non-finite task weights"):
        InfiniteWeights()(None, L3)


# -- options, seeds, losses, shapes and saved states ----------------------------------------
def _numeric_options():
    out = []
    for name in list_aggregators():
        cls = aggregator_class(name)
        for p in cls._init_parameters():
            if p.annotation in ("float", "int", float, int) and p.name != "seed":
                out.append((name, p.name))
    return out


@pytest.mark.parametrize("name, option", _numeric_options())
def test_a_bool_is_never_a_number_for_any_option(name, option):
    """Python's True == 1: a constructor that took it would run with 1 where the CLI refuses."""
    with pytest.raises(ValueError, match=option):
        get_aggregator(name, **{option: True})


def test_numpy_numbers_are_numbers():
    assert get_aggregator("fairgrad", alpha=np.int64(2)).alpha == 2.0
    assert get_aggregator("fairgrad", alpha=np.float64(2)).alpha == 2.0
    assert get_aggregator("sdmgrad", n_iter=np.int64(3)).n_iter == 3


@pytest.mark.parametrize(
    "seed, error",
    [(True, (TypeError, ValueError)), (1.5, (TypeError, ValueError)), (2**70, ValueError), (-(2**64), ValueError)],
)
def test_seeds_outside_what_a_generator_takes_are_refused_by_name(seed, error):
    with pytest.raises(error, match="seed"):
        get_aggregator("pcgrad", seed=seed)
    assert get_aggregator("pcgrad", seed=np.int64(3)).seed == 3


@pytest.mark.parametrize("tol", [1.0, math.inf, 0.0])
def test_fairgrad_tol_is_a_relative_residual_below_one(tol):
    with pytest.raises(ValueError, match="tol"):
        get_aggregator("fairgrad", tol=tol)


@pytest.mark.parametrize(
    "losses, match",
    [
        (torch.tensor([1 + 5j, 2, 3]), "real numbers"),
        (torch.tensor([True, True, True]), "real numbers"),
        (["1", "2", "3"], "losses must be a"),
    ],
)
def test_losses_that_are_not_real_numbers_are_refused(losses, match):
    with pytest.raises(ValueError, match=match):
        get_aggregator("gls")(None, losses)


@pytest.mark.parametrize("name", _gradient_methods())
def test_g_with_no_columns_is_refused(name):
    with pytest.raises(ValueError, match="d=0 columns"):
        get_aggregator(name)(torch.zeros(3, 0, dtype=torch.float64), L3)


def test_load_state_dict_names_what_is_wrong_and_changes_nothing():
    moco = get_aggregator("moco")
    moco(_G())
    before = moco.state_dict()
    modo, db = get_aggregator("modo"), get_aggregator("db_mtl")
    modo(_G()[:2]), db(_G()[:2], L3[:2])
    cases = (
        ({}, "expected the keys"),
        ([1], "expected the keys"),
        (modo.state_dict(), "lacks '_y'"),  # MoDo keeps a λ too, and T = 2
        (db.state_dict(), "are not MoCo's"),
    )
    for state, match in cases:
        with pytest.raises(ValueError, match=match):
            moco.load_state_dict(state)
    lacking = {**before, "method": {k: v for k, v in before["method"].items() if k != "_lambda"}}
    with pytest.raises(ValueError, match="lacks '_lambda'"):
        moco.load_state_dict(lacking)
    twin = get_aggregator("moco")
    twin.load_state_dict(before)
    _same_next_steps(moco, twin, [(_G(seed=s), None) for s in (1, 2)])


def test_states_saved_before_the_bounds_were_kept_still_load():
    """MoCo, DB-MTL and ExcessMTL now keep a bound beside their state; a state saved without it
    loads, and the next steps are those of an uninterrupted run."""
    for name, key in (("moco", "_y_bound"), ("db_mtl", "_g_bound"), ("excess_mtl", "_sq_bound")):
        agg, twin = get_aggregator(name), get_aggregator(name)
        agg(_G(), L3)
        state = agg.state_dict()
        old = {**state, "method": {k: v for k, v in state["method"].items() if k != key}}
        twin.load_state_dict(old)
        _same_next_steps(agg, twin, [(_G(seed=s), L3) for s in (1, 2)])


def test_a_feature_level_alias_is_explained_not_suggested_as_itself():
    with pytest.raises(ValueError, match="'mgda_ub' names 'mgda' at the feature level"):
        get_aggregator("cr_mogm", base="mgda_ub")


# -- from a review: bounds that must hold, and refusals that must not change anything --------------
@pytest.mark.parametrize("name", ["nash_mtl", "fairgrad"])
def test_fp16_weights_past_the_dtype_give_the_direction_not_nan(name):
    """Weights of 6e6-8e6 for a row of 1e-7 (fp16): cast to fp16 they were inf, and inf·0 = NaN
    (caught as a non-finite direction); the combination now forms them in float32, so the
    direction is Σ w_i g_i, rounded once to fp16."""
    G = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1e-7, 0.0]]).half()
    out = get_aggregator(name)(G)
    assert out.weights.max() > 65504
    torch.testing.assert_close(out.direction.double(), out.weights @ G.double(), rtol=1e-3, atol=0)


def test_a_method_s_own_combination_of_weights_past_the_dtype_is_checked():
    """A weighting method that returns its own direction, formed with its weights cast to fp16
    (inf·0 = NaN): its weights do not fit, so the float64 bound Σ|w_i|‖g_i‖ is not trusted."""

    class CastsItself(Aggregator):
        def tags(self):
            return AggregatorTags(family="weighting", reduction="other", homogeneity=None)

        def _aggregate(self, J, losses):
            w = torch.tensor([1.0, 7e6], dtype=torch.float64)
            return Aggregation(J.split(w.half() @ J.matrix()), w)

    with pytest.raises(NonFiniteOutputError, match="non-finite direction"):
        CastsItself()(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1e-7, 0.0]]).half())


class _Weighted(WeightingAggregator):
    def __init__(self, *, weights=(1.0, 1.0), weighted: bool = True, seed: int = 0):
        super().__init__(seed=seed)
        self.weights, self.weighted = weights, weighted

    def tags(self):
        return AggregatorTags(reduction="other", weighted=self.weighted, homogeneity=None)

    def _weights(self, J, losses):
        return torch.tensor(self.weights, dtype=torch.float64)


def test_a_row_too_small_for_the_scaled_gram_gets_no_bound():
    """Rows of 1e308 and 1e108: the second's scaled diagonal underflows to 0, so a weight of 1e201
    on it is not in Σ|w_i|‖g_i‖; the direction is checked itself."""
    G = torch.tensor([[1e308, 0.0], [0.0, 1e108]], dtype=torch.float64)
    with pytest.raises(NonFiniteOutputError):
        _Weighted(weights=(1e-300, 1e201))(G)


def test_weights_that_do_not_make_the_direction_give_no_bound():
    class Tracked(Aggregator):
        def tags(self):
            return AggregatorTags(family="solver", weighted=False, homogeneity=None, reduction="other")

        def _aggregate(self, J, losses):
            w = torch.full((J.n_tasks,), 1.5, dtype=torch.float64)
            return Aggregation(J.map_blocks(lambda b: b * 1e4).combine(w), w)

    with pytest.raises(NonFiniteOutputError):
        Tracked()(torch.tensor([[3.0, 1.0], [3.0, 0.0]]).half())


@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e30), (torch.float64, 1e300)])
def test_db_mtl_bound_is_in_absolute_units_when_its_norms_come_from_the_scaled_gram(dtype, big):
    """T = 12 rows of (big, 1): squares overflow, the norms come from the scaled Gram; a loss that
    puts the direction just past the range must raise, not return inf."""
    G = torch.zeros(12, 2, dtype=dtype)
    G[:, 0], G[:, 1] = big, 1.0
    losses = torch.full((12,), big / (0.95 * torch.finfo(dtype).max), dtype=torch.float64)
    with pytest.raises(NonFiniteOutputError):
        get_aggregator("db_mtl")(G, losses)


@pytest.mark.parametrize("name", ["moco", "modo"])
def test_a_lambda_step_at_a_tiny_scale_with_rho(name):
    """γ 4^S underflows to 0 while ρ 4^-S λ overflows: the step must still be ρλ's (no 0·inf)."""
    options = {"moco": dict(beta=1.0, beta_sigma=0.0, gamma=10.0, rho=0.1), "modo": dict(gamma=10.0, rho=0.1)}[name]
    agg = get_aggregator(name, **options)
    G = torch.tensor([[10.0, 0.0], [0.0, 0.1]], dtype=torch.float64)
    agg(G)
    w = agg._lambda if name == "moco" else None
    out = agg(G * 1e-200)
    lam = agg._lambda
    assert torch.isfinite(out.direction).all() and abs(float(lam.sum()) - 1) < 1e-12
    if name == "moco":  # Y Yᵀ ≈ 0: λ − γ_2 ρ λ, projected (γ_2 = 10/√2)
        expected = project_onto_simplex(w - 10 / math.sqrt(2) * 0.1 * w)
        torch.testing.assert_close(lam, expected, rtol=0, atol=1e-15)


def test_load_state_dict_refuses_a_generator_state_that_does_not_fit_and_changes_nothing():
    moco, twin = get_aggregator("moco"), get_aggregator("moco")
    moco(_G()), twin(_G())
    state = twin.state_dict()
    other = get_aggregator("moco")
    other(_G(seed=5)), other(_G(seed=6))
    bad = {**other.state_dict(), "generator": torch.zeros(7, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="generator"):
        moco.load_state_dict(bad)
    assert moco.state_dict()["method"]["_step"] == state["method"]["_step"]
    _same_next_steps(moco, twin, [(_G(seed=s), None) for s in (1, 2)])


def test_a_refused_first_call_leaves_the_task_count_unset():
    moco = get_aggregator("moco")
    G = _G() / _G().abs().max() * 1.5e308  # finite, but y − g would overflow: refused inside the method
    with pytest.raises(NonFiniteGradientError, match="MoCo"):
        moco(G)
    assert moco.state_dict()["n_tasks"] is None
    assert torch.isfinite(moco(_G()[:2]).direction).all()  # T = 2 now: no "called with T=3 before"


def test_registered_subclasses_with_kwargs_and_huge_ints():
    from mtlcheck.aggregators._registry import _check_init_types
    from mtlcheck.aggregators.upgrad import UPGrad

    class MyUPGrad(UPGrad):
        def __init__(self, *, extra: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

    _check_init_types(MyUPGrad)  # as register_aggregator does
    assert MyUPGrad(extra=2.0, seed=1).seed == 1
    with pytest.raises(ValueError, match="extra"):
        MyUPGrad(extra=True)
    with pytest.raises(ValueError, match="beta_sigma"):
        get_aggregator("db_mtl", beta_sigma=10**400)
    with pytest.raises(TypeError):
        get_aggregator("upgrad", bogus=1)


def test_an_excess_mtl_state_saved_from_half_precision_gradients_loads_into_float32():
    ex = get_aggregator("excess_mtl")
    ex(_G(torch.float16))
    state = ex.state_dict()
    old = {k: v for k, v in state["method"].items() if k != "_sq_bound"}
    old["_sq_sum_eps"] = tuple(s.half() for s in old["_sq_sum_eps"])  # as saved before S was float32
    twin = get_aggregator("excess_mtl")
    twin.load_state_dict({**state, "method": old})
    assert torch.isfinite(twin(_G(torch.float16, seed=1)).direction).all()


# -- from a second review ---------------------------------------------------------------------------
def test_db_mtl_weights_past_the_dtype_give_the_direction_that_fits():
    """fp16 rows of 1 and 1e-6: the weight top/‖B_i‖ of the small row (1.4e6) is past fp16's
    range, the direction top·Σ_i B_i/‖B_i‖ is not: it is formed in float32 and rounded once
    (before: refused after the step although it fits)."""
    G = torch.tensor([[1.0, 1.0], [1e-6, 0.0]]).half()
    got = get_aggregator("db_mtl")(G, torch.ones(2, dtype=torch.float64)).direction
    B = G.double()
    norms = B.norm(dim=1)
    expected = 0.1 * norms.max() * (B / norms[:, None]).sum(0)  # ĝ = (1 − β) g / L at the first step
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), expected, rtol=1e-3, atol=0)


def test_db_mtl_direction_past_fp16_is_refused_with_a_weight_past_it_too():
    """Forty aligned fp16 rows whose terms add past 65504 (each 3e3 per entry), and a row 1e-6
    whose weight is past fp16's range (formed in float32 by the combination): the bound T·top
    passes the range, so the direction is checked, and its inf is refused."""
    G = torch.cat([torch.full((40, 100), 3e4), torch.full((1, 100), 1e-6)]).half()
    with pytest.raises(NonFiniteOutputError):
        get_aggregator("db_mtl")(G, torch.ones(41, dtype=torch.float64))


def test_gradvac_published_forms_its_mean_at_the_mean_s_scale():
    """Five fp16 rows of 14000: their sum overflows fp16, their mean does not."""
    out = get_aggregator("gradvac-published")(torch.full((5, 1), 14000.0).half())
    assert out.direction.tolist() == [14000.0]


def test_a_mixed_dtype_jacobian_is_checked_against_its_narrowest_dtype():
    from mtlcheck.jacobian import Jacobian

    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[4e4], [4e4]]).half()  # PCGrad's sum: 8e4, past fp16
    J = Jacobian((a, b), (torch.Size([2]), torch.Size([1])), ("a", "b"))
    with pytest.raises(NonFiniteOutputError):
        get_aggregator("pcgrad")(J)


def test_a_refused_first_call_that_had_begun_its_state_leaves_it_initial():
    """FAMO sets up its logits for T = 2 and then refuses a negative loss: the next call, with
    T = 3, is a first call again."""
    famo = get_aggregator("famo")
    with pytest.raises(ValueError):
        famo(None, torch.tensor([-1.0, 1.0], dtype=torch.float64))
    fresh = get_aggregator("famo")
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(famo(None, losses).weights, fresh(None, losses).weights)


def test_gram_step_keeps_rho_where_the_gram_term_has_no_gap():
    """Π_Δ(λ − γ(4^S Ĝλ + ρλ)) at S = 600 with Ĝλ = 0: (0, 1) − 0.1·(0, 1) projects to (0.05, 0.95)."""
    from mtlcheck.aggregators._simplex import gram_step

    lam = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = gram_step(lam, 0.1, 1.0, torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64)), 600)
    torch.testing.assert_close(out, torch.tensor([0.05, 0.95], dtype=torch.float64), rtol=0, atol=1e-15)


def test_a_legacy_half_precision_sum_gets_epsilon_in_float32():
    ex = get_aggregator("excess_mtl")
    ex(_G(torch.float16))
    state = ex.state_dict()
    method = {k: v for k, v in state["method"].items() if k not in ("_sq_sum_eps", "_sq_bound")}
    method["_sq_sum"] = tuple(torch.zeros(3, 5, dtype=torch.float16) for _ in state["method"]["_sq_sum_eps"])
    twin = get_aggregator("excess_mtl")
    twin.load_state_dict({**state, "method": method})
    loaded = twin.state_dict()["method"]["_sq_sum_eps"][0]
    assert loaded.dtype == torch.float32 and float(loaded.min()) == float(torch.tensor(1e-7, dtype=torch.float32))


def test_a_bad_option_names_the_class_being_built():
    with pytest.raises(ValueError, match="NashMTLPublished: seed"):
        get_aggregator("nash_mtl-published", seed=True)


# -- from a third review ----------------------------------------------------------------------------
def _exact_gram_step(lam, step, rho, gram, S):
    """Π_Δ(λ − step(4^S Ĝλ + ρλ)) in exact rational arithmetic (Fraction), as floats."""
    from fractions import Fraction

    lam_q = [Fraction(v) for v in lam.tolist()]
    g = [[Fraction(v) for v in row] for row in gram.tolist()]
    scale = Fraction(4) ** S
    y = [
        lam_q[i]
        - Fraction(step) * (scale * sum(g[i][j] * lam_q[j] for j in range(len(lam_q))) + Fraction(rho) * lam_q[i])
        for i in range(len(lam_q))
    ]
    u = sorted(y, reverse=True)
    total, theta = Fraction(0), None
    for k, v in enumerate(u, start=1):
        total += v
        if v - (total - 1) / k > 0:
            theta = (total - 1) / k
    return [float(max(v - theta, 0)) for v in y]


@pytest.mark.parametrize("S", [-800, -30, 0, 30, 520, 537, 600, 800])
@pytest.mark.parametrize("rho, step", [(0.0, 1.0), (1.0, 1.0), (0.1, 0.1), (1.0, 0.5), (1e300, 1e-300), (1.0, 1e300)])
def test_gram_step_is_the_exact_projection_at_every_scale(S, rho, step):
    """Against rational arithmetic, where a zero row of Ĝ leaves ρλ to decide the step (each term
    is shifted by its own minimum, so neither hides the other's gaps)."""
    from mtlcheck.aggregators._simplex import gram_step

    gram = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    lam = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    out = gram_step(lam, step, rho, gram, S)
    assert out.tolist() == pytest.approx(_exact_gram_step(lam, step, rho, gram, S), abs=1e-12)


def test_db_mtl_weights_past_the_narrowest_block_s_dtype_give_the_direction():
    """A float32 block, where the small row's weight (1e6) fits, and an fp16 block, where it does
    not: each block is Σ_i w_i B_i of its own dtype (the fp16 one formed in float32)."""
    from mtlcheck.jacobian import Jacobian

    a = torch.tensor([[1.0, 1.0], [1e-6, 0.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).half()
    J = Jacobian((a, b), (torch.Size([2]), torch.Size([2])), ("a", "b"))
    got = get_aggregator("db_mtl")(J, torch.ones(2, dtype=torch.float64)).blocks
    B = torch.cat([a.double(), b.double()], 1)
    norms = B.norm(dim=1)
    expected = 0.1 * norms.max() * (B / norms[:, None]).sum(0)  # ĝ = (1 − β) g / L at the first step
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float16
    torch.testing.assert_close(torch.cat([got[0].double(), got[1].double()]), expected, rtol=1e-3, atol=0)


def test_a_refused_first_call_keeps_a_loaded_state():
    famo = get_aggregator("famo")
    losses = torch.tensor([1.0, 2.0], dtype=torch.float64)
    for _ in range(2):  # two steps: its logits move
        famo(None, losses)
        famo.after_step(losses * 0.9)
    state = famo.state_dict()
    loaded = get_aggregator("famo")
    loaded.load_state_dict({**state, "n_tasks": None})
    with pytest.raises(ValueError):
        loaded(None, torch.tensor([-1.0, 2.0], dtype=torch.float64))
    assert torch.equal(loaded.state_dict()["method"]["_logits"], state["method"]["_logits"])


@pytest.mark.parametrize("name", ["moco", "db_mtl"])
def test_the_state_bounds_judge_a_mixed_dtype_jacobian_by_its_narrowest_block(name):
    """A float64 block first and a float32 block of 2e38: g − y overflows float32, so the call is
    refused before the state changes, as for an all-float32 G."""
    from mtlcheck.jacobian import Jacobian

    def J(scale):
        a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
        b = torch.tensor([[1.0], [-1.0]]) * scale
        return Jacobian((a, b), (torch.Size([2]), torch.Size([1])), ("a", "b"))

    agg, twin = get_aggregator(name), get_aggregator(name)
    agg(J(1.0), L3[:2]), twin(J(1.0), L3[:2])
    with pytest.raises((NonFiniteGradientError, ValueError), match="overflow"):
        agg(J(2e38), L3[:2])
    for _ in range(2):
        assert all(torch.equal(x, y) for x, y in zip(agg(J(2.0), L3[:2]).blocks, twin(J(2.0), L3[:2]).blocks))


@pytest.mark.parametrize("order", ["float32 first", "fp16 first"])
def test_excess_mtl_squares_an_fp16_block_of_a_mixed_jacobian_in_float32(order):
    """An fp16 block of 300s beside a float32 one: its squares (9e4, past fp16's 65504) are formed
    in the float32 state, so the weights are those of the same values all in float32 (exactly: an
    fp16 value's square fits a float32 mantissa)."""
    from mtlcheck.jacobian import Jacobian

    def J(dtype_b, step):
        a = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, 0.1]]) * torch.tensor([[1.0], [2.0**step], [1.0]])
        b = torch.tensor([[300.0], [-1.0], [2.0]]).to(dtype_b)
        blocks, shapes, names = (a, b), (torch.Size([2]), torch.Size([1])), ("a", "b")
        if order == "fp16 first":
            blocks, shapes, names = blocks[::-1], shapes[::-1], names[::-1]
        return Jacobian(blocks, shapes, names)

    mixed, single = get_aggregator("excess_mtl"), get_aggregator("excess_mtl")
    for step in range(3):
        w_mixed, w_single = mixed(J(torch.float16, step)).weights, single(J(torch.float32, step)).weights
        assert torch.equal(w_mixed, w_single)
    assert not torch.allclose(w_single, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("small", [1e-20, 1e-30])
def test_db_mtl_weights_of_rows_and_losses_far_apart_do_not_overflow(small):
    """Rows 1 and 1e-20 with losses 1 and 1e300: ‖ĝ_2‖ = c_2‖B_2‖ is 1e-321, so top/‖ĝ_2‖ passes
    float64's range, while the weight of B_2, top/‖B_2‖ (c cancels), is 1.4e19 and the direction
    fits (before: inf and NaN, trusted by a finite bound); at 1e-30, c_2‖B_2‖ underflows to 0 and
    the row is still weighted by ‖B_2‖ (not dropped)."""
    G = torch.tensor([[1.0, 1.0], [small, 0.0]], dtype=torch.float64)
    got = get_aggregator("db_mtl")(G, torch.tensor([1.0, 1e300], dtype=torch.float64)).direction
    top = 0.1 * math.sqrt(2)  # ĝ_1 = (1 − β) g_1 / L_1 at the first step
    expected = torch.tensor([top / math.sqrt(2) + top, top / math.sqrt(2)], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_excess_mtl_skips_a_device_whose_blocks_have_no_columns():
    """A block with no columns adds nothing, on whatever device it is (the meta device stands in
    for a second one): the risks are those of the other blocks (before: torch.stack of nothing
    raised after the state had changed)."""
    from mtlcheck.aggregators.excess_mtl import _update_and_risks

    S = (torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 0, dtype=torch.float64, device="meta"))
    G = (torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, 1.0]], dtype=torch.float64), torch.ones(2, 0, device="meta"))
    risk = _update_and_risks(S, G)
    torch.testing.assert_close(risk, (G[0] ** 2 / (1 + G[0] ** 2).sqrt()).sum(1), rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "dtype, small", [(torch.float32, 1e-30), (torch.float64, 1e-158), (torch.float64, 1e-161), (torch.float64, 1e-170)]
)
def test_db_mtl_keeps_a_row_too_small_for_the_scaled_gram(dtype, small):
    """A row 1e-30 of another in float32 (kept by the Gram's per-row scales), 1e-158 to 1e-170 in
    float64 (its scaled Gram diagonal subnormal, with few digits, or 0: the task was silently
    dropped): its norm is taken at its own scale, and every term has the largest norm."""
    G = torch.tensor([[1.0, 1.0], [0.0, small]], dtype=dtype)
    got = get_aggregator("db_mtl")(G, torch.ones(2, dtype=torch.float64)).direction
    top = 0.1 * math.sqrt(2)  # ĝ = (1 − β) g / L at the first step
    expected = torch.tensor([top / math.sqrt(2), top / math.sqrt(2) + top], dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)


@pytest.mark.parametrize("name", ["config", "fairgrad", "nash_mtl", "imtl", "upgrad", "db_mtl"])
def test_methods_that_read_each_row_s_direction_keep_a_row_1e30_smaller_in_float32(name):
    """A float32 row 1e-30 of another: its Gram entries underflow float32's products at any common
    scale, and ConFIG, FairGrad and Nash-MTL lost it (directions 20–35 % off their float64 ones);
    the Gram now scales each row by its own power of two where products underflow."""
    G = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1e-30, 1e-30], [0.5, 0.0, 1.0]])
    d32 = get_aggregator(name)(G, L3).direction.double()
    d64 = get_aggregator(name)(G.double(), L3).direction
    assert float((d32 - d64).abs().max() / d64.abs().max()) < 1e-5


@pytest.mark.parametrize("fp16_first", [False, True])
def test_db_mtl_row_norms_of_a_mixed_dtype_jacobian_in_either_order(fp16_first):
    """A float32 block (task 2's row zero) and an fp16 block whose task-2 row is 3e-4 (all its
    squares fp16 subnormals): the squares are summed only where every block is float32/float64,
    judged by each block's own dtype; with the float32 block first, the fp16 squares had passed
    float32's floor and the direction was 0.7 % off."""
    from mtlcheck.jacobian import Jacobian

    gen = torch.Generator().manual_seed(4)
    a = torch.randn(2, 50, generator=gen)
    a[1] = 0
    b = (torch.rand(2, 4000, generator=gen) + 0.5) * torch.tensor([[1.0], [3e-4]])
    b = b.half()
    blocks = [(a, torch.Size([50]), "a"), (b, torch.Size([4000]), "b")]
    if fp16_first:
        blocks = blocks[::-1]
    J = Jacobian(*map(tuple, zip(*blocks)))
    got = torch.cat([x.double() for x in get_aggregator("db_mtl")(J, torch.ones(2, dtype=torch.float64)).blocks])
    B = torch.cat([x.double() for x in J.blocks], 1)
    norms = B.norm(dim=1)
    expected = 0.1 * norms.max() * (B / norms[:, None]).sum(0)  # ĝ = (1 − β) g / L at the first step
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-3


@pytest.mark.parametrize("fp16_first", [False, True])
def test_db_mtl_rounds_its_ema_weight_to_each_block_s_own_dtype(fp16_first):
    """A float64 block beside an fp16 one: the EMA weight s/c is rounded to each block's dtype, so
    the float64 block follows the float64 recurrence whichever block comes first (with the fp16
    block first, the weight had been rounded to fp16 for both: 1.8e-4 off from the second step)."""
    from mtlcheck.jacobian import Jacobian

    gen = torch.Generator().manual_seed(6)
    beta, sigma = 0.9, 0.5
    agg, buffer = get_aggregator("db_mtl"), None
    for t in (1, 2, 3):
        a = (torch.randn(2, 8, generator=gen, dtype=torch.float64) * 1e-3).half()
        b = torch.randn(2, 5, generator=gen, dtype=torch.float64)
        losses = 0.5 + torch.rand(2, generator=gen, dtype=torch.float64)
        blocks = [(a, torch.Size([8]), "a"), (b, torch.Size([5]), "b")]
        J = Jacobian(*map(tuple, zip(*(blocks[::-1] if not fp16_first else blocks))))
        got = agg(J, losses).blocks[1 if fp16_first else 0]
        G = torch.cat([a.double(), b], 1)
        beta_t = beta / t**sigma
        step = (1 - beta_t) * G / losses[:, None]
        buffer = step if buffer is None else beta_t * buffer + step
        norms = buffer.norm(dim=1)
        expected = ((norms.max() / norms)[:, None] * buffer).sum(0)[8:]
        assert float((got - expected).abs().max() / expected.abs().max()) < 1e-8, t


@pytest.mark.parametrize("name", ["moco", "db_mtl"])
def test_a_mixed_dtype_jacobian_is_bounded_block_by_block(name):
    """A float64 block of 1e300 beside a float32 block of ones: nothing overflows (the float32
    block's state stays below 1), so the call is taken, where the largest |g| of any block judged
    against float32's range had refused it; a float32 block of 2e38 is still refused, with its name."""
    from mtlcheck.jacobian import Jacobian

    def J(big, small):
        a = torch.tensor([[1e300, -2.0], [1.0, 3e299]], dtype=torch.float64) * big
        b = torch.tensor([[1.0], [-1.0]]) * small
        return Jacobian((a, b), (torch.Size([2]), torch.Size([1])), ("big", "small"))

    agg = get_aggregator(name)
    for step in range(3):
        out = agg(J(1.0 + step, 1.0), L3[:2])
        assert all(bool(torch.isfinite(x).all()) for x in out.blocks)
    with pytest.raises((NonFiniteGradientError, ValueError), match="small.*float32"):
        agg(J(1.0, 2e38), L3[:2])


def test_states_saved_before_the_gradients_dtypes_were_kept_still_load():
    """MoCo's and DB-MTL's states saved without the gradients' dtypes (their state was then in those
    dtypes: fp16 here) load and go on as the uninterrupted run; an ExcessMTL state of a (float32,
    float64) Jacobian, whose S was all float32 (the first block's dtype), loads and goes on with the
    float64 block's S widened to float64 (exact)."""
    from mtlcheck.jacobian import Jacobian

    for name, key in (("moco", "_y"), ("db_mtl", "_buffer")):
        agg, twin = get_aggregator(name), get_aggregator(name)
        agg(_G(torch.float16), L3)
        state = agg.state_dict()
        method = {k: v for k, v in state["method"].items() if k != "_grad_dtypes"}
        method[key] = tuple(s.half() for s in method[key])  # as saved then (exact: fp16 values)
        twin.load_state_dict({**state, "method": method})
        for seed in (1, 2):
            assert torch.equal(
                agg(_G(torch.float16, seed=seed), L3).direction, twin(_G(torch.float16, seed=seed), L3).direction
            )
        with pytest.raises(ValueError, match="dtype changed"):
            twin(_G(torch.float32), L3)

    def J(seed):
        a, b = _G(torch.float32, seed=seed)[:, :2], _G(seed=seed)[:, 2:]
        return Jacobian((a, b), (torch.Size([2]), torch.Size([3])), ("a", "b"))

    agg, twin = get_aggregator("excess_mtl"), get_aggregator("excess_mtl")
    agg(J(0)), twin(J(0))
    state = twin.state_dict()
    method = {k: v for k, v in state["method"].items() if k != "_grad_dtypes"}
    method["_sq_sum_eps"] = tuple(s.float() for s in method["_sq_sum_eps"])  # all in the first block's
    twin.load_state_dict({**state, "method": method})
    for seed in (1, 2):
        torch.testing.assert_close(agg(J(seed)).weights, twin(J(seed)).weights, rtol=1e-6, atol=0)
    assert [s.dtype for s in twin.state_dict()["method"]["_sq_sum_eps"]] == [torch.float32, torch.float64]


def test_excess_mtl_keeps_each_blocks_sum_in_that_blocks_dtype():
    """A float32 block first and a float64 block of 1e20: the float64 block's S is float64 (it had
    been kept in the first block's float32, where 1e40 overflows, and the call was refused), and
    the fp16 block of a (float64, fp16) Jacobian gets a float32 S."""
    from mtlcheck.jacobian import Jacobian

    def J(first, second, big):
        a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=first)
        b = (torch.tensor([[1.0], [-1.0]], dtype=torch.float64) * big).to(second)
        return Jacobian((a, b), (torch.Size([2]), torch.Size([1])), ("a", "b"))

    for first, second, big in ((torch.float32, torch.float64, 1e20), (torch.float64, torch.float16, 1.0)):
        ex = get_aggregator("excess_mtl")
        for _ in range(2):
            assert torch.isfinite(ex(J(first, second, big)).direction).all()
        sums = ex.state_dict()["method"]["_sq_sum_eps"]
        assert [s.dtype for s in sums] == [first, torch.float32 if second == torch.float16 else second]
    with pytest.raises(NonFiniteGradientError, match="block 'b'.*float32"):  # the float32 block's own range
        get_aggregator("excess_mtl")(J(torch.float64, torch.float32, 2e19))


def test_states_saved_with_one_bound_for_every_block_still_load():
    """A bound saved as one float (before it was kept block by block) loads as that bound for each
    block, and the next steps are those of an uninterrupted run."""
    for name, key in (("moco", "_y_bound"), ("db_mtl", "_g_bound")):
        agg, twin = get_aggregator(name), get_aggregator(name)
        agg(_G(), L3)
        state = agg.state_dict()
        old = {**state, "method": {**state["method"], key: max(state["method"][key])}}
        twin.load_state_dict(old)
        assert twin.state_dict()["method"][key] == state["method"][key]
        _same_next_steps(agg, twin, [(_G(seed=s), L3) for s in (1, 2)])


def _two_dtype_jacobian(big=1.0, half=1.0, second=torch.float16):
    from mtlcheck.jacobian import Jacobian

    a = torch.tensor([[4.0, -2.0], [1.0, 3.0]], dtype=torch.float64) * big
    b = (torch.tensor([[1.0], [-1.0]]) * half).to(second)
    return Jacobian((a, b), (torch.Size([2]), torch.Size([1])), ("big", "small"))


@pytest.mark.parametrize("name, key", [("moco", "_y_bound"), ("db_mtl", "_g_bound")])
def test_a_bound_saved_for_fewer_blocks_than_the_state_is_refused(name, key):
    """A bound tuple cut to one block beside a two-block state: loading it is refused, nothing
    changed (kept, the second block would never have been judged again, and an fp16 block of 6e4
    would have been taken)."""
    agg = get_aggregator(name)
    agg(_two_dtype_jacobian(), L3[:2])
    state = agg.state_dict()
    cut = {**state, "method": {**state["method"], key: state["method"][key][:1]}}
    fresh = get_aggregator(name)
    with pytest.raises(ValueError, match="bound for 1 block"):
        fresh.load_state_dict(cut)
    assert fresh.state_dict()["method"][key] is None


@pytest.mark.parametrize("name", ["moco", "db_mtl", "excess_mtl"])
def test_a_change_of_dtype_in_a_later_block_is_refused_before_the_state_changes(name):
    """Blocks (float64, fp16), then (float64, float64): the second block's dtype changed, which is
    refused by name before any state changes (before: only the first block was compared, and
    MoCo's in-place update of block 0 ran before a raw dtype error in block 1)."""
    agg, twin = get_aggregator(name), get_aggregator(name)
    agg(_two_dtype_jacobian(), L3[:2]), twin(_two_dtype_jacobian(), L3[:2])
    with pytest.raises(ValueError, match=r"dtype changed.*block 1"):
        agg(_two_dtype_jacobian(second=torch.float64), L3[:2])
    for s in (2.0, 3.0):
        a, b = agg(_two_dtype_jacobian(big=s), L3[:2]), twin(_two_dtype_jacobian(big=s), L3[:2])
        assert all(torch.equal(x, y) for x, y in zip(a.blocks, b.blocks))


# -- from an audit of STCH, GLS, SDMGrad, MoDo and CR-MOGM ------------------------------------------
def test_cr_mogm_draws_its_random_base_from_its_own_seed():
    """CR-MOGM over a random base (RLW): `seed` then `reset()` re-seed the base's draws, and
    CR-MOGM's generator is the one they come from (before: the base kept the constructor's seed,
    so every seed gave the same weights and the kit's stochastic-tag check failed)."""
    G = _G(seed=7)
    weights = []
    for s in range(3):
        agg = get_aggregator("cr_mogm", base="rgw")
        agg.seed = s
        agg.reset()
        weights.append(agg(G).weights)
        fresh = get_aggregator("cr_mogm", base="rgw", seed=s)
        assert torch.equal(weights[-1], fresh(G).weights)
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    agg = get_aggregator("cr_mogm", base="rgw")
    agg.generator.manual_seed(123)
    assert not torch.equal(agg(G).weights, weights[0])
    twin = copy.deepcopy(agg)  # a copy shares one generator between CR-MOGM and its base too
    assert torch.equal(agg(G).weights, twin(G).weights)
    twin.generator.manual_seed(5)
    agg.generator.manual_seed(5)
    assert torch.equal(agg(G).weights, twin(G).weights)


def test_cr_mogm_refuses_a_second_order_base_by_name():
    with pytest.raises(ValueError, match="base 'cosreg' is a second-order method"):
        get_aggregator("cr_mogm", base="cosreg")


def test_cr_mogm_reads_its_bases_weights_without_the_bases_direction():
    """Aligned-MTL's own direction for two fp16 rows of 4e4 passes 65504 and it refuses it; CR-MOGM
    smooths its weights with earlier ones into a direction that fits, and takes the step (before,
    it ran the base's whole call, a pass over G for a direction it discarded, and died on the base's
    refusal, naming the base)."""
    agg = get_aggregator("cr_mogm", base="aligned_mtl")
    agg(torch.tensor([[1.0, 0.0], [0.9, 0.1]]).half())
    big = torch.tensor([[4e4, 0.0], [4e4, 0.0]]).half()
    with pytest.raises(NonFiniteOutputError, match="AlignedMTL"):
        get_aggregator("aligned_mtl")(big)
    out = agg(big)
    assert out.direction.dtype == torch.float16 and torch.isfinite(out.direction).all()


@pytest.mark.parametrize("name", ["mgda", "pcgrad", "gradvac", "nash_mtl", "excess_mtl"])
def test_task_weights_is_the_calls_weights_and_refuses_an_unweighted_method(name):
    G = _G()
    assert torch.equal(get_aggregator(name).task_weights(G), get_aggregator(name)(G).weights)
    with pytest.raises(ValueError, match="no task weights"):
        get_aggregator("graddrop").task_weights(G)


@pytest.mark.parametrize(
    "name, options, calls",
    [
        ("stch", {"warmup_steps": 2}, [(None, [1.0, 2.0]), (None, [1e-310, 2.0])]),
        (
            "cr_mogm",
            {"base": "cagrad"},
            [
                (torch.tensor([[1.0, 0.0], [1e-3, 0.0]]).half(), None),
                (torch.tensor([[1e3, 0.0], [0.0, 1e3]]).half(), None),
            ],
        ),
    ],
)
def test_a_call_refused_after_the_first_leaves_the_state_as_it_was(name, options, calls):
    """The last call is refused (STCH: a weight 1/L past float64's range; CR-MOGM over CAGrad: an
    fp16 direction past 65504) after the method had updated its state (STCH's nadir and warm-up
    count, CR-MOGM's λ): the state, the generator and T are restored, and the next calls are those
    of a twin that never saw it (before: only a refused first call was undone)."""
    agg, twin = get_aggregator(name, **options), get_aggregator(name, **options)
    *before, (G, losses) = calls
    for g, L in before:
        agg(g, L), twin(g, L)
    with pytest.raises(NonFiniteOutputError):
        agg(G, losses)
    assert repr(agg.state_dict()) == repr(twin.state_dict())
    for g, L in before:
        assert torch.equal(agg(g, L).weights, twin(g, L).weights)


def test_losses_past_float64_are_refused_by_name():
    with pytest.raises(ValueError, match="losses must be a .* tensor of real numbers"):
        get_aggregator("gls")(None, [10**400, 1])


@pytest.mark.parametrize("exponent, vertex", [(20, 1), (600, 0)])
def test_a_lambda_step_past_the_range_in_both_terms_gives_the_vertex_it_tends_to(exponent, vertex):
    """λ = (0.6, 0.4), step·ρ = inf and step·4^exponent·(Gram gap) past the range: every entry of
    λ − step(ρ(λ − min λ) + GGᵀλ − min) is −inf. The limit puts all weight where the combined gap
    ρ·0.2 (task 0) or 4^exponent·0.6 (task 1) is least (before: FloatingPointError)."""
    from mtlcheck.aggregators._simplex import gram_step

    lam = torch.tensor([0.6, 0.4], dtype=torch.float64)
    got = gram_step(lam, 1e300, 1e300, torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64), exponent)
    assert torch.equal(got, torch.eye(2, dtype=torch.float64)[vertex])


def test_config_does_not_claim_non_conflict_for_dependent_rows():
    """Four rows in R³: ⟨û_i, v⟩ = 1 is inconsistent, and the least-squares v conflicts with task 3
    although x with Gx ≥ 1 exists (TorchJD's ConFIG gives the same v); the tag no longer claims
    non-conflict (the kit samples T ≤ d only, where the claim holds)."""
    G = torch.tensor(
        [[1.802, 1.315, 0.357], [-1.208, -0.004, 0.656], [-1.288, 0.395, 0.43], [0.696, -1.184, -0.662]],
        dtype=torch.float64,
    )
    agg = get_aggregator("config")
    assert float((G @ agg(G).direction).min()) < -0.02
    assert not agg.tags().non_conflicting


@pytest.mark.parametrize("alpha, scale", [(2.0, 1e-300), (100.0, 1e-160)])
def test_fairgrad_weights_past_float64_are_refused_as_such(alpha, scale):
    """w ∝ 2^(−2Sα/(1+α)) for gradients of 1e-300: the weights (~1e400) pass float64's range; a
    NonFiniteOutputError names them (2.0**exponent raised a raw OverflowError)."""
    G = torch.tensor([[1.0, 0.0], [0.3, 1.0]], dtype=torch.float64) * scale
    with pytest.raises(NonFiniteOutputError, match="FairGrad.*non-finite task weights"):
        get_aggregator("fairgrad", alpha=alpha)(G)


def test_fairgrad_takes_a_rounding_level_solution_where_one_exists():
    """α = 0.25, norms 1e-3, 1, 1e3: (Mw)_0 cancels to ~1e-13 of its terms, so the residual stops at
    ~7e-5, above the 1e-6 that alone certifies a rounding level; the min-norm certificate shows a
    solution exists, and the settled weights are the 60-digit root's to 1e-11 (before: SolverError
    "Newton failed although a solution exists" on 15 of 40 seeds)."""
    mpmath = pytest.importorskip("mpmath")
    alpha = 0.25
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        G = (
            torch.randn(3, 200, generator=gen, dtype=torch.float64)
            * torch.logspace(-3, 3, 3, dtype=torch.float64)[:, None]
        )
        w = get_aggregator("fairgrad", alpha=alpha)(G).weights.numpy()
        mpmath.mp.dps = 60
        M = mpmath.matrix((G @ G.T).tolist())

        def residuals(*y, M=M):  # the α-fair condition in log w
            return [
                mpmath.e ** (y[i] / alpha) * sum(M[i, j] * mpmath.e ** y[j] for j in range(3)) - 1 for i in range(3)
            ]

        root = np.array([float(mpmath.e**v) for v in mpmath.findroot(residuals, [mpmath.log(v) for v in w])])
        assert float(np.max(np.abs(w - root) / root)) < 1e-11, seed


def test_a_cr_mogm_state_saved_when_its_base_kept_its_own_generator_resumes_exactly():
    """Before CR-MOGM shared its generator with its base, the base's moved and CR-MOGM's did not;
    such a state (CR-MOGM's generator as at the start) resumes the base's draws where they were,
    not from the start."""
    agg = get_aggregator("cr_mogm", base="rgw", alpha=0.5, seed=3)
    for s in (0, 1):
        agg(_G(seed=s))
    state = agg.state_dict()
    old = {**state, "generator": get_aggregator("cr_mogm", base="rgw", seed=3).generator.get_state()}
    twin = get_aggregator("cr_mogm", base="rgw", alpha=0.5, seed=3)
    twin.load_state_dict(old)
    for s in (2, 3, 4):
        assert torch.equal(agg(_G(seed=s)).weights, twin(_G(seed=s)).weights)


def test_a_refused_first_call_undoes_state_declared_by_get_state_alone():
    """A third-party method that declares its state through `_get_state`/`_set_state` (no
    `_state_attrs`) and sets it before refusing: the refused first call is undone."""
    from mtlcheck.aggregators._base import AggregatorTags, WeightingAggregator

    class Mine(WeightingAggregator):
        def __init__(self, *, seed: int = 0):
            super().__init__(seed=seed)
            self._ema = None

        def tags(self):
            return AggregatorTags(stateful=True)

        def _get_state(self):
            return {"ema": self._ema}

        def _set_state(self, state):
            self._ema = state["ema"]

        def _reset_state(self):
            self._ema = None

        def _weights(self, J, losses):
            self._ema = torch.ones(J.n_tasks, dtype=torch.float64)
            raise ValueError("refused after the state was set")

    mine = Mine()
    with pytest.raises(ValueError, match="refused after"):
        mine(_G())
    assert mine._ema is None and mine._n_tasks is None


@pytest.mark.parametrize("base", ["pcgrad", "gradvac"])
def test_cr_mogm_is_not_refused_for_its_bases_direction_whatever_the_base(base):
    """PCGrad and GradVac (as Nash-MTL) form their weights before their direction: CR-MOGM reads
    the weights alone, so a base direction past float64's range (rows of 1.5e308) does not refuse
    a smoothed direction that fits."""
    agg = get_aggregator("cr_mogm", base=base, alpha=0.9)
    agg(torch.eye(2, dtype=torch.float64))
    a = 1.5e308
    G = torch.tensor([[a, 0.0], [-0.5 * a, 0.8 * a]], dtype=torch.float64)
    with pytest.raises(NonFiniteOutputError):  # the base's own direction
        get_aggregator(base)(G)
    assert torch.isfinite(agg(G).direction).all()


def test_an_stch_state_that_does_not_fit_its_options_is_refused_by_name():
    """A state saved mid-warm-up with nadir_steps=2 (two steps taken, no nadir yet) into an STCH
    averaging every warm-up step, and an old state's nadir over every step into one with
    nadir_steps=2: each a ValueError naming the options, the method unchanged (before: a raw
    TypeError at the next call, or a nadir over the wrong steps)."""
    saved = get_aggregator("stch", warmup_steps=4, nadir_steps=2)
    for L in ([1.0, 2.0], [2.0, 1.0]):
        saved(None, L)
    other = get_aggregator("stch", warmup_steps=4)
    with pytest.raises(ValueError, match="does not fit warmup_steps=4, nadir_steps=None"):
        other.load_state_dict(saved.state_dict())
    assert other.state_dict()["method"]["_count"] is None
    state = saved.state_dict()
    old = {**state, "method": {"_sum": torch.tensor([3.0, 6.0], dtype=torch.float64), "_count": 3}}
    with pytest.raises(ValueError, match="mean over all of its 3 warm-up steps"):
        get_aggregator("stch", warmup_steps=4, nadir_steps=2).load_state_dict(old)


@pytest.mark.parametrize("name, key", [("moco", "_y"), ("db_mtl", "_buffer")])
def test_a_float32_state_saved_without_the_gradients_dtypes_takes_half_or_float32_gradients(name, key):
    """A float32 Y or B saved without the gradients' dtypes may have come from float32 or (once
    half-precision states were widened) fp16 gradients: either resumes; a float64 one was made by
    float64 gradients, and float32 ones are refused."""
    for dtype in (torch.float16, torch.float32):
        agg = get_aggregator(name)
        agg(_G(torch.float16), L3)
        state = agg.state_dict()
        method = {k: v for k, v in state["method"].items() if k != "_grad_dtypes"}
        twin = get_aggregator(name)
        twin.load_state_dict({**state, "method": method})
        assert torch.isfinite(twin(_G(dtype, seed=1), L3).direction).all()
    agg = get_aggregator(name)
    agg(_G(torch.float64), L3)
    state = agg.state_dict()
    twin = get_aggregator(name)
    twin.load_state_dict({**state, "method": {k: v for k, v in state["method"].items() if k != "_grad_dtypes"}})
    with pytest.raises(ValueError, match="dtype changed"):
        twin(_G(torch.float32), L3)


def test_an_excess_mtl_state_saved_without_the_gradients_dtypes_still_refuses_a_change():
    """S in float64, saved without the gradients' dtypes: float32 gradients next are refused (S is
    not converted to fit whatever comes)."""
    agg = get_aggregator("excess_mtl")
    agg(_G(torch.float64))
    state = agg.state_dict()
    twin = get_aggregator("excess_mtl")
    twin.load_state_dict({**state, "method": {k: v for k, v in state["method"].items() if k != "_grad_dtypes"}})
    with pytest.raises(ValueError, match="dtype changed"):
        twin(_G(torch.float32))
    assert torch.isfinite(twin(_G(torch.float64, seed=1)).direction).all()


def test_an_stch_state_saved_with_other_options_is_refused_by_name():
    saved = get_aggregator("stch", warmup_steps=4, nadir_steps=2)
    for L in ([1.0, 2.0], [2.0, 1.0], [4.0, 8.0]):
        saved(None, L)
    other = get_aggregator("stch", warmup_steps=4)
    with pytest.raises(ValueError, match="saved with warmup_steps=4, nadir_steps=2"):
        other.load_state_dict(saved.state_dict())


def test_stch_states_of_equivalent_options_load_and_a_stateless_one_fits_any():
    """nadir_steps=None is nadir_steps=warmup_steps: a state of one loads into the other; STCH
    without a warm-up keeps no options (nothing for them to fit), so its state loads anywhere."""
    a = get_aggregator("stch", warmup_steps=3)
    for L in ([1.0, 2.0], [2.0, 1.0]):
        a(None, L)
    b = get_aggregator("stch", warmup_steps=3, nadir_steps=3)
    b.load_state_dict(a.state_dict())
    for L in ([3.0, 1.0], [1.0, 1.0], [2.0, 2.0]):
        assert torch.equal(a(None, L).weights, b(None, L).weights)
    plain = get_aggregator("stch")
    plain(None, [1.0, 2.0])
    get_aggregator("stch", warmup_steps=5).load_state_dict(plain.state_dict())


def test_a_refused_calls_restore_sets_the_state_back_without_loading_it():
    """The restore after a refused call sets the attributes back as they were; it does not run
    `_set_state`'s checks (STCH's options, changed on the instance between calls, had raised
    inside the restore, hid the real error and left the state half-updated)."""
    agg = get_aggregator("stch", warmup_steps=3)
    agg(None, [1.0, 2.0])
    before = repr(agg.state_dict())
    agg.warmup_steps = 5
    with pytest.raises(NonFiniteOutputError):
        agg(None, [1e-320, 1.0])
    assert repr(agg.state_dict()) == before


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("stch", "_options", (3,)),
        ("stch", "_options", 3),
        ("moco", "_grad_dtypes", (torch.float64, torch.float64)),
        ("excess_mtl", "_grad_dtypes", "x"),
    ],
)
def test_malformed_state_entries_are_refused_by_name(name, key, value):
    options = {"warmup_steps": 3} if name == "stch" else {}
    agg = get_aggregator(name, **options)
    for seed in (0, 1):
        agg(_G(seed=seed)[:2] if name != "stch" else None, L3[:2])
    state = agg.state_dict()
    twin = get_aggregator(name, **options)
    with pytest.raises(ValueError, match="are not"):
        twin.load_state_dict({**state, "method": {**state["method"], key: value}})
