"""The `mtlcheck` command.

    mtlcheck reproduce                 # the embedded default study on CPU: sweep + report + verdicts
    mtlcheck list                      # methods (with tags) and benchmarks
    mtlcheck run --benchmark digits-dense --method mgda --level feature
    mtlcheck sweep --benchmark cityscapes --data-root /data/cityscapes --budget paper --seeds 0 1 2
    mtlcheck report --benchmark digits-dense --budget small
    mtlcheck reproduce --benchmark all             # the three embedded analogs (Tables 1-7), one report
    mtlcheck reproduce --until-decided             # seeds added where they decide the open claims
    mtlcheck runs list --status failed            # stored runs; also: show, retry, export, compare
    mtlcheck check my_pkg.module:MyAggregator     # the conformance kit on any aggregator (--config KEY=VALUE)
    mtlcheck bench --size 128 --tasks 3           # step time per method as a ratio to EW
    mtlcheck bench --peers                        # side by side with the real TorchJD and LibMTL

Every command that reads or writes runs takes --store: the results store, an SQLite file for
one host (default mtlcheck-results/runs.sqlite) or a postgresql://user@host/db URL that the
sweeps of many machines share (pip install mtlcheck[postgresql]); reports go to --out (default
mtlcheck-results/).
"""

from __future__ import annotations

import argparse
import os
import sys

# Nothing here imports torch at module level: `mtlcheck --help`, `--version` and usage errors
# answer at once; each command imports what it needs.
from mtlcheck.study.commands import COMMANDS
from mtlcheck.study.commands.common import (
    ALL_BENCHMARKS,
    DEFAULT_OUT,
    DEFAULT_SEEDS,
    DEFAULT_STORE,
    STUDY_EXTRA_MODULES,
    UsageError,
    run_options,
)

__all__ = [
    "ALL_BENCHMARKS",
    "DEFAULT_OUT",
    "DEFAULT_SEEDS",
    "DEFAULT_STORE",
    "STUDY_EXTRA_MODULES",
    "UsageError",
    "build_parser",
    "console_main",
    "main",
]

