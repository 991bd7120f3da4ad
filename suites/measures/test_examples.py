"""Hand-computed examples and input validation for the measures (paper section 5)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from mtlcheck.measures import disentanglement as fd_module
from mtlcheck.measures import (
    feature_disentanglement,
    gds_from_gradients,
    gms_from_gradients,
    gradient_direction_similarity,
    gradient_magnitude_similarity,
    pairwise_cosines,
    pairwise_magnitude_similarities,
    position_entropies,
    ranking_similarity,
    symmetric_ranking_similarity,
)

SQRT2 = math.sqrt(2.0)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# GDS (Eq. 5)


def test_gds_two_tasks_45_degrees():
    # cos((1,0),(1,1)) = 1/sqrt(2); one pair, counted twice in Eq. 5b
    assert gds_from_gradients(t([[1, 0], [1, 1]])) == pytest.approx(1 / SQRT2, abs=1e-15)


def test_gds_three_tasks():
    # alpha_12 = 0, alpha_13 = alpha_23 = 1/sqrt(2); ordered-pair mean = 2*sqrt(2)/6
    G = t([[1, 0], [0, 1], [1, 1]])
    assert gds_from_gradients(G) == pytest.approx(SQRT2 / 3, abs=1e-15)
    expected = t([[1, 0, 1 / SQRT2], [0, 1, 1 / SQRT2], [1 / SQRT2, 1 / SQRT2, 1]])
    torch.testing.assert_close(pairwise_cosines(G @ G.T), expected, rtol=0, atol=1e-15)


def test_gds_from_gram_directly():
    # g1 = 2 e, g2 = e: Gram [[4, 2], [2, 1]] -> parallel -> GDS = 1
    assert gradient_direction_similarity(t([[4, 2], [2, 1]])) == 1.0
    assert gradient_direction_similarity(t([[1, -1], [-1, 1]])) == -1.0
    # the Gram may also be a numpy array or nested list
    assert gradient_direction_similarity(np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert gradient_direction_similarity([[1.0, 0.5], [0.5, 1.0]]) == pytest.approx(0.5)


def test_gds_zero_gradient_convention():
    # cos with a zero vector is 0, never NaN; diagonal is 0 for a zero row
    G = t([[1, 0], [0, 0], [1, 0]])
    cos = pairwise_cosines(G @ G.T)
    torch.testing.assert_close(cos, t([[1, 0, 1], [0, 0, 0], [1, 0, 1]]), rtol=0, atol=0)
    # pairs: (1,3) twice -> 1, four pairs with the zero row -> 0
    assert gds_from_gradients(G) == pytest.approx(2 / 6)
    assert gds_from_gradients(torch.zeros(3, 4)) == 0.0


def test_gds_clamps_rounding_past_cauchy_schwarz():
    # an engine Gram can carry rounding; cosines are clamped to [-1, 1]
    gram = t([[1.0, 1.0 + 1e-12], [1.0 + 1e-12, 1.0]])
    assert gradient_direction_similarity(gram) == 1.0


def test_gds_extreme_scales():
    G = t([[1, 0], [1, 1]])
    for c in (1e-150, 1e150):  # Gram entries 1e-300 / 1e300: still normal doubles
        assert gds_from_gradients(c * G) == pytest.approx(1 / SQRT2, abs=1e-15)


def test_gds_trailing_dims_are_flattened():
    G = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert gds_from_gradients(G) == pytest.approx(gds_from_gradients(G.reshape(3, -1)), abs=1e-15)


# ---------------------------------------------------------------------------------------------
# GMS (Eq. 6, typo fixed)


def test_gms_corrected_formula_not_the_printed_typo():
    # norms 1 and 3. Corrected beta = 2*1*3 / (1 + 9) = 0.6 for both orders.
    # The printed Eq. 6a (||g_j||^2 + ||g_j||^2) would give 6/18 = 1/3 and 6/2 = 3: not in [0, 1]
    # and not symmetric, so it cannot be what the paper means.
    G = t([[1, 0], [0, 3]])
    assert gms_from_gradients(G) == pytest.approx(0.6, abs=1e-15)
    beta = pairwise_magnitude_similarities(G @ G.T)
    torch.testing.assert_close(beta, t([[1, 0.6], [0.6, 1]]), rtol=0, atol=1e-15)


def test_gms_three_tasks():
    # norms 1, 2, 2: beta_12 = beta_13 = 4/5, beta_23 = 1 -> mean = (0.8 + 0.8 + 1) / 3
    G = t([[1, 0, 0], [0, 2, 0], [0, 0, -2]])
    assert gms_from_gradients(G) == pytest.approx(2.6 / 3, abs=1e-15)


def test_gms_zero_conventions():
    assert gms_from_gradients(torch.zeros(2, 3)) == 1.0  # both zero: equal magnitudes
    assert gms_from_gradients(t([[0, 0], [0, 5]])) == 0.0  # one zero: total dominance
    # T=3, one zero row: beta = 1 for the two nonzero equal norms, 0 for the four mixed pairs
    assert gms_from_gradients(t([[1, 0], [0, 0], [0, 1]])) == pytest.approx(2 / 6)


def test_gms_extreme_magnitudes_stay_finite():
    G = t([[1e150, 0.0], [0.0, 1e150]])
    assert gms_from_gradients(G) == 1.0
    assert gms_from_gradients(t([[1e-150, 0.0], [0.0, 1e-150]])) == 1.0


def test_gms_uses_only_the_diagonal():
    assert gradient_magnitude_similarity(t([[4, -2], [-2, 1]])) == pytest.approx(2 * 2 * 1 / 5)


# ---------------------------------------------------------------------------------------------
# Gram / gradient validation


@pytest.mark.parametrize(
    "gram, match",
    [
        (torch.ones(3), "square"),
        (torch.ones(2, 3), "square"),
        (torch.ones(1, 1), "at least 2"),
        (t([[1, float("nan")], [float("nan"), 1]]), "non-finite"),
        (t([[1, 0], [0, float("inf")]]), "non-finite"),
        (t([[-1, 0], [0, 1]]), "negative diagonal"),
        (t([[1, 0.5], [0.0, 1]]), "not symmetric"),
        (torch.ones(2, 2, dtype=torch.complex128), "real"),
        ("abc", "Gram"),
    ],
)
@pytest.mark.parametrize("fn", [gradient_direction_similarity, gradient_magnitude_similarity])
def test_bad_gram_raises_naming_argument(fn, gram, match):
    with pytest.raises(ValueError, match="gram") as info:
        fn(gram)
    assert match in str(info.value)


def test_pairwise_cosines_accepts_one_task():
    assert pairwise_cosines(t([[4.0]])).tolist() == [[1.0]]


@pytest.mark.parametrize("fn", [gds_from_gradients, gms_from_gradients])
@pytest.mark.parametrize(
    "G, match",
    [
        (torch.ones(3), "shape"),
        (torch.ones(1, 5), "at least 2"),
        (t([[1, float("nan")], [0, 1]]), "non-finite"),
    ],
)
def test_bad_gradients_raise_naming_argument(fn, G, match):
    with pytest.raises(ValueError, match=r"\bG\b") as info:
        fn(G)
    assert match in str(info.value)


# ---------------------------------------------------------------------------------------------
# FD (Eq. 7-8)


def test_fd_hand_computed():
    # T=2, four positions (columns):
    #   (1, -1): p = (1/2, 1/2) -> ln 2
    #   (-2, 0): p = (1, 0)     -> 0
    #   (0, 0) : dead           -> excluded
    #   (3, -1): p = (3/4, 1/4) -> -(3/4 ln 3/4 + 1/4 ln 1/4)
    x = t([[1, -2, 0, 3], [-1, 0, 0, -1]])
    h4 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert feature_disentanglement(x) == pytest.approx((math.log(2) + 0 + h4) / 3, abs=1e-15)
    ent = position_entropies(x)
    assert ent[0] == pytest.approx(math.log(2), abs=1e-15)
    assert ent[1] == 0.0
    assert math.isnan(ent[2])
    assert ent[3] == pytest.approx(h4, abs=1e-15)


def test_fd_smoothing_hand_computed():
    # (1, 0) with eps = 1: p = (2/3, 1/3) -> ln 3 - (2/3) ln 2
    x = t([[1.0], [0.0]])
    assert feature_disentanglement(x) == 0.0
    assert feature_disentanglement(x, eps=1.0) == pytest.approx(math.log(3) - 2 / 3 * math.log(2), abs=1e-15)
    # a dead position stays excluded under smoothing (it would otherwise count as ln T)
    x_dead = t([[1.0, 0.0], [0.0, 0.0]])
    assert feature_disentanglement(x_dead, eps=1.0) == feature_disentanglement(x, eps=1.0)
    # very large eps -> uniform -> ln T
    assert feature_disentanglement(x, eps=1e12) == pytest.approx(math.log(2), abs=1e-9)


def test_fd_single_task_is_zero():
    assert feature_disentanglement(torch.randn(1, 7)) == 0.0


def test_fd_bounds_for_three_tasks():
    T = 3
    one_hot = torch.zeros(T, 4, 5)
    one_hot[0, :2] = 1.0
    one_hot[1, 2:3] = -2.0
    one_hot[2, 3:] = 0.5
    assert feature_disentanglement(one_hot) == 0.0
    uniform = torch.full((T, 4, 5), -0.3)
    assert feature_disentanglement(uniform) == pytest.approx(math.log(3), abs=1e-15)


def test_fd_multilevel_and_input_types():
    gen = torch.Generator().manual_seed(1)
    p3 = torch.randn(3, 2, 8, 4, 4, generator=gen)
    p4 = torch.randn(3, 2, 8, 2, 2, generator=gen)
    pooled = torch.cat([p3.reshape(3, -1), p4.reshape(3, -1)], dim=1)
    ref = feature_disentanglement(pooled)
    assert feature_disentanglement([p3, p4]) == pytest.approx(ref, abs=1e-14)
    assert feature_disentanglement((p3, p4)) == pytest.approx(ref, abs=1e-14)
    # float32 input is promoted exactly, so float32 and its float64 copy agree bitwise
    assert feature_disentanglement(p3) == feature_disentanglement(p3.double())
    assert feature_disentanglement(p3.numpy()) == feature_disentanglement(p3)
    # non-contiguous input
    assert feature_disentanglement(p3.transpose(1, 4)) == pytest.approx(feature_disentanglement(p3), abs=1e-14)


def test_fd_spans_several_chunks_and_matches_oracle(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1000, generator=gen, dtype=torch.float64)
    x[:, ::7] = 0.0  # dead positions
    x[1:, ::5] = 0.0  # single-task positions
    a = x.abs()
    s = a.sum(0)
    p = a[:, s > 0] / s[s > 0]
    oracle = float((-torch.special.xlogy(p, p).sum(0)).mean())
    full = feature_disentanglement(x)
    monkeypatch.setattr(fd_module, "_CHUNK_ELEMENTS", 4 * 37)  # 37 positions per chunk
    assert feature_disentanglement(x) == pytest.approx(oracle, abs=1e-14)
    assert full == pytest.approx(oracle, abs=1e-14)
    assert feature_disentanglement(x, eps=0.1) == pytest.approx(
        (lambda q: float((-torch.special.xlogy(q, q).sum(0)).mean()))((a[:, s > 0] + 0.1) / (s[s > 0] + 4 * 0.1)),
        abs=1e-14,
    )
    assert position_entropies(x).shape == (1000,)


def test_fd_huge_finite_values_do_not_overflow():
    x = t([[1e308, 1e308], [1e308, 0.0]])
    assert feature_disentanglement(x) == pytest.approx(math.log(2) / 2, abs=1e-15)


def test_fd_does_not_mutate_input():
    x = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    before = x.clone()
    feature_disentanglement(x, eps=0.1)
    position_entropies(x)
    assert torch.equal(x, before)


def test_fd_is_fast_on_a_paper_sized_feature_map():
    # (T, B, C, H, W) = (3, 4, 512, 16, 16): ~1.6M gradients, ~9 ms of CPU time on one thread
    # when vectorised. Timed as CPU time on one thread, so a busy machine (or xdist neighbours)
    # cannot make it flaky; the loose bound only catches a Python-level loop over positions.
    x = torch.randn(3, 4, 512, 16, 16, generator=torch.Generator().manual_seed(4))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        feature_disentanglement(x)
        best = min(_cpu_time(feature_disentanglement, x) for _ in range(3))
    finally:
        torch.set_num_threads(n_threads)
    assert best < 0.25


def _cpu_time(fn, *args):
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


@pytest.mark.parametrize(
    "arg, match",
    [
        (torch.ones(3), "shape"),
        (torch.ones(3, 0), "no positions"),
        (torch.zeros(3, 4), "zero at every position"),
        (t([[1.0, float("nan")], [1.0, 1.0]]), "non-finite"),
        (t([[1.0, float("inf")], [1.0, 1.0]]), "non-finite"),
        (t([[float("nan")], [float("nan")]]), "non-finite"),
        ([], "empty"),
        ([torch.ones(2, 3), torch.ones(3, 3)], "feature_grads[1]"),
        (torch.ones(2, 2, dtype=torch.complex64), "real"),
        (object(), "tensor"),
    ],
)
def test_fd_bad_input_raises_naming_argument(arg, match):
    with pytest.raises(ValueError, match="feature_grads") as info:
        feature_disentanglement(arg)
    assert match in str(info.value)


@pytest.mark.parametrize("eps", [-1e-3, float("nan"), float("inf"), "x"])
def test_fd_bad_eps_raises_naming_argument(eps):
    with pytest.raises(ValueError, match="eps"):
        feature_disentanglement(torch.ones(2, 3), eps=eps)


# ---------------------------------------------------------------------------------------------
# RS (Eq. 9)


def test_rs_one_swap():
    # 6 unordered pairs, only (2, 3) discordant -> 5/6
    assert ranking_similarity([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(5 / 6)
    assert ranking_similarity([1, 2, 3, 4], [4, 2, 3, 1]) == pytest.approx(1 / 6)
    assert symmetric_ranking_similarity([1, 2, 3, 4], [4, 2, 3, 1]) == pytest.approx(5 / 6)


def test_rs_reversed_and_identical():
    a = [0.3, -1.0, 2.5, 7.0]
    assert ranking_similarity(a, a) == 1.0
    assert ranking_similarity(a, [-v for v in a]) == 0.0
    assert symmetric_ranking_similarity(a, [-v for v in a]) == 1.0


def test_rs_ties_as_written():
    # tie in a only -> half credit: {1,2} gives 1 of 2 ordered agreements, others concordant
    assert ranking_similarity([1, 1, 2], [1, 2, 3]) == pytest.approx(5 / 6)
    # {1,2} tied in both -> full credit; {1,3}, {2,3} discordant -> 2/6
    a, b = [1, 1, 2], [5, 5, 0]
    assert ranking_similarity(a, b) == pytest.approx(1 / 3)
    # ... and the doubly tied pair also agrees with the reversal, so S(a,b) + S(a,-b) = 1 + 1/3
    assert ranking_similarity(a, [-v for v in b]) == 1.0
    # a constant vector carries no order: 0.5 against distinct values, 1 against a constant
    assert ranking_similarity([1, 2, 3], [7, 7, 7]) == 0.5
    assert symmetric_ranking_similarity([1, 2, 3], [7, 7, 7]) == 0.5
    assert ranking_similarity([7, 7], [3, 3]) == 1.0


def test_rs_equals_kendall_tau_without_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 15))
        a, b = rng.permutation(n) + 0.5, rng.normal(size=n)
        tau = scipy_stats.kendalltau(a, b).statistic
        assert ranking_similarity(a, b) == pytest.approx((1 + tau) / 2, abs=1e-12)


def test_rs_paper_style_usage():
    # measure value per method vs test score; lower GDS/FD could mean better -> report
    # the symmetric version, as the paper's tables do
    fd_end = [0.91, 0.85, 0.88, 0.80]
    score = [0.38, 0.41, 0.40, 0.45]
    assert ranking_similarity(fd_end, score) == 0.0
    assert symmetric_ranking_similarity(fd_end, score) == 1.0


@pytest.mark.parametrize(
    "a, b, name, match",
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], "b", "values but a has"),
        ([1.0], [1.0], "a", "n >= 2"),
        ([], [], "a", "n >= 2"),
        ([1.0, float("nan")], [1.0, 2.0], "a", "non-finite"),
        ([1.0, 2.0], [float("inf"), 2.0], "b", "non-finite"),
        ([[1.0, 2.0]], [1.0, 2.0], "a", "1-D"),
        ([1.0, 2.0], np.ones((2, 2)), "b", "1-D"),
        (["x", "y"], [1.0, 2.0], "a", "real numbers"),
        ([1.0, 2.0], [1j, 2j], "b", "real"),
    ],
)
@pytest.mark.parametrize("fn", [ranking_similarity, symmetric_ranking_similarity])
def test_rs_bad_input_raises_naming_argument(fn, a, b, name, match):
    with pytest.raises(ValueError, match=rf"^{name}\b") as info:
        fn(a, b)
    assert match in str(info.value)
