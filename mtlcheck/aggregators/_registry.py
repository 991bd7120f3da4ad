"""The aggregator registry: built-ins register by decorator, third parties by entry point.

A package exposes a method to mtlcheck (and so to `pytest suites/conformance`) with

    [project.entry-points."mtlcheck.aggregators"]
    my_method = "my_pkg.module:MyAggregator"
"""

from __future__ import annotations

import fnmatch
import functools
from importlib import metadata
from typing import Any

from mtlcheck.aggregators._base import Aggregator

ENTRY_POINT_GROUP = "mtlcheck.aggregators"
_REGISTRY: dict[str, type[Aggregator]] = {}
_PAPER_NAMES: dict[str, str] = {}
_FEATURE_ALIASES: dict[str, str] = {}
_entry_points_loaded = False


def register_aggregator(name: str, *, paper_name: str | None = None, feature_alias: str | None = None):
    """Class decorator: register an Aggregator subclass under `name` (duplicates raise).

    `paper_name` is the method's name in the papers' tables (e.g. "Nash-MTL"); `feature_alias` a
    name for the method at the feature level (the "-UB" variants of MGDA and Aligned-MTL, whose
    gradients are taken with respect to the shared representation, an upper bound of the
    parameter-level objective: Sener & Koltun 2018, §3.3)."""

    def decorate(cls: type[Aggregator]) -> type[Aggregator]:
        _check_init_types(cls)
        if feature_alias is not None and (
            feature_alias in _REGISTRY or _FEATURE_ALIASES.get(feature_alias, name) != name or feature_alias == name
        ):
            raise ValueError(f"{name!r}: the alias {feature_alias!r} is already a registered name or alias")
        _add(name, cls)
        if paper_name is not None:
            _PAPER_NAMES[name] = paper_name
        if feature_alias is not None:
            _FEATURE_ALIASES[feature_alias] = name
        return cls

    return decorate


def _check_init_types(cls: type[Aggregator]) -> None:
    """Make `cls(...)` check its keywords as the command line's `--config` does
    (`Aggregator.check_config`: a bool is never a number, floats are finite, numpy scalars are
    numbers), so that a Python call and a config file accept the same values."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_checks_types", False):
        return

    named = {p.name for p in cls._init_parameters()}

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        # the keywords __init__ names are checked; others go on as they are (to a **kwargs, or to
        # Python's own TypeError)
        try:
            checked = cls.check_config({k: v for k, v in kwargs.items() if k in named})
        except ValueError as exc:  # named by the class being built (a published variant, say)
            text = str(exc)
            if type(self) is cls or not text.startswith(cls.__name__):
                raise
            raise ValueError(type(self).__name__ + text[len(cls.__name__) :]) from None
        init(self, *args, **{**kwargs, **checked})

    checked_init._checks_types = True
    cls.__init__ = checked_init


def paper_name(name: str) -> str:
    """The method's name in the papers' tables, or `name` itself when none was registered."""
    _load_entry_points()
    return _PAPER_NAMES.get(name, name)


def level_aliases() -> dict[str, tuple[str, str]]:
    """alias -> (registered name, gradient level), e.g. "mgda_ub" -> ("mgda", "feature")."""
    _load_entry_points()
    return {alias: (name, "feature") for alias, name in _FEATURE_ALIASES.items()}


def _add(name: str, cls: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"aggregator name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Aggregator)):
        raise TypeError(f"{name!r}: only Aggregator subclasses can be registered, got {cls!r}")
    if name in _FEATURE_ALIASES:
        raise ValueError(
            f"{name!r} is the feature-level alias of {_FEATURE_ALIASES[name]!r}; register the method under another name"
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(
            f"an aggregator named {name!r} is already registered "
            f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__qualname__})"
        )
    cls.name = name
    _REGISTRY[name] = cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - re-raised with the entry point named
            raise ImportError(f"could not load aggregator entry point {ep.name!r} ({ep.value}): {exc}") from exc
        _add(ep.name, cls)


def aggregator_class(name: str) -> type[Aggregator]:
    """The class registered under `name`; 'pkg.module:Class' imports any Aggregator subclass."""
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import aggregator {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Aggregator)):
            raise ValueError(f"{name!r} is not an Aggregator subclass")
        return cls
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        if name in level_aliases():
            method, level = level_aliases()[name]
            raise ValueError(
                f"{name!r} names {method!r} at the {level} level (the level is the engine's choice, not the "
                f"method's): use the aggregator {method!r}"
            ) from None
        from mtlcheck._names import did_you_mean

        hint = did_you_mean(name, [*_REGISTRY, *level_aliases()])
        raise ValueError(f"unknown aggregator {name!r}{hint}; known: {known}") from None


def get_aggregator(name: str, **params: Any) -> Aggregator:
    """An instance of the method registered under `name`, built with `params`."""
    return aggregator_class(name)(**params)


def list_aggregators(pattern: str = "*", tags: dict[str, Any] | None = None) -> list[str]:
    """Registered names matching the fnmatch `pattern` whose default instance has these tag values."""
    _load_entry_points()
    names = sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
    if tags:
        names = [n for n in names if all(getattr(_REGISTRY[n]().tags(), k) == v for k, v in tags.items())]
    return names
