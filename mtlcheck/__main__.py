"""`python -m mtlcheck`: the `mtlcheck` command."""

import sys

from mtlcheck.cli import console_main

sys.exit(console_main())
