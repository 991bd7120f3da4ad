"""What a user sees when their code or their command is wrong: an exception in their method names
their file and line (`mtlcheck check`, `check_aggregator`, pytest via the exception's note),
`-v` prints the traceback, `--config` is checked as `run` checks it (one line, exit 2),
`expected_failed_checks` takes a dict or a callable, a mistyped name gets a suggestion."""

import sys

import pytest

from mtlcheck.study.cli import main
from mtlcheck.testing import check_aggregator, parametrize_with_checks

USER_MODULE = """
import torch
from mtlcheck.aggregators import AggregatorTags, WeightingAggregator


class GramExponentCalled(WeightingAggregator):
    def __init__(self, *, c: float = 0.5, seed: int = 0):
        super().__init__(seed=seed)
        if c < 0:
            raise ValueError(f"c must be >= 0, got {c}")
        self.c = c

    def tags(self):
        return AggregatorTags(reduction="other", homogeneity=None)

    def _weights(self, J, losses):
        k = J.gram_exponent()  # a property, not a method: TypeError 'int' object is not callable
        return torch.ones(J.n_tasks, dtype=torch.float64) * k


class LossOnlyReadsJ(WeightingAggregator):
    def __init__(self, *, seed: int = 0):
        super().__init__(seed=seed)

    def tags(self):
        return AggregatorTags(inputs=frozenset({"losses"}), reduction="other", homogeneity=None)

    def _weights(self, J, losses):
        return torch.ones(J.n_tasks, dtype=torch.float64)  # J is None for a loss-only method
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_methods.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_methods", raising=False)
    import user_methods

    return user_methods


def _line_of(text: str) -> int:
    return next(i for i, line in enumerate(USER_MODULE.splitlines(), 1) if text in line)


def test_an_error_in_the_users_method_names_their_file_and_line(user_module):
    line = _line_of("J.gram_exponent()")
    (record,) = check_aggregator(user_module.GramExponentCalled, on_fail=None, checks=["check_output_contract"])
    assert record["status"] == "failed"
    assert "'int' object is not callable" in record["exception"]
    assert f"user_methods.py:{line} in _weights: k = J.gram_exponent()" in record["exception"]
    assert "Traceback" in record["traceback"]
    (record,) = check_aggregator(user_module.LossOnlyReadsJ, on_fail=None, checks=["check_engine_levels"])
    assert f"user_methods.py:{_line_of('J is None for')} in _weights" in record["exception"]


def test_the_kits_own_failures_carry_no_location():
    from mtlcheck.aggregators import PCGrad

    class Mutating(PCGrad):
        def _aggregate(self, J, losses):
            J.blocks[0].mul_(0.5)
            return super()._aggregate(J, losses)

    (record,) = check_aggregator(Mutating, on_fail=None, checks=["check_input_not_mutated"])
    assert record["status"] == "failed" and "raised at" not in record["exception"]


def test_pytest_shows_the_location_as_a_note(user_module):
    params = parametrize_with_checks([user_module.GramExponentCalled]).args[1]
    (param,) = [p for p in params if p.id.endswith("check_output_contract")]
    make, check = param.values
    with pytest.raises(TypeError) as info:
        check(make)
    assert any(f"user_methods.py:{_line_of('J.gram_exponent()')}" in note for note in info.value.__notes__)


def test_cli_check_prints_the_location_and_the_traceback_with_v(user_module, capsys):
    assert main(["check", "user_methods:GramExponentCalled"]) == 1
    out = capsys.readouterr().out
    assert f"user_methods.py:{_line_of('J.gram_exponent()')} in _weights" in out
    assert "Traceback" not in out and "mtlcheck check -v" in out
    assert main(["check", "user_methods:GramExponentCalled", "-v"]) == 1
    out = capsys.readouterr().out
    assert "Traceback (most recent call last)" in out and "k = J.gram_exponent()" in out


@pytest.mark.parametrize(
    "value, expected",
    [
        ("c=abc", "GramExponentCalled: c must be a finite number, got 'abc'"),
        ("c=true", "GramExponentCalled: c must be a finite number, got True"),
        ("d=1", "GramExponentCalled has no parameter(s) ['d']"),
        ("c=-1", "cannot construct GramExponentCalled with --config {'c': -1}: ValueError: c must be >= 0, got -1"),
    ],
)
def test_cli_check_config_is_validated_as_run_does(user_module, capsys, value, expected):
    assert main(["check", "user_methods:GramExponentCalled", "--config", value]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_expected_failed_checks_takes_a_dict_or_a_callable(user_module):
    reason = {"check_output_contract": "J.gram_exponent is called (a known bug)"}
    for given in (reason, lambda agg: reason):
        (record,) = check_aggregator(
            user_module.GramExponentCalled, on_fail=None, checks=["check_output_contract"], expected_failed_checks=given
        )
        assert record["status"] == "xfail" and record["reason"] == reason["check_output_contract"]
    with pytest.raises(TypeError, match="must be a dict"):
        check_aggregator(user_module.GramExponentCalled, on_fail=None, expected_failed_checks=["check_output_contract"])


@pytest.mark.parametrize(
    "name, suggestion", [("mgdaa", "'mgda'"), ("MGDA", "'mgda'"), ("nash-mtl", "'nash_mtl'"), ("mgda-ub", "'mgda_ub'")]
)
def test_a_mistyped_method_gets_a_suggestion(name, suggestion, capsys):
    assert main(["check", name]) == 2
    err = capsys.readouterr().err
    assert f"did you mean {suggestion}" in err and len(err.strip().splitlines()) == 1


def test_the_import_free_names_are_the_registrys_and_the_studys():
    from mtlcheck._names import builtin_method_names
    from mtlcheck.aggregators import level_aliases, list_aggregators
    from mtlcheck.study import BENCHMARK_NAMES
    from mtlcheck.study.benchmarks import BENCHMARKS

    names, aliases = builtin_method_names()
    assert sorted(names) == list_aggregators() and sorted(aliases) == sorted(level_aliases())
    assert BENCHMARK_NAMES == tuple(BENCHMARKS)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--benchmark", "digits-dense", "--method", "mgdaa"], "did you mean 'mgda'"),
        (["sweep", "--methods", "ew", "MGDA"], "did you mean 'mgda'"),
        (["run", "--benchmark", "digits-dens", "--method", "mgda"], "did you mean 'digits-dense'"),
        (["check", "nash-mtl"], "did you mean 'nash_mtl'"),
    ],
)
def test_a_mistyped_name_is_refused_before_torch_is_imported(argv, expected):
    """The suggestion comes from import-free names (`mtlcheck._names`): no torch, no study imports
    (torch alone takes seconds to import), so the refusal is immediate."""
    import subprocess

    code = (
        "import sys; from mtlcheck.study.cli import main; rc = main(sys.argv[1:]); "
        "print('RESULT', rc, 'torch' in sys.modules, 'mtlcheck.study.benchmarks' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert "RESULT 2 False False" in done.stdout, (done.stdout, done.stderr)
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "import torch\nundefined_name\n",
            "cannot import broken_user_mod:B: NameError: name 'undefined_name' is not "
            "defined (raised at broken_user_mod.py:2 in <module>: undefined_name)",
        ),
        (
            "from mtlcheck.aggregators import WeightingAggregator\n"
            "class B(WeightingAggregator):\n"
            "    def __init__(self, *, seed: int = 0):\n"
            "        super().__init__(seed=seed)\n"
            "        self.x = 1 / 0\n",
            "broken_user_mod:B: constructing B raised ZeroDivisionError: division by zero (raised at "
            "broken_user_mod.py:5 in __init__: self.x = 1 / 0)",
        ),
    ],
    ids=["import", "constructor"],
)
def test_cli_check_a_module_that_fails_to_import_or_construct_is_one_line(
    tmp_path, monkeypatch, capsys, source, expected
):
    (tmp_path / "broken_user_mod.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_user_mod", raising=False)
    assert main(["check", "broken_user_mod:B"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"mtlcheck: error: {expected}", err
