# -*- test-case-name: tests.test_shared_sasl -*-
"""
Which SASL binds shared mode can run, and how it learns their identity.

A SASL bind in shared mode runs on a bind connection of its own (multi-step
exchanges, resultCode 14, pinned to it until the final result); on success
the proxy asks that connection Who Am I (RFC 4532) and asserts the answer
on the client's later operations with Proxied Authorization, as for simple
binds.  That only works while the client's later bytes are LDAP: a SASL
security layer (integrity or confidentiality) would wrap them for the one
backend connection that negotiated it, which the client does not have.  So
a step that would put a layer in force is refused before it goes upstream,
with a message naming C{mode = session} (which relays layers opaquely:
L{ldaproute.core.sasllayer}):

  - DIGEST-MD5: the client's response names its qop in clear text; only
    C{auth} (no layer) goes on.
  - GSS-SPNEGO: NTLM's AUTHENTICATE message carries the negotiated flags in
    clear text; sign or seal is refused.  Kerberos inside SPNEGO (or
    GSSAPI) negotiates its layer inside encrypted tokens the proxy cannot
    read, so those are refused at their first step.
  - EXTERNAL: the backend would see the proxy's connection, not the
    client's certificate or socket.  C{-PLUS} (channel binding): the
    client's TLS channel ends at the proxy.
  - mechanisms without a layer by design (SCRAM, PLAIN, ...) go on; any
    other, whose layer the proxy cannot judge, is refused.

Pure: bytes in, decisions out.
"""

from __future__ import annotations

from typing import Final

from ldaproute.wire import ber
from ldaproute.wire.pdu import messageIDSpan

WHOAMI_OID: Final = b"1.3.6.1.4.1.4203.1.11.3"

#: seconds a bind connection waits for a SASL exchange's next step (clients
#: answer a challenge at once): then it is closed, so that clients that
#: start an exchange and stop cannot hold every bind connection
STEP_TIMEOUT: Final = 30.0

#: mechanisms that never negotiate a security layer
_LAYERLESS: Final = frozenset(
    {
        b"SCRAM-SHA-1",
        b"SCRAM-SHA-224",
        b"SCRAM-SHA-256",
        b"SCRAM-SHA-384",
        b"SCRAM-SHA-512",
        b"PLAIN",
        b"LOGIN",
        b"CRAM-MD5",
        b"ANONYMOUS",
        b"OTP",
        b"OAUTHBEARER",
        b"XOAUTH2",
    }
)

_USE_SESSION: Final = "use mode = session for such clients"

_NTLMSSP: Final = b"NTLMSSP\x00"
_NTLM_AUTHENTICATE: Final = 3
_NTLM_SIGN: Final = 0x10
_NTLM_SEAL: Final = 0x20


def saslCredentials(pdu: bytes, opStart: int) -> tuple[bytes, bytes | None]:
    """
    C{(mechanism, credentials)} of a SASL bind request (credentials
    L{None} when absent).

    @raise ber.FramingError: not a well-formed SASL bind request.
    """
    _, start, end = ber.readTLV(pdu, opStart)
    _, _, versionEnd = ber.readTLV(pdu, start, end)
    _, _, nameEnd = ber.readTLV(pdu, versionEnd, end)
    saslStart, saslEnd = ber.readExpected(pdu, nameEnd, end, ber.SASL_AUTH_TAG, "not a SASL bind")
    mechStart, mechEnd = ber.readExpected(pdu, saslStart, saslEnd, ber.OCTET_STRING, "SASL bind without a mechanism")
    mechanism = pdu[mechStart:mechEnd]
    if mechEnd >= saslEnd:
        return mechanism, None
    credStart, credEnd = ber.readExpected(pdu, mechEnd, saslEnd, ber.OCTET_STRING, "SASL credentials are not an OCTET STRING")
    return mechanism, pdu[credStart:credEnd]


def digestDirectives(credentials: bytes) -> dict[bytes, bytes]:
    """The C{name=value} directives of a DIGEST-MD5 response (RFC 2831 2.1.2), quotes removed."""
    directives: dict[bytes, bytes] = {}
    pos, end = 0, len(credentials)
    while pos < end:
        while pos < end and credentials[pos] in b" \t,":
            pos += 1
        equals = credentials.find(b"=", pos)
        if equals < 0:
            break
        name = credentials[pos:equals].strip().lower()
        pos = equals + 1
        while pos < end and credentials[pos] in b" \t":
            pos += 1
        if pos < end and credentials[pos] == 0x22:  # a quoted string, with \-escapes
            value = bytearray()
            pos += 1
            while pos < end and credentials[pos] != 0x22:
                if credentials[pos] == 0x5C and pos + 1 < end:
                    pos += 1
                value.append(credentials[pos])
                pos += 1
            pos += 1
            directives[name] = bytes(value)
        else:
            comma = credentials.find(b",", pos)
            comma = end if comma < 0 else comma
            directives[name] = credentials[pos:comma].strip()
            pos = comma
    return directives


