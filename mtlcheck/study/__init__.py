"""The paper study, built on the library (`mtlcheck`): the benchmarks with their data, models and
evaluation, training, the results store and sweeps, the paper's tables, claims and reports, the
performance benches and the `mtlcheck` command. Its dependencies come with the `study` extra
(`pip install "mtlcheck[study]"`); nothing in the library imports from here.
"""

# the training budgets every benchmark defines (import-free here, so that the command starts at once)
BUDGETS = ("smoke", "small", "paper")

# the benchmarks' names (defined in `benchmarks.BENCHMARKS`; a test keeps the two equal), known without
# importing the study's dependencies: `mtlcheck list` names them in a library-only install, and a
# mistyped --benchmark is refused before anything heavy is imported
BENCHMARK_NAMES = ("digits-dense", "digits-instance", "digits-nyu", "cityscapes", "nyuv2", "metagraspnet")


class RunOption:
    """A run option besides the precision flags (`mtlcheck.precision.Precision` declares those), declared
    once: its `name` (the spec's `extra` key; the flag is its dashed form), `default`, allowed `choices`,
    the gradient `levels` whose runs store it (elsewhere it is dropped), the `check` of a value against
    the method ('module:function', called with the value and the aggregator) and the flag's `help`. A
    spec stores it only away from its default, so default runs keep their keys; the step loop
    (`training.train`) takes it as a keyword. (A plain class: `dataclasses` would add milliseconds to
    every `mtlcheck` start.)"""

    def __init__(self, name: str, *, default, choices: tuple, levels: tuple, check: str, help: str) -> None:
        self.name, self.default, self.choices, self.levels, self._check = name, default, choices, levels, check
        self.flag, self.help = "--" + name.replace("_", "-"), help

    def __repr__(self) -> str:
        return f"RunOption({self.name!r})"

    def value(self, value):
        """`value` if it is one of `choices`, else ValueError."""
        if value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}, got {value!r}")
        return value

    def check(self, value, aggregator) -> None:
        """ValueError unless the method (an aggregator instance) can run with `value`."""
        from importlib import import_module

        module, _, function = self._check.partition(":")
        getattr(import_module(module), function)(value, aggregator)


# the options of `run`, `sweep` and `reproduce` (the precision flags aside): a new one is a line here and
# a keyword of the step loop (`training.train`); `suites/pipeline/test_run_options.py` lists its places
RUN_OPTIONS = (
    RunOption(
        "feature_batch",
        default="flatten",
        choices=("flatten", "sum"),  # mtlcheck.gradients.FEATURE_BATCH_RULES
        levels=("feature",),
        check="mtlcheck.gradients:check_feature_batch",
        help="feature level: solve on the rows flattened over batch x features (Sener & Koltun, "
        "default) or summed over the batch (LibMTL's rep_grad)",
    ),
)
