"""Euclidean projection onto the probability simplex (Held, Wolfe & Crowder 1974; the sort-based
algorithm of Duchi et al. 2008, "Efficient Projections onto the ℓ1-Ball", Fig. 1): exact."""

from __future__ import annotations

import torch


def project_onto_simplex(y: torch.Tensor) -> torch.Tensor:
    """argmin_{x ≥ 0, Σx = 1} ‖x − y‖ for a float64 vector y. y is shifted by its maximum first
    (the projection does not change when a constant is added to every entry), so that huge
    entries cannot round the largest one's test u_1 − (u_1 − 1) > 0 to zero."""
    n = y.shape[0]
    y = y - y.max()
    u, _ = torch.sort(y, descending=True)
    css = torch.cumsum(u, 0) - 1.0
    k = torch.arange(1, n + 1, dtype=y.dtype)
    rho = int(torch.nonzero(u - css / k > 0).max())
    theta = css[rho] / (rho + 1)
    return (y - theta).clamp_min(0.0)
