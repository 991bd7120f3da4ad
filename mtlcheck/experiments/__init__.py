"""Experiments: run specifications, the shared results store (and, later, the sweep runner)."""

from mtlcheck.experiments.spec import BUDGETS, CODE_EPOCH, LEVELS, RunSpec, spec_key
from mtlcheck.experiments.store import (
    Claim,
    ClaimLost,
    ResultStore,
    RunFailedError,
    RunRecord,
    RunResult,
    SetupError,
    StoreError,
    environment,
)

__all__ = [
    "BUDGETS",
    "CODE_EPOCH",
    "LEVELS",
    "Claim",
    "ClaimLost",
    "ResultStore",
    "RunFailedError",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "SetupError",
    "StoreError",
    "environment",
    "spec_key",
]
