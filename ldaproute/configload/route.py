# -*- test-case-name: tests.test_config_routing -*-
"""
C{[route:NAME]} sections: a pool or a rejection (not both), known pools
and listeners, no rewrite rules on a rejection, C{bind_dn} as a DN or
C{anonymous}.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from ldaproute.configload import SectionError, dnAt


def settleRoute(
    values: dict[str, Any], pools: Container[str], listeners: Container[str], rewriteKeys: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """
    Check a route's keys together and turn C{bind_dn} into its meaning.

    @param values: the section's values by attribute; changed in place.
    @param rewriteKeys: C{(key, attribute)} of the rewrite rules.
    @raise SectionError: keys that contradict each other, unknown names.
    """
    pool, reject = values.get("pool"), values.get("reject")
    if pool is None and reject is None:
        raise SectionError("pool", "missing: a route needs a pool, or reject = CODE MESSAGE")
    if pool is not None and reject is not None:
        raise SectionError("reject", "a route takes either pool or reject, not both")
    if pool is not None and pool not in pools:
        raise SectionError("pool", f"unknown pool {pool!r}")
    if values.get("listener") is not None and values["listener"] not in listeners:
        raise SectionError("listener", f"unknown listener {values['listener']!r}")
    if reject is not None:
        for key, attribute in rewriteKeys:
            if attribute in values:
                raise SectionError(key, "a reject route reaches no backend, so it has nothing to rewrite")
    bindDN = values.pop("bindDN", None)
    if bindDN is not None:
        if bindDN.lower() == "anonymous":
            values["bindAnonymous"] = True
        else:
            values["bindDN"] = dnAt("bind_dn", bindDN)
    return values
