"""A run option is declared once, in `mtlcheck.study.RUN_OPTIONS` (its name, default, choices, the
levels whose runs store it, its check against the method, its help): the flags, the spec's validation
and stored options, the runner's keywords to the step loop and the reports' row names derive from
that line; only the step loop (`training.train`) that uses it names it again. Listed here for
`--feature-batch`, function by function, so that a change spreading an option over a new place fails
and says where."""

import ast
from pathlib import Path

from mtlcheck.study import RUN_OPTIONS
from mtlcheck.study.commands.common import add_run_options, run_options

STUDY = Path(__file__).resolve().parents[2] / "mtlcheck" / "study"

# (module, function) that mention the option; perf/ (the bench's own engine option) left out
PLACES = {
    ("__init__.py", "<module>"): "RUN_OPTIONS: name, default, choices, levels, check and help",
    ("training.py", "train"): "the step loop",
    ("training.py", "_train"): "the step loop",
}


def _mentions(path: Path, words: tuple[str, ...]) -> set[tuple[str, str]]:
    """(module, enclosing top-level function) of each mention in code (not docstrings or comments)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = set()
    for top in tree.body:
        where = top.name if isinstance(top, (ast.FunctionDef, ast.ClassDef)) else "<module>"
        for node in ast.walk(top):
            text = (
                node.id
                if isinstance(node, ast.Name)
                else node.arg
                if isinstance(node, (ast.arg, ast.keyword))
                else node.value
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                else None
            )
            if text and any(w in text for w in words):
                found.add((path.relative_to(STUDY).as_posix(), where))
    return found


def test_the_feature_batch_option_has_its_places_and_no_more():
    words = ("feature_batch", "feature-batch")
    found = set().union(*(_mentions(p, words) for p in STUDY.rglob("*.py") if "perf" not in p.parts))
    assert found == set(PLACES), f"new: {sorted(found - set(PLACES))}, gone: {sorted(set(PLACES) - found)}"


def test_the_flags_and_the_spec_options_come_from_one_table():
    import argparse

    parser = argparse.ArgumentParser()
    add_run_options(parser)
    parser.add_argument("--tf32", action="store_true")  # the precision flags: mtlcheck.precision
    args = parser.parse_args(["--feature-batch", "sum"])
    assert [o.name for o in RUN_OPTIONS] == ["feature_batch"]
    assert run_options(args) == {"feature_batch": "sum"}


def test_each_option_is_a_keyword_of_the_step_loop_with_the_same_default():
    import inspect

    from mtlcheck.gradients import FEATURE_BATCH_RULES
    from mtlcheck.study.training import train

    parameters = inspect.signature(train).parameters
    for o in RUN_OPTIONS:
        assert parameters[o.name].kind is inspect.Parameter.KEYWORD_ONLY and parameters[o.name].default == o.default
    assert RUN_OPTIONS[0].choices == FEATURE_BATCH_RULES


# keys of stored runs (spec_key at code epoch 8, computed before the options were declared in one
# place): how an option is declared must never move a stored run's key
PINNED_KEYS = {
    ("ew", None, ()): "07e2e30c7268c57c",
    ("mgda_ub", None, ()): "213284edc47bd0b6",
    ("mgda_ub", None, (("feature_batch", "sum"),)): "e7a036b362518f87",
    ("mgda", "feature", (("feature_batch", "sum"), ("tf32", True))): "7ac9886ced94afd7",
    ("mgda", None, (("feature_batch", "sum"),)): "d5366a3e2a6fadfa",  # parameter level: not stored
}


def test_the_keys_of_stored_runs_do_not_move():
    from mtlcheck.study.experiments.runner import make_spec
    from mtlcheck.study.experiments.spec import spec_key

    for (method, level, extra), key in PINNED_KEYS.items():
        spec = make_spec("digits-dense", method, level=level, extra=dict(extra))
        assert spec_key(spec, code_epoch=8) == key, (method, level, extra, spec.to_json())
