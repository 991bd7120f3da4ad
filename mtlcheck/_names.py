"""The names a user may type, known without importing torch or any method: the built-in methods
and their level aliases (read from the `@register_aggregator(...)` lines of
`mtlcheck/aggregators/*.py`, the one place they are defined) and the methods registered through
the `mtlcheck.aggregators` entry point (read from the installed metadata, not imported). So a
command rejects a mistyped name, with a suggestion, before it imports anything heavy."""

from __future__ import annotations

import difflib
import functools
import re
from importlib import metadata
from pathlib import Path

_REGISTRATION = re.compile(r'^@register_aggregator\(\s*"([^"]+)"(?:[^)]*?feature_alias="([^"]+)")?', re.MULTILINE)


@functools.cache
def builtin_method_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(registry names, level aliases) of the built-in methods, from their source files."""
    names, aliases = [], []
    for path in sorted((Path(__file__).parent / "aggregators").glob("*.py")):
        for name, alias in _REGISTRATION.findall(path.read_text(encoding="utf-8")):
            names.append(name)
            if alias:
                aliases.append(alias)
    return tuple(names), tuple(aliases)


def entry_point_names() -> tuple[str, ...]:
    """Names registered under the `mtlcheck.aggregators` entry point (not loaded)."""
    try:
        return tuple(ep.name for ep in metadata.entry_points(group="mtlcheck.aggregators"))
    except Exception:  # noqa: BLE001 - broken metadata: the registry will say so when loaded
        return ()


def known_method_names() -> set[str]:
    """Built-in names and aliases, entry-point names, and, when the registry is already loaded in
    this process, whatever was registered there (by `register_aggregator` in a script)."""
    import sys

    names, aliases = builtin_method_names()
    known = {*names, *aliases, *entry_point_names()}
    registry = sys.modules.get("mtlcheck.aggregators._registry")
    if registry is not None:
        known |= set(registry._REGISTRY) | set(registry.level_aliases())
    return known


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'x'?)' for the known names closest to `name` (case and '-'/'_' ignored), or ''."""

    def key(text: str) -> str:
        return text.lower().replace("-", "_")

    by_key = {key(k): k for k in known}
    close = difflib.get_close_matches(key(name), list(by_key), n=2, cutoff=0.75)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(by_key[c]) for c in close) + "?)"
