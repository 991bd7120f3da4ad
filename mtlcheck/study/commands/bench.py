"""`mtlcheck bench [--peers]`: step time per method as a ratio to EW, or side by side with the real
TorchJD and LibMTL (`mtlcheck.study.perf`, which declares the options)."""

from __future__ import annotations

from mtlcheck.study.commands.common import Command


class Bench(Command):
    name = "bench"
    help = "step time per method as a ratio to EW (options: `mtlcheck bench --help`)"
    lazy = True  # its options import torch: added only when the command line names it
    plain = True  # its own errors and interrupts, as `python -m mtlcheck.study.perf.bench`

    def add_arguments(self, p, argv=()) -> None:
        from mtlcheck.study.perf import bench

        bench.add_arguments(p, argv)
        self.parser = p

    def run(self, args) -> int:
        return args.bench(args, self.parser)
