"""Method identity: the defining property of each published method, checked from outputs only.

An aggregator that declares `implements = "<method>"` is called on hard inputs (`hard_cases`)
and its output (direction d, weights w when it returns them) must satisfy that method's defining
property. Nothing of its internals is used, so this catches solvers that stop early, a solver
left at its start, a fallback to equal weights behind any exception, and sign errors.

Where implementations legitimately differ by a positive scale (Nash-MTL's Gram normalisation
and clipping, Aligned-MTL's σ, IMTL-G's and CAGrad's rescaling), the property is stated on the
direction (scale-free). Every violation is reported with the condition, its size and the
tolerance. Violations are relative (cosine units, or relative to the scale named), in float64.

Tolerances fit the case and the method (`case_tolerance`): on a case whose G has condition number
κ = σ_max/σ_min the allowed violation is max(1e-6, s·κ), with s the method's declared
`tags().solver_tol` or, undeclared, DEFAULT_SOLVER_TOL = 1e-9 (float64 linear algebra: an exact
Gram-based solve is accurate to about ε·κ² ≈ 2e-16·κ², i.e. < 1e-9·κ for κ ≤ 4e6; the hard cases
have κ ≤ 2e4). A solver stopped at a relative objective tolerance τ knows its optimum to about √τ,
and the direction to κ√τ: such a method declares solver_tol = √τ (SLSQP at ftol 1e-12: 1e-6).
MGDA states its declared tolerance in the problem's own units: a min-norm solver stopped with
duality gap max_i(‖d‖² − ⟨g_i, d⟩) ≤ s·max_i‖g_i‖² (Frank-Wolfe stopped at step γ < ε: s = 4ε)
is accepted up to that gap (KKT) and twice it (‖d‖² − min-norm²), each converted to the units
reported. A wrong method (early stop, wrong formula) violates by far more on some case.

    mgda         d is the minimum-norm point of the convex hull of the g_i (Sener & Koltun 2018):
                 KKT ⟨g_i, d⟩ ≥ ‖d‖² for every i, and ‖d‖ = min_{w ∈ Δ} ‖Σ w_i g_i‖.
    cagrad       d, rescaled onto the sphere ‖d − g0‖ = c‖g0‖ (g0 = mean_i g_i), attains the dual
                 optimum: min_i ⟨g_i, d⟩ = min_{w ∈ Δ} wᵀA1/T + c‖g0‖√(wᵀAw) (Liu et al. 2021).
    nash_mtl     α_i (GGᵀα)_i is the same for every task, α > 0 (Navon et al. 2022: = 1 unclipped
                 on the raw Gram; a common factor from clipping or a normalised Gram is allowed).
    imtl_g       equal projections of d on the unit gradients u_i, d ≠ 0 in span{g_i} (Liu et al. 2021).
    aligned_mtl  the aligned system has equal singular values: with G = P S Qᵀ (thin SVD), the
                 rows of P Qᵀ all have the same projection on d, d ≠ 0 in span{g_i} (Senushkin et al. 2023).
    pcgrad       T = 2: d = s (g_1' + g_2'), g_i' = g_i − min(⟨g_i, g_j⟩, 0)/‖g_j‖² g_j (Yu et al. 2020).
    gradvac      T = 2, over a sequence of steps: g_i' = g_i + ‖g_i‖(φ̂√(1−ρ²) − ρ√(1−φ̂²))/(‖g_j‖√(1−φ̂²)) g_j
                 when ρ = cos(g_i, g_j) < φ̂, then φ̂ ← (1−β)φ̂ + βρ, φ̂ = 0 at the start (Wang et al. 2021, Eq. 4).
    upgrad       d = s·(1/T) Σ_i π_C(g_i), π_C the projection onto the dual cone C = {x : Gx ≥ 0}, each
                 projection found independently from its KKT conditions (Quinton & Rey 2024).
    dualproj     d = s·π_C((1/T) Σ_i g_i) (Quinton & Rey 2024; Lopez-Paz & Ranzato 2017, Eq. 11).
    config       every task has the same cosine with d, d in span{g_i}, and (with a declared scale)
                 ‖d‖ = Σ_i ⟨g_i, d/‖d‖⟩ (Liu, Chu & Thuerey 2024, Eq. 2).
    fairgrad     α-fair: w_i^{1/α} ⟨g_i, d⟩ equal for every task, w > 0 (Ban & Ji 2024, Eq. 4: = 1 on the raw
                 Gram; a common factor from a normalised Gram is allowed); without weights,
                 d ∥ Σ_i ⟨g_i, d⟩^{−α} g_i. Reads the attribute `alpha`.
    db_mtl       over a sequence of steps (T = 2..7, the hard cases twice, losses varying by step and task):
                 d ∥ Σ_i (max_j‖ĝ_j‖/‖ĝ_i‖) ĝ_i with ĝ_i ← β_t ĝ_i + (1 − β_t) g_i/L_i, β_t = β/t^σ, ĝ_i = 0 at
                 the start (Lin et al. 2023); reads the attributes `beta` and `beta_sigma`.
    s is the scale the method declares for identical rows (`identical_rows_scale(2) / 2`), or any
    positive scale when it declares none.

A declared tolerance has a ceiling (MAX_TOL = 0.1, in the units reported): allowing 0.1 accepts a
direction 26° away (1 − cos = 0.1), a 10 % error of length, a spread of 0.1 in the cosines, the size
by which the wrong twins of these methods differ from them (UPGrad without its projection, ConFIG
without equal cosines: 0.1 to 1 on these cases). A (condition, case) whose allowance reaches it
is undecidable, not met: a condition undecidable on every case fails the check, one undecidable on
some cases is named in the check's note. A violation is said to be one a declared solver tolerance
may explain only when it is below MAX_TOL and below SOLVER_HINT_MAX·κ (1e-4: √τ of a solver at
the usual objective tolerance τ = 1e-8).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from mtlcheck.testing import samplers
from mtlcheck.testing.check_inputs import on_case

DIM = 12
TASK_COUNTS = (2, 3, 5, 7)
BASE_TOL = 1e-6  # the smallest tolerance, whatever the case's conditioning
DEFAULT_SOLVER_TOL = 1e-9  # an undeclared solver_tol: float64 linear algebra (see the module docstring)
MAX_TOL = 0.1  # the largest allowance that still decides a condition (see the module docstring)
SOLVER_HINT_MAX = 1e-4  # the largest violation/κ a solver's declared tolerance may explain


def declared_solver_tol(agg) -> float | None:
    """The method's `tags().solver_tol`, or None when it declares none."""
    return getattr(agg.tags(), "solver_tol", None)


