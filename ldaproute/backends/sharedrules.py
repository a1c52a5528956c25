# -*- test-case-name: tests.test_shared -*-
"""
What shared mode cannot send on a shared connection, decided per request
before anything goes upstream.

A shared connection carries many clients' operations under the pool's
service identity, so a request that would change the connection's state
(a SASL bind, StartTLS, most extended operations) or undo the identity the
proxy asserts for the client (its own Proxied Authorization control) is
answered by the proxy with a message naming C{mode = session}.
"""

from __future__ import annotations

from ldaproute.wire import ber
from ldaproute.wire.pdu import CANCEL_OID, PROXIED_AUTHZ_OID, extendedNameAt

WHOAMI_OID = b"1.3.6.1.4.1.4203.1.11.3"
PASSWORD_MODIFY_OID = b"1.3.6.1.4.1.4203.1.11.1"

#: Extended operations that run per operation and accept the Proxied
#: Authorization control in slapd.
_PROXIABLE_EXTENDED = frozenset({WHOAMI_OID, PASSWORD_MODIFY_OID})

NO_SUCH_OPERATION = 119


def bindAuthenticationTag(pdu: bytes, opStart: int) -> int:
    """
    The tag of a bind request's authentication choice (simple or SASL),
    read past its version and name without building an Envelope: this runs
    for every bind.
    """
    _, start, end = ber.readTLV(pdu, opStart)
    _, _, versionEnd = ber.readTLV(pdu, start, end)
    _, _, nameEnd = ber.readTLV(pdu, versionEnd, end)
    if nameEnd >= end:
        raise ber.FramingError("malformed", "bind request without authentication")
    return pdu[nameEnd]


def refusal(pdu: bytes, tag: int, opStart: int, controls: bytes) -> tuple[int, str] | None:
    """
    C{(resultCode, diagnosticMessage)} for a request that cannot share a
    connection (SASL binds, extended operations that change the
    connection's state, StartTLS among them), or that would undo the
    identity the proxy asserts (its own Proxied Authorization); else None.
    """
    if tag == ber.BIND_REQUEST:
        if bindAuthenticationTag(pdu, opStart) != ber.SIMPLE_AUTH_TAG:
            return (
                ber.AUTH_METHOD_NOT_SUPPORTED,
                "SASL binds are not supported in shared mode: use mode = session for SASL clients",
            )
        return None
    if controls and PROXIED_AUTHZ_OID in controls:
        return (
            ber.UNWILLING_TO_PERFORM,
            "the proxy asserts each client's identity with Proxied Authorization in shared mode: "
            "clients cannot send their own",
        )
    if tag == ber.EXTENDED_REQUEST:
        oid = extendedNameAt(pdu, opStart)
        if oid != CANCEL_OID and oid not in _PROXIABLE_EXTENDED:
            what = "StartTLS" if oid == ber.STARTTLS_OID else f"the extended operation {oid.decode('ascii', 'replace')}"
            return (
                ber.UNWILLING_TO_PERFORM,
                f"{what} is not supported in shared mode (the upstream connection is shared): use mode = session",
            )
    return None
