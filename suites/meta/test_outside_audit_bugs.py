"""Blind spots found by pointing the kit at an outside package (TorchJD wrappers and methods
written by hand), planted through the public protocol: a solver tolerance declared to excuse a
wrong method, a hint to declare one under a violation no tolerance explains, wrong DB-MTL
recurrences that agree at the first step, UPGrad solved in float32, errors that do not name their
input case, an unchanged nn.Module blamed as hidden state, and NaN for a zero loss. Each planted
method fails the check meant for it, with a message naming the cause; its correct twin passes."""

import sys

import numpy as np
import pytest
import torch

from mtlcheck.aggregators import Aggregation, Aggregator, AggregatorTags, WeightingAggregator
from mtlcheck.study.cli import main
from mtlcheck.testing import check_aggregator, check_names


def _record(aggregator, check):
    (record,) = check_aggregator(aggregator, on_fail=None, checks=[check])
    return record


# --- 1, 2: a declared solver_tol has a ceiling; the hint comes only with small violations ---------
class NNLSUPGrad(WeightingAggregator):
    """UPGrad: each projection π_C(g_i) = g_i + Gᵀμ_i, μ_i = argmin_{μ ≥ 0} ‖Gᵀμ + g_i‖ (scipy's NNLS),
    in float32 when `float32`, or no projection at all (the mean of the rows) when `project` is
    False; `solver_tol` is what its tags declare."""

    implements = "upgrad"

    def __init__(self, *, project: bool = True, float32: bool = False, solver_tol=None, seed: int = 0):
        super().__init__(seed=seed)
        self.project, self.float32, self.solver_tol = project, float32, solver_tol

    def tags(self):
        return AggregatorTags(
            family="solver", nonneg_weights=True, reduction="mean", non_conflicting=True, solver_tol=self.solver_tol
        )

    def _weights(self, J, losses):
        from scipy.optimize import nnls

        G = J.matrix().to(torch.float64)
        n = G.shape[0]
        scale = float(G.abs().max())
        if not self.project or scale == 0:
            return torch.full((n,), 1.0 / n, dtype=torch.float64)
        dtype = np.float32 if self.float32 else np.float64
        Gn = (G / scale).numpy().astype(dtype)
        W = np.eye(n, dtype=dtype)
        for i in range(n):
            W[i] += nnls(Gn.T, -Gn[i], maxiter=50 * n)[0].astype(dtype)
        return torch.from_numpy(W.mean(0)).to(torch.float64)


def test_a_tolerance_declared_to_excuse_a_wrong_method_is_undecidable_not_met():
    """UPGrad without its projection, declaring solver_tol=0.5: every case's allowance (0.5·κ) is
    beyond the ceiling, so no condition is decided, and the check fails saying so."""
    record = _record(lambda: NNLSUPGrad(project=False, solver_tol=0.5), "check_method_identity")
    assert record["status"] == "failed", record
    assert "undecidable on every case" in record["exception"] and "solver_tol=0.5" in record["exception"]
    assert _record(NNLSUPGrad, "check_method_identity")["status"] == "passed"


def test_the_summary_line_shows_the_declared_tolerance(tmp_path, monkeypatch, capsys):
    (tmp_path / "tol_methods.py").write_text(
        "from suites.meta.test_outside_audit_bugs import NNLSUPGrad\n\n\n"
        "class Declared(NNLSUPGrad):\n"
        "    def __init__(self, *, seed: int = 0):\n"
        "        super().__init__(solver_tol=1e-7, seed=seed)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tol_methods", raising=False)
    main(["check", "tol_methods:Declared"])
    summary = capsys.readouterr().out.splitlines()[0]
    assert "relaxed to solver_tol=1e-07" in summary and "float32-valued outputs only" in summary, summary