def condition_number(G: torch.Tensor) -> float:
    """σ_max/σ_min of G (inf when rank-deficient)."""
    s = torch.linalg.svdvals(G.to(torch.float64))
    return float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf


def case_tolerance(G: torch.Tensor, agg, *, declared: bool = True) -> float:
    """max(BASE_TOL, s·κ(G)) with s the declared solver_tol (unless `declared` is False: MGDA
    converts its declared gap itself) or DEFAULT_SOLVER_TOL."""
    s = (declared_solver_tol(agg) if declared else None) or DEFAULT_SOLVER_TOL
    return max(BASE_TOL, s * condition_number(G))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit_rows(G: torch.Tensor) -> torch.Tensor:
    return G / G.norm(dim=1, keepdim=True)


def hard_cases(n: int) -> dict[str, torch.Tensor]:
    """Fresh copies of `_hard_cases(n)` (built once per process)."""
    return {label: G.clone() for label, G in _hard_cases(n).items()}


@functools.cache
def _hard_cases(n: int) -> dict[str, torch.Tensor]:
    """Full-rank (T, 12) float64 matrices that are hard for solvers.

    conflicting: pairwise conflicting rows with norms 0.1..10 (`samplers.conflicting`);
    dominant task: the same rows at unit norm, the first scaled by 1e4;
    ill-conditioned: singular values 1 .. 1e-3 (geometric), random singular vectors;
    nearly collinear: u + 1e-3 q_i (all rows within 1e-3 of one direction);
    conflicting pair (T = 2): g and −g + 0.1·noise (cos ≈ −0.99)."""
    g = _gen(17 * n)
    cases = {"conflicting": samplers.conflicting(n, DIM, g)}
    dominant = _unit_rows(samplers.conflicting(n, DIM, g))
    dominant[0] *= 1e4
    cases["dominant task (norms 1e4 apart)"] = dominant
    P, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(DIM, n, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -3, n, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)
    cases["ill-conditioned (cond 1e3)"] = (P * s) @ Q.T
    u = torch.randn(DIM, generator=g, dtype=torch.float64)
    cases["nearly collinear"] = u / u.norm() + 1e-3 * torch.randn(n, DIM, generator=g, dtype=torch.float64)
    if n == 2:
        a = torch.randn(DIM, generator=g, dtype=torch.float64)
        cases["conflicting pair"] = torch.stack([a, -a + 0.1 * torch.randn(DIM, generator=g, dtype=torch.float64)])
    return cases


