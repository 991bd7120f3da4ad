"""Adapters that put TorchJD's aggregators (https://github.com/TorchJD/torchjd, pinned in the
`examples` extra: pip install "mtlcheck[examples]") under mtlcheck's conformance kit.

Each adapter passes the float64 Gram matrix G Gᵀ (or G itself, for Nash-MTL) to TorchJD's
weighting and returns its weights; `tags()` states what the method claims, and `implements`
names the published method whose defining property the kit then checks. Nothing of TorchJD is
changed: TorchJD draws PCGrad's and GradVac's task orders from the global torch RNG, and its
Nash-MTL needs the number of tasks up front (created at the first call here).

    mtlcheck check examples.torchjd_adapters:MGDA      # from the repository root
    pytest suites/conformance/test_examples.py          # the outcome, asserted
"""

from __future__ import annotations

import torch
from torchjd import aggregation as tjd

from mtlcheck.aggregators import Aggregation, Aggregator, AggregatorTags, WeightingAggregator


class _TorchJDWeighting(WeightingAggregator):
    """Weights from a TorchJD weighting of the Gram matrix."""

    def _weighting(self):  # pragma: no cover - each adapter builds its TorchJD object
        raise NotImplementedError

    def _weights(self, J, losses):
        return self._weighting()(J.gram()).to(torch.float64)


class MGDA(_TorchJDWeighting):
    """TorchJD's Frank-Wolfe stops when its step γ < epsilon: the duality gap is then below
    epsilon·‖d − g_t‖² ≤ 4·epsilon·max‖g_i‖², the precision it declares (`solver_tol`)."""

    implements = "mgda"

    def __init__(self, *, epsilon: float = 1e-3, max_iters: int = 100, seed: int = 0):
        super().__init__(seed=seed)
        self.epsilon, self.max_iters = epsilon, max_iters

    def tags(self):
        return AggregatorTags(
            family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True, solver_tol=4 * self.epsilon
        )

    def _weighting(self):
        return tjd.MGDAWeighting(epsilon=self.epsilon, max_iters=self.max_iters)


class CAGrad(_TorchJDWeighting):
    implements = "cagrad"

    def __init__(self, *, c: float = 0.5, norm_eps: float = 1e-4, seed: int = 0):
        super().__init__(seed=seed)
        self.c, self.norm_eps = c, norm_eps

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="other", non_conflicting=self.c >= 1)

    def identical_rows_scale(self, n_tasks):
        return None  # the direction is g; its length is not documented

    def _weighting(self):
        return tjd.CAGradWeighting(c=self.c, norm_eps=self.norm_eps)


class IMTLG(_TorchJDWeighting):
    implements = "imtl_g"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", reduction="mean")

    def _weighting(self):
        return tjd.IMTLGWeighting()


class AlignedMTL(_TorchJDWeighting):
    implements = "aligned_mtl"

    def __init__(self, *, scale_mode: str = "min", seed: int = 0):
        super().__init__(seed=seed)
        self.scale_mode = scale_mode

    def tags(self):
        return AggregatorTags(family="solver", reduction="mean")

    def _weighting(self):
        return tjd.AlignedMTLWeighting(scale_mode=self.scale_mode)


class PCGrad(_TorchJDWeighting):
    implements = "pcgrad"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="projection", nonneg_weights=True, stochastic=True, task_symmetric=False)

    def _weighting(self):
        return tjd.PCGradWeighting()


class GradVac(_TorchJDWeighting):
    """Stateful: the TorchJD weighting (holding the EMA targets φ̂) is the state."""

    implements = "gradvac"
    _state_attrs = ("_inner",)

    def __init__(self, *, beta: float = 0.5, eps: float = 1e-8, seed: int = 0):
        super().__init__(seed=seed)
        self.beta, self.eps = beta, eps
        self._inner = None

    def tags(self):
        return AggregatorTags(family="projection", stateful=True, stochastic=True, task_symmetric=False)

    def _weighting(self):
        if self._inner is None:
            self._inner = tjd.GradVacWeighting(beta=self.beta, eps=self.eps)
        return self._inner


class NashMTL(WeightingAggregator):
    """Stateful (warm start, update_weights_every); TorchJD's weighting reads G itself."""

    implements = "nash_mtl"
    _state_attrs = ("_inner",)

    def __init__(self, *, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20, seed: int = 0):
        super().__init__(seed=seed)
        self.max_norm, self.update_weights_every, self.optim_niter = max_norm, update_weights_every, optim_niter
        self._inner = None

    def tags(self):
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            stateful=True,
            reduction="other",
            homogeneity=None if self.max_norm > 0 else 1,
        )

    def identical_rows_scale(self, n_tasks):
        return None

    def _weights(self, J, losses):
        if self._inner is None:
            self._inner = tjd.NashMTL(
                n_tasks=J.n_tasks,
                max_norm=self.max_norm,
                update_weights_every=self.update_weights_every,
                optim_niter=self.optim_niter,
            ).weighting
        return self._inner(J.matrix().to(torch.float64)).to(torch.float64)


# methods after the paper (UPGrad and DualProj need torchjd[quadprog-projector], FairGrad torchjd[fairgrad])
class UPGrad(_TorchJDWeighting):
    implements = "upgrad"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True)

    def _weighting(self):
        return tjd.UPGradWeighting()


class DualProj(UPGrad):
    implements = "dualproj"

    def _weighting(self):
        return tjd.DualProjWeighting()


class FairGrad(_TorchJDWeighting):
    implements = "fairgrad"

    def __init__(self, *, alpha: float = 1.0, seed: int = 0):
        super().__init__(seed=seed)
        self.alpha = alpha

    def tags(self):
        return AggregatorTags(
            family="solver",
            nonneg_weights=True,
            reduction="other",
            homogeneity=0 if self.alpha == 1 else None,
            non_conflicting=True,
        )

    def _weighting(self):
        return tjd.FairGradWeighting(alpha=self.alpha)


class ConFIG(Aggregator):
    """TorchJD's ConFIG acts on the matrix G and returns the direction (no weights)."""

    implements = "config"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", weighted=False, reduction="sum", non_conflicting=True)

    def _aggregate(self, J, losses):
        return Aggregation(J.split(tjd.ConFIG()(J.matrix())), None)


ADAPTERS = (MGDA, CAGrad, IMTLG, AlignedMTL, PCGrad, GradVac, NashMTL)
LATER_ADAPTERS = (UPGrad, DualProj, FairGrad, ConFIG)