class UnitSumConFIG(WeightingAggregator):
    """Claims ConFIG, takes the normalised sum of the unit gradients: cosines off by 0.1 to 1."""

    implements = "config"

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(family="solver", reduction="other")

    def identical_rows_scale(self, n_tasks):
        return None

    def _weights(self, J, losses):
        return 1.0 / J.gram().diagonal().sqrt()


def test_no_tolerance_hint_under_a_violation_no_tolerance_explains():
    record = _record(UnitSumConFIG, "check_method_identity")
    assert record["status"] == "failed" and "equal cosines" in record["exception"], record
    assert "tags(solver_tol=...)" not in record["exception"]


# --- 3: DB-MTL over steps ------------------------------------------------------------------------
class PlantedDBMTL(Aggregator):
    """DB-MTL from the paper, or a wrong recurrence: "no_ema" (ĝ_i = g_i/L_i), "no_log" (the EMA of
    g_i), "fixed_beta" (β_t = β, the EMA started at g_i/L_i). All four agree at the first step."""

    implements = "db_mtl"
    _state_attrs = ("_ema", "_step")

    def __init__(self, *, planted: str = "none", beta: float = 0.9, beta_sigma: float = 0.5, seed: int = 0):
        super().__init__(seed=seed)
        self.planted, self.beta, self.beta_sigma = planted, beta, beta_sigma
        self._ema = self._step = None

    def tags(self):
        return AggregatorTags(
            inputs=frozenset({"grads", "losses"}), family="weighting", weighted=False, stateful=True, reduction="other"
        )

    def _aggregate(self, J, losses):
        if bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: DB-MTL needs positive losses")
        G = J.matrix()
        step = (self._step or 0) + 1
        beta_t = self.beta if self.planted == "fixed_beta" else self.beta / step**self.beta_sigma
        scaled = G if self.planted == "no_log" else G / losses[:, None]
        if self._ema is None or self.planted == "no_ema":
            ema = scaled if self.planted == "fixed_beta" else (1 - beta_t) * scaled
        else:
            ema = beta_t * self._ema + (1 - beta_t) * scaled
        self._ema, self._step = ema, step
        norms = ema.norm(dim=1)
        ratio = torch.where(norms > 0, norms.max() / torch.where(norms > 0, norms, 1.0), 0.0)
        return Aggregation(J.split((ratio[:, None] * ema).sum(0)), None)


@pytest.mark.parametrize("planted", ["no_ema", "no_log", "fixed_beta"])
def test_a_wrong_db_mtl_recurrence_is_found_over_steps(planted):
    record = _record(lambda: PlantedDBMTL(planted=planted), "check_method_identity")
    assert record["status"] == "failed", record
    assert "DB-MTL" in record["exception"] and "at step" in record["exception"]


def test_the_paper_db_mtl_passes_over_steps():
    assert _record(PlantedDBMTL, "check_method_identity")["status"] == "passed"


# --- 4: float32 inside the float64 path, where a constraint is active -----------------------------
@pytest.mark.parametrize("solver_tol", [None, 1e-8])
def test_upgrad_solved_in_float32_is_found(solver_tol):
    """Its weights are float32 numbers that a 1e-8 change of G leaves unchanged (the direction then
    responds linearly); declaring a solver_tol no longer drops the check."""
    assert "check_float64_arithmetic" in check_names(lambda: NNLSUPGrad(float32=True, solver_tol=solver_tol))
    record = _record(lambda: NNLSUPGrad(float32=True, solver_tol=solver_tol), "check_float64_arithmetic")
    assert record["status"] == "failed" and "float32" in record["exception"], record
    assert _record(lambda: NNLSUPGrad(solver_tol=solver_tol), "check_float64_arithmetic")["status"] == "passed"


# --- 5: errors name their input case; expected failures from every entry point --------------------
class RaisesOnZeroRow(WeightingAggregator):
    """The mean, from a solver that refuses a zero gradient beside non-zero ones (a ProblemError of
    its own)."""

    implements = None

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(reduction="mean")

    def _weights(self, J, losses):
        diagonal = J.gram().diagonal()
        if bool((diagonal == 0).any()) and bool((diagonal > 0).any()):
            raise RuntimeError("ProblemError: the Gram matrix is singular")
        return torch.full((J.n_tasks,), 1.0 / J.n_tasks, dtype=torch.float64)


