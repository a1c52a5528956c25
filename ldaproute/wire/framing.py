# -*- test-case-name: tests.test_ber -*-
"""
Cutting a client's byte stream into whole LDAPMessages (L{Framer}) and
the element readers every other module walks a PDU with (L{readLength},
L{readTLV}, L{readExpected}, L{elements}, L{readInteger}).

Every reader here raises L{FramingError} with one of its four reason
words; no other module defines BER errors of its own.  The loops are
inline on purpose: this is the per-PDU hot path (DESIGN.md, "Data flow").
"""

from __future__ import annotations

from ldaproute.wire.tags import DEFAULT_MAX_PDU_BYTES, SEQUENCE


class FramingError(Exception):
    """
    The byte stream is not a sequence of well-formed LDAPMessages.

    The connection cannot be resynchronised after this: the only correct
    answer is a Notice of Disconnection (RFC 4511 4.4.1) and a close.

    @ivar reason: a short, stable word for metrics and logs
        (C{"not-ldap"}, C{"oversized"}, C{"indefinite-length"}, C{"malformed"}).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail}")
        self.reason = reason
        self.detail = detail


def readLength(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int] | None:
    """
    Read a BER definite length at C{buf[pos]}.

    @return: C{(length, position after the length octets)}, or L{None} when
        C{buf} ends before the length does.
    @raise FramingError: indefinite or absurdly long length forms.
    """
    if pos >= end:
        return None
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x80:
        raise FramingError("indefinite-length", "indefinite-length BER is not allowed in LDAP")
    count = first & 0x7F
    if count > 4:
        raise FramingError("oversized", f"BER length of {count} octets")
    if pos + 1 + count > end:
        return None
    return int.from_bytes(buf[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def readTLV(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int, int]:
    """
    C{(tag, contentStart, contentEnd)} of the BER element at C{pos}, which
    must lie wholly before C{end} (the end of C{buf} by default).

    The one element reader of the package: every module that takes a PDU
    apart below its envelope walks it with this (and L{readExpected},
    L{elements}), so a truncated or forged element gets the same answer
    everywhere.

    @raise FramingError: C{"malformed"} for a truncated element, a
        multi-octet tag (LDAP has none) or content that overruns C{end};
        C{"indefinite-length"} and C{"oversized"} as L{readLength}.
    """
    if end is None:
        end = len(buf)
    if pos + 2 > end:
        raise FramingError("malformed", "truncated element")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise FramingError("malformed", "multi-octet tags are not LDAP")
    first = buf[pos + 1]
    if first < 0x80:
        start = pos + 2
        stop = start + first
    else:
        header = readLength(buf, pos + 1, end)
        if header is None:
            raise FramingError("malformed", "truncated element")
        length, start = header
        stop = start + length
    if stop > end:
        raise FramingError("malformed", "truncated element: its length runs past what holds it")
    return tag, start, stop


def readExpected(buf: bytes, pos: int, end: int | None, tag: int, what: str) -> tuple[int, int]:
    """
    C{(contentStart, contentEnd)} of the BER element at C{pos}, which must
    have tag C{tag} and lie wholly before C{end} (the end of C{buf} when
    L{None}).

    Most fields of an LDAP PDU have one tag they must carry, so nearly every
    walk reads an element and refuses it when its tag is another.  This is
    that step written once, beside L{readTLV}: one element reader and one
    set of error words for the package, so a module that walks a PDU says
    only what it expected (C{what}), not how to read it or how to fail.

    @param what: the detail of the L{FramingError} raised when the tag
        differs (tests and logs read it: keep it stable).
    @raise FramingError: C{"malformed"} with C{what} when the element's tag
        is not C{tag}; otherwise as L{readTLV}.
    """
    found, start, stop = readTLV(buf, pos, end)
    if found != tag:
        raise FramingError("malformed", what)
    return start, stop


def elements(buf: bytes, start: int, end: int) -> list[tuple[int, bytes, int, int]]:
    """
    The elements between C{start} and C{end} (the content of a SEQUENCE or
    SET), each as C{(tag, whole element, contentStart, contentEnd)}.

    @raise FramingError: as L{readTLV}.
    """
    out = []
    pos = start
    while pos < end:
        tag, contentStart, contentEnd = readTLV(buf, pos, end)
        out.append((tag, buf[pos:contentEnd], contentStart, contentEnd))
        pos = contentEnd
    return out


def readInteger(buf: bytes, start: int, end: int) -> int:
    """The value of the INTEGER or ENUMERATED whose content is C{buf[start:end]}."""
    return int.from_bytes(buf[start:end], "big", signed=True)


class Framer:
    """
    Split a byte stream into whole LDAPMessage PDUs.

    Input arrives in arbitrary pieces; C{feed} returns the PDUs completed by
    each piece, keeping any partial PDU for the next call.  The declared
    length is checked against C{maxPDUBytes} as soon as the header is read,
    so an oversized message is refused before its body is buffered.
    """

    def __init__(self, maxPDUBytes: int = DEFAULT_MAX_PDU_BYTES) -> None:
        self.maxPDUBytes = maxPDUBytes
        self._buffer = b""

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete PDU are held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add C{data} to the stream.

        @return: every PDU now complete, in order, each as its own bytes.
        @raise FramingError: the stream is not LDAP, or a PDU is too big.
        """
        if not self._buffer:
            # the common case: a read that is exactly one PDU
            end = len(data)
            if end >= 2 and data[0] == SEQUENCE:
                first = data[1]
                if first < 0x80:
                    total = 2 + first
                elif first == 0x81 and end >= 3:
                    total = 3 + data[2]
                elif first == 0x82 and end >= 4:
                    total = 4 + (data[2] << 8 | data[3])
                elif first == 0x84 and end >= 6:  # libldap's fixed four-octet form
                    total = 6 + int.from_bytes(data[2:6], "big")
                else:
                    total = -1
                if total == end and total <= self.maxPDUBytes:
                    return [data]
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        pdus = []
        maxBytes = self.maxPDUBytes
        while end - pos >= 2:
            if buf[pos] != SEQUENCE:
                raise FramingError("not-ldap", f"expected an LDAPMessage SEQUENCE, got tag 0x{buf[pos]:02x}")
            first = buf[pos + 1]
            if first < 0x80:
                total = 2 + first
            else:
                header = readLength(buf, pos + 1, end)
                if header is None:
                    break
                length, bodyStart = header
                total = bodyStart - pos + length
            if total > maxBytes:
                raise FramingError("oversized", f"PDU of {total} bytes exceeds the limit of {maxBytes}")
            if end - pos < total:
                break
            pdus.append(buf[pos : pos + total] if (pos or total != end) else buf)
            pos += total
        self._buffer = buf[pos:] if pos < end else b""
        return pdus
