# -*- test-case-name: tests.test_config_tls -*-
"""
C{[ldaproute]} listener keys and C{[listener:NAME]} sections: a
listener's TLS files go together and must match, C{starttls} follows from
them, the former name of C{require_tls_for_passwords} is still read, and
worker processes can share only TCP listeners.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ldaproute.configload import SectionError
from ldaproute.wire.pem import checkKeyPair


def settleListener(values: dict[str, Any]) -> dict[str, Any]:
    """
    Check the TLS keys of a listener together and settle C{starttls}.

    @param values: the section's values by attribute; changed in place.
    @raise SectionError: keys that contradict each other.
    """
    alias = values.pop("requireTLSForSimpleBind", None)
    if alias is not None:
        current = values.setdefault("requireTLSForPasswords", alias)
        if current != alias:
            raise SectionError(
                "require_tls_for_simple_bind",
                "contradicts require_tls_for_passwords (the same setting under its former name): keep one",
            )
    cert, key = values.get("tlsCert"), values.get("tlsKey")
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise SectionError(missing, "missing: tls_cert and tls_key go together")
    if cert is not None:
        assert key is not None
        try:
            checkKeyPair(cert, key)
        except ValueError as e:
            raise SectionError("tls_cert", str(e)) from None
    if "starttls" not in values:
        values["starttls"] = "terminate" if cert is not None else "off"
    elif values["starttls"] == "terminate" and cert is None:
        raise SectionError("starttls", "terminate needs tls_cert and tls_key")
    return values


def checkWorkers(endpoints: Iterable[str], metrics: str | None) -> None:
    """
    Worker processes share TCP listeners (SO_REUSEPORT) only.

    @raise SectionError: at C{workers}, for any other endpoint.
    """
    for description in endpoints:
        if not description.startswith(("tcp:", "haproxy:tcp:")):
            raise SectionError(
                "workers",
                f"worker processes can share tcp: and haproxy:tcp: listeners only, not {description!r}",
            )
    if metrics is not None and not metrics.startswith("tcp:"):
        raise SectionError("workers", f"worker processes need a tcp: metrics endpoint (one port each), not {metrics!r}")


def checkThrottleStore(values: dict[str, Any]) -> None:
    """
    The Redis keys of C{[ldaproute]} go with a Redis store, the CA file
    with rediss:// only.

    @raise SectionError: a key the store does not use.
    """
    store = values.get("throttleStore")
    if store is None:
        for attribute, key in (("throttleStoreCAFile", "throttle_store_ca_file"),
                               ("throttleStorePassword", "throttle_store_password_file")):  # fmt: skip
            if attribute in values:
                raise SectionError(key, "only used with throttle_store = redis:// or rediss://")
    elif "throttleStoreCAFile" in values and not store.tls:
        raise SectionError("throttle_store_ca_file", "only used with rediss:// (Redis over TLS)")