class RaisesOnDominantTask(NNLSUPGrad):
    def _weights(self, J, losses):
        norms = J.gram().diagonal().sqrt()
        if float(norms.max() / norms.min()) > 1e3:
            raise RuntimeError("SolverError: did not converge")
        return super()._weights(J, losses)


def test_an_error_names_the_input_case():
    record = _record(RaisesOnZeroRow, "check_finite_on_hard_inputs")
    assert record["status"] == "failed" and "on input case zero_row (T=2)" in record["exception"], record
    record = _record(RaisesOnDominantTask, "check_method_identity")
    assert record["status"] == "failed", record
    assert "on input case 'dominant task (norms 1e4 apart)' (T=2)" in record["exception"]


class KnownToRaise(RaisesOnZeroRow):
    expected_failed_checks = {"check_finite_on_hard_inputs": "a zero gradient has no solution"}


def test_a_method_declares_its_own_expected_failures():
    record = _record(KnownToRaise, "check_finite_on_hard_inputs")
    assert record["status"] == "xfail" and record["reason"] == "a zero gradient has no solution", record


def test_the_cli_takes_expected_failures(tmp_path, monkeypatch, capsys):
    (tmp_path / "raising_methods.py").write_text("from suites.meta.test_outside_audit_bugs import RaisesOnZeroRow\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "raising_methods", raising=False)
    assert main(["check", "raising_methods:RaisesOnZeroRow"]) == 1
    assert "on input case zero_row (T=2)" in capsys.readouterr().out
    argv = ["check", "raising_methods:RaisesOnZeroRow", "--expect-fail", "check_finite_on_hard_inputs=zero rows"]
    assert main(argv) == 0
    assert "xfail   check_finite_on_hard_inputs" in capsys.readouterr().out
    assert main(["check", "raising_methods:RaisesOnZeroRow", "--expect-fail", "check_finite=zero rows"]) == 2
    assert "not a check of" in capsys.readouterr().err


# --- 6: an unchanged nn.Module is not blamed as hidden state --------------------------------------
class ModuleWithHiddenMomentum(WeightingAggregator):
    """Holds an nn.Module it never changes (as a wrapper of another library's aggregator does) and
    an undeclared momentum `_last`."""

    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)
        self.inner = torch.nn.Linear(3, 3).double()
        self._last = None

    def tags(self):
        return AggregatorTags(reduction="other", homogeneity=0)

    def _weights(self, J, losses):
        w = 1.0 / J.gram().diagonal().sqrt()
        w = w / w.sum()
        if self._last is not None:
            w = 0.5 * w + 0.5 * self._last
        self._last = w
        return w


def test_an_unchanged_module_is_not_named_as_state():
    record = _record(ModuleWithHiddenMomentum, "check_stateless_idempotent")
    assert record["status"] == "failed", record
    named = record["exception"].split("attribute(s)")[1].split("changed")[0]
    assert "_last" in named and "inner" not in named, record["exception"]


# --- 7: zero and negative losses ------------------------------------------------------------------
class PlantedSTCH(WeightingAggregator):
    """STCH with one step (w_i = T softmax(log L / μ)_i / L_i), refusing non-positive losses unless
    `planted` (then log 0 gives NaN weights)."""

    def __init__(self, *, planted: bool = True, seed: int = 0):
        super().__init__(seed=seed)
        self.planted = planted

    def tags(self):
        return AggregatorTags(inputs=frozenset({"losses"}), nonneg_weights=True, reduction="other")

    def _weights(self, J, losses):
        if not self.planted and bool((losses <= 0).any()):
            raise ValueError(f"{self!r}: STCH needs positive losses")
        return losses.shape[0] * torch.softmax(torch.log(losses), 0) / losses


