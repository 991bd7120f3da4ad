"""Seeded gradient matrices with known structure, for the conformance checks.

Every sampler takes a `torch.Generator` and returns a float64 (T, d) matrix:
* `normal`: i.i.d. N(0, 1) entries (full rank when T <= d).
* `conflicting`: rows with pairwise negative inner products and no vanishing non-negative
  combination (non-weakly-stationary): ⟨g_i, g_j⟩ < 0 for i ≠ j, yet Σ_i v_i g_i ≠ 0 for every
  v ≥ 0, v ≠ 0 (a shared component along u keeps them apart).
* `strongly_stationary`: a positive combination vanishes (Σ_i g_i = 0), so min-norm is 0.
* `non_conflicting`: all pairwise inner products ≥ 0 (entries of one sign).
* hard inputs: rank-deficient, a zero row, opposite rows, extreme scales.
"""

from __future__ import annotations

import torch


def normal(n_tasks: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(n_tasks, dim, generator=generator, dtype=torch.float64)


def conflicting(n_tasks: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Pairwise conflicting rows with a common component along u that no v >= 0 can cancel.

    g_i = a_i + ε u where the a_i are the vertices of a regular simplex centred at 0 in a
    subspace orthogonal to u (⟨a_i, a_j⟩ = −1/(T−1) for i ≠ j, ‖a_i‖ = 1), rotated randomly.
    Then ⟨g_i, g_j⟩ = −1/(T−1) + ε² < 0 for ε² < 1/(T−1), and ⟨Σ v_i g_i, u⟩ = ε Σ v_i > 0.
    Rows are rescaled by factors in [0.1, 10] (the first two by exactly 10 and 0.1), so the plain
    sum Σ_i g_i conflicts with the smallest task.
    """
    if dim < n_tasks + 1:
        raise ValueError(f"conflicting needs dim >= n_tasks + 1, got dim={dim}, n_tasks={n_tasks}")
    eps = 0.5 / max(n_tasks - 1, 1) ** 0.5
    simplex = torch.eye(n_tasks, dtype=torch.float64) - 1.0 / n_tasks
    simplex = simplex / simplex.norm(dim=1, keepdim=True)
    base = torch.zeros(n_tasks, dim, dtype=torch.float64)
    base[:, :n_tasks] = simplex
    base[:, n_tasks] = eps
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    # norms spread over two decades, so that the plain sum conflicts with the smaller tasks
    scales = 10.0 ** (2.0 * torch.rand(n_tasks, 1, generator=generator, dtype=torch.float64) - 1.0)
    scales[0], scales[1] = 10.0, 0.1
    return (base @ q.T) * scales


def strongly_stationary(n_tasks: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Rows with Σ_i v_i g_i = 0 for some v > 0 (the min-norm point of the hull is 0)."""
    G = normal(n_tasks, dim, generator)
    v = 0.5 + torch.rand(n_tasks, generator=generator, dtype=torch.float64)
    G[-1] = -(v[:-1, None] * G[:-1]).sum(0) / v[-1]
    return G


def non_conflicting(n_tasks: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Rows with non-negative entries, hence ⟨g_i, g_j⟩ >= 0."""
    return torch.rand(n_tasks, dim, generator=generator, dtype=torch.float64)


def identical_rows(n_tasks: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return normal(1, dim, generator).repeat(n_tasks, 1)


def hard_inputs(n_tasks: int, dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Named degenerate matrices every aggregator must handle without NaN/inf."""
    base = normal(n_tasks, dim, generator)
    cases = {}
    rank_deficient = base.clone()
    if n_tasks >= 3:
        rank_deficient[-1] = rank_deficient[0] + rank_deficient[1]
    elif n_tasks == 2:
        rank_deficient[1] = 2.0 * rank_deficient[0]
    cases["rank_deficient"] = rank_deficient
    zero_row = base.clone()
    zero_row[0] = 0.0
    cases["zero_row"] = zero_row
    if n_tasks >= 2:
        opposite = base.clone()
        opposite[1] = -opposite[0]
        cases["opposite_rows"] = opposite
    for scale in (1e-10, 1e3, 1e10):
        cases[f"scaled_{scale:g}"] = base * scale
    return cases
