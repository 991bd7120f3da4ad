"""Tolerant JSON snapshots for reproduced tables (syrupy extension).

    from mtlcheck.testing.snapshots import TolerantJSONExtension, approx

    def test_table(snapshot):
        assert snapshot(extension_class=TolerantJSONExtension) == approx(table_dict, rtol=1e-3, atol=1e-4)

The tolerance is stated at the assertion and written with the data; comparison parses both
sides as JSON, requires the same keys, list lengths and non-numeric values, and compares numbers
with |a − b| ≤ atol + rtol·|b| (NaN equals NaN; None stays None). Numbers are written with 6
significant digits. The extension refuses to write anywhere under a `reference/` directory, so
`pytest --snapshot-update` can never overwrite the paper's reference data with our numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syrupy.extensions.json import JSONSnapshotExtension

PROTECTED_DIRNAME = "reference"


@dataclass(frozen=True)
class Approx:
    data: Any
    rtol: float
    atol: float


def approx(data: Any, *, rtol: float, atol: float) -> Approx:
    """Wrap `data` (JSON-like: dicts, lists, numbers, strings, None) with its tolerance."""
    if not (rtol >= 0 and atol >= 0):
        raise ValueError(f"approx: rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
    return Approx(data, float(rtol), float(atol))


def _round(value: Any, exact: bool = False) -> Any:
    """6 significant digits, or every bit (`exact`: JSON's float text round-trips a float64)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return {"__float__": repr(v)}
        return float(f"{v:.6g}") if isinstance(value, float) and not exact else value
    if isinstance(value, dict):
        return {str(k): _round(v, exact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, exact) for v in value]
    raise TypeError(f"TolerantJSONExtension cannot serialise {type(value).__name__}: {value!r}")


def _num(x):
    if isinstance(x, dict) and set(x) == {"__float__"}:
        return float(x["__float__"])
    return x


def close(a: Any, b: Any, rtol: float, atol: float, path: str = "$") -> str | None:
    """None if `a` matches `b` within tolerance, else a description of the first difference."""
    a, b = _num(a), _num(b)
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return None if a == b else f"{path}: {a!r} != {b!r}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return None
        return None if abs(a - b) <= atol + rtol * abs(b) else f"{path}: {a!r} vs {b!r} (rtol={rtol}, atol={atol})"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            if (diff := close(a[k], b[k], rtol, atol, f"{path}.{k}")) is not None:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if (diff := close(x, y, rtol, atol, f"{path}[{i}]")) is not None:
                return diff
        return None
    return f"{path}: types differ ({type(a).__name__} vs {type(b).__name__})"


class TolerantJSONExtension(JSONSnapshotExtension):
    def serialize(self, data, *, exclude=None, include=None, matcher=None):
        if not isinstance(data, Approx):
            raise TypeError("TolerantJSONExtension compares approx(data, rtol=..., atol=...) values only")
        exact = data.rtol == 0 and data.atol == 0  # a bitwise snapshot keeps every bit
        payload = {"tolerance": {"rtol": data.rtol, "atol": data.atol}, "data": _round(data.data, exact)}
        return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True) + "\n"

    def matches(self, *, serialized_data, snapshot_data) -> bool:
        try:
            new, old = json.loads(serialized_data), json.loads(snapshot_data)
        except (TypeError, json.JSONDecodeError):
            return False
        tol = new["tolerance"]
        return close(new["data"], old.get("data"), tol["rtol"], tol["atol"]) is None

    @classmethod
    def write_snapshot_collection(cls, *, snapshot_collection, name_order=None):
        location = Path(snapshot_collection.location).resolve()
        if PROTECTED_DIRNAME in location.parts:
            raise PermissionError(f"refusing to write a snapshot under the paper's reference data: {location}")
        return super().write_snapshot_collection(snapshot_collection=snapshot_collection, name_order=name_order)
