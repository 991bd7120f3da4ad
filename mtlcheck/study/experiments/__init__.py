"""Experiments: run specifications, the shared results store (and, later, the sweep runner)."""

from mtlcheck.study.experiments.clock import Clock, SystemClock
from mtlcheck.study.experiments.provenance import environment
from mtlcheck.study.experiments.spec import BUDGETS, CODE_EPOCH, RunSpec, spec_key
from mtlcheck.study.experiments.store import (
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