_run_options = run_options  # the name the suites import


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; a lazy command's arguments only when `argv` names it."""
    from mtlcheck import __version__

    parser = argparse.ArgumentParser(
        prog="mtlcheck",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--version", action="version", version=f"mtlcheck {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    named = list(argv or [])[:1]
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        if not command.lazy:
            command.add_arguments(p)
        elif named == [command.name]:
            command.add_arguments(p, argv[1:])
        p.set_defaults(command_object=command)
    return parser


def _unknown_name(args) -> str | None:
    """A mistyped method or benchmark name, said with a suggestion, found without importing torch
    or the study (`mtlcheck._names`); None when every name is known (or is a pkg.module:Class)."""
    from mtlcheck._names import builtin_method_names, did_you_mean, known_method_names
    from mtlcheck.study import BENCHMARK_NAMES

    if not builtin_method_names()[0]:  # an install without the sources: the registry decides, later
        return None

    methods = {"run": [getattr(args, "method", None)], "check": getattr(args, "aggregators", None)}.get(
        args.command, getattr(args, "methods", None)
    )
    names = [m for m in methods or [] if m and ":" not in m]
    if names:
        known = known_method_names()
        for name in names:
            if name not in known:
                return f"unknown aggregator {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"
    benchmark = getattr(args, "benchmark", None)
    known = BENCHMARK_NAMES + ((ALL_BENCHMARKS,) if args.command in ("sweep", "report", "reproduce") else ())
    if args.command in ("run", "sweep", "report", "reproduce") and benchmark and benchmark not in known:
        return f"unknown benchmark {benchmark!r}{did_you_mean(benchmark, known)}; known: {', '.join(known)}"
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in STUDY_EXTRA_MODULES:
            raise
        print(
            f"mtlcheck: error: this command needs the study's dependencies, and {exc.name!r} is not installed: "
            'pip install "mtlcheck[study]" (the library alone gives `mtlcheck check` and `mtlcheck --version`)',
            file=sys.stderr,
        )
        return 2


def _main(argv: list[str] | None) -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "--"]:  # `mtlcheck bench -- ARGS`: the bench's options after the separator
        del argv[1]
    if argv[:1] == ["runs"] and (len(argv) == 1 or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))):
        argv.insert(1, "list")  # plain `mtlcheck runs [filters]` lists
    args = build_parser(argv).parse_args(argv)
    command = args.command_object
    if command.plain:
        return command.run(args)
    mistyped = _unknown_name(args)
    if mistyped:
        print(f"mtlcheck: error: {mistyped}", file=sys.stderr)
        return 2
    if getattr(args, "benchmark", "") is None and args.command in ("run", "sweep", "report", "reproduce"):
        from mtlcheck.study.benchmarks import DEFAULT_BENCHMARK

        args.benchmark = DEFAULT_BENCHMARK
    from mtlcheck.study.experiments.interrupts import (
        exit_code,
        second_signal_exits,
        terminate_as_interrupt,
        where_it_stopped,
    )
    from mtlcheck.study.experiments.store import RunFailedError, SetupError, StoreError

    try:
        _portable(args)
        with terminate_as_interrupt():  # SIGTERM stops a command as Ctrl-C does (exit 143, not 130)
            return command.run(args)
    except KeyboardInterrupt as exc:
        with second_signal_exits(exit_code(exc)):
            # said before the store is read: a second Ctrl-C meanwhile exits at once, with this out
            print("\nmtlcheck: interrupted.", end=" ", file=sys.stderr, flush=True)
            print(where_it_stopped(getattr(args, "store", None), getattr(args, "_specs", None)), file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:  # `mtlcheck runs | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SetupError as exc:
        print(
            f"mtlcheck: error: {exc}\n(not counted as a failure of the run: fix the data or device and run the "
            "same command again)",
            file=sys.stderr,
        )
        return 2
    except (UsageError, ValueError, FileNotFoundError, StoreError, RunFailedError) as exc:
        print(f"mtlcheck: error: {exc}", file=sys.stderr)
        return 2


_NOT_PORTABLE = (("--tf32", "tf32"), ("--autocast", "autocast"), ("--channels-last", "channels_last"))


def _portable(args) -> None:
    """--portable: contradictions are usage errors; a command that computes gets the portable
    environment before torch's first operation (mtlcheck.precision.PORTABLE_ENV)."""
    if not getattr(args, "portable", False):
        return
    others = [f for f, on in _NOT_PORTABLE if getattr(args, on, None)]
    if others:
        raise UsageError(f"--portable (the exact float32 step on fixed CPU kernels) excludes {' and '.join(others)}")
    if getattr(args, "threads", None) not in (None, 1):
        raise UsageError(f"--portable runs on one thread; --threads {args.threads} contradicts it")
    if getattr(args, "device", "cpu") != "cpu":
        raise UsageError(f"--portable is a CPU mode (bitwise the same on every x86-64 CPU); --device {args.device}")
    if args.command in ("run", "sweep", "reproduce"):
        from mtlcheck.precision import portable_environment, portable_problems

        portable_environment()
        problems = portable_problems()
        if problems:
            raise UsageError(f"--portable needs a fresh process: {'; '.join(problems)}")


def console_main() -> int:
    """The `mtlcheck` command: `main` in a process whose CPU allocator is tuned for the engine
    (mtlcheck.allocator; MTLCHECK_MALLOC=default turns that off)."""
    from mtlcheck.allocator import tune_malloc

    tune_malloc()
    code = main()
    if code in (130, 143):  # interrupted: a signal during the exit (torch's teardown) ends it at once,
        from mtlcheck.study.experiments.interrupts import exit_at_next_signal

        exit_at_next_signal(code)  # never a KeyboardInterrupt traceback from the interpreter's end
    return code


if __name__ == "__main__":
    sys.exit(console_main())
