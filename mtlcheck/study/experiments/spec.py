"""`RunSpec`: what one training run computes, and its content-addressed key.

A run's key is the first 16 hex digits of
``sha256(canonical_json(spec.to_dict()) + "\\ncode_epoch=" + CODE_EPOCH)``.

Every field of `RunSpec` is part of the key: benchmark, method, method_config, level, seed,
budget, steps and extra. Anything that says *where* or *how fast* a run executes rather than
*what* it computes (data root, device, number of data-loader workers, the store's path) is
deliberately not a field: the runner receives it separately, so moving the data or the GPU
never invalidates a stored result. Put an option in `extra` only if it changes the result.

Values are keyed exactly as given: ``steps=None`` (the budget's default) and the default's
explicit value are different keys, and so are ``1`` and ``1.0`` in a config. Callers should
build specs one consistent way (the runner does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from mtlcheck import LEVELS
from mtlcheck.study import BUDGETS

__all__ = ["BUDGETS", "CODE_EPOCH", "KEY_LENGTH", "RunSpec", "canonical_json", "spec_key"]

CODE_EPOCH = 8  # 2: CosReg without epsilon, GradNorm "last" layer, loader RNG isolated from the model's;
#                3: GradDrop draws U in float32 (a different random stream);
#                4: monitored loss-only steps take Σ w_i g_i from the rows (other rounding);
#                5: CAGrad's dual solved exactly by support enumeration (SLSQP was ~1e-7 off) and
#                   g_w = 0 handled as g0; MGDA's min-norm by face enumeration; PCGrad/GradVac
#                   surgery on Python floats; Gram over batched 8192-column chunks; Σ w_i g_i by
#                   axpys (all: other rounding)
#                6: Nash-MTL at the official scale (α_i (G Gᵀ α)_i = 1 on the raw Gram: the default step
#                   now always has norm 1) with a new Newton solver; feature_batch option (non-default
#                   runs only); Grams of tiny/huge gradients rescaled (other results only there)
#                   and the global RNG re-seeded from (seed, step) at every step (runs of one seed stay
#                   paired: FAMO's extra forward shifted the MetaGraspNet proposal sampling);
#                   digits-dense small: 24x24 scenes of 1-2 larger digits, 400 steps of batch 8 at
#                   Adam 1e-2, heads at Z's resolution; digits small budgets measure every 10 steps
#                7: digits-dense small: 250 steps of batch 16 (warm-up 20), not 400 of batch 8: the
#                   same scenes seen 1.25 times at ~0.9x the cost (a step of this model is mostly
#                   per-operation overhead, so batch 16 costs ~1.4x batch 8)
#                8: digits-instance small: batch 8 and a width-8 model (half the CPU time per run)
"""Bump when training semantics change (loss, schedule, data order, metric definitions):
every key changes, so old results are kept but never mistaken for current ones."""

KEY_LENGTH = 16

_FIELDS = ("benchmark", "method", "method_config", "level", "seed", "budget", "steps", "extra")
_REQUIRED = ("benchmark", "method")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, NaN/inf refused: one text per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _freeze_value(value: Any, where: str) -> Any:
    """A JSON value made hashable (lists become tuples); anything else raises naming `where`."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite float {value!r} cannot be part of a run key")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        raise TypeError(f"{where}: nested mappings are not supported in a RunSpec; flatten the option")
    raise TypeError(
        f"{where}: {type(value).__name__} {value!r} is not a JSON value (None, bool, int, float, str or a list of them)"
    )


def _thaw_value(value: Any) -> Any:
    return [_thaw_value(v) for v in value] if isinstance(value, tuple) else value


