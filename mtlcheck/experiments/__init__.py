"""Experiments: run specifications, the shared results store (and, later, the sweep runner)."""

from mtlcheck.experiments.clock import Clock, SystemClock
from mtlcheck.experiments.provenance import environment
from mtlcheck.experiments.spec import BUDGETS, CODE_EPOCH, LEVELS, RunSpec, spec_key
from mtlcheck.experiments.store import (
    Lease,
    LeaseLost,
    ResultStore,
    RunFailedError,
    RunRecord,
    RunResult,
    SetupError,
    StoreError,
)

__all__ = [
    "BUDGETS",
    "CODE_EPOCH",
    "LEVELS",
    "Clock",
    "Lease",
    "LeaseLost",
    "ResultStore",
    "RunFailedError",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "SetupError",
    "StoreError",
    "SystemClock",
    "environment",
    "spec_key",
]
