"""`python -m mtlcheck.study`: the `mtlcheck` command."""

import sys

from mtlcheck.study.cli import console_main

sys.exit(console_main())
