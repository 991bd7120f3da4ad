"""Hypothesis invariants of the paper's measures (GDS Eq. 5, GMS Eq. 6, FD Eq. 7-8, RS Eq. 9).

Settings are local to each test (no global profile is registered here); every test is cheap, so
the whole module runs in a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mtlcheck.measures import (
    feature_disentanglement,
    gds_from_gradients,
    gms_from_gradients,
    gradient_direction_similarity,
    gradient_magnitude_similarity,
    pairwise_cosines,
    position_entropies,
    ranking_similarity,
    symmetric_ranking_similarity,
)

FAST = settings(max_examples=30, deadline=None)
SLOW = settings(max_examples=20, deadline=None)
REL = 1e-9  # float64 tolerance for "equal up to rounding"

# ---------------------------------------------------------------------------------------------
# strategies


def _snap(x: float) -> float:
    # Entries are either exactly 0 or of magnitude >= 1e-3, so a nonzero row has a norm far
    # above F.cosine_similarity's eps and tiny rows never blur the zero-vector convention.
    return 0.0 if abs(x) < 1e-3 else x


_entries = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False).map(_snap)


@st.composite
def grad_matrices(draw, min_tasks=2, max_tasks=6, max_dim=8):
    T = draw(st.integers(min_tasks, max_tasks))
    d = draw(st.integers(1, max_dim))
    return torch.from_numpy(draw(arrays(np.float64, (T, d), elements=_entries)))


@st.composite
def nonzero_vectors(draw, max_dim=8):
    d = draw(st.integers(1, max_dim))
    v = draw(arrays(np.float64, (d,), elements=_entries))
    assume(np.linalg.norm(v) > 1e-2)
    return torch.from_numpy(v)


@st.composite
def feature_grads(draw, min_tasks=1, max_tasks=5, n_tasks=None):
    T = n_tasks if n_tasks is not None else draw(st.integers(min_tasks, max_tasks))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    x = draw(arrays(np.float64, (T, *shape), elements=_entries))
    assume(np.abs(x).sum() > 0)  # at least one live position
    return torch.from_numpy(x)


_scales = st.floats(1e-3, 1e3)
_scores = st.lists(st.integers(-6, 6), min_size=2, max_size=9)  # small ints: plenty of ties


@st.composite
def score_pairs(draw, distinct=False):
    n = draw(st.integers(2, 9))
    if distinct:
        vals = st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n, unique=True)
    else:
        vals = st.lists(st.integers(-4, 4).map(float), min_size=n, max_size=n)
    return draw(vals), draw(vals)


def _gram(G: torch.Tensor) -> torch.Tensor:
    G = G.to(torch.float64)
    return G @ G.T


def _direct_gds(G: torch.Tensor) -> float:
    """Independent oracle: pairwise F.cosine_similarity in float64 (zero vector -> 0)."""
    G = G.to(torch.float64)
    T = G.shape[0]
    vals = [float(F.cosine_similarity(G[i], G[j], dim=0)) for i in range(T) for j in range(T) if i != j]
    return sum(vals) / len(vals)


def _direct_gms(G: torch.Tensor) -> float:
    n = torch.linalg.vector_norm(G.to(torch.float64), dim=1).tolist()
    vals = []
    for i, j in itertools.permutations(range(len(n)), 2):
        den = n[i] ** 2 + n[j] ** 2
        vals.append(1.0 if den == 0 else 2 * n[i] * n[j] / den)
    return sum(vals) / len(vals)


def _direct_fd(x: torch.Tensor) -> float:
    a = x.to(torch.float64).reshape(x.shape[0], -1).abs()
    s = a.sum(0)
    live = s > 0
    p = a[:, live] / s[live]
    return float((-torch.special.xlogy(p, p).sum(0)).mean())


# ---------------------------------------------------------------------------------------------
# GDS (Eq. 5)


@FAST
@given(grad_matrices())
def test_gds_range_and_oracle(G):
    gds = gradient_direction_similarity(_gram(G))
    assert -1.0 <= gds <= 1.0
    assert gds == pytest.approx(_direct_gds(G), abs=1e-12)
    assert gds_from_gradients(G) == pytest.approx(gds, abs=1e-12)


@FAST
@given(grad_matrices(min_tasks=1))
def test_pairwise_cosines_shape_symmetry_and_diagonal(G):
    cos = pairwise_cosines(_gram(G))
    T = G.shape[0]
    assert cos.shape == (T, T) and cos.dtype == torch.float64
    assert torch.equal(cos, cos.T)
    assert bool(((cos >= -1) & (cos <= 1)).all())
    nonzero = torch.linalg.vector_norm(G, dim=1) > 0
    assert torch.equal(torch.diagonal(cos), nonzero.to(torch.float64))
    # zero rows have cosine 0 with everything (documented convention, never NaN)
    assert bool((cos[~nonzero] == 0).all()) and bool((cos[:, ~nonzero] == 0).all())


@FAST
@given(nonzero_vectors(), st.integers(2, 6))
def test_gds_identical_gradients_is_one(g, T):
    G = g.expand(T, -1)
    assert gradient_direction_similarity(_gram(G)) == pytest.approx(1.0, abs=1e-12)


@FAST
@given(nonzero_vectors())
def test_gds_opposite_gradients_is_minus_one(g):
    assert gradient_direction_similarity(_gram(torch.stack([g, -g]))) == pytest.approx(-1.0, abs=1e-12)


@FAST
@given(grad_matrices(), st.randoms(use_true_random=False), _scales)
def test_gds_invariant_to_task_order_and_common_scale(G, rnd, c):
    ref = gradient_direction_similarity(_gram(G))
    perm = list(range(G.shape[0]))
    rnd.shuffle(perm)
    assert gradient_direction_similarity(_gram(G[perm])) == pytest.approx(ref, abs=1e-12)
    assert gradient_direction_similarity(_gram(c * G)) == pytest.approx(ref, abs=1e-12)
    # the Gram itself scaled by c > 0 is the Gram of sqrt(c) G
    assert gradient_direction_similarity(c * _gram(G)) == pytest.approx(ref, abs=1e-12)


@FAST
@given(grad_matrices())
def test_gds_float32_gradients_match_float64(G):
    # gds_from_gradients promotes to float64 before forming the Gram
    G32 = G.to(torch.float32)
    assert gds_from_gradients(G32) == pytest.approx(gds_from_gradients(G32.to(torch.float64)), abs=0)


# ---------------------------------------------------------------------------------------------
# GMS (Eq. 6, typo fixed)


@FAST
@given(grad_matrices())
def test_gms_range_and_oracle(G):
    gms = gradient_magnitude_similarity(_gram(G))
    assert 0.0 <= gms <= 1.0
    assert gms == pytest.approx(_direct_gms(G), abs=1e-12)
    assert gms_from_gradients(G) == pytest.approx(gms, abs=1e-12)


@FAST
@given(grad_matrices(), st.floats(1e-2, 1e2))
def test_gms_is_one_for_equal_norms(G, r):
    norms = torch.linalg.vector_norm(G, dim=1, keepdim=True)
    assume(bool((norms > 0).all()))
    G = r * G / norms
    assert gradient_magnitude_similarity(_gram(G)) == pytest.approx(1.0, abs=1e-12)


@FAST
@given(grad_matrices())
def test_gms_below_one_for_unequal_norms(G):
    norms = torch.linalg.vector_norm(G, dim=1)
    lo, hi = float(norms.min()), float(norms.max())
    assume(hi > 0 and (lo == 0 or hi / lo > 1 + 1e-6))
    assert gradient_magnitude_similarity(_gram(G)) < 1.0


@FAST
@given(grad_matrices(), st.randoms(use_true_random=False), _scales, st.integers(0, 2**31 - 1))
def test_gms_invariant_to_task_order_scale_and_rotation(G, rnd, c, seed):
    ref = gradient_magnitude_similarity(_gram(G))
    perm = list(range(G.shape[0]))
    rnd.shuffle(perm)
    assert gradient_magnitude_similarity(_gram(G[perm])) == pytest.approx(ref, abs=1e-12)
    assert gradient_magnitude_similarity(_gram(c * G)) == pytest.approx(ref, abs=1e-12)
    d = G.shape[1]
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    assert gradient_magnitude_similarity(_gram(G @ Q)) == pytest.approx(ref, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# FD (Eq. 7-8)


@FAST
@given(feature_grads())
def test_fd_range_and_oracle(x):
    T = x.shape[0]
    fd = feature_disentanglement(x)
    assert 0.0 <= fd <= math.log(T)
    assert fd == pytest.approx(_direct_fd(x), abs=1e-12)


@FAST
@given(feature_grads(min_tasks=2), st.data())
def test_fd_zero_when_each_position_has_one_task(x, data):
    T = x.shape[0]
    flat = x.reshape(T, -1)
    owner = data.draw(arrays(np.int64, (flat.shape[1],), elements=st.integers(0, T - 1)))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.from_numpy(owner), torch.arange(flat.shape[1])] = True
    one_hot = torch.where(mask, flat, torch.zeros_like(flat)).reshape(x.shape)
    assume(bool((one_hot != 0).any()))
    assert feature_disentanglement(one_hot) == 0.0


@FAST
@given(
    st.integers(1, 6),
    arrays(np.float64, st.integers(1, 12), elements=st.floats(1e-3, 1e3)),
    st.integers(0, 2**31 - 1),
)
def test_fd_is_log_T_when_tasks_equally_salient(T, mags, seed):
    gen = torch.Generator().manual_seed(seed)
    m = torch.from_numpy(mags).expand(T, -1)
    signs = torch.where(torch.rand(m.shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    assert feature_disentanglement(signs * m) == pytest.approx(math.log(T), abs=1e-12)


@FAST
@given(feature_grads(), st.randoms(use_true_random=False), _scales)
def test_fd_invariant_to_position_order_task_order_and_scale(x, rnd, c):
    ref = feature_disentanglement(x)
    T = x.shape[0]
    flat = x.reshape(T, -1)
    pos = list(range(flat.shape[1]))
    rnd.shuffle(pos)
    tasks = list(range(T))
    rnd.shuffle(tasks)
    assert feature_disentanglement(flat[:, pos]) == pytest.approx(ref, abs=1e-12)
    assert feature_disentanglement(x[tasks]) == pytest.approx(ref, abs=1e-12)
    assert feature_disentanglement(c * x) == pytest.approx(ref, abs=1e-12)


@FAST
@given(feature_grads(), st.integers(1, 5))
def test_fd_ignores_dead_positions(x, n_dead):
    T = x.shape[0]
    padded = torch.cat([x.reshape(T, -1), torch.zeros(T, n_dead, dtype=x.dtype)], dim=1)
    assert feature_disentanglement(padded) == pytest.approx(feature_disentanglement(x), abs=1e-12)
    assert feature_disentanglement(padded, eps=0.5) == pytest.approx(feature_disentanglement(x, eps=0.5), abs=1e-12)


@FAST
@given(st.integers(1, 4).flatmap(lambda T: st.tuples(feature_grads(n_tasks=T), feature_grads(n_tasks=T))))
def test_fd_multilevel_pools_positions(xy):
    x, y = xy
    T = x.shape[0]
    pooled = torch.cat([x.reshape(T, -1), y.reshape(T, -1)], dim=1)
    assert feature_disentanglement([x, y]) == pytest.approx(feature_disentanglement(pooled), abs=1e-12)
    ent = position_entropies([x, y])
    assert ent.shape == (pooled.shape[1],)
    assert float(ent.nanmean()) == pytest.approx(feature_disentanglement(pooled), abs=1e-12)


@FAST
@given(feature_grads(), st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_fd_smoothing_stays_in_range_and_is_monotone(x, e1, e2):
    lo, hi = sorted((e1, e2))
    T = x.shape[0]
    f_lo = feature_disentanglement(x, eps=lo)
    f_hi = feature_disentanglement(x, eps=hi)
    assert 0.0 <= f_lo <= math.log(T) and 0.0 <= f_hi <= math.log(T)
    # p(eps) moves along the segment toward the uniform distribution, where entropy (concave,
    # maximal at uniform) can only grow.
    assert f_hi >= f_lo - 1e-12


# ---------------------------------------------------------------------------------------------
# RS (Eq. 9)


def _oracle_rs(a, b) -> float:
    """Closed form of Eq. 9 with ties as written: (1 + tau_a + t_ab) / 2."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    sgn = lambda v: (v > 0) - (v < 0)  # noqa: E731
    tau = sum(sgn(a[i] - a[j]) * sgn(b[i] - b[j]) for i, j in pairs) / len(pairs)
    both = sum(a[i] == a[j] and b[i] == b[j] for i, j in pairs) / len(pairs)
    return (1 + tau + both) / 2