def test_nan_for_a_zero_loss_is_found():
    record = _record(PlantedSTCH, "check_nonpositive_losses")
    assert record["status"] == "failed" and "a zero loss" in record["exception"], record
    assert _record(lambda: PlantedSTCH(planted=False), "check_nonpositive_losses")["status"] == "passed"


# --- from a review of the above -------------------------------------------------------------------
class Float32Weights(NNLSUPGrad):
    """UPGrad whose weights come back as a float32 tensor (not cast back to float64)."""

    def _weights(self, J, losses):
        return super()._weights(J, losses).float()


@pytest.mark.parametrize("solver_tol", [None, 1e-5])
def test_float32_weights_returned_as_float32_are_found(solver_tol):
    record = _record(lambda: Float32Weights(solver_tol=solver_tol), "check_float64_arithmetic")
    assert record["status"] == "failed" and "torch.float32" in record["exception"], record


def test_db_mtl_identity_takes_a_schedule_power_past_the_float_range():
    from mtlcheck.aggregators.db_mtl import DBMTL

    assert _record(lambda: DBMTL(beta_sigma=2000.0), "check_method_identity")["status"] == "passed"


def test_state_hints_compare_cycles_chains_and_partials_by_content():
    import copy
    import functools

    from mtlcheck.testing.checks import _same_value

    class Node:
        pass

    loop = Node()
    loop.me, loop.x = loop, torch.ones(2)
    chain = Node()
    tail = chain
    for i in range(40):
        tail.next = Node()
        tail = tail.next
        tail.value = i
    assert _same_value(copy.deepcopy(loop), loop) and _same_value(copy.deepcopy(chain), chain)
    changed = copy.deepcopy(chain)
    changed.next.next.value = -1
    assert not _same_value(changed, chain)
    assert not _same_value(functools.partial(max, 1), functools.partial(max, 2))
    assert _same_value(functools.partial(max, 1), copy.deepcopy(functools.partial(max, 1)))


def test_a_tolerance_declared_to_excuse_conflicts_decides_nothing():
    """The mean of the rows conflicts on conflicting G; declaring solver_tol=0.5 allowed
    ⟨g_i, d⟩ ≥ −0.5·max‖g_i‖², which it meets: the non-conflict check passed."""
    record = _record(lambda: NNLSUPGrad(project=False, solver_tol=0.5), "check_non_conflicting")
    assert record["status"] == "failed" and "cannot be held to non-conflict" in record["exception"], record
    assert _record(lambda: NNLSUPGrad(solver_tol=1e-6), "check_non_conflicting")["status"] == "passed"


def test_state_hints_keep_temporaries_alive_and_read_pickled_state():
    import copy
    import functools
    import random

    from mtlcheck.testing.checks import _same_value

    def f(x):
        return x

    a = [functools.partial(f, 0), functools.partial(f, 1), functools.partial(f, 100)]
    b = [functools.partial(f, 0), functools.partial(f, 1), functools.partial(f, 200)]
    assert not _same_value(a, b)  # (the freed tuples' ids matched a later pair in `seen`)
    r = random.Random(0)
    advanced = copy.deepcopy(r)
    advanced.random()
    assert not _same_value(r, advanced) and _same_value(r, copy.deepcopy(r))

    class Holder:
        def scale(self):
            return 1

    h = Holder()
    assert _same_value(h.scale, copy.deepcopy(h.scale))


def test_an_optimizer_that_took_a_step_and_then_rested_is_not_named():
    import copy

    from mtlcheck.testing.checks import _same_value

    layer = torch.nn.Linear(2, 2)
    adam = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 2)).sum().backward()
    adam.step()
    assert _same_value(adam, copy.deepcopy(adam))  # its state is keyed by the parameters themselves
    moved = copy.deepcopy(adam)
    moved.param_groups[0]["lr"] = 0.5
    assert not _same_value(adam, moved)