Violations = list[tuple[str, float, float]]  # (condition, amount, tolerance)


class Judge:
    """The verdict on each (condition, case) of one method: violated (a message), undecidable (the
    allowance reaches MAX_TOL) or met; `verdict()` adds a message for each condition undecidable
    on every case, and `note` names those undecidable on some."""

    def __init__(self, agg):
        self.solver_tol = declared_solver_tol(agg)
        self.found: list[str] = []
        self.explainable = True  # every violation small enough for a solver tolerance to explain
        self._checked: dict[str, int] = {}
        self._undecidable: dict[str, list[tuple[float, str]]] = {}

    def __call__(self, cond: str, amount: float, tol: float, where: str, G: torch.Tensor) -> None:
        self._checked[cond] = self._checked.get(cond, 0) + 1
        if not amount <= tol:
            self.found.append(_message(cond, amount, tol, where))
            kappa = condition_number(G)
            self.explainable &= math.isfinite(amount) and amount < min(MAX_TOL, SOLVER_HINT_MAX * kappa)
        elif tol >= MAX_TOL:
            self._undecidable.setdefault(cond, []).append((tol, where))

    def _relaxed(self) -> str:
        return f"the declared solver_tol={self.solver_tol:g}" if self.solver_tol is not None else "the tolerance"

    def verdict(self) -> list[str]:
        """The messages: every violation, then every condition left undecidable on every case."""
        out = list(self.found)
        for cond, cases in self._undecidable.items():
            if len(cases) == self._checked[cond]:
                out.append(
                    f"{cond}: undecidable on every case: {self._relaxed()} allows a violation of "
                    f"{min(t for t, _ in cases):.3g} or more (≥ {MAX_TOL:g}, where the condition no longer tells the "
                    "method from a wrong one)"
                )
        return out

    @property
    def note(self) -> str | None:
        partial = {c: v for c, v in self._undecidable.items() if len(v) < self._checked[c]}
        if not partial:
            return None
        parts = [
            f"{cond}: {len(v)} of {self._checked[cond]} case(s), e.g. {v[0][1]} (allowed {v[0][0]:.3g})"
            for cond, v in partial.items()
        ]
        return f"undecidable where {self._relaxed()} allows ≥ {MAX_TOL:g}: " + "; ".join(parts)


# the published methods the kit knows, each by the check of its defining property: name -> a
# function (make, losses_for, judge) recording every verdict in `judge` (registered by the decorators below)
IDENTITY_CHECKS: dict[str, Callable[[Callable, Callable, Judge], None]] = {}


def identity(*, task_counts: tuple[int, ...] = TASK_COUNTS, declared_tol: bool = True):
    """Registers a check (G, d, w, agg, tol) -> Violations, on one output, as the defining property
    of the published method of its name, checked on every hard case at each of `task_counts`.
    declared_tol=False: the method's declared solver_tol is not the tolerance's scale (the check
    reads it in the problem's own units)."""

    def register(check):
        IDENTITY_CHECKS[check.__name__] = functools.partial(_on_hard_cases, check, task_counts, declared_tol)
        return check

    return register


def identity_over_steps(run):
    """Registers `run(make, losses_for, judge)`, a defining property stated over a sequence of
    steps (a stateful method), under its name."""
    IDENTITY_CHECKS[run.__name__] = run
    return run


def _on_hard_cases(check, task_counts, declared_tol, make, losses_for, judge: Judge) -> None:
    agg0 = make()
    for n in task_counts:
        if n < agg0.tags().min_tasks:
            continue
        for label, G in hard_cases(n).items():
            where = f"'{label}' (T={n})"
            with on_case(where):
                out = make()(G, losses_for(n))
            d = out.direction.to(torch.float64)
            w = None if out.weights is None else out.weights.to(torch.float64)
            if not bool(torch.isfinite(d).all()):
                judge("finite direction", math.inf, 0.0, where, G)
                continue
            for cond, amount, tol in check(G, d, w, agg0, case_tolerance(G, agg0, declared=declared_tol)):
                judge(cond, amount, tol, where, G)