def _freeze_pairs(value: Any, field: str) -> tuple[tuple[str, Any], ...]:
    """A mapping or iterable of (key, value) pairs as a tuple of pairs sorted by key."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"RunSpec.{field}: expected a mapping or (key, value) pairs, got {type(value).__name__} {value!r}"
        )
    else:
        items = []
        for item in value:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError(f"RunSpec.{field}: expected (key, value) pairs, got item {item!r}")
            items.append(tuple(item))
    seen: set[str] = set()
    pairs = []
    for k, v in items:
        if not isinstance(k, str) or not k:
            raise TypeError(f"RunSpec.{field}: keys must be non-empty strings, got {k!r}")
        if k in seen:
            raise ValueError(f"RunSpec.{field}: duplicate key {k!r}")
        seen.add(k)
        pairs.append((k, _freeze_value(v, f"RunSpec.{field}[{k!r}]")))
    return tuple(sorted(pairs))


def _check_name(value: Any, field: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"RunSpec.{field}: expected a non-empty string without surrounding whitespace, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: `method` (a registry name, or 'pkg.module:Class') on `benchmark`.

    `method_config` are the aggregator's constructor arguments and `extra` free-form options
    that change the result; both accept a mapping or (key, value) pairs and are stored as a
    tuple of pairs sorted by key. `steps=None` means the budget's default. All fields are part
    of `key` (see the module docstring for what must stay out of a spec).
    """

    benchmark: str
    method: str
    method_config: tuple[tuple[str, Any], ...] = ()
    level: str = "parameter"
    seed: int = 0
    budget: str = "small"
    steps: int | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.benchmark, "benchmark")
        _check_name(self.method, "method")
        object.__setattr__(self, "method_config", _freeze_pairs(self.method_config, "method_config"))
        object.__setattr__(self, "extra", _freeze_pairs(self.extra, "extra"))
        if self.level not in LEVELS:
            raise ValueError(f"RunSpec.level: expected one of {LEVELS}, got {self.level!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"RunSpec.seed: expected a non-negative int, got {self.seed!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"RunSpec.budget: expected one of {BUDGETS}, got {self.budget!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0
        ):
            raise ValueError(f"RunSpec.steps: expected None or a positive int, got {self.steps!r}")

    # -- views ----------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """`method_config` as a fresh dict (lists restored), ready for `from_config`."""
        return {k: _thaw_value(v) for k, v in self.method_config}

    @property
    def options(self) -> dict[str, Any]:
        """`extra` as a fresh dict (lists restored)."""
        return {k: _thaw_value(v) for k, v in self.extra}

    @property
    def key(self) -> str:
        """The run's content address under the current `CODE_EPOCH`."""
        return spec_key(self)

    @property
    def label(self) -> str:
        """A short human-readable name (not unique: use `key` to identify a run)."""
        steps = "" if self.steps is None else f"/{self.steps}steps"
        return f"{self.benchmark}/{self.method}/{self.level}/seed{self.seed}/{self.budget}{steps}"

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; `from_dict(to_dict())` gives an equal spec."""
        return {
            "benchmark": self.benchmark,
            "method": self.method,
            "method_config": self.config,
            "level": self.level,
            "seed": self.seed,
            "budget": self.budget,
            "steps": self.steps,
            "extra": self.options,
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """Strict inverse of `to_dict`: unknown or missing required fields raise, naming them."""
        if not isinstance(data, Mapping):
            raise TypeError(f"RunSpec.from_dict: expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"RunSpec.from_dict: unknown field(s) {unknown}; known: {list(_FIELDS)}")
        missing = [f for f in _REQUIRED if f not in data]
        if missing:
            raise ValueError(f"RunSpec.from_dict: missing required field(s) {missing}")
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))


def spec_key(spec: RunSpec, code_epoch: int | None = None) -> str:
    """The key of `spec` under `code_epoch` (default: the module's current `CODE_EPOCH`)."""
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec_key: expected a RunSpec, got {type(spec).__name__}")
    epoch = CODE_EPOCH if code_epoch is None else code_epoch
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise TypeError(f"spec_key: code_epoch must be an int, got {epoch!r}")
    text = f"{spec.to_json()}\ncode_epoch={epoch}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:KEY_LENGTH]