@FAST
@given(score_pairs())
def test_rs_matches_closed_form_and_range(ab):
    a, b = ab
    s = ranking_similarity(a, b)
    assert 0.0 <= s <= 1.0
    assert s == pytest.approx(_oracle_rs(a, b), abs=1e-12)
    r = symmetric_ranking_similarity(a, b)
    assert 0.5 <= r <= 1.0
    assert r == pytest.approx(0.5 + abs(s - 0.5), abs=0)


@FAST
@given(_scores)
def test_rs_identity(a):
    assert ranking_similarity(a, a) == 1.0
    assert symmetric_ranking_similarity(a, a) == 1.0


@FAST
@given(score_pairs())
def test_rs_symmetric(ab):
    a, b = ab
    assert ranking_similarity(a, b) == ranking_similarity(b, a)


@FAST
@given(score_pairs(distinct=True))
def test_rs_reversal_without_ties(ab):
    a, b = ab
    neg_b = [-v for v in b]
    assert ranking_similarity(a, neg_b) == pytest.approx(1.0 - ranking_similarity(a, b), abs=1e-12)
    assert symmetric_ranking_similarity(a, neg_b) == pytest.approx(symmetric_ranking_similarity(a, b), abs=1e-12)


@FAST
@given(score_pairs())
def test_rs_reversal_with_ties_adds_doubly_tied_pairs(ab):
    # Eq. 9 taken literally: a pair tied in both vectors agrees under b and under -b.
    a, b = ab
    n = len(a)
    both = sum(a[i] == a[j] and b[i] == b[j] for i, j in itertools.combinations(range(n), 2))
    total = ranking_similarity(a, b) + ranking_similarity(a, [-v for v in b])
    assert total == pytest.approx(1.0 + both / (n * (n - 1) / 2), abs=1e-12)


_monotone = st.sampled_from(
    [
        lambda v: 3.0 * v + 1.0,
        lambda v: v**3 + v,
        lambda v: math.exp(v / 3.0),
        lambda v: math.atan(v),
        lambda v: -1.0 / (v + 10.0),
    ]
)


@FAST
@given(score_pairs(), _monotone, _monotone)
def test_rs_invariant_to_strictly_increasing_transforms(ab, f, g):
    a, b = ab
    s = ranking_similarity(a, b)
    assert ranking_similarity([f(v) for v in a], b) == s
    assert ranking_similarity(a, [g(v) for v in b]) == s
    assert ranking_similarity([f(v) for v in a], [g(v) for v in b]) == s


@SLOW
@given(score_pairs())
def test_rs_accepts_lists_arrays_and_tensors(ab):
    a, b = ab
    s = ranking_similarity(a, b)
    assert ranking_similarity(np.asarray(a), np.asarray(b)) == s
    assert ranking_similarity(torch.tensor(a, dtype=torch.float32), torch.tensor(b)) == s
