"""`mtlcheck runs {list,show,retry,export,compare}`: the stored runs; plain `mtlcheck runs` lists.
Each subcommand is an `add_*` (its arguments) beside its action."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mtlcheck import LEVELS
from mtlcheck.study import BUDGETS
from mtlcheck.study.commands import common
from mtlcheck.study.commands.common import Command, UsageError


class Runs(Command):
    name = "runs"
    help = "stored runs: list, show, retry failed ones, export, compare two stores"
    actions = ("list", "show", "retry", "export", "compare")

    def add_arguments(self, p) -> None:
        sub = p.add_subparsers(dest="runs_command", required=True)
        for action in self.actions:
            getattr(self, f"add_{action}")(sub)

    def run(self, args) -> int:
        return getattr(self, args.runs_command)(args)

    @staticmethod
    def add_list(sub) -> None:
        p = sub.add_parser("list", help="status, attempts, failures, timings and last error of each run")
        common.add_store(p)
        _add_filters(p)

    @staticmethod
    def list(args) -> int:
        from mtlcheck.study.experiments.inventory import summary

        records = _filtered(args, common.store(args, readonly=True))
        if not records:
            print(f"no runs in {args.store} match")
            return 0
        print(f"{'key':<16}  {'status':<8} {'tries':>5} {'fails':>5} {'train s':>8} {'ms/step':>8}  run")
        for r in records:
            row = summary(r)
            config = f" {row['config']}" if row["config"] else ""
            print(
                f"{r.key:<16}  {r.status:<8} {r.attempts:>5} {r.failures:>5} {_fmt(row['train_seconds'], '.1f'):>8} "
                f"{_fmt(row['ms_per_step'], '.1f'):>8}  {r.spec.label}{config}"
            )
            if row["last_error"] and r.status != "done":
                print(f"{'':<18}last error: {row['last_error']}")
        counts = {}
        for r in records:
            counts[r.status] = counts.get(r.status, 0) + 1
        print(f"{len(records)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        return 0

    @staticmethod
    def add_show(sub) -> None:
        p = sub.add_parser("show", help="one run in full (spec, metrics, timings, history, stored traceback)")
        p.add_argument("key", help="the run's key (or a unique prefix of it)")
        common.add_store(p)

    @staticmethod
    def show(args) -> int:
        from mtlcheck.study.experiments.inventory import full

        record = _one(common.store(args, readonly=True), args.key)
        data = full(record)
        error, data["error"] = data["error"], None
        for when in ("created", "started", "finished"):
            if data[when] is not None:
                data[when] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data[when]))
        print(
            json.dumps(
                {k: v for k, v in data.items() if v is not None and k not in ("trajectory", "env")},
                indent=2,
                default=str,
            )
        )
        if error:
            print(f"\nstored error:\n{error}")
        return 0

    @staticmethod
    def add_retry(sub) -> None:
        p = sub.add_parser("retry", help="give failed runs their attempts back (they compute on the next run/sweep)")
        p.add_argument("keys", nargs="*", help="run keys (or unique prefixes)")
        p.add_argument("--failed", action="store_true", help="every failed run matching the filters")
        common.add_store(p)
        _add_filters(p, status=False)

    @staticmethod
    def retry(args) -> int:
        store = common.store(args, create=False)
        if args.keys:
            records = [_one(store, k) for k in args.keys]
        elif args.failed:
            args.status = "failed"
            records = _filtered(args, store)
        else:
            raise UsageError("runs retry: name the runs (KEY ...) or pass --failed (with optional filters)")
        reset = [r for r in records if store.retry(r.key)]
        for r in reset:
            print(f"{r.key}  {r.spec.label}: failures reset (was {r.failures}); the next run or sweep computes it")
        skipped = [r for r in records if r not in reset]
        for r in skipped:
            print(f"{r.key}  {r.spec.label}: {r.status}, nothing to retry")
        print(f"{len(reset)} run(s) will be retried")
        return 0

    @staticmethod
    def add_export(sub) -> None:
        p = sub.add_parser("export", help="runs as JSON (everything) or CSV (one row per run + trajectories)")
        p.add_argument("out", help="file to write: .json, or .csv (+ <name>-trajectories.csv)")
        p.add_argument("--format", default=None, choices=["json", "csv"], help="default: from the file's suffix")
        common.add_store(p)
        _add_filters(p)

    @staticmethod
    def export(args) -> int:
        from mtlcheck.study.experiments.inventory import export_csv, export_json

        records = _filtered(args, common.store(args, readonly=True))
        out = Path(args.out)
        fmt = args.format or out.suffix.lstrip(".").lower()
        if fmt not in ("json", "csv"):
            raise UsageError(
                f"runs export: cannot tell the format of {args.out!r}: name it .json or .csv, or pass --format"
            )
        if out.parent != Path("") and not out.parent.is_dir():
            raise UsageError(f"runs export: folder {out.parent} does not exist")
        try:
            paths = [export_json(records, out)] if fmt == "json" else list(export_csv(records, out))
        except OSError as exc:
            raise UsageError(f"runs export: cannot write {args.out}: {exc.strerror or exc}") from None
        print(f"{len(records)} runs written to {', '.join(map(str, paths))}")
        return 0

    @staticmethod
    def add_compare(sub) -> None:
        p = sub.add_parser("compare", help="runs of --store (A) and OTHER (B) with the same spec: metric differences")
        p.add_argument("other", help="the other results store (an SQLite file or a postgresql:// URL)")
        p.add_argument("--tol", type=float, default=0.0, help="absolute tolerance on metric values (default: exact)")
        common.add_store(p)
        _add_filters(p)

    @staticmethod
    def compare(args) -> int:
        from mtlcheck.study.experiments.inventory import SOURCES, compare, explain, prediction
        from mtlcheck.study.experiments.store import ResultStore

        a = _filtered(args, common.store(args, readonly=True))
        b = _filtered(args, ResultStore(args.other, readonly=True))
        result = compare(a, b, tol=args.tol)
        print(
            f"A = {args.store}, B = {args.other}: {len(result.same) + len(result.different)} runs in both "
            f"(finished), {len(result.same)} identical"
            + (f" within {args.tol:g}" if args.tol else "")
            + f", {len(result.different)} different, {len(result.unfinished)} unfinished in one, "
            f"{len(result.only_a)} only in A, {len(result.only_b)} only in B"
        )
        pairs = result.same + [(ra, rb) for ra, rb, _ in result.different]
        differing = sorted({s for ra, rb in pairs for s, notes in explain(ra, rb).items() if notes}, key=SOURCES.index)
        print(
            "recorded environments differ in: "
            + (", ".join(differing) if differing else "nothing (code, data, settings and machine the same)")
        )
        for ra, rb, diffs in result.different:
            print(f"  {ra.key}  {ra.spec.label}")
            for metric, (va, vb) in diffs.items():
                delta = f"  (B - A = {vb - va:+.6g})" if isinstance(va, float) and isinstance(vb, float) else ""
                print(f"      {metric:<24} A {va!s:<14} B {vb!s:<14}{delta}")
            sources = explain(ra, rb)
            for source in SOURCES:
                if sources[source]:
                    print(f"      {source} differs: " + "; ".join(sources[source]))
            print(f"      → {prediction(ra, rb, sources)}")
        for what, records in (("only in A", result.only_a), ("only in B", result.only_b)):
            for r in records:
                print(f"  {what}: {r.key}  {r.spec.label} ({r.status})")
        return 0 if result.identical else 1


def _add_filters(p, status: bool = True) -> None:
    if status:
        p.add_argument("--status", default=None, choices=["pending", "running", "done", "failed", "diverged"])
    p.add_argument("--benchmark", default=None)
    p.add_argument("--method", default=None)
    p.add_argument("--level", default=None, choices=LEVELS)
    p.add_argument("--budget", default=None, choices=BUDGETS)
    p.add_argument("--all-epochs", action="store_true", help="include runs of earlier code epochs")


def _filtered(args, store):
    records = store.runs(status=args.status, benchmark=args.benchmark, method=args.method, all_epochs=args.all_epochs)
    return [
        r
        for r in records
        if (args.level is None or r.spec.level == args.level) and (args.budget is None or r.spec.budget == args.budget)
    ]


def _one(store, key: str):
    """The one stored run whose key is or starts with `key`, else a UsageError."""
    matches = store.find(key)
    if len(matches) != 1:
        raise UsageError(
            f"{'no' if not matches else len(matches)} stored run(s) with a key starting {key!r} in {store}"
        )
    return matches[0]


def _fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)
