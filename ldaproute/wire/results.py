# -*- test-case-name: tests.test_pdu -*-
"""
Reading what a backend answers, whole PDU by whole PDU: a response's
LDAPResult (L{readResponse}, for health probes, fan-out and tests), an
unsolicited notification (L{noticeOf}), and search result entries, read
and written (L{readEntry}, L{searchResultEntry}, for fan-out and CLDAP).

Apart from L{ldaproute.wire.pdu}, which edits requests: nothing here is on
the relay's per-PDU path (that is L{ldaproute.wire.responses}); these are
the slow path's and the probes' reads.  Errors are L{ber.FramingError}.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


from ldaproute.wire import ber
from ldaproute.wire.ber import (
    ENUMERATED,
    OCTET_STRING,
    REFERRAL_TAG,
    SEQUENCE,
    SET,
    FramingError,
    elements,
    readTLV,
    tlv,
)
from ldaproute.wire.pdu import messageIDSpan


# --- responses ----------------------------------------------------------------


class Response(NamedTuple):
    """
    What the proxy reads of a response PDU.  For PDUs without an LDAPResult
    (entries, references, intermediate responses) C{resultCode} is -1 and
    the other fields are empty.

    @ivar referral: the content of the result's referral (a SEQUENCE OF
        URI as sent), empty without one.
    """

    messageID: int
    opTag: int
    resultCode: int
    matchedDN: bytes
    diagnosticMessage: str
    referral: bytes


def readResponse(pdu: bytes) -> Response:
    """
    The L{Response} of one framed response PDU.

    @raise FramingError: not a well-formed LDAPMessage, or a final
        response whose LDAPResult is malformed.
    """
    messageID, _, opStart = messageIDSpan(pdu)
    opTag, start, end = readTLV(pdu, opStart)
    if opTag not in ber.FINAL_RESPONSES:
        return Response(messageID, opTag, -1, b"", "", b"")
    fields = elements(pdu, start, end)
    if len(fields) < 3 or fields[0][0] != ENUMERATED or fields[1][0] != OCTET_STRING or fields[2][0] != OCTET_STRING:
        raise FramingError("malformed", "response without an LDAPResult")
    referral = b""
    if len(fields) > 3 and fields[3][0] == REFERRAL_TAG:
        referral = pdu[fields[3][2] : fields[3][3]]
    return Response(
        messageID,
        opTag,
        int.from_bytes(pdu[fields[0][2] : fields[0][3]], "big"),
        pdu[fields[1][2] : fields[1][3]],
        pdu[fields[2][2] : fields[2][3]].decode("utf-8", "replace"),
        referral,
    )


def noticeOf(pdu: bytes) -> tuple[int, str]:
    """
    C{(resultCode, diagnosticMessage)} of an unsolicited notification; a
    garbled notice still means the server is closing, so it reads as
    C{(-1, "")} rather than raising.
    """
    try:
        response = readResponse(pdu)
    except FramingError:
        return -1, ""
    return response.resultCode, response.diagnosticMessage


# --- search result entries ----------------------------------------------------


def searchResultEntry(objectName: bytes, attributes: Iterable[tuple[bytes, Iterable[bytes]]]) -> bytes:
    """A SearchResultEntry protocolOp (the proxy's own root DSE, CLDAP's Netlogon)."""
    body = b"".join(
        tlv(SEQUENCE, tlv(OCTET_STRING, name) + tlv(SET, b"".join(tlv(OCTET_STRING, v) for v in values)))
        for name, values in attributes
    )
    return tlv(ber.SEARCH_RESULT_ENTRY, tlv(OCTET_STRING, objectName) + tlv(SEQUENCE, body))


def readEntry(op: bytes) -> tuple[bytes, list[tuple[bytes, list[bytes]]]]:
    """
    C{(objectName, [(attribute, [values])])} of a SearchResultEntry
    protocolOp; L{searchResultEntry} is the inverse.

    @raise FramingError: not a well-formed entry.
    """
    tag, start, end = readTLV(op, 0)
    parts = elements(op, start, end)
    if tag != ber.SEARCH_RESULT_ENTRY or len(parts) != 2 or parts[0][0] != OCTET_STRING or parts[1][0] != SEQUENCE:
        raise FramingError("malformed", "bad search result entry")
    attributes = []
    for attributeTag, _, attributeStart, attributeEnd in elements(op, parts[1][2], parts[1][3]):
        inner = elements(op, attributeStart, attributeEnd)
        if attributeTag != SEQUENCE or len(inner) != 2 or inner[0][0] != OCTET_STRING:
            raise FramingError("malformed", "bad partial attribute")
        values = [op[s:e] for _, _, s, e in elements(op, inner[1][2], inner[1][3])]
        attributes.append((op[inner[0][2] : inner[0][3]], values))
    return op[parts[0][2] : parts[0][3]], attributes


__all__ = ["Response", "noticeOf", "readEntry", "readResponse", "searchResultEntry"]
