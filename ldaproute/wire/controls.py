# -*- test-case-name: tests.test_sequences -*-
"""
Reading and writing the few controls whose state a directory server keeps
per connection: paged results (RFC 2696), server-side sort (RFC 2891) and
virtual list view (draft-ietf-ldapext-ldapv3-vlv).

Shared mode must know when such a sequence starts and ends to give it a
connection of its own (L{ldaproute.backends.sequences}); these are the
byte-level reads it needs, no ldaptor decode: the value of one control, the
size and cookie of a paged-results value.  Each raises
L{ber.FramingError} like every other reader of L{ldaproute.wire}.
"""

from __future__ import annotations

from typing import Final

from ldaproute.wire.ber import CONTROLS_TAG, INTEGER, OCTET_STRING, SEQUENCE, encodeInteger, readExpected, readTLV, tlv
from ldaproute.wire.pdu import PAGED_RESULTS_OID, control, opSpan

__all__ = [
    "PAGED_RESULTS_OID",
    "SORT_REQUEST_OID",
    "VLV_REQUEST_OID",
    "controlValue",
    "pagedControl",
    "pagedValue",
    "responseControls",
]

SORT_REQUEST_OID: Final = b"1.2.840.113556.1.4.473"
VLV_REQUEST_OID: Final = b"2.16.840.1.113730.3.4.9"

_CONTROLS = bytes((CONTROLS_TAG,))


def controlValue(rest: bytes, oid: bytes) -> bytes | None:
    """
    The controlValue of the first control C{oid} among C{rest} (the bytes
    after a message's protocolOp): C{b""} when it has none, L{None} when the
    control is absent.
    """
    if rest[:1] != _CONTROLS:
        return None
    _, pos, end = readTLV(rest, 0)
    while pos < end:
        _, start, stop = readTLV(rest, pos, end)
        pos = stop
        tag, oidStart, oidEnd = readTLV(rest, start, stop)
        if tag != OCTET_STRING or rest[oidStart:oidEnd] != oid:
            continue
        at = oidEnd
        while at < stop:
            tag, valueStart, valueEnd = readTLV(rest, at, stop)
            if tag == OCTET_STRING:
                return rest[valueStart:valueEnd]
            at = valueEnd
        return b""
    return None


def pagedValue(value: bytes) -> tuple[int, bytes]:
    """
    C{(size, cookie)} of a paged-results control value (the same shape in
    requests and responses).

    @raise FramingError: not a SEQUENCE of an INTEGER and an OCTET STRING.
    """
    start, end = readExpected(value, 0, None, SEQUENCE, "paged results value is not a SEQUENCE")
    sizeStart, sizeEnd = readExpected(value, start, end, INTEGER, "paged results value without a size")
    cookieStart, cookieEnd = readExpected(value, sizeEnd, end, OCTET_STRING, "paged results value without a cookie")
    return int.from_bytes(value[sizeStart:sizeEnd], "big", signed=True), value[cookieStart:cookieEnd]


def pagedControl(size: int, cookie: bytes) -> bytes:
    """A paged-results control (non-critical, as servers send it)."""
    return control(PAGED_RESULTS_OID, value=tlv(SEQUENCE, tlv(INTEGER, encodeInteger(size)) + tlv(OCTET_STRING, cookie)))


def responseControls(pdu: bytes) -> bytes:
    """The raw controls element of a response PDU (empty if it has none)."""
    _, _, opEnd = opSpan(pdu)
    return pdu[opEnd:]
