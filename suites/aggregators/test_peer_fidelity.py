"""The methods added after the paper against the peers' real implementations (TorchJD 0.18,
LibMTL 1.1.5), on random and hard G. Every difference is asserted as what it is (a convention,
the peer's bug) and explained in the README's findings. Skipped without the peers extra
(pip install -e ".[peers]")."""

import importlib.util

import pytest
import torch

from mtlcheck.aggregators import DualProj, UPGrad
from mtlcheck.testing import identities, samplers


def _has(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_quadprog = pytest.mark.skipif(
    not _has("torchjd", "qpsolvers", "quadprog"),
    reason='torchjd[quadprog-projector] is not installed: pip install -e ".[peers]"',
)


def cases():
    """(label, G): random normal and conflicting G and the kit's hard inputs, T = 2..7."""
    out = []
    for n in (2, 3, 5, 7):
        g = torch.Generator().manual_seed(n)
        out.append((f"normal T={n}", samplers.normal(n, 12, g)))
        out.append((f"conflicting T={n}", samplers.conflicting(n, 12, g)))
        out.extend((f"{label} T={n}", G) for label, G in identities.hard_cases(n).items())
    return out


CASES = cases()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _torchjd_cone(name, **projector):
    from torchjd._linalg import QuadprogProjector
    from torchjd.aggregation import DualProj as TDualProj
    from torchjd.aggregation import UPGrad as TUPGrad

    cls = {"upgrad": TUPGrad, "dualproj": TDualProj}[name]
    return cls(projector=QuadprogProjector(**projector)) if projector else cls()


OURS = {"upgrad": UPGrad, "dualproj": DualProj}


@needs_quadprog
@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
@pytest.mark.parametrize("label, G", CASES, ids=[c[0] for c in CASES])
def test_torchjd_without_regularisation_is_our_projection(name, label, G):
    """Convention only: TorchJD's QP with norm_eps = reg_eps = 0 solves the exact problem; the
    same direction (the mean scale in both) to the precision of quadprog."""
    ours = OURS[name]()(G).direction
    theirs = _torchjd_cone(name, norm_eps=0.0, reg_eps=0.0)(G)
    assert _rel(theirs, ours) < 1e-9


@needs_quadprog
@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_torchjd_default_regularisation_conflicts_with_small_tasks(name):
    """TorchJD's finding: its default projector normalises the Gram by its Frobenius norm and adds
    1e-4·I. A task whose squared gradient norm is ~1e-4 of the Gram's norm is then weighted as if
    its gradient were longer, and the result CONFLICTS with it (it leaves the dual cone): on the
    kit's dominant-task input (norms 1e4 and 1) the cosine with the small task is −0.6 (T = 2),
    where ours is ≥ 0 to rounding."""
    G = identities.hard_cases(2)["dominant task (norms 1e4 apart)"]
    theirs = _torchjd_cone(name)(G)
    ours = OURS[name]()(G).direction
    cos = lambda d: (G @ d) / (G.norm(dim=1) * d.norm())  # noqa: E731
    assert float(cos(theirs).min()) < -0.5
    assert float(cos(ours).min()) > -1e-12
    # with the regularisation off the two agree (test above): the 1e-4·I is the whole difference
    assert _rel(_torchjd_cone(name, norm_eps=0.0, reg_eps=0.0)(G), ours) < 1e-9


needs_torchjd = pytest.mark.skipif(not _has("torchjd"), reason='torchjd is not installed: pip install -e ".[peers]"')


@needs_torchjd
@pytest.mark.parametrize("label, G", CASES, ids=[c[0] for c in CASES])
def test_torchjd_config_is_ours(label, G):
    """The same direction and scale (both Σ-scaled: ‖d‖ = Σ_i ⟨g_i, d̂⟩); TorchJD takes the
    pseudo-inverse of the T×d unit matrix, ours that of the T×T cosine matrix (Û⁺ = Ûᵀ(ÛÛᵀ)⁺):
    agreement to 1e-9 relative, the ill-conditioned inputs (cond(C) = cond(G)² = 1e6) included."""
    from torchjd.aggregation import ConFIG as TConFIG

    from mtlcheck.aggregators import ConFIG

    assert _rel(TConFIG()(G), ConFIG()(G).direction) < 1e-9


@needs_torchjd
def test_torchjd_config_drops_directions_past_its_float32_cutoff():
    """TorchJD's ConFIG calls `torch.linalg.pinv` on the T×d unit matrix Û with its default cutoff,
    rtol = ε·max(T, d): in float32 (ε = 2⁻²³) every singular direction of Û below ε·d·σ_max is
    dropped. Past d = 2²³ ≈ 8.4M parameters (a ResNet18 trunk has 11.2M) the cutoff exceeds 1 and
    the step is exactly zero; just below it, near-orthogonal task gradients lose directions and the
    step is far off. Ours solves on the T×T cosine matrix, where d never enters the cutoff: equal
    cosines with every task, the method's defining property, at both sizes."""
    from torchjd.aggregation import ConFIG as TConFIG

    from mtlcheck.aggregators import ConFIG

    generator = torch.Generator().manual_seed(0)
    for d in (2**23 - 1024, 2**23 + 1024):
        G = torch.randn(3, d, generator=generator)
        ours, theirs = ConFIG()(G).direction.double(), TConFIG()(G).double()
        cosines = torch.nn.functional.normalize(G.double(), dim=1) @ (ours / ours.norm())
        assert float(cosines.max() - cosines.min()) < 1e-5 and float(cosines.min()) > 0
        if d > 2**23:
            assert float(theirs.norm()) == 0.0
        else:
            assert _rel(theirs, ours) > 0.5


def _fair_residual(G, w, alpha):
    return float((w ** (1 / alpha) * (G @ G.T @ w) - 1).abs().max())


FAIR_EASY = [c for c in CASES if "dominant" not in c[0] and "ill-conditioned" not in c[0]]


@needs_torchjd
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("label, G", FAIR_EASY, ids=[c[0] for c in FAIR_EASY])
def test_torchjd_fairgrad_is_ours_where_it_converges(alpha, label, G):
    """Same equation on the raw Gram, same scale: where TorchJD's least_squares reaches the
    solution (its residual below 1e-6) the directions agree to 1e-5 relative (its default ftol and
    xtol are 1e-8); ours satisfies the α-fair condition to 1e-9."""
    from torchjd.aggregation import FairGrad as TFairGrad
    from torchjd.aggregation._fairgrad import FairGradWeighting

    from mtlcheck.aggregators import FairGrad

    ours = FairGrad(alpha=alpha)(G)
    assert _fair_residual(G, ours.weights, alpha) < 1e-9
    if _fair_residual(G, FairGradWeighting(alpha)(G @ G.T), alpha) < 1e-6:
        assert _rel(TFairGrad(alpha)(G), ours.direction) < 1e-5


@needs_torchjd
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_torchjd_fairgrad_returns_unconverged_weights_silently(alpha):
    """TorchJD's finding: scipy's least_squares from w = 1/T stops with the α-fair equation far
    from solved (relative residual ≥ 1, i.e. ≥ 100 %) on the kit's dominant-task input, and
    FairGrad returns that w without a word (the result is never checked); ours solves it to
    rounding on the same input. The directions differ by more than 50 %."""
    from torchjd.aggregation import FairGrad as TFairGrad
    from torchjd.aggregation._fairgrad import FairGradWeighting

    from mtlcheck.aggregators import FairGrad

    G = identities.hard_cases(2)["dominant task (norms 1e4 apart)"]
    assert _fair_residual(G, FairGradWeighting(alpha)(G @ G.T), alpha) > 1.0
    ours = FairGrad(alpha=alpha)(G)
    assert _fair_residual(G, ours.weights, alpha) < 1e-9
    assert _rel(TFairGrad(alpha)(G), ours.direction) > 0.5


needs_libmtl = pytest.mark.skipif(not _has("LibMTL"), reason='LibMTL is not installed: pip install -e ".[peers]"')


@needs_libmtl
@pytest.mark.parametrize("n", [2, 3, 5, 7])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_libmtl_gls_applies_our_update_but_reports_other_weights(n, scale):
    """LibMTL's GLS back-propagates (Π L_i)^{1/T}: the parameters get Σ_i w_i ∇L_i with our
    w_i = L/(T L_i) (to 1e-12). Finding: the weights it returns are L_i/(T Π_j L_j) — not the
    applied ones unless every loss is 1."""
    from mtlcheck.aggregators import GLS
    from mtlcheck.study.perf import peers

    weighting, _ = peers._import_libmtl()
    g = torch.Generator().manual_seed(n)
    A = torch.randn(n, 6, generator=g, dtype=torch.float64)
    theta = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    losses = scale * (0.5 + (A @ theta) ** 2)
    rows = torch.stack([torch.autograd.grad(L, theta, retain_graph=True)[0] for L in losses])
    libmtl = weighting.GLS()
    libmtl.task_num = n
    reported = torch.as_tensor(libmtl.backward(losses))
    ours = GLS()(None, losses.detach()).weights
    assert torch.allclose(theta.grad, ours @ rows, rtol=1e-12, atol=1e-12 * float(rows.abs().max()))
    L = losses.detach()
    assert torch.allclose(reported, L / (n * L.prod()), rtol=1e-6)
    assert not torch.allclose(reported, ours, rtol=1e-3)


def _excess_sequence(make, steps=6, scale=1.0):
    agg = make()
    return [agg(scale * samplers.normal(3, 12, torch.Generator().manual_seed(k))) for k in range(steps)]


@needs_torchjd
@pytest.mark.parametrize("warmup", [1, 3])
def test_torchjd_excess_mtl_with_warmup_is_ours(warmup):
    """Same update over a sequence of steps; TorchJD divides by ℰ⁰ + 1e-7 (ℰ ~ 1 here): 1e-6."""
    from torchjd.aggregation import ExcessMTL as TExcessMTL

    from mtlcheck.aggregators import ExcessMTL

    ours = [out.direction for out in _excess_sequence(lambda: ExcessMTL(warmup_steps=warmup))]
    theirs = _excess_sequence(lambda: TExcessMTL(n_warmup_steps=warmup))
    for a, b in zip(ours, theirs):
        assert _rel(b, a) < 1e-6


@needs_torchjd
def test_torchjd_excess_mtl_first_step_depends_on_the_gradient_scale():
    """TorchJD's finding (the official code's convention, by its docstring): without warm-up the
    first exponentiated step uses the raw excess risk, before its baseline exists, so the weights
    change with the scale of G; the paper's scale processing (ours) gives the uniform weights at
    the first step, and later steps are invariant to a constant scale of every gradient."""
    from torchjd.aggregation import ExcessMTL as TExcessMTL

    from mtlcheck.aggregators import ExcessMTL

    small = _excess_sequence(lambda: TExcessMTL(), steps=1, scale=0.1)[0]
    large = _excess_sequence(lambda: TExcessMTL(), steps=1, scale=10.0)[0]
    assert _rel(large / 100, small) > 0.1

    def ours(scale):  # ε (1e-7 under the square root) is the only scale in the method: set it tiny
        return [o.direction for o in _excess_sequence(lambda: ExcessMTL(eps=1e-30), scale=scale)]

    for a, b in zip(ours(1.0), ours(10.0)):
        assert _rel(b / 10, a) < 1e-12


def _weights_sequence(ours, theirs, scale=1.0, steps=6):
    out = []
    for k in range(steps):
        G = scale * samplers.conflicting(3, 12, torch.Generator().manual_seed(k))
        out.append((ours(G).weights, theirs(G @ G.T)))
    return out


@needs_torchjd
def test_torchjd_modo_fed_the_one_batch_gram_is_ours():
    """Convention: TorchJD's MoDoWeighting takes G₁G₂ᵀ from the caller; with G₁ = G₂ = G (what an
    aggregator of one batch has) the λ sequence is ours to rounding."""
    from torchjd.aggregation import MoDoWeighting

    from mtlcheck.aggregators import MoDo

    for a, b in _weights_sequence(MoDo(), MoDoWeighting()):
        assert _rel(b, a) < 1e-12


@needs_torchjd
def test_torchjd_sdmgrad_fed_the_one_batch_gram_is_ours_except_at_tiny_scales():
    """Same update for A = GGᵀ (1e-9: its iterations in another order of operations); TorchJD adds
    1e-8 to the squared mean gradient norm, so at gradient norms ~1e-5 its normalisation fails
    (the inner steps shrink ~100-fold) and the weights differ, where ours are scale-free."""
    from torchjd.aggregation import SDMGradWeighting

    from mtlcheck.aggregators import SDMGrad

    for a, b in _weights_sequence(SDMGrad(), SDMGradWeighting()):
        assert _rel(b, a) < 1e-9
    tiny = _weights_sequence(SDMGrad(), SDMGradWeighting(), scale=1e-5)
    unit = _weights_sequence(SDMGrad(), SDMGradWeighting(), scale=1.0)
    assert max(_rel(t[0], u[0]) for t, u in zip(tiny, unit)) < 1e-9
    assert max(_rel(t[1], u[1]) for t, u in zip(tiny, unit)) > 1e-3


@needs_quadprog
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_torchjd_cr_mogm_over_upgrad_is_ours(alpha):
    """The same smoothing (λ_0 = λ̂_1) over the same base (UPGrad with TorchJD's projector
    unregularised, see above): the weights agree to 1e-9 over a sequence of steps."""
    from torchjd._linalg import QuadprogProjector
    from torchjd.aggregation import CRMOGMWeighting, GramianWeightedAggregator, UPGradWeighting

    from mtlcheck.aggregators import CRMOGM

    projector = QuadprogProjector(norm_eps=0.0, reg_eps=0.0)
    theirs = GramianWeightedAggregator(CRMOGMWeighting(UPGradWeighting(projector=projector), alpha=alpha))
    ours = CRMOGM(base="upgrad", alpha=alpha)
    for k in range(6):
        G = samplers.conflicting(3, 12, torch.Generator().manual_seed(k))
        assert _rel(theirs(G), ours(G).direction) < 1e-9
