"""What the commands share: the command protocol, usage errors, argument types, the options of
the store, of where runs compute and of the runs themselves (from `mtlcheck.study.RUN_OPTIONS`).
Nothing here imports torch at module level: `mtlcheck --help` and usage errors answer at once."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mtlcheck.study import RUN_OPTIONS

DEFAULT_STORE = Path("mtlcheck-results") / "runs.sqlite"
DEFAULT_OUT = Path("mtlcheck-results")
DEFAULT_SEEDS = (0, 1, 2)  # the paper's three seeds
ALL_BENCHMARKS = "all"  # sweep/report/reproduce --benchmark all: the three embedded analogs

# what the `study` extra installs (import names): a command that needs one says so instead of a traceback
STUDY_EXTRA_MODULES = ("torchvision", "pycocotools", "sklearn", "matplotlib", "tqdm", "PIL")


class Command:
    """One subcommand: its `name` and `help`, its arguments (`add_arguments`) and its action (`run`,
    the exit code). `lazy`: its arguments are added only when the command line names it (they get
    the rest of the command line); `plain`: run as is, without the name checks and the handling of
    errors and interrupts of `mtlcheck.study.cli`."""

    name: str
    help: str
    lazy = False
    plain = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args) -> int:
        raise NotImplementedError


class UsageError(Exception):
    """A mistake in the command or its inputs: reported as one line, exit code 2."""


def int_at_least(minimum: int, what: str):
    """An argparse type: an int >= `minimum`, else a message saying `what` was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def seed_int(text: str) -> int:
    """An argparse type: a seed, an int in [0, 2**63) (what torch's generators take)."""
    value = non_negative_int(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63), got {text!r}")
    return value


def parse_config(items: list[str] | None) -> dict:
    """['c=0.5', 'rescale=1'] → {'c': 0.5, 'rescale': 1} (values parsed as JSON when possible,
    else kept as strings; the method's constructor signature then checks names and types)."""
    config = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--config expects KEY=VALUE, got {item!r}")
        if key in config:
            raise UsageError(f"--config gives {key!r} twice")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def check_out(out: str) -> Path:
    """--out as a folder this process can write (created if missing), or a UsageError."""
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {out}: a file is in the way (a report folder is needed)") from None
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the report folder: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder is not writable")
    return path


def add_store(p) -> None:
    p.add_argument(
        "--store",
        default=str(DEFAULT_STORE),
        help="results store: an SQLite file (one host) or a postgresql://user[:password]@host[:port]/dbname URL "
        "(many hosts; pip install 'mtlcheck[postgresql]') (default %(default)s)",
    )


def store(args, *, readonly: bool = False, create: bool = True):
    """The results store of --store; reading commands open it read-only and never create one."""
    from mtlcheck.study.experiments.store import ResultStore

    return ResultStore(args.store, readonly=readonly, create=create and not readonly)


def add_where(p) -> None:
    """Where runs compute: data, device, weights, store, threads, progress and precision."""
    p.add_argument("--data-root", default=None, help="root of the real dataset (paper benchmarks)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--weights", default=None, help="local ImageNet ResNet18 state dict (never downloaded)")
    add_store(p)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_precision(p)


def where(args):
    from mtlcheck.study.experiments.runner import Where, check_device

    if getattr(args, "executor", "local") == "local":
        check_device(args.device)  # with ray, each worker checks its own
    return Where(data_root=args.data_root, device=args.device, weights=args.weights, progress=not args.quiet)


def threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def add_precision(p) -> None:
    from mtlcheck.precision import Precision

    Precision.add_arguments(p)


def precision(args):
    from mtlcheck.precision import Precision

    return Precision.from_args(args)


def add_run_options(p) -> None:
    """The flags of `mtlcheck.study.RUN_OPTIONS`."""
    for o in RUN_OPTIONS:
        p.add_argument(o.flag, default=o.default, choices=o.choices, help=o.help)


def run_options(args) -> dict:
    """The `extra` options of the runs asked for: the precision flags and `RUN_OPTIONS`."""
    return {**precision(args).options(), **{o.name: getattr(args, o.name) for o in RUN_OPTIONS}}


def steps_arg(args):
    return None if args.steps in (None, "default") else int(args.steps)


def benchmarks(args) -> tuple[str, ...]:
    """--benchmark all: the embedded analogs of the paper's three datasets, in one store and report."""
    from mtlcheck.study.benchmarks import EMBEDDED_ANALOGS

    return EMBEDDED_ANALOGS if args.benchmark == ALL_BENCHMARKS else (args.benchmark,)


def add_benchmark(p) -> None:
    p.add_argument(
        "--benchmark",
        default=None,
        help="benchmark name (default: the embedded digits-dense); 'all': the three embedded analogs, one report",
    )
