"""Start-up time of the `mtlcheck` command: `--help`, `--version` and a usage error.

    python docs/bench/cli_startup.py [--repeats 7] [--baseline DIR]

Each case runs as a fresh interpreter doing the console script's work (`console_main` of the checkout's
`mtlcheck.study.cli`, or `mtlcheck.cli` in a checkout from before the study moved under `mtlcheck/study/`), repeats
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
EXPECTED_STATUS = {"--help": 0, "--version": 0, "usage error": 2}


def _main_code(checkout: Path) -> str:
    cli = "mtlcheck.study.cli" if (checkout / "mtlcheck" / "study" / "cli.py").is_file() else "mtlcheck.cli"
    return f"import sys; from {cli} import console_main; sys.argv[0] = 'mtlcheck'; sys.exit(console_main())"


def _time(checkout: Path, case: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _main_code(checkout), *CASES[case]], env=env, capture_output=True, cwd=checkout
    )
    elapsed = time.perf_counter() - t0
    if done.returncode != EXPECTED_STATUS[case]:  # a crash is no start-up time
        raise SystemExit(f"{checkout}: {case} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    checkouts = {"current": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    times = {(c, k): [] for c in checkouts for k in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            for name, path in checkouts.items():
                times[(name, case)].append(_time(path, case))
    print(f"| checkout | case | median s | min–max s |  ({args.repeats} interleaved repeats)")
    print("|---|---|---|---|")
    for (name, case), ts in times.items():
        print(f"| {name} | {case} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} |")


if __name__ == "__main__":
    main()
