"""Ranking Similarity (RS), Eq. 9 of the paper.

For n items scored by two rankings (here: two vectors of values a, b; the ranking R(x_i) is
the order of the values),

    S(a, b) = 1 / (n (n - 1)) * sum_{i != j} I[ [a_i > a_j] == [b_i > b_j] ]      (9)

i.e. the fraction of ordered pairs (i, j), i != j, on which the two strict comparisons have the
same truth value. Larger means the two rankings agree more; S(a, reversed b) = 1 - S(a, b).
The paper reports only the symmetric version 0.5 + |S - 0.5| (section 5.3, "Symmetry"), since
whether a measure should rank like the performance or opposite to it is not fixed a priori.

Ties (Eq. 9 taken literally, with exact float equality)
-------------------------------------------------------
Per unordered pair {i, j} the two ordered pairs contribute:

* strict in both, same order   -> both agree      (full credit)
* strict in both, opposite     -> neither agrees  (no credit)
* tied in exactly one of a, b  -> one of the two agrees (half credit)
* tied in both                 -> both agree      (full credit)

Equivalently S = (1 + tau_a + t_ab) / 2, with tau_a Kendall's tau-a (mean over unordered pairs
of sign(a_i - a_j) sign(b_i - b_j)) and t_ab the fraction of unordered pairs tied in both. What
this implies:

* Without ties, S = (1 + tau) / 2 and S(a, -b) = 1 - S(a, b).
* With ties, S(a, b) + S(a, -b) = 1 + t_ab, so the reversal identity holds only when no pair is
  tied in both vectors.
* A constant vector against distinct values gives exactly 0.5 ("no information"); two constant
  vectors give 1.
* S is symmetric, S(a, a) = 1, and S is invariant to any strictly increasing transform of
  either argument (it only sees comparisons, and those keep ties).
"""

from __future__ import annotations

import numpy as np
import torch

from ._inputs import real_tensor

__all__ = ["ranking_similarity", "symmetric_ranking_similarity"]


def _as_values(x, name: str) -> np.ndarray:
    if isinstance(x, (list, tuple)) and all(isinstance(v, float) for v in x):
        # plain floats (the reports' draws): numpy, same checks, no tensor round trip
        a = np.asarray(x, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        return a
    t = real_tensor(x, name, "a 1-D sequence of real numbers").detach()
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {tuple(t.shape)}")
    try:
        t = t.to(device="cpu", dtype=torch.float64)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"{name} must contain real numbers; got dtype {t.dtype}") from exc
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return t.numpy()


def _validate_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = _as_values(a, "a")
    b = _as_values(b, "b")
    if len(a) < 2:
        raise ValueError(f"a has {len(a)} value(s); Eq. 9 needs n >= 2 items to form a pair")
    if len(b) != len(a):
        raise ValueError(f"b has {len(b)} values but a has {len(a)}; they must score the same items")
    return a, b


def ranking_similarity(a, b) -> float:
    """S(a, b) of Eq. 9: fraction of ordered pairs i != j with [a_i > a_j] == [b_i > b_j].

    ``a`` and ``b`` are 1-D sequences (list, numpy array or tensor) of n >= 2 finite values for
    the same n items, e.g. a measure's end-of-training value per method and the methods' test
    score. Ties are handled exactly as Eq. 9 is written (see the module docstring): a pair tied
    in one vector only gets half credit, a pair tied in both gets full credit. Returns a float
    in [0, 1]. Raises ``ValueError`` naming the offending argument for bad input.
    """
    a, b = _validate_pair(a, b)
    n = len(a)
    gt_a = a[:, None] > a[None, :]
    gt_b = b[:, None] > b[None, :]
    agree = int((gt_a == gt_b).sum()) - n  # the n diagonal pairs (False == False) always agree
    return agree / (n * (n - 1))


def symmetric_ranking_similarity(a, b) -> float:
    """The reported RS: 0.5 + |S(a, b) - 0.5|, in [0.5, 1] (paper section 5.3, "Symmetry").

    Equals max(S(a, b), S(a, -b)) when there are no ties: the ranking is allowed to be
    reversed, and only how clearly the two orders align counts.
    """
    s = ranking_similarity(a, b)
    return 0.5 + abs(s - 0.5)
