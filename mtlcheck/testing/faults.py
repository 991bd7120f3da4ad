"""Make the numerical back ends a method may use fail in their own ways (for
`check_no_silent_fallback`), without touching the method's internals.

    with failing_backend("scipy.optimize") as calls:
        out = aggregator(G)          # calls.count: how often the failed back end was reached

Back ends and how each fails:
    scipy.optimize  minimize / linprog / least_squares / lsq_linear / root / minimize_scalar return
                    an unsuccessful OptimizeResult (success=False, x at the start); nnls raises RuntimeError
    cvxpy           Problem.solve raises cvxpy's own SolverError (only when cvxpy is already imported)
    numpy.linalg    solve, lstsq, inv, pinv, eig, eigh, eigvalsh, svd, cholesky, qr raise numpy.linalg.LinAlgError
    scipy.linalg    the same names (and cho_factor, lu_factor) raise numpy.linalg.LinAlgError
    torch.linalg    solve, lstsq, inv, pinv, eig, eigh, eigvalsh, svd, svdvals, cholesky, qr (and their
                    _ex forms, torch.svd, torch.pinverse, torch.inverse) raise torch.linalg.LinAlgError
Every reference to a failed function is replaced, including names bound by
`from numpy.linalg import solve` in any loaded module, and restored on exit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

BACKENDS = ("scipy.optimize", "cvxpy", "numpy.linalg", "scipy.linalg", "torch.linalg")
_LINALG = ("solve", "lstsq", "inv", "pinv", "eig", "eigh", "eigvalsh", "svd", "cholesky", "qr")
_OPTIMIZE_RESULTS = ("minimize", "linprog", "least_squares", "lsq_linear", "root", "minimize_scalar")


@dataclass
class Calls:
    backend: str
    count: int = 0


def available_backends() -> list[str]:
    """The back ends that are imported in this process (a method that uses one has imported it)."""
    return [b for b in BACKENDS if b in sys.modules]


def _targets(backend: str) -> dict[str, Callable]:
    module = sys.modules[backend]
    if backend == "torch.linalg":
        import torch

        names = [n for base in _LINALG for n in (base, base + "_ex")] + ["svdvals"]
        found = {f"torch.linalg.{n}": getattr(module, n) for n in names if hasattr(module, n)}
        found.update({f"torch.{n}": getattr(torch, n) for n in ("svd", "pinverse", "inverse") if hasattr(torch, n)})
        return found
    if backend in ("numpy.linalg", "scipy.linalg"):
        names = list(_LINALG) + (["cho_factor", "lu_factor"] if backend == "scipy.linalg" else [])
        return {f"{backend}.{n}": getattr(module, n) for n in names if hasattr(module, n)}
    if backend == "scipy.optimize":
        return {f"{backend}.{n}": getattr(module, n) for n in _OPTIMIZE_RESULTS + ("nnls",) if hasattr(module, n)}
    return {}


def _failing(backend: str, qualname: str, calls: Calls) -> Callable:
    def fail(*args, **kwargs):
        calls.count += 1
        message = f"planted {backend} failure in {qualname} (mtlcheck check_no_silent_fallback)"
        if backend == "torch.linalg":
            import torch

            raise torch.linalg.LinAlgError(message)
        if backend in ("numpy.linalg", "scipy.linalg"):
            import numpy as np

            raise np.linalg.LinAlgError(message)
        if qualname.endswith(".nnls"):
            raise RuntimeError(message)
        import numpy as np
        from scipy.optimize import OptimizeResult

        x0 = kwargs.get("x0", args[1] if len(args) > 1 else None)
        x = None if x0 is None or qualname.endswith(("linprog", "minimize_scalar")) else np.array(x0, dtype=float)
        return OptimizeResult(x=x, success=False, status=9, message=message, fun=float("nan"), nit=0)

    return fail


def references(backends) -> dict[str, list[tuple[dict, str, object]]]:
    """For each back end, (namespace, key, original) of every loaded module's global bound to one of
    its functions (one pass over sys.modules for all of them; pass the result to failing_backend)."""
    owner = {}
    for backend in backends:
        if backend != "cvxpy":
            for f in _targets(backend).values():
                owner[id(f)] = (backend, f)
    found = {b: [] for b in backends}
    for mod in list(sys.modules.values()):
        try:
            namespace = vars(mod)
        except TypeError:
            continue
        for key, value in list(namespace.items()):
            hit = owner.get(id(value))
            if hit is not None and hit[1] is value:
                found[hit[0]].append((namespace, key, value))
    return found


@contextlib.contextmanager
def failing_backend(backend: str, refs: dict | None = None) -> Iterator[Calls]:
    """Within the block, `backend` fails in its own way (see the module docstring); `refs`: the
    result of `references(...)` when several back ends are failed in turn."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; known: {BACKENDS}")
    calls = Calls(backend)
    if backend == "cvxpy":
        import cvxpy

        original = cvxpy.Problem.solve

        def solve(self, *args, **kwargs):
            calls.count += 1
            raise cvxpy.error.SolverError("planted cvxpy failure (mtlcheck check_no_silent_fallback)")

        cvxpy.Problem.solve = solve
        try:
            yield calls
        finally:
            cvxpy.Problem.solve = original
        return
    refs = (refs or references([backend]))[backend]
    names = {id(f): name for name, f in _targets(backend).items()}
    replacements = {id(original): _failing(backend, names.get(id(original), key), calls) for _, key, original in refs}
    for namespace, key, original in refs:
        namespace[key] = replacements[id(original)]
    try:
        yield calls
    finally:
        for namespace, key, original in refs:
            namespace[key] = original
