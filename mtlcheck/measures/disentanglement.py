"""Feature Disentanglement (FD), Eq. 7-8 of the paper.

For feature-level task gradients g_ij = d L_i / d Z_j (task i, position j of the shared
representation Z):

    p_ij  = |g_ij| / sum_k |g_kj|                       (7b)
    E_j   = - sum_i p_ij ln p_ij                        (7a)
    FD    = mean_j E_j                                  (8)

E_j is the entropy of the saliency distribution over tasks at position j (natural log,
0 ln 0 = 0), so FD lies in [0, ln T]: 0 when every position is salient to a single task
(disentangled), ln T when every position is equally salient to all tasks (entangled).

Conventions
-----------
* Dead positions: a position where all T gradients are exactly zero carries no saliency, and
  Eq. 7b is 0/0 there. Such positions are excluded from the mean in Eq. 8 (they are neither
  "disentangled" nor "entangled"). If every position is dead, ``ValueError`` is raised.
* Smoothing: the paper calls p_.j a "(smoothened) distribution" (Fig. 1) without giving the
  smoothing. ``eps >= 0`` adds the same pseudo-saliency to every task,

      p_ij = (|g_ij| + eps) / (sum_k |g_kj| + T eps),

  default ``eps = 0`` (Eq. 7b exactly). ``eps`` is in the gradients' own units, so with
  ``eps > 0`` FD is no longer invariant to rescaling the gradients; it pulls every E_j toward
  ln T. Dead positions are excluded whatever ``eps`` is.
* Multi-level Z (e.g. FPN levels): pass a sequence of (T, ...) tensors with the same T; the
  positions of all levels are pooled, so each position (not each level) has equal weight.
* Batch: the batch axis is just more positions (the Jacobian is taken w.r.t. the flattened
  batch x features representation).
* T = 1 is accepted and gives FD = 0 (ln 1); a (T,) tensor is rejected, since it is more
  likely a flattened single-task gradient than T tasks at one position -- pass (T, 1).
* Computed in float64 (on the input's device; CPU work is chunked so blocks stay in cache);
  the result is clamped to [0, ln T] against rounding. The input is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._inputs import real_tensor

__all__ = ["feature_disentanglement", "position_entropies"]


def _as_levels(feature_grads) -> list[torch.Tensor]:
    name = "feature_grads"
    if isinstance(feature_grads, torch.Tensor):
        levels = [feature_grads]
    elif isinstance(feature_grads, Sequence) and not isinstance(feature_grads, (str, bytes)):
        levels = list(feature_grads)
        if not levels:
            raise ValueError(f"{name} is an empty sequence; expected (T, ...) tensors")
    else:
        try:
            levels = [torch.as_tensor(feature_grads, dtype=torch.float64)]
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"{name} must be a (T, ...) tensor or a sequence of them; got {type(feature_grads).__name__}"
            ) from exc
    out = []
    T = None
    for k, z in enumerate(levels):
        where = _where(feature_grads, k)
        z = real_tensor(z, where, "a (T, ...) tensor")
        if z.ndim < 2:
            raise ValueError(
                f"{where} must have shape (T, ...) with at least one position axis "
                f"(use shape (T, 1) for a scalar feature); got shape {tuple(z.shape)}"
            )
        if z.shape[0] < 1:
            raise ValueError(f"{where} has no tasks (shape {tuple(z.shape)})")
        if z.numel() == 0:
            raise ValueError(f"{where} has no positions (shape {tuple(z.shape)})")
        if T is None:
            T = z.shape[0]
        elif z.shape[0] != T:
            raise ValueError(f"{where} has T={z.shape[0]} tasks but the first level has T={T}")
        out.append(z.detach())
    return out


# Elements (T x positions) per chunk on CPU: a ~2 MB float64 block stays in cache, and the
# block buffers are reused across chunks, which together roughly halve the time of
# whole-tensor passes (measured on 2 cores).
_CHUNK_ELEMENTS = 1 << 18
_TINY = torch.finfo(torch.float64).tiny


def _level_entropies(z: torch.Tensor, eps: float, where: str, per_position: bool):
    """Iterate over chunks of positions of one (T, ...) level.

    Yields ``(entropy_sum, n_live, entropies, live)`` per chunk: the sum of E_j over the live
    positions (float), their number, and -- only when ``per_position`` -- E_j for every position
    of the chunk (float64, dead positions NaN) and the live mask.
    """
    T = z.shape[0]
    flat = z.reshape(T, -1)
    n_pos = flat.shape[1]
    step = n_pos if flat.device.type != "cpu" else max(1, min(n_pos, _CHUNK_ELEMENTS // T))
    opts = dict(dtype=torch.float64, device=flat.device)
    a_buf = torch.empty(T, step, **opts)
    l_buf = torch.empty(T, step, **opts)
    s_buf = torch.empty(step, **opts)
    for start in range(0, n_pos, step):
        n = min(step, n_pos - start)
        a, lp, s = a_buf[:, :n], l_buf[:, :n], s_buf[:n]
        a.copy_(flat[:, start : start + n])  # float64 copy: the caller's tensor is never touched
        a.abs_()
        torch.sum(a, 0, out=s)
        chunk_eps = eps
        if not math.isfinite(float(s.sum())):
            # Either the input is not finite, or finite values overflowed when summed.
            if not bool(torch.isfinite(a).all()):
                raise ValueError(f"{where} contains non-finite values (NaN or inf)")
            m = float(a.max())
            a.div_(m)  # p is unchanged when |g| and eps are scaled together
            chunk_eps = eps / m
            torch.sum(a, 0, out=s)
        live = s > 0
        n_live = int(torch.count_nonzero(live))
        if chunk_eps > 0:
            a.add_(chunk_eps).div_(s + T * chunk_eps)
        else:
            a.div_(s.masked_fill_(~live, 1.0))  # dead columns stay 0 and contribute 0
        p = a
        # p ln p with 0 ln 0 = 0: clamping p = 0 to the smallest normal double gives
        # 0 * ln(tiny) = 0 exactly, and is ~2x faster than xlogy / entr.
        torch.clamp_min(p, _TINY, out=lp)
        lp.log_()
        lp.mul_(p)
        if per_position or (chunk_eps > 0 and n_live < n):
            h = lp.sum(0).neg_()
            h_live = h.masked_fill(~live, 0.0)
            total = float(h_live.sum())
            ent = h.masked_fill_(~live, float("nan")) if per_position else None
            yield total, n_live, ent, live
        else:
            yield -float(lp.sum()), n_live, None, None


def position_entropies(feature_grads, eps: float = 0.0) -> torch.Tensor:
    """E_j (Eq. 7a) for every position of every level, flattened and concatenated (float64).

    Dead positions (all T gradients zero) are NaN here, so they are visible to the caller.
    """
    eps = _check_eps(eps)
    levels = _as_levels(feature_grads)
    parts = []
    for k, z in enumerate(levels):
        for _, _, ent, _ in _level_entropies(z, eps, _where(feature_grads, k), per_position=True):
            parts.append(ent)
    return torch.cat(parts)


def _where(feature_grads, k) -> str:
    if isinstance(feature_grads, Sequence) and not isinstance(feature_grads, torch.Tensor):
        return f"feature_grads[{k}]"
    return "feature_grads"


def _check_eps(eps) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}") from exc
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    return eps


def feature_disentanglement(feature_grads, eps: float = 0.0) -> float:
    """FD (Eq. 8): mean over positions j of the task-saliency entropy E_j (Eq. 7).

    Parameters
    ----------
    feature_grads:
        A (T, ...) tensor of d L_i / d Z (any trailing shape, e.g. T x B x C x H x W), or a
        sequence of such tensors with equal T for a multi-level Z (positions pooled).
    eps:
        Additive smoothing >= 0: p_ij = (|g_ij| + eps) / (sum_k |g_kj| + T eps). Default 0
        gives Eq. 7b exactly.

    Returns
    -------
    float in [0, ln T]. Positions whose T gradients are all zero are excluded from the mean;
    ``ValueError`` if no position is left, or for non-finite / malformed input.
    """
    eps = _check_eps(eps)
    levels = _as_levels(feature_grads)
    T = levels[0].shape[0]
    total = 0.0
    count = 0
    for k, z in enumerate(levels):
        for chunk_total, n_live, _, _ in _level_entropies(z, eps, _where(feature_grads, k), per_position=False):
            total += chunk_total
            count += n_live
    if count == 0:
        raise ValueError("feature_grads is zero at every position: no task saliency, FD (Eq. 8) is undefined")
    fd = total / count
    return min(max(fd, 0.0), math.log(T))
