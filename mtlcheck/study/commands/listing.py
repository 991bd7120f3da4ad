"""`mtlcheck list`: methods (with tags) and benchmarks."""

from __future__ import annotations

from mtlcheck.study.commands.common import STUDY_EXTRA_MODULES, Command


class List(Command):
    name = "list"
    help = "methods and benchmarks"

    def add_arguments(self, p) -> None:
        p.add_argument("what", nargs="?", default="all", choices=["all", "methods", "benchmarks"])

    def run(self, args) -> int:
        if args.what in ("methods", "all"):
            _methods()
        if args.what in ("benchmarks", "all"):
            _benchmarks()
        return 0


def _methods() -> None:
    from mtlcheck.aggregators import aggregator_class, level_aliases, list_aggregators

    print("methods (registry name: tags)")
    for name in list_aggregators():
        agg = aggregator_class(name)()
        t = agg.tags()
        traits = [("loss-only" if t.loss_only else "gradients"), t.family]
        traits += [k for k in ("stateful", "stochastic", "second_order", "non_conflicting") if getattr(t, k)]
        if t.requires_solver:
            traits.append(f"solver={t.requires_solver}")
        levels = "parameter" if t.loss_only else "parameter, feature"
        print(f"  {name:<13} {type(agg).__name__:<12} levels: {levels:<19} {', '.join(traits)}")
    aliases = [f"{alias} = {name} at the {level} level" for alias, (name, level) in level_aliases().items()]
    print(f"  aliases: {', '.join(aliases)}")


def _benchmarks() -> None:
    try:
        from mtlcheck.study.benchmarks import BENCHMARKS
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in STUDY_EXTRA_MODULES:
            raise
        from mtlcheck.study import BENCHMARK_NAMES

        print(
            f'benchmarks (each needs the study\'s dependencies: pip install "mtlcheck[study]"; {exc.name!r} is missing)'
        )
        for name in BENCHMARK_NAMES:
            print(f"  {name}")
        return
    print("benchmarks")
    for b in BENCHMARKS.values():
        data = "needs --data-root" if b.needs_data_root else "embedded"
        print(f"  {b.name:<16} {data:<18} tasks: {', '.join(b.task_names)}")
        print(f"  {'':<16} {b.description}")
