"""`mtlcheck check`: the conformance kit on aggregators (registry names, aliases or pkg.module:Class)."""

from __future__ import annotations

import os
import sys

from mtlcheck.study.commands.common import Command, UsageError, parse_config


class Check(Command):
    name = "check"
    help = (
        "run the conformance kit on aggregators (registry names, aliases such as "
        "mgda_ub, or pkg.module:Class importable from the working folder)"
    )

    def add_arguments(self, p) -> None:
        p.add_argument("aggregators", nargs="+")
        p.add_argument(
            "--config",
            nargs="*",
            default=None,
            metavar="KEY=VALUE",
            help="constructor arguments (values parsed as JSON when possible); without it, built-ins are "
            "checked at their default and their documented parameter variants",
        )
        p.add_argument(
            "--expect-fail",
            action="append",
            default=[],
            metavar="CHECK=REASON",
            help="a check known to fail, with why (repeatable): reported as xfail, and as a failure if it passes; "
            "a method may also say it itself, in its class attribute expected_failed_checks = {check: reason}",
        )
        p.add_argument("-v", "--verbose", action="store_true", help="print the full traceback of each failure")

    def run(self, args) -> int:
        from mtlcheck.testing import check_aggregator, check_names
        from mtlcheck.testing.kit import builtin_variants, relaxations, resolve_aggregator

        if os.getcwd() not in sys.path and "" not in sys.path:  # like `python -m`: modules of the working folder
            sys.path.insert(0, os.getcwd())
        from mtlcheck.testing.kit import where

        config = parse_config(args.config)
        expected = parse_expected(args.expect_fail)
        failed = 0
        for name in args.aggregators:
            try:
                cls = resolve_aggregator(name)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's module failed to import: one line, where
                raise ValueError(f"cannot import {name}: {type(exc).__name__}: {exc}{where(exc)}") from None
            if config:  # checked as `run` checks it: names and types, then the constructor's own checks
                checked = cls.check_config(config)
                try:
                    cls(**checked)
                except Exception as exc:  # noqa: BLE001 - the user's constructor: one line, where it raised
                    raise ValueError(
                        f"{name}: cannot construct {cls.__name__} with --config {config}: "
                        f"{type(exc).__name__}: {exc}{where(exc)}"
                    ) from None
                config = checked
            try:
                factories = builtin_variants(cls, config)
            except Exception as exc:  # noqa: BLE001 - the user's constructor: one line, where it raised
                raise ValueError(
                    f"{name}: constructing {cls.__name__} raised {type(exc).__name__}: {exc}{where(exc)}"
                ) from None
            for make in factories:
                if expected:
                    unknown = sorted(set(expected) - set(check_names(make)))
                    if unknown:
                        raise UsageError(
                            f"--expect-fail {', '.join(unknown)}: not a check of {make.__mtlcheck_repr__}; "
                            f"its checks: {', '.join(check_names(make))}"
                        )
                records = check_aggregator(make, on_fail=None, expected_failed_checks=expected or None)
                bad = [r for r in records if r["status"] in ("failed", "xpass")]
                failed += len(bad)
                skipped = sum(r["status"] == "skipped" for r in records)
                status = ("ok" if not bad else f"{len(bad)} FAILED") + (f", {skipped} skipped" if skipped else "")
                print(f"{make.__mtlcheck_repr__}: {len(records)} checks, {status}{relaxations(make)}")
                for r in records:
                    if r["status"] == "passed" and r.get("note"):
                        print(f"  {'note':<7} {r['check']}: {r['note']}")
                    if r["status"] != "passed":
                        detail = r["exception"] or ""
                        if r["reason"]:
                            detail = f"{detail} — {r['reason']}" if detail else r["reason"]
                        print(f"  {r['status']:<7} {r['check']}: {detail}")
                        if args.verbose and r.get("traceback") and r["status"] == "failed":
                            print("    " + r["traceback"].rstrip().replace("\n", "\n    "))
        if failed and not args.verbose:
            print("(mtlcheck check -v prints the full traceback of each failure)")
        return 1 if failed else 0


def parse_expected(items: list[str]) -> dict[str, str]:
    """['check_x=why', ...] → {'check_x': 'why'} (the reason is required: an xfail says why)."""
    expected = {}
    for item in items:
        name, eq, reason = item.partition("=")
        if not eq or not name.strip() or not reason.strip():
            raise UsageError(f"--expect-fail expects CHECK=REASON, got {item!r}")
        expected[name.strip()] = reason.strip()
    return expected
