# -*- test-case-name: tests.test_pdu -*-
"""
Whole-PDU reads and edits, written once for every layer above.

A proxy keeps rewriting the same few things in messages it otherwise passes
on as bytes: the messageID (shared mode remaps it, fan-out and CLDAP put
the client's back), the controls (shared mode appends Proxied
Authorization), the base and scope of a search (fan-out), and it reads a
result's code and message (health probes, fan-out, notices; those reads
are in L{ldaproute.wire.results}).  Each of
those edits is here, at byte level, keeping every byte it does not change;
each raises L{ber.FramingError} with the reasons of L{ldaproute.wire.ber}.

ldaptor's C{pureldap} is used for the few decodes the slow path needs
(L{decodeOp}); its decoder context is built here and nowhere else.

Offsets: C{opStart} is the offset of a message's protocolOp tag (just past
its messageID); C{opEnd} the offset just past the protocolOp, where the
controls, if any, begin.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ldaptor.protocols import pureber, pureldap

from ldaproute.wire import ber
from ldaproute.wire.ber import (
    CONTROLS_TAG,
    ENUMERATED,
    EXTENDED_NAME_TAG,
    EXTENDED_REQUEST,
    EXTENDED_VALUE_TAG,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    FramingError,
    elements,
    encodeInteger,
    encodeLength,
    readExpected,
    readLength,
    readTLV,
    tlv,
)

PROXIED_AUTHZ_OID: Final = b"2.16.840.1.113730.3.4.18"
PAGED_RESULTS_OID: Final = b"1.2.840.113556.1.4.319"
CANCEL_OID: Final = b"1.3.6.1.1.8"


# --- messageID ----------------------------------------------------------------


def messageIDSpan(pdu: bytes) -> tuple[int, int, int]:
    """
    C{(messageID, idStart, opStart)} of a framed LDAPMessage, for any form
    of the outer length: C{idStart} is the offset of the messageID INTEGER,
    C{opStart} the offset just past it (the protocolOp's tag).

    @raise FramingError: no protocolOp after a well-formed, non-negative
        messageID of one to four octets.
    """
    end = len(pdu)
    if end < 2:
        raise FramingError("malformed", "truncated LDAPMessage")
    first = pdu[1]
    if first < 0x80:
        idStart = 2
    else:
        header = readLength(pdu, 1, end)
        if header is None:
            raise FramingError("malformed", "truncated LDAPMessage")
        idStart = header[1]
    if idStart + 2 > end or pdu[idStart] != INTEGER:
        raise FramingError("malformed", "LDAPMessage without a messageID")
    n = pdu[idStart + 1]
    opStart = idStart + 2 + n
    if not 1 <= n <= 4 or opStart >= end:
        raise FramingError("malformed", "LDAPMessage with a bad messageID")
    if pdu[idStart + 2] & 0x80:
        raise FramingError("malformed", "negative messageID")
    return int.from_bytes(pdu[idStart + 2 : opStart], "big"), idStart, opStart


def messageIDOf(pdu: bytes) -> int:
    """The messageID of a framed LDAPMessage."""
    return messageIDSpan(pdu)[0]


def opTagOf(pdu: bytes) -> int:
    """The protocolOp tag of a framed LDAPMessage."""
    return pdu[messageIDSpan(pdu)[2]]


def messageIDElement(messageID: int) -> bytes:
    """The messageID INTEGER element (shared mode builds one per operation)."""
    content = encodeInteger(messageID)
    return bytes((INTEGER, len(content))) + content


def withMessageID(pdu: bytes, messageID: int) -> bytes:
    """
    The same LDAPMessage under another messageID, every other byte kept.
    The INTEGER may change length (1 to 5 octets), so the outer SEQUENCE
    length is re-encoded too (short or long form as needed).
    """
    _, _, opStart = messageIDSpan(pdu)
    content = encodeInteger(messageID)
    bodyLength = 2 + len(content) + len(pdu) - opStart
    if bodyLength < 0x80:
        return bytes((SEQUENCE, bodyLength, INTEGER, len(content))) + content + pdu[opStart:]
    return b"\x30" + encodeLength(bodyLength) + bytes((INTEGER, len(content))) + content + pdu[opStart:]


def opSpan(pdu: bytes) -> tuple[int, int, int]:
    """
    C{(messageID, opStart, opEnd)} of a framed LDAPMessage.

    @raise FramingError: as L{messageSpans}.
    """
    messageID, _, opStart, opEnd = messageSpans(pdu)
    return messageID, opStart, opEnd


def messageSpans(pdu: bytes) -> tuple[int, int, int, int]:
    """
    C{(messageID, idStart, opStart, opEnd)} of a framed LDAPMessage (shared
    mode reads this of every request: C{pdu[idStart:opStart]} is the
    messageID INTEGER element its answers carry back).

    @raise FramingError: as L{messageIDSpan}, or a protocolOp that is
        truncated or longer than its message.
    """
    messageID, idStart, opStart = messageIDSpan(pdu)
    end = len(pdu)
    if opStart + 1 >= end:
        raise FramingError("malformed", "truncated protocolOp")
    first = pdu[opStart + 1]
    if first < 0x80:
        opEnd = opStart + 2 + first
    else:
        header = readLength(pdu, opStart + 1, end)
        if header is None:
            raise FramingError("malformed", "truncated protocolOp")
        opEnd = header[1] + header[0]
    if opEnd > end:
        raise FramingError("malformed", "protocolOp longer than its LDAPMessage")
    return messageID, idStart, opStart, opEnd


def splitMessage(pdu: bytes) -> tuple[bytes, int, bytes, bytes]:
    """
    C{(messageID element, protocolOp tag, protocolOp element, rest)}, where
    C{rest} holds the controls exactly as sent; L{joinMessage} is the
    inverse.
    """
    tag, start, end = readTLV(pdu, 0)
    if tag != SEQUENCE:
        raise FramingError("not-ldap", f"expected an LDAPMessage SEQUENCE, got tag 0x{tag:02x}")
    _, _, idEnd = readTLV(pdu, start, end)
    opTag, _, opEnd = readTLV(pdu, idEnd, end)
    return pdu[start:idEnd], opTag, pdu[idEnd:opEnd], pdu[opEnd:end]


def joinMessage(messageID: bytes, op: bytes, rest: bytes) -> bytes:
    """An LDAPMessage from the three parts L{splitMessage} returns."""
    return tlv(SEQUENCE, messageID + op + rest)


# --- controls -----------------------------------------------------------------


def reframe(pdu: bytes, messageID: int, control: bytes = b"") -> bytes:
    """
    A request under another messageID, with C{control} (one encoded
    Control) appended to its controls: a C{[0]} controls element is added
    when the request has none, or the existing one grows by C{control}.
    """
    if not control:
        return withMessageID(pdu, messageID)
    _, opStart, opEnd = opSpan(pdu)
    return reframeAt(pdu, opStart, opEnd, messageID, control, tlv(CONTROLS_TAG, control))


def reframeAt(pdu: bytes, opStart: int, opEnd: int, messageID: int, control: bytes, controlsElement: bytes) -> bytes:
    """
    L{reframe} with the request already parsed (L{opSpan}) and, for a
    request without controls of its own, the whole C{[0]} element holding
    C{control} given (C{controlsElement}: the same for every operation of
    an identity, so the caller builds it once).
    """
    if opEnd == len(pdu):
        controls = controlsElement
    elif pdu[opEnd] != CONTROLS_TAG:
        raise FramingError("malformed", "unexpected data after protocolOp")
    elif control:
        _, start, end = readTLV(pdu, opEnd)
        controls = tlv(CONTROLS_TAG, pdu[start:end] + control)
    else:
        controls = pdu[opEnd:]
    # the header and messageID in one piece, as withMessageID: per request
    # (L{encodeInteger}, inline: messageIDs are never negative)
    content = messageID.to_bytes((messageID.bit_length() + 8) // 8, "big")
    bodyLength = 2 + len(content) + (opEnd - opStart) + len(controls)
    if bodyLength < 0x80:
        header = bytes((SEQUENCE, bodyLength, INTEGER, len(content))) + content
    else:
        header = b"\x30" + encodeLength(bodyLength) + bytes((INTEGER, len(content))) + content
    return b"".join((header, pdu[opStart:opEnd], controls))


def control(oid: bytes, critical: bool = False, value: bytes | None = None) -> bytes:
    """One encoded Control (RFC 4511 4.1.11)."""
    body = tlv(OCTET_STRING, oid)
    if critical:
        body += b"\x01\x01\xff"
    if value is not None:
        body += tlv(OCTET_STRING, value)
    return tlv(SEQUENCE, body)


def proxiedAuthorization(authzId: bytes) -> bytes:
    """
    The Proxied Authorization control (RFC 4370), critical, asserting
    C{authzId} (C{dn:...}, or empty for the anonymous identity).
    """
    return control(PROXIED_AUTHZ_OID, critical=True, value=authzId)


def controlsAfter(pdu: bytes, opStart: int) -> bytes:
    """The raw controls element of a message (empty if it has none)."""
    return pdu[readTLV(pdu, opStart)[2] :]


def controlOIDs(rest: bytes) -> list[bytes]:
    """The OIDs of the controls in the bytes after a message's protocolOp."""
    oids: list[bytes] = []
    if rest[:1] != bytes((CONTROLS_TAG,)):
        return oids
    _, start, end = readTLV(rest, 0)
    for _, _, controlStart, controlEnd in elements(rest, start, end):
        inner = elements(rest, controlStart, controlEnd)
        if inner and inner[0][0] == OCTET_STRING:
            oids.append(rest[inner[0][2] : inner[0][3]])
    return oids


# --- request fields -----------------------------------------------------------


def _opFields(pdu: bytes) -> tuple[bytes, list[tuple[int, bytes, int, int]]]:
    """The protocolOp of C{pdu} and its elements (offsets into the op)."""
    _, _, op, _ = splitMessage(pdu)
    _, start, end = readTLV(op, 0)
    return op, elements(op, start, end)


def extendedNameAt(pdu: bytes, opStart: int) -> bytes:
    """The requestName of the extended request whose tag is at C{opStart}."""
    _, start, end = readTLV(pdu, opStart)
    nameStart, nameEnd = readExpected(pdu, start, end, EXTENDED_NAME_TAG, "extended request without a name")
    return pdu[nameStart:nameEnd]


def abandonedIDAt(pdu: bytes, opStart: int) -> int:
    """The messageID named by the abandon request whose tag is at C{opStart}."""
    _, start, end = readTLV(pdu, opStart)
    if not 1 <= end - start <= 4:
        raise FramingError("malformed", "abandon request with a bad messageID")
    return int.from_bytes(pdu[start:end], "big", signed=True)


def cancelIDAt(pdu: bytes, opStart: int) -> int | None:
    """
    The cancelID of the Cancel request (RFC 3909) whose tag is at
    C{opStart}, or L{None} when its value is missing or unreadable.
    """
    try:
        _, start, end = readTLV(pdu, opStart)
        _, _, nameEnd = readTLV(pdu, start, end)
        tag, valueStart, valueEnd = readTLV(pdu, nameEnd, end)
        if tag != EXTENDED_VALUE_TAG:
            return None
        _, sequenceStart, sequenceEnd = readTLV(pdu, valueStart, valueEnd)
        tag, idStart, idEnd = readTLV(pdu, sequenceStart, sequenceEnd)
        if tag != INTEGER or not 1 <= idEnd - idStart <= 4:
            return None
        return int.from_bytes(pdu[idStart:idEnd], "big", signed=True)
    except FramingError:
        return None


def cancelRequest(messageID: int, cancelID: int) -> bytes:
    """An RFC 3909 Cancel extended request."""
    value = tlv(SEQUENCE, messageIDElement(cancelID))
    return ber.message(
        messageID,
        tlv(EXTENDED_REQUEST, tlv(EXTENDED_NAME_TAG, CANCEL_OID) + tlv(EXTENDED_VALUE_TAG, value)),
    )


def startTLSRequest(messageID: int) -> bytes:
    """The StartTLS extended request (RFC 4511 4.14.1)."""
    return ber.message(messageID, tlv(EXTENDED_REQUEST, tlv(EXTENDED_NAME_TAG, ber.STARTTLS_OID)))


def startTLSResponse(messageID: int, resultCode: int = 0, diagnosticMessage: str = "") -> bytes:
    """The StartTLS extended response, carrying the OID as responseName."""
    return ber.result(
        messageID,
        ber.EXTENDED_RESPONSE,
        resultCode,
        diagnosticMessage,
        extra=tlv(ber.EXTENDED_RESPONSE_NAME_TAG, ber.STARTTLS_OID),
    )


def rootDSESearchRequest(messageID: int, attributes: Iterable[bytes] = (b"1.1",), timeLimit: int = 0) -> bytes:
    """
    A base search of the rootDSE for C{(objectClass=*)}: the health probe's
    (asking for C{1.1}, no attributes) and CLDAP's rootDSE fetch.
    """
    content = (
        tlv(OCTET_STRING, b"")  # baseObject: the rootDSE
        + tlv(ENUMERATED, b"\x00")  # scope: baseObject
        + tlv(ENUMERATED, b"\x00")  # derefAliases: never
        + tlv(INTEGER, b"\x00")  # sizeLimit
        + tlv(INTEGER, encodeInteger(timeLimit))
        + tlv(ber.BOOLEAN, b"\x00")  # typesOnly: false
        + tlv(0x87, b"objectClass")  # filter: present
        + tlv(SEQUENCE, b"".join(tlv(OCTET_STRING, name) for name in attributes))
    )
    return ber.message(messageID, tlv(ber.SEARCH_REQUEST, content))


def searchScope(pdu: bytes) -> int:
    """The scope of a search request PDU."""
    op, fields = _opFields(pdu)
    if len(fields) < 2 or fields[1][0] != ENUMERATED:
        raise FramingError("malformed", "search request without a scope")
    return int.from_bytes(op[fields[1][2] : fields[1][3]], "big")


def searchSizeLimit(pdu: bytes) -> int:
    """The sizeLimit of a search request PDU (0: none)."""
    op, fields = _opFields(pdu)
    if len(fields) < 4 or fields[3][0] != INTEGER:
        raise FramingError("malformed", "search request without a sizeLimit")
    return int.from_bytes(op[fields[3][2] : fields[3][3]], "big")


def searchWith(pdu: bytes, base: bytes, scope: int) -> bytes:
    """A search request PDU with another base and scope, all else as sent."""
    messageID, opTag, op, rest = splitMessage(pdu)
    _, start, end = readTLV(op, 0)
    fields = elements(op, start, end)
    if len(fields) < 2:
        raise FramingError("malformed", "search request without a scope")
    body = tlv(OCTET_STRING, base) + tlv(ENUMERATED, bytes((scope,))) + b"".join(f[1] for f in fields[2:])
    return joinMessage(messageID, tlv(opTag, body), rest)


# --- the slow path: ldaptor ---------------------------------------------------

#: The one ldaptor decoder context of the package: protocolOps, with
#: ldaptor's LDAP types inside them and plain BER as the fallback.
_DECODER: Final = pureldap.LDAPBERDecoderContext(
    fallback=pureber.BERDecoderContext(),
    inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
)


def decodeOp(op: bytes) -> pureber.BERBase:
    """
    One protocolOp element decoded with ldaptor, for the slow path only
    (rewrites of requests whose shape ldaptor keeps intact).

    @raise FramingError: C{"malformed"} when ldaptor cannot decode all of it.
    """
    try:
        decoded, used = pureber.berDecodeObject(_DECODER, op)
    except Exception as e:  # ldaptor raises assorted errors on odd input
        raise FramingError("malformed", f"ldaptor cannot decode it: {e.__class__.__name__}") from None
    if decoded is None or used != len(op):
        raise FramingError("malformed", "ldaptor cannot decode it")
    return decoded
