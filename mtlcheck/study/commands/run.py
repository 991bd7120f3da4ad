"""`mtlcheck run`: one run (stored; never recomputed)."""

from __future__ import annotations

import sys

from mtlcheck import LEVELS
from mtlcheck.study import BUDGETS
from mtlcheck.study.commands import common
from mtlcheck.study.commands.common import Command, positive_int, seed_int


class Run(Command):
    name = "run"
    help = "one run (stored; never recomputed)"

    def add_arguments(self, p) -> None:
        p.add_argument("--benchmark", required=True)
        p.add_argument("--method", required=True)
        p.add_argument(
            "--level",
            default=None,
            choices=LEVELS,
            help="gradient level (default: parameter; the -UB aliases are the feature level)",
        )
        p.add_argument("--seed", type=seed_int, default=0)
        p.add_argument("--budget", default="small", choices=BUDGETS)
        p.add_argument("--steps", type=positive_int, default=None)
        p.add_argument("--config", nargs="+", default=None, help="method parameters KEY=VALUE (JSON values)")
        common.add_run_options(p)
        common.add_where(p)

    def run(self, args) -> int:
        from mtlcheck.study.experiments.runner import make_spec, run_spec
        from mtlcheck.study.experiments.store import RunFailedError, SetupError, StoreError

        spec = make_spec(
            args.benchmark,
            args.method,
            level=args.level,
            seed=args.seed,
            budget=args.budget,
            steps=args.steps,
            method_config=common.parse_config(args.config),
            extra=common.run_options(args),
        )
        where = common.where(args)
        where.check([spec.benchmark])
        store = common.store(args)
        common.threads(args)
        args._specs = [spec]
        try:
            record = run_spec(store, spec, where)
        except (SetupError, StoreError, RunFailedError):
            raise
        except Exception as exc:  # noqa: BLE001 - the computation failed: recorded in the store
            record = store.get(spec)
            tries = "" if record is None else f" (failure {record.failures}, attempt {record.attempts})"
            print(
                f"{spec.label}: failed{tries}: {type(exc).__name__}: {exc}\n"
                f"  the traceback is stored: mtlcheck runs show {spec.key} --store {args.store}",
                file=sys.stderr,
            )
            return 1
        print(f"{spec.label}: {record.status}" + (f" ({record.error})" if record.error else ""))
        for key, value in sorted((record.metrics or {}).items()):
            print(f"  {key:<22} {value:.4f}")
        if record.timings:
            print(
                f"  train {record.timings.get('train_seconds', float('nan')):.1f}s, "
                f"{record.timings.get('seconds_per_step', float('nan')) * 1e3:.1f} ms/step"
            )
        return 0 if record.status in ("done", "diverged") else 1
