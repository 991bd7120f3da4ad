"""Strict JSON for stored results, with NaN and ±inf kept: ``{"__float__": "nan"|"inf"|"-inf"}``.

Plain JSON has no non-finite numbers, and a diverged run's metrics are exactly those; the tag
object round-trips them (`decode_json(encode_json(x)) == x`, NaN aside) while the text stays
valid JSON any other tool can read.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["decode_json", "encode_json"]

_FLOAT_TAG = "__float__"
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isfinite(x):
            return x
        return {_FLOAT_TAG: "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {k!r}")
            if k == _FLOAT_TAG:
                raise ValueError(f"{where}: the key {_FLOAT_TAG!r} is reserved for encoding NaN/inf")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    hint = " (call .item() or .tolist() first)" if hasattr(value, "tolist") else ""
    raise TypeError(f"{where}: {type(value).__name__} is not JSON data{hint}")


def _revive(obj: dict) -> Any:
    if len(obj) == 1 and _FLOAT_TAG in obj:
        try:
            return _NONFINITE[obj[_FLOAT_TAG]]
        except KeyError:
            raise ValueError(f"bad non-finite float tag {obj!r}") from None
    return obj


def encode_json(value: Any, where: str = "value") -> str:
    """Strict JSON text; NaN and ±inf become ``{"__float__": "nan"|"inf"|"-inf"}``."""
    return json.dumps(_jsonable(value, where), allow_nan=False, separators=(",", ":"))


def decode_json(text: str | None) -> Any:
    """Inverse of `encode_json` (None stays None)."""
    if text is None:
        return None
    return json.loads(text, object_hook=_revive)
