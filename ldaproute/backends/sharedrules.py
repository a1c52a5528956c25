# -*- test-case-name: tests.test_shared -*-
"""
What shared mode cannot send on a shared connection, decided per request
before anything goes upstream.

A shared connection carries many clients' operations under the pool's
service identity, so a request that would change the connection's state
(StartTLS, most extended operations; SASL binds are judged step by step in
L{ldaproute.backends.sharedsasl}) or undo the identity the
proxy asserts for the client (its own Proxied Authorization control) is
answered by the proxy with a message naming C{mode = session}.

And what shared mode answers or completes itself, so that it behaves the
same in front of slapd and 389 Directory Server: Who Am I is answered
from the identity the proxy verified (389's Who Am I ignores Proxied
Authorization and names the service account), and a Password Modify
without a user identity gets the bound client's DN (389 would apply it to
the service account).
"""

from __future__ import annotations

from ldaproute.wire import ber
from ldaproute.wire.pdu import CANCEL_OID, PROXIED_AUTHZ_OID, extendedNameAt, messageIDSpan

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
    connection (extended operations that change the
    connection's state, StartTLS among them), or that would undo the
    identity the proxy asserts (its own Proxied Authorization); else None.
    """
    if tag == ber.BIND_REQUEST:
        return None  # SASL binds: step by step (L{ldaproute.backends.sharedsasl})
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


#: Who Am I's response value (RFC 4532), and Password Modify's userIdentity (RFC 3062)
_RESPONSE_VALUE_TAG = 0x8B
_USER_IDENTITY_TAG = 0x80


def whoAmIResponse(messageID: int, authzId: bytes) -> bytes:
    """The answer to Who Am I: C{dn:...}, or empty for an anonymous client."""
    return ber.result(messageID, ber.EXTENDED_RESPONSE, ber.SUCCESS, extra=ber.tlv(_RESPONSE_VALUE_TAG, authzId))


def withUserIdentity(pdu: bytes, opStart: int, opEnd: int, dn: bytes) -> bytes | None:
    """
    The Password Modify request C{pdu} with C{dn} as its userIdentity, or
    L{None} when it names one already (it is sent as it is).

    @raise ber.FramingError: a malformed request.
    """
    _, start, end = ber.readTLV(pdu, opStart)
    _, _, nameEnd = ber.readTLV(pdu, start, end)
    fields = b""
    if nameEnd < end:
        valueStart, valueEnd = ber.readExpected(pdu, nameEnd, end, ber.EXTENDED_VALUE_TAG, "extended request value with a wrong tag")
        fieldsStart, fieldsEnd = ber.readExpected(pdu, valueStart, valueEnd, ber.SEQUENCE, "password modify value is not a SEQUENCE")
        if fieldsStart < fieldsEnd and pdu[fieldsStart] == _USER_IDENTITY_TAG:
            return None
        fields = pdu[fieldsStart:fieldsEnd]
    value = ber.tlv(ber.SEQUENCE, ber.tlv(_USER_IDENTITY_TAG, dn) + fields)
    op = ber.tlv(ber.EXTENDED_REQUEST, pdu[start:nameEnd] + ber.tlv(ber.EXTENDED_VALUE_TAG, value))
    messageID = messageIDSpan(pdu)[0]
    return ber.message(messageID, op, pdu[opEnd:])
