"""MGDA (Sener & Koltun 2018): the minimum-norm point of the convex hull of the task gradients.

w = argmin_{w ∈ Δ_T} ‖Σ_i w_i ĝ_i‖² with ĝ_i = g_i / n_i, solved exactly from the Gram matrix
(`_min_norm`), direction = Σ_i w_i ĝ_i (weights on the normalised gradients, as LibMTL's
parameter mode). Normalisers n_i (Sener et al. §3.2, LibMTL `mgda_gn`):
"none" 1, "l2" ‖g_i‖, "loss" L_i, "loss+" L_i·‖g_i‖. At the feature level (gradients w.r.t.
the flattened B×F representation) this is MGDA-UB.
Defining property (KKT): (M w)_i ≥ wᵀ M w for all i, with equality where w_i > 0.

Peers: with "none" LibMTL, SamsungLabs/MTL and TorchJD return Σ w_i g_i as here; nash-mtl
(github.com/AvivNavon/nash-mtl) and CAGrad's repository (github.com/Cranial-XIX/CAGrad) multiply by
T. With a normaliser the conventions differ by design: Sener & Koltun's code and nash-mtl apply the
weights w (found on the normalised ĝ_i) to the RAW gradients, Σ w_i g_i — another direction
whenever the normalisers differ — while LibMTL's parameter mode and mtlcheck use Σ w_i ĝ_i.
LibMTL's feature mode (rep_grad) applies w to the raw feature gradients and solves on the
batch-summed rows (mtlcheck's feature_batch="sum" engine option).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlcheck.aggregators._base import AggregatorTags, SolverError, WeightingAggregator
from mtlcheck.aggregators._min_norm import MinNormError, min_norm_weights
from mtlcheck.aggregators._registry import register_aggregator
from mtlcheck.jacobian import times_pow2

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register_aggregator("mgda", paper_name="MGDA", feature_alias="mgda_ub")
class MGDA(WeightingAggregator):
    def __init__(self, *, normalization: str = "none", seed: int = 0):
        super().__init__(seed=seed)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"MGDA: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization

    def tags(self) -> AggregatorTags:
        uses_losses = self.normalization in ("loss", "loss+")
        return AggregatorTags(
            inputs=frozenset({"grads", "losses"} if uses_losses else {"grads"}),
            family="solver",
            nonneg_weights=True,
            reduction={"none": "mean", "l2": "normalized"}.get(self.normalization, "other"),
            homogeneity={"none": 1, "l2": 0, "loss": 1, "loss+": 0}[self.normalization],
            non_conflicting=True,
            requires_solver="min-norm",
        )

    @property
    def implements(self):
        """The min-norm point of the hull (Sener & Koltun) only without normalisation."""
        return "mgda" if self.normalization == "none" else None

    def identical_rows_scale(self, n_tasks):
        return 1.0 if self.normalization == "none" else None

    def normalizers(self, gram: torch.Tensor, losses: torch.Tensor | None) -> torch.Tensor:
        norms = gram.diagonal().clamp_min(0).sqrt()
        if self.normalization == "none":
            n = torch.ones_like(norms)
        elif self.normalization == "l2":
            n = norms
        elif self.normalization == "loss":
            n = losses.clone()
        else:
            n = losses * norms
        # a zero normaliser means a zero gradient (or zero loss): keep that task's weight at zero effect
        return torch.where(n > 0, n, torch.ones_like(n))

    def _solve(self, gram: np.ndarray) -> np.ndarray:
        try:
            return min_norm_weights(gram)
        except MinNormError as exc:
            raise SolverError(f"{self!r}: {exc}") from exc

    def _weights(self, J, losses):
        # the Gram at scale 4^-S (J.scaled_gram): the min-norm weights do not change with the Gram's
        # scale, and the norms it gives are ‖g_i‖ / 2^S
        gram = J.scaled_gram()
        if self.normalization in ("loss", "loss+") and bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: loss normalization needs positive losses, got {losses.tolist()}")
        n = self.normalizers(gram, losses)
        normalized = gram / torch.outer(n, n)
        sol = torch.from_numpy(np.asarray(self._solve(normalized.numpy()), dtype=np.float64))
        if not torch.isfinite(sol).all():
            raise SolverError(f"{self!r}: solver returned non-finite weights {sol.tolist()}")
        w = sol / n
        return times_pow2(w, -J.gram_exponent) if self.normalization in ("l2", "loss+") else w
