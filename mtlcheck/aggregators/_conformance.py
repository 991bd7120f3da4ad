"""What the conformance kit knows of the built-ins, keyed by the class object itself (a user's
class of the same name, or a subclass, inherits neither): the parameter settings checked besides
the default, and the checks a built-in fails by design, with the reason."""

from __future__ import annotations

from typing import Any

from mtlcheck.aggregators import (
    CRMOGM,
    DBMTL,
    DWA,
    IMTL,
    MGDA,
    STCH,
    AlignedMTL,
    CAGrad,
    ExcessMTL,
    FairGrad,
    GradDrop,
    GradNorm,
    GradVac,
    GradVacPublished,
    MoCo,
    NashMTL,
    Uncertainty,
)

EXPECTED_FAILURES: dict[type, dict[str, str]] = {
    NashMTL: {
        "check_finite_on_hard_inputs": (
            "No Nash bargaining solution exists when a non-negative combination of the gradients vanishes "
            "(opposite rows g, -g): α_i (G Gᵀ α)_i = 1 has no positive solution, so NashMTL raises SolverError "
            "with that combination as the certificate instead of returning a silent fallback (Navon et al. 2022, Eq. "
            "3 assumes linearly independent gradients)."
        ),
    },
    FairGrad: {
        "check_finite_on_hard_inputs": (
            "No α-fair solution exists when a non-negative combination of the gradients vanishes (opposite rows "
            "g, -g): (G Gᵀ w)_i = w_i^(-1/α) has no positive solution, so FairGrad raises SolverError with that "
            "combination as the certificate instead of a silent fallback (Ban & Ji 2024 assume it away)."
        ),
    },
    GradVacPublished: {
        "check_conflict_reduction": (
            "By design (danielmao2019/Pylon's GradVac): the published correction has '+ ρ√(1−φ̂²)' where Wang et al. "
            "Eq. 4 has '−', so at φ̂ = 0 a conflicting g_i is pushed further from g_j (cos falls below its target) "
            "instead of being lifted to φ̂."
        ),
        "check_method_identity": (
            "By design: the sign-flipped published correction (see check_conflict_reduction) is not "
            "GradVac's Eq. 4, so the output differs from GradVac's on every conflicting pair."
        ),
    },
}


# extra parameter settings of built-ins whose properties depend on parameters (sklearn's
# PER_ESTIMATOR_CHECK_PARAMS): each is checked in addition to the default instance
BUILTIN_VARIANTS: dict[type, list[dict[str, Any]]] = {
    FairGrad: [dict(alpha=2.0), dict(alpha=0.5)],
    STCH: [dict(mu=0.1, warmup_steps=2)],
    DBMTL: [dict(beta=0.0)],
    ExcessMTL: [dict(warmup_steps=2, robust_step_size=0.5)],
    CRMOGM: [dict(base="upgrad", alpha=0.5), dict(base="cagrad")],
    MoCo: [dict(rho=0.1, beta_sigma=0.0)],
    CAGrad: [dict(c=0.0), dict(c=1.0), dict(c=2.0, rescale=0), dict(c=0.4, rescale=2)],
    MGDA: [dict(normalization="l2"), dict(normalization="loss"), dict(normalization="loss+")],
    GradVac: [dict(group_type="parameter"), dict(beta=0.01)],
    NashMTL: [dict(max_norm=None), dict(update_weights_every=3)],
    AlignedMTL: [dict(scale_mode="median"), dict(scale_mode="rmse")],
    IMTL: [dict(loss_balance=False)],
    GradDrop: [dict(leak=0.5)],
    GradNorm: [dict(alpha=0.5, norm_blocks="last")],
    DWA: [dict(window=1)],
    Uncertainty: [dict(init=-0.5)],
}