def _span_residual(G: torch.Tensor, d: torch.Tensor) -> float:
    Q, _ = torch.linalg.qr(G.T)
    return float((d - Q @ (Q.T @ d)).norm() / d.norm())


def _spread(v: torch.Tensor) -> float:
    return float((v.max() - v.min()) / v.abs().max())


@identity(declared_tol=False)
def mgda(G, d, w, agg, tol: float) -> Violations:
    from mtlcheck.aggregators._min_norm import min_norm_weights

    w_star = torch.from_numpy(min_norm_weights((G @ G.T).numpy()))
    r = float((w_star @ G).norm())
    dn = float(d.norm())
    norms = G.norm(dim=1)
    gaps = dn**2 - G @ d  # the duality gap of the min-norm problem at d is max_i gaps_i
    kkt = (gaps / (norms * max(dn, 1e-300))).clamp_min(0.0)
    kkt_tol = torch.full_like(kkt, tol)
    norm_tol = tol
    solver_tol = declared_solver_tol(agg)
    if solver_tol is not None:  # a gap of solver_tol·max‖g_i‖², in the units reported
        scale = float(norms.max()) ** 2
        kkt_tol = torch.maximum(kkt_tol, solver_tol * scale / (norms * max(dn, 1e-300)))
        norm_tol = max(norm_tol, 2 * solver_tol * scale / (r * (dn + r)))
    worst = int(torch.argmax(kkt / kkt_tol))
    out = [
        ("KKT ⟨g_i, d⟩ ≥ ‖d‖² for every task (cosine units)", float(kkt[worst]), float(kkt_tol[worst])),
        ("minimum norm ‖d‖ = min_{w∈Δ}‖Σw_i g_i‖ (relative)", abs(dn - r) / r, norm_tol),
    ]
    if w is not None:
        out.append(("weights on the simplex (w ≥ 0, Σw = 1)", max(float(-w.min()), abs(float(w.sum()) - 1), 0.0), tol))
    return out


@identity()
def cagrad(G, d, w, agg, tol: float) -> Violations:
    from mtlcheck.aggregators.cagrad import solve_dual

    c = getattr(agg, "c", None)
    if not isinstance(c, (int, float)) or c < 0:
        return [
            (f"implements='cagrad' needs a numeric attribute c >= 0 (the ball radius factor), got {c!r}", math.inf, tol)
        ]
    g0 = G.mean(0)
    r0 = float(g0.norm())
    if c == 0:
        cos = float(d @ g0 / (d.norm() * g0.norm()))
        return [("c = 0: d parallel to g0 = mean_i g_i (1 − cos)", 1 - cos, tol)]
    A = G @ G.T
    trace = float(A.trace())
    An = (A / trace).numpy()
    w_star = solve_dual(An, c * math.sqrt(max(float(An.mean()), 0.0)))
    A64 = A.numpy()
    F_star = float(w_star @ A64.mean(1) + c * r0 * math.sqrt(max(w_star @ A64 @ w_star, 0.0)))
    # x d on the sphere ‖x d − g0‖ = c‖g0‖: x²‖d‖² − 2x⟨d,g0⟩ + (1−c²)‖g0‖² = 0
    dd, dg = float(d @ d), float(d @ g0)
    disc = dg * dg - dd * (1 - c * c) * r0 * r0
    scale = r0 * float(G.norm(dim=1).max())
    if disc < 0 or dd == 0:
        return [("d meets the ball ‖d − g0‖ ≤ c‖g0‖ (d's ray misses it)", math.inf, tol)]
    roots = [x for x in ((dg - math.sqrt(disc)) / dd, (dg + math.sqrt(disc)) / dd) if x > 0]
    if not roots:
        return [("d meets the ball ‖d − g0‖ ≤ c‖g0‖ on its positive ray", math.inf, tol)]
    best = max(float((G @ (x * d)).min()) for x in roots)
    return [
        ("dual optimality min_i⟨g_i, d̂⟩ = min_w F(w) (relative to ‖g0‖·max‖g_i‖)", max(F_star - best, 0.0) / scale, tol)
    ]


