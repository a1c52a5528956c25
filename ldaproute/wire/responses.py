# -*- test-case-name: tests.test_ber -*-
"""
Walking a backend's response stream without copying it
(L{ResponseScanner}): which operations a chunk ends, and their result
codes (L{resultCodeAt}).  Apart from L{ldaproute.wire.framing} because it
reads the other direction, backend to client, and only needs the final
responses' messageIDs; its loop is inline on purpose (hot path).
"""

from __future__ import annotations

from ldaproute.wire.tags import (
    SEARCH_RESULT_ENTRY,
    SEARCH_RESULT_REFERENCE,
    INTERMEDIATE_RESPONSE,
    FINAL_RESPONSES,
    INTEGER,
    ENUMERATED,
    SEQUENCE,
)
from ldaproute.wire.framing import FramingError, readLength


class ResponseScanner:
    """
    Walk a backend's response stream PDU by PDU without copying it.

    The relay forwards whole chunks of the backend's bytes; it only needs to
    know which operations a chunk ends (their final response), and for bind
    responses the result code.  C{feed} returns the bytes that are complete
    PDUs, ready to be written to the client as they are, and the
    C{(messageID, tag, resultCode)} of each final response among them
    (C{resultCode} is -1 when unreadable).  C{entries} counts search result
    entries by messageID, for the access log (pop it when the search ends);
    C{partial} holds the operations still open that got other responses
    before their final one (references, intermediate responses), so that
    with C{entries} it tells whether any of an answer was relayed.
    """

    def __init__(self, maxPDUBytes: int) -> None:
        self.maxPDUBytes = maxPDUBytes
        self._buffer = b""
        self.entries: dict[int, int] = {}
        self.partial: set[int] = set()
        #: a final response with messageID 0 (a Notice of Disconnection) was
        #: seen since the holder last cleared this
        self.unsolicited = False

    def feed(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        """
        @return: C{(complete, finals)}.
        @raise FramingError: the backend sent something that is not LDAP.
        """
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        finals = []
        maxBytes = self.maxPDUBytes
        entries = self.entries
        partial = self.partial
        while end - pos >= 2:
            if buf[pos] != SEQUENCE:
                raise FramingError("not-ldap", f"backend sent tag 0x{buf[pos]:02x}, not an LDAPMessage")
            first = buf[pos + 1]
            if first < 0x80:  # the length forms slapd uses, inline
                bodyStart = pos + 2
                total = 2 + first
            elif first == 0x84 and end - pos >= 6:
                bodyStart = pos + 6
                total = 6 + int.from_bytes(buf[pos + 2 : pos + 6], "big")
            else:
                header = readLength(buf, pos + 1, end)
                if header is None:
                    break
                length, bodyStart = header
                total = bodyStart - pos + length
            if total > maxBytes:
                raise FramingError("oversized", f"backend PDU of {total} bytes exceeds the limit of {maxBytes}")
            if end - pos < total:
                break
            # messageID: INTEGER, short length
            if buf[bodyStart] != INTEGER or bodyStart + 2 >= pos + total:
                raise FramingError("malformed", "backend PDU without a messageID")
            idLength = buf[bodyStart + 1]
            tagAt = bodyStart + 2 + idLength
            if idLength > 4 or tagAt >= pos + total:
                raise FramingError("malformed", "backend PDU with a bad messageID")
            if idLength == 0 or buf[bodyStart + 2] & 0x80:
                raise FramingError("malformed", "backend PDU with a negative or empty messageID")
            tag = buf[tagAt]
            if tag in FINAL_RESPONSES:
                messageID = int.from_bytes(buf[bodyStart + 2 : tagAt], "big")
                finals.append((messageID, tag, resultCodeAt(buf, tagAt, pos + total)))
                if partial:
                    partial.discard(messageID)
                if not messageID:
                    self.unsolicited = True
            elif tag == SEARCH_RESULT_ENTRY:
                messageID = int.from_bytes(buf[bodyStart + 2 : tagAt], "big")
                entries[messageID] = entries.get(messageID, 0) + 1
            elif tag == SEARCH_RESULT_REFERENCE or tag == INTERMEDIATE_RESPONSE:
                partial.add(int.from_bytes(buf[bodyStart + 2 : tagAt], "big"))
            pos += total
        if pos == end:
            self._buffer = b""
            return (buf if pos else b""), finals
        self._buffer = buf[pos:]
        return buf[:pos], finals


def resultCodeAt(buf: bytes, tagAt: int, end: int) -> int:
    """
    The resultCode of the LDAPResult whose protocolOp tag is at C{tagAt}, or
    -1 when it cannot be read (the relay passes such a PDU on regardless).
    """
    first = buf[tagAt + 1] if tagAt + 1 < end else 0x80
    if first < 0x80:
        pos = tagAt + 2
    else:
        header = readLength(buf, tagAt + 1, end)
        if header is None:
            return -1
        _, pos = header
    if pos + 2 >= end or buf[pos] != ENUMERATED:
        return -1
    n = buf[pos + 1]
    return int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")
