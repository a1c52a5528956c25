# -*- test-case-name: tests.test_ber -*-
"""
Writing the few small PDUs the proxy says itself: results, a Notice of
Disconnection, and the binds, unbinds and abandons it sends to backends.
Edits of a whole PDU (another messageID, an added control) are in
L{ldaproute.wire.pdu}.
"""

from __future__ import annotations

from ldaproute.wire.tags import (
    BIND_REQUEST,
    UNBIND_REQUEST,
    ABANDON_REQUEST,
    EXTENDED_RESPONSE,
    RESPONSE_FOR,
    SIMPLE_AUTH_TAG,
    EXTENDED_RESPONSE_NAME_TAG,
    NOTICE_OF_DISCONNECTION_OID,
    INTEGER,
    OCTET_STRING,
    ENUMERATED,
    SEQUENCE,
)
from ldaproute.wire.envelope import Envelope


def encodeLength(n: int) -> bytes:
    """BER definite length octets for C{n}."""
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One BER element."""
    return bytes((tag,)) + encodeLength(len(content)) + content


def encodeInteger(value: int) -> bytes:
    """The minimal two's complement content octets of an INTEGER."""
    return value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True)


def message(messageID: int, protocolOp: bytes, controls: bytes = b"") -> bytes:
    """An LDAPMessage around an already encoded protocolOp."""
    return tlv(SEQUENCE, tlv(INTEGER, encodeInteger(messageID)) + protocolOp + controls)


def result(
    messageID: int,
    responseTag: int,
    resultCode: int,
    diagnosticMessage: str = "",
    matchedDN: bytes = b"",
    extra: bytes = b"",
) -> bytes:
    """
    An LDAPResult-shaped response PDU the proxy answers with itself, such as
    unavailable (52) for a backend that cannot be reached.
    """
    body = (
        tlv(ENUMERATED, encodeInteger(resultCode))
        + tlv(OCTET_STRING, matchedDN)
        + tlv(OCTET_STRING, diagnosticMessage.encode("utf-8"))
        + extra
    )
    return message(messageID, tlv(responseTag, body))


def resultFor(envelope: Envelope, resultCode: int, diagnosticMessage: str) -> bytes | None:
    """
    The final response to the request C{envelope} carrying C{resultCode}, or
    L{None} for requests that never get one (abandon, unbind).
    """
    responseTag = RESPONSE_FOR.get(envelope.opTag)
    if responseTag is None:
        return None
    return result(envelope.messageID, responseTag, resultCode, diagnosticMessage)


def noticeOfDisconnection(resultCode: int, diagnosticMessage: str) -> bytes:
    """
    The unsolicited notification (RFC 4511 4.4.1) sent before closing a
    connection the proxy can no longer serve.
    """
    return result(
        0,
        EXTENDED_RESPONSE,
        resultCode,
        diagnosticMessage,
        extra=tlv(EXTENDED_RESPONSE_NAME_TAG, NOTICE_OF_DISCONNECTION_OID),
    )


def simpleBindRequest(messageID: int, name: bytes, password: bytes) -> bytes:
    """A version 3 simple BindRequest PDU (used to replay a client's bind)."""
    content = tlv(INTEGER, b"\x03") + tlv(OCTET_STRING, name) + tlv(SIMPLE_AUTH_TAG, password)
    return message(messageID, tlv(BIND_REQUEST, content))


def unbindRequest(messageID: int) -> bytes:
    """An UnbindRequest PDU."""
    return message(messageID, bytes((UNBIND_REQUEST, 0)))


def abandonRequest(messageID: int, abandonedID: int) -> bytes:
    """An AbandonRequest PDU for the operation C{abandonedID}."""
    return message(messageID, tlv(ABANDON_REQUEST, encodeInteger(abandonedID)))
