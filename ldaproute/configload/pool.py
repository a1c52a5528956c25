# -*- test-case-name: tests.test_config_pools -*-
"""
C{[pool:NAME]} sections: backends by name or SRV discovery (not both), a
health-check identity and a shared-mode service identity each given whole.
"""

from __future__ import annotations

from typing import Any

from ldaproute.configload import SectionError, dnAt


def settlePool(values: dict[str, Any], names: list[str] | None, known: set[str]) -> list[str]:
    """
    Check a pool's keys together.

    @param values: the section's values by attribute (C{backends} taken out).
    @param names: the backend names it lists, if any.
    @param known: the backends the file defines.
    @return: its backends' names in order (empty for an SRV pool).
    @raise SectionError: keys that contradict each other, unknown backends.
    """
    if names is not None and values.get("srv") is not None:
        raise SectionError("srv", "a pool takes either backends or srv, not both")
    if values.get("srvResolver") is not None and values.get("srv") is None:
        raise SectionError("srv_resolver", "only a pool with srv = NAME uses a resolver")
    if (values.get("healthBindDN") is None) != (values.get("healthBindPassword") is None):
        raise SectionError("health_bind_dn", "give health_bind_dn and health_bind_password together")
    if values.get("healthBindDN"):
        dnAt("health_bind_dn", values["healthBindDN"])
    if (values.get("serviceBindDN") is None) != (values.get("serviceBindPassword") is None):
        raise SectionError("service_bind_dn", "give service_bind_dn and service_bind_password together")
    if values.get("serviceBindDN"):
        dnAt("service_bind_dn", values["serviceBindDN"])
    if values.get("srv") is not None:
        return []
    if not names:
        raise SectionError("backends", "missing: a pool needs at least one backend (or srv = NAME)")
    for backendName in names:
        if backendName not in known:
            raise SectionError("backends", f"unknown backend {backendName!r}")
    if len(set(names)) != len(names):
        raise SectionError("backends", "a backend is listed twice")
    return names
