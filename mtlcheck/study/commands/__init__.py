"""The `mtlcheck` subcommands, one object each (`common.Command`): its arguments beside its
action, which calls into the study's modules. `mtlcheck.study.cli` assembles them."""

from mtlcheck.study.commands.bench import Bench
from mtlcheck.study.commands.check import Check
from mtlcheck.study.commands.listing import List
from mtlcheck.study.commands.report import Report
from mtlcheck.study.commands.reproduce import Reproduce
from mtlcheck.study.commands.run import Run
from mtlcheck.study.commands.runs import Runs
from mtlcheck.study.commands.sweep import Sweep

COMMANDS = (List(), Run(), Sweep(), Report(), Reproduce(), Check(), Runs(), Bench())
