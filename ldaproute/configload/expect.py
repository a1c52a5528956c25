# -*- test-case-name: tests.test_config -*-
"""
C{[expect:NAME]} sections: an operation to try (as C{ldaproute explain}
takes it) and what it must come to, naming only routes, pools, backends
and listeners the file defines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ldaproute.configload import SectionError


def settleExpectation(
    values: dict[str, Any],
    routes: Iterable[str],
    pools: Iterable[str],
    backends: Iterable[str],
    listeners: Iterable[str],
) -> None:
    """
    Check an expectation's keys against the rest of the file.

    @param values: the section's values by attribute.
    @raise SectionError: no operation, nothing to expect, or an unknown name.
    """
    if "operation" not in values:
        raise SectionError("operation", "missing: the operation to try, as ldaproute explain takes it")
    if not any(key in values for key in ("route", "pool", "backend", "result")):
        raise SectionError("route", "missing: give what to expect: route, pool, backend or result")
    for key, known in (("route", list(routes)), ("pool", list(pools)), ("backend", list(backends))):
        if values.get(key) is not None and values[key] not in known:
            raise SectionError(key, f"unknown {key} {values[key]!r}")
    if values.get("listener") is not None and values["listener"] not in set(listeners):
        raise SectionError("listener", f"unknown listener {values['listener']!r}")
