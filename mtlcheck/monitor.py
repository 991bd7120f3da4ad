"""Training-time monitoring of the paper's measures (§5): GDS, GMS and FD every k steps.

GDS and GMS come from the T×T Gram of the parameter-level task gradients (Eq. 5–6), FD from
the feature-level gradients ∇_Z L_i (Eq. 7–8). Both are produced by the engine's step itself
(`backward_step(..., param_gram=True, feature_grads=True)`), so monitoring an EW run costs the
T encoder vector-Jacobian products of that step only, every k steps (k = 10 in the paper).
"""

from __future__ import annotations

import math

from mtlcheck.gradients import StepResult
from mtlcheck.measures import feature_disentanglement, gradient_direction_similarity, gradient_magnitude_similarity


def measure(result: StepResult) -> dict[str, float]:
    """GDS, GMS and FD of one monitored step (NaN where undefined, e.g. T = 1 or no saliency)."""
    out = {"gds": math.nan, "gms": math.nan, "fd": math.nan}
    if result.param_gram is not None and result.param_gram.shape[0] > 1:
        out["gds"] = float(gradient_direction_similarity(result.param_gram))
        out["gms"] = float(gradient_magnitude_similarity(result.param_gram))
    if result.feature_grads is not None:
        try:
            out["fd"] = float(feature_disentanglement(list(result.feature_grads)))
        except ValueError:  # every position has zero gradient for every task: FD undefined
            out["fd"] = math.nan
    return out