def _ntlmFlags(credentials: bytes) -> int | None:
    """The negotiated flags of an NTLM AUTHENTICATE message inside C{credentials}, if it holds one."""
    at = credentials.find(_NTLMSSP)
    if at < 0 or len(credentials) < at + 64:
        return None
    if int.from_bytes(credentials[at + 8 : at + 12], "little") != _NTLM_AUTHENTICATE:
        return None
    return int.from_bytes(credentials[at + 60 : at + 64], "little")


def stepRefusal(mechanism: bytes, credentials: bytes | None) -> str | None:
    """
    Why shared mode cannot send this step of a SASL bind upstream (the
    diagnostic for the client, naming C{mode = session}), or L{None}.
    """
    name = mechanism.upper()
    shown = mechanism.decode("ascii", "replace")
    if name in _LAYERLESS:
        return None
    if name.endswith(b"-PLUS"):
        return (
            f"SASL {shown} binds the client's TLS channel, which ends at the proxy: "
            f"use the mechanism without -PLUS, or {_USE_SESSION}"
        )
    if name == b"EXTERNAL":
        return (
            "SASL EXTERNAL cannot be relayed in shared mode: the backend sees the proxy's connection, "
            f"not the client's certificate or socket; {_USE_SESSION}"
        )
    if name == b"DIGEST-MD5":
        if not credentials:
            return None  # the first step: the server's challenge comes back
        qop = digestDirectives(credentials).get(b"qop", b"auth").lower()
        if qop == b"auth":
            return None
        return (
            f"SASL DIGEST-MD5 with qop={qop.decode('ascii', 'replace')} negotiates a security layer, which shared "
            f"mode cannot carry (the connection is shared): bind with qop=auth (e.g. -O maxssf=0), or {_USE_SESSION}"
        )
    if name == b"GSS-SPNEGO":
        if not credentials:
            return None
        if _NTLMSSP not in credentials:
            return (
                "SASL GSS-SPNEGO without NTLM (Kerberos) may negotiate a security layer the proxy cannot see: "
                f"shared mode refuses it; {_USE_SESSION}"
            )
        flags = _ntlmFlags(credentials)
        if flags is not None and flags & (_NTLM_SIGN | _NTLM_SEAL):
            return (
                "SASL GSS-SPNEGO with NTLM signing or sealing negotiates a security layer, which shared mode "
                f"cannot carry (the connection is shared); {_USE_SESSION}"
            )
        return None
    if name == b"GSSAPI":
        return (
            "SASL GSSAPI may negotiate a security layer the proxy cannot see (inside Kerberos tokens): "
            f"shared mode refuses it; {_USE_SESSION}"
        )
    return (
        f"the proxy cannot tell whether SASL {shown} negotiates a security layer, which shared mode cannot "
        f"carry: {_USE_SESSION}"
    )


def whoAmIRequest(messageID: int) -> bytes:
    """The proxy's own Who Am I (RFC 4532), on the connection a SASL bind succeeded on."""
    return ber.message(messageID, ber.tlv(ber.EXTENDED_REQUEST, ber.tlv(ber.EXTENDED_NAME_TAG, WHOAMI_OID)))


_RESPONSE_VALUE_TAG: Final = 0x8B


def whoAmIAnswer(pdu: bytes) -> tuple[int, bytes]:
    """
    C{(resultCode, authzId)} of a Who Am I response (authzId empty without
    a value).

    @raise ber.FramingError: not a well-formed extended response.
    """
    opStart = messageIDSpan(pdu)[2]
    start, end = ber.readExpected(pdu, opStart, None, ber.EXTENDED_RESPONSE, "not an extended response")
    fields = ber.elements(pdu, start, end)
    if not fields or fields[0][0] != ber.ENUMERATED:
        raise ber.FramingError("malformed", "extended response without a resultCode")
    code = int.from_bytes(pdu[fields[0][2] : fields[0][3]], "big")
    for fieldTag, _, valueStart, valueEnd in fields[3:]:
        if fieldTag == _RESPONSE_VALUE_TAG:
            return code, pdu[valueStart:valueEnd]
    return code, b""


def boundDN(authzId: bytes) -> tuple[bytes | None, str]:
    """
    The DN a SASL bind's authorization identity names (C{b""}: anonymous),
    or C{(None, why)} when it names none: shared mode asserts identities as
    C{dn:...} (a C{u:...} one means the backend has no authz-regexp mapping
    for it).
    """
    if not authzId:
        return b"", ""
    if authzId[:3].lower() == b"dn:":
        return authzId[3:], ""
    shown = authzId.decode("utf-8", "replace")
    return None, (
        f"the backend names this SASL identity {shown!r}, not a DN: shared mode asserts identities as DNs "
        "with Proxied Authorization (map SASL names to entries on the backend, e.g. slapd's authz-regexp), "
        f"or {_USE_SESSION}"
    )
