"""The old name of `our_tables`, kept while the `mtlcheck` command (study/cli.py) imports it from
here (issue 24); everything else imports `mtlcheck.study.paper.our_tables`."""

from mtlcheck.study.paper.our_tables import result_tables

__all__ = ["result_tables"]
