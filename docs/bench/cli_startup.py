"""Start-up time of the `mtlcheck` command: `--help`, `--version` and a usage error.

    python docs/bench/cli_startup.py [--repeats 7] [--baseline DIR]

Each case runs as a fresh `python -m mtlcheck.study` process (the console script's work), repeats
interleaved across cases and checkouts so that a busy machine slows all alike; prints the median
and the range per case. `--baseline DIR` times another checkout (a folder holding its `mtlcheck`
package, e.g. from `git archive <rev> mtlcheck | tar -x -C DIR`) side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {"--help": ["--help"], "--version": ["--version"], "usage error": ["run", "--bogus"]}
ROOT = Path(__file__).resolve().parents[2]
_MAIN = "import sys; from mtlcheck.study.cli import console_main; sys.argv[0] = 'mtlcheck'; sys.exit(console_main())"


def _time(checkout: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _MAIN, *argv], env=env, capture_output=True, cwd=checkout)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    checkouts = {"current": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    times = {(c, k): [] for c in checkouts for k in CASES}
    for _ in range(args.repeats):
        for case, argv in CASES.items():
            for name, path in checkouts.items():
                times[(name, case)].append(_time(path, argv))
    print(f"| checkout | case | median s | min–max s |  ({args.repeats} interleaved repeats)")
    print("|---|---|---|---|")
    for (name, case), ts in times.items():
        print(f"| {name} | {case} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} |")


if __name__ == "__main__":
    main()