@identity()
def nash_mtl(G, d, w, agg, tol: float) -> Violations:
    p = G @ d
    if w is not None:
        if not bool((w > 0).all()):
            return [(f"α_i > 0 for every task (smallest α = {float(w.min()):.3g})", math.inf, 0.0)]
        return [("bargaining α_i (GGᵀα)_i equal for every task (relative spread)", _spread(w * p), tol)]
    if bool((p <= 0).any()):
        return [(f"(GGᵀα)_i = ⟨g_i, d⟩ > 0 for every task (smallest {float(p.min()):.3g})", math.inf, 0.0)]
    target = (G / p[:, None]).sum(0)  # α_i ∝ 1/(GGᵀα)_i
    cos = float(d @ target / (d.norm() * target.norm()))
    return [("bargaining d ∥ Σ_i g_i/⟨g_i, d⟩ (1 − cos)", 1 - cos, tol)]


@identity()
def imtl_g(G, d, w, agg, tol: float) -> Violations:
    if float(d.norm()) == 0:
        return [("d ≠ 0", math.inf, 0.0)]
    proj = _unit_rows(G) @ d
    return [
        ("equal projections u_iᵀd (relative spread)", _spread(proj), tol),
        ("d in span{g_i} (relative residual)", _span_residual(G, d), tol),
    ]


@identity()
def aligned_mtl(G, d, w, agg, tol: float) -> Violations:
    if float(d.norm()) == 0:
        return [("d ≠ 0", math.inf, 0.0)]
    P, _, Qt = torch.linalg.svd(G, full_matrices=False)
    return [
        (
            "equal singular values: rows of P Qᵀ have equal projections on d (relative spread)",
            _spread(P @ (Qt @ d)),
            tol,
        ),
        ("d in span{g_i} (relative residual)", _span_residual(G, d), tol),
    ]


def _scaled_match(d: torch.Tensor, expected: torch.Tensor, agg, what: str, tol: float) -> Violations:
    declared = agg.identical_rows_scale(2)
    if declared is None:
        cos = float(d @ expected / (d.norm() * expected.norm()))
        return [(f"{what}, up to a positive scale (1 − cos)", 1 - cos, tol)]
    s = declared / 2
    return [
        (
            f"{what} with the declared scale s = {s:g} (relative error)",
            float((d - s * expected).norm() / (s * expected).norm()),
            tol,
        )
    ]


def _pcgrad_pair(G: torch.Tensor) -> torch.Tensor:
    g1, g2 = G
    dot = float(g1 @ g2)
    if dot >= 0:
        return g1 + g2
    return (g1 - dot / float(g2 @ g2) * g2) + (g2 - dot / float(g1 @ g1) * g1)


@identity(task_counts=(2,))
def pcgrad(G, d, w, agg, tol: float) -> Violations:
    return _scaled_match(d, _pcgrad_pair(G), agg, "d = s(g_1' + g_2') (PCGrad, T = 2)", tol)


def gradvac_expected(G: torch.Tensor, target: float) -> tuple[torch.Tensor, float]:
    """(g_1' + g_2', ρ) for T = 2 and the current target φ̂ (Wang et al. Eq. 4)."""
    norms = G.norm(dim=1)
    rho = float(G[0] @ G[1] / (norms[0] * norms[1]))
    out = G.clone()
    if rho < target:
        root_rho, root_t = math.sqrt(max(1 - rho * rho, 0.0)), math.sqrt(max(1 - target * target, 0.0))
        for i, j in ((0, 1), (1, 0)):
            coef = float(norms[i]) * (target * root_rho - rho * root_t) / (float(norms[j]) * root_t)
            out[i] = G[i] + coef * G[j]
    return out.sum(0), rho


