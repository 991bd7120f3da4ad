"""`python -m mtlcheck.study`: the `mtlcheck` command."""

import sys

from mtlcheck.study.cli import console_main

code = console_main()
# Under `python -m`, CPython ends the process by SIGINT whenever a KeyboardInterrupt was raised
# inside code run by a string exec or eval (the methods `dataclasses` generates, for one), even when
# the command then handled it and said so (exit 130): the flag it sets is read only after this
# module returns, and every string exec resets it first (CPython's `run_eval_code_obj`).
exec("")
sys.exit(code)
