"""`mtlcheck report`: tables, figures and claim verdicts from stored runs (store opened read-only)."""

from __future__ import annotations

from pathlib import Path

from mtlcheck.study import BUDGETS
from mtlcheck.study.commands import common
from mtlcheck.study.commands.common import ALL_BENCHMARKS, DEFAULT_OUT, Command, positive_int


class Report(Command):
    name = "report"
    help = "tables, figures and claim verdicts from stored runs (store opened read-only)"

    def add_arguments(self, p) -> None:
        common.add_benchmark(p)
        p.add_argument("--budget", default="small", choices=BUDGETS)
        p.add_argument(
            "--steps",
            type=_steps_or_default,
            default=None,
            help="the runs with this step count ('default': the budget's own); needed when several are stored",
        )
        p.add_argument("--out", default=str(DEFAULT_OUT), help="report directory (default %(default)s)")
        common.add_store(p)
        common.add_precision(p)

    def run(self, args) -> int:
        path = write(args, common.store(args, readonly=True))
        print(path.read_text())
        print(f"report written to {path}")
        return 0


def _steps_or_default(text: str) -> str:
    if text != "default":
        positive_int(text)
    return text


def study_records(args, store, benchmark: str, ended: bool = False) -> list:
    """The stored runs a report of this command reads (`paper.runs.select_report_records`)."""
    from mtlcheck.study.paper.runs import select_report_records

    return select_report_records(store, benchmark, args.budget, common.precision(args), args.steps, ended=ended)


def write(args, store, until_decided: int | None = None) -> Path:
    """The report of --benchmark (one per benchmark, or combined for 'all'), written under --out."""
    from mtlcheck.study.benchmarks import get_benchmark
    from mtlcheck.study.paper.reports import write_combined_report, write_report

    ended = until_decided is not None  # the design's runs: those that ended (a killed run resumes when asked)
    found = {name: study_records(args, store, name, ended) for name in common.benchmarks(args)}
    records = next(iter(found.values()))
    suffix = "".join(f"-{k}" if v is True else f"-{v}" for k, v in common.precision(args).options().items())
    chosen = records[0].spec.steps
    suffix += "" if chosen is None else f"-{chosen}steps"
    suffix += "" if until_decided is None else "-until-decided"
    out = common.check_out(args.out) / f"{args.benchmark}-{args.budget}{suffix}"
    if args.benchmark == ALL_BENCHMARKS:
        return write_combined_report(found, out, until_decided=until_decided)
    return write_report(records, get_benchmark(args.benchmark), out, until_decided=until_decided)