def cone_projection(G: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """argmin_{y : Gy ≥ 0} ‖y − x‖ by its KKT conditions in the primal: y = x + G_Sᵀμ_S with
    (G_S G_Sᵀ) μ_S = −G_S x on an active set S, μ_S ≥ 0 and Gy ≥ 0; the valid candidate nearest
    x over every S (T ≤ 10: the hard cases). Independent of the methods' weight-space solver."""
    n = G.shape[0]
    norms = G.norm(dim=1)
    scale = float(x.norm()) + 1e-300
    best, best_dist = None, math.inf
    for mask in range(2**n):
        S = [i for i in range(n) if mask >> i & 1]
        y = x.clone()
        if S:
            GS = G[S]
            try:
                mu = torch.linalg.solve(GS @ GS.T, -(GS @ x))
            except RuntimeError:  # a singular active set: its rows are dependent, another S decides
                continue
            if float(mu.min()) < -1e-12 * float(mu.abs().max() + 1e-300):
                continue
            y = x + GS.T @ mu
        if float(((G @ y) / norms).min()) < -1e-12 * scale:
            continue
        dist = float((y - x).norm())
        if dist < best_dist:
            best, best_dist = y, dist
    return best


def _cone_match(G, d, expected, agg, what: str, tol: float) -> Violations:
    out = []
    if float(d.norm()) > 0:
        cos = (G @ d) / (G.norm(dim=1) * d.norm())
        out.append(("d in the dual cone: ⟨g_i, d⟩ ≥ 0 for every task (cosine units)", max(-float(cos.min()), 0.0), tol))
    scale = agg.identical_rows_scale(G.shape[0])
    if scale is None:
        cos = float(d @ expected / (d.norm() * expected.norm()))
        return out + [(f"{what}, up to a positive scale (1 − cos)", 1 - cos, tol)]
    return out + [
        (
            f"{what} with the declared scale s = {scale:g} (relative error)",
            float((d - scale * expected).norm() / (scale * expected).norm()),
            tol,
        )
    ]


@identity()
def upgrad(G, d, w, agg, tol: float) -> Violations:
    expected = torch.stack([cone_projection(G, g) for g in G]).mean(0)
    return _cone_match(G, d, expected, agg, "d = s·mean_i π_C(g_i) (UPGrad)", tol)


@identity()
def dualproj(G, d, w, agg, tol: float) -> Violations:
    expected = cone_projection(G, G.mean(0))
    return _cone_match(G, d, expected, agg, "d = s·π_C(mean_i g_i) (DualProj)", tol)


@identity()
def config(G, d, w, agg, tol: float) -> Violations:
    dn = float(d.norm())
    if dn == 0:
        return [("d ≠ 0", math.inf, 0.0)]
    cos = (G @ d) / (G.norm(dim=1) * dn)
    out = [
        ("equal cosines cos(g_i, d) for every task (spread in cosine units)", float(cos.max() - cos.min()), tol),
        ("d in span{g_i} (relative residual)", _span_residual(G, d), tol),
    ]
    if agg.identical_rows_scale(G.shape[0]) is not None:
        length = float((G @ d).sum()) / dn
        out.append(("‖d‖ = Σ_i ⟨g_i, d/‖d‖⟩ (relative error)", abs(dn - length) / abs(length), tol))
    return out


@identity()
def fairgrad(G, d, w, agg, tol: float) -> Violations:
    alpha = getattr(agg, "alpha", None)
    if not isinstance(alpha, (int, float)) or not alpha > 0:
        return [(f"implements='fairgrad' needs a numeric attribute alpha > 0, got {alpha!r}", math.inf, tol)]
    p = G @ d
    if bool((p <= 0).any()):
        return [(f"⟨g_i, d⟩ = (GGᵀw)_i > 0 for every task (smallest {float(p.min()):.3g})", math.inf, 0.0)]
    if w is not None:
        if not bool((w > 0).all()):
            return [(f"w_i > 0 for every task (smallest w = {float(w.min()):.3g})", math.inf, 0.0)]
        spread = _spread(w ** (1 / alpha) * p)
        return [("α-fair w_i^{1/α} (GGᵀw)_i equal for every task (relative spread)", spread, tol)]
    target = (p[:, None] ** -alpha * G).sum(0)
    cos = float(d @ target / (d.norm() * target.norm()))
    return [("α-fair d ∥ Σ_i ⟨g_i, d⟩^{−α} g_i (1 − cos)", 1 - cos, tol)]


@identity_over_steps
def gradvac(make, losses_for, judge: Judge) -> None:
    """T = 2, over the hard cases (twice, with a numeric `beta`): each step's d against Eq. 4 at the
    target φ̂ that the earlier steps' cosines set."""
    agg0 = make()
    beta = getattr(agg0, "beta", None)
    cases = list(hard_cases(2).items())
    agg = make()
    target = 0.0
    sequence = cases * 2 if isinstance(beta, (int, float)) else cases[:1]
    for step, (label, G) in enumerate(sequence):
        with on_case(f"'{label}' (T=2) at step {step}"):
            d = agg(G, losses_for(2)).direction.to(torch.float64)
            if agg.tags().post_step_update:
                agg.after_step(losses_for(2))
        expected, rho = gradvac_expected(G, target)
        where = f"'{label}' at step {step} (target φ̂ = {target:.4g}, ρ = {rho:.4g})"
        for cond, amount, tol in _scaled_match(
            d, expected, agg, "d = s(g_1' + g_2') (GradVac Eq. 4, T = 2)", case_tolerance(G, agg0)
        ):
            judge(cond, amount, tol, where, G)
        if isinstance(beta, (int, float)):
            target = (1 - beta) * target + beta * rho


def db_mtl_expected(G: torch.Tensor, losses: torch.Tensor, ema: torch.Tensor | None, step: int, beta, sigma):
    """(d, ĝ) at step `step` (1-based) of DB-MTL (Lin et al. 2023), from the paper's recurrence:
    ĝ_i ← β_t ĝ_i + (1 − β_t) g_i/L_i, β_t = β/t^σ, ĝ = 0 at the start; d = Σ_i (max_j‖ĝ_j‖/‖ĝ_i‖) ĝ_i
    (a zero ĝ_i contributes 0)."""
    try:
        beta_t = beta / float(step) ** sigma
    except OverflowError:  # step^σ past the float range (σ = 2000, say): β_t is 0
        beta_t = 0.0
    scaled = G / losses[:, None]
    ema = (1 - beta_t) * scaled if ema is None else beta_t * ema + (1 - beta_t) * scaled
    norms = ema.norm(dim=1)
    ratio = torch.where(norms > 0, norms.max() / torch.where(norms > 0, norms, 1.0), 0.0)
    return (ratio[:, None] * ema).sum(0), ema


@identity_over_steps
def db_mtl(make, losses_for, judge: Judge) -> None:
    """T = 2..7, over the hard cases twice with losses in [0.5, 1.5] that change by step and task
    (the log's 1/L_i then changes the EMA's mix): each step's d against the paper's recurrence, up
    to a positive scale (chord ‖d/‖d‖ − e/‖e‖‖, linear in the angle)."""
    agg0 = make()
    beta, sigma = getattr(agg0, "beta", None), getattr(agg0, "beta_sigma", None)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (beta, sigma)):
        judge(
            f"implements='db_mtl' needs numeric attributes beta and beta_sigma (β_t = β/t^σ), got {beta!r}, {sigma!r}",
            math.inf,
            0.0,
            "the instance",
            torch.eye(1, dtype=torch.float64),
        )
        return
    for n in TASK_COUNTS:
        if n < agg0.tags().min_tasks:
            continue
        agg, ema = make(), None
        for step, (label, G) in enumerate(list(hard_cases(n).items()) * 2, start=1):
            losses = 0.5 + torch.rand(n, generator=_gen(500 + 31 * n + step), dtype=torch.float64)
            where = f"'{label}' (T={n}) at step {step}"
            with on_case(where):
                d = agg(G, losses).direction.to(torch.float64)
                if agg.tags().post_step_update:
                    agg.after_step(losses)
            expected, ema = db_mtl_expected(G, losses, ema, step, beta, sigma)
            dn, en = float(d.norm()), float(expected.norm())
            chord = math.inf if dn == 0 or not math.isfinite(dn) else float((d / dn - expected / en).norm())
            judge(
                "d ∥ Σ_i (max_j‖ĝ_j‖/‖ĝ_i‖) ĝ_i, ĝ_i ← β_t ĝ_i + (1−β_t) g_i/L_i, β_t = β/t^σ (DB-MTL; chord "
                "between unit vectors)",
                chord,
                case_tolerance(G, agg0),
                where,
                G,
            )


IDENTITIES = tuple(IDENTITY_CHECKS)  # the names `implements` may declare


def verdicts_of(name: str, make, losses_for) -> Judge:
    """The verdicts of method `name`'s defining property on the hard cases."""
    verdicts = Judge(make())
    IDENTITY_CHECKS[name](make, losses_for, verdicts)
    return verdicts


def violations(name: str, make, losses_for) -> list[str]:
    """Every violated (or, at a declared tolerance, undecidable) condition of method `name` on the
    hard cases, as messages."""
    return verdicts_of(name, make, losses_for).verdict()


def _message(cond: str, amount: float, tol: float, where: str) -> str:
    if math.isinf(amount):
        return f"{cond}: violated on {where}"
    return f"{cond}: violated by {amount:.3g} (tolerance {tol:g}) on {where}"
