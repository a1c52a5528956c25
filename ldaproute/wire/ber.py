# -*- test-case-name: tests.test_ber -*-
"""
Byte-level BER for the hot path: framing LDAPMessages out of a byte stream,
reading their envelope (messageID, operation, first field), and writing the
few small PDUs the proxy says itself (results, Notice of Disconnection).

Nothing here builds ldaptor objects: a proxied operation costs a handful of
slice and integer reads, which is what keeps the relay cheaper than a full
decode (DESIGN.md, "Data flow").  ldaptor's C{pureldap} is the codec for the
slow path only.
"""

from __future__ import annotations

from typing import Final


# protocolOp tags (RFC 4511 section 4.2 onwards), requests
BIND_REQUEST: Final = 0x60
UNBIND_REQUEST: Final = 0x42
SEARCH_REQUEST: Final = 0x63
MODIFY_REQUEST: Final = 0x66
ADD_REQUEST: Final = 0x68
DEL_REQUEST: Final = 0x4A
MODDN_REQUEST: Final = 0x6C
COMPARE_REQUEST: Final = 0x6E
ABANDON_REQUEST: Final = 0x50
EXTENDED_REQUEST: Final = 0x77

# responses
BIND_RESPONSE: Final = 0x61
SEARCH_RESULT_ENTRY: Final = 0x64
SEARCH_RESULT_DONE: Final = 0x65
SEARCH_RESULT_REFERENCE: Final = 0x73
MODIFY_RESPONSE: Final = 0x67
ADD_RESPONSE: Final = 0x69
DEL_RESPONSE: Final = 0x6B
MODDN_RESPONSE: Final = 0x6D
COMPARE_RESPONSE: Final = 0x6F
EXTENDED_RESPONSE: Final = 0x78
INTERMEDIATE_RESPONSE: Final = 0x79

#: The response that ends each request that has one.
RESPONSE_FOR: Final[dict[int, int]] = {
    BIND_REQUEST: BIND_RESPONSE,
    SEARCH_REQUEST: SEARCH_RESULT_DONE,
    MODIFY_REQUEST: MODIFY_RESPONSE,
    ADD_REQUEST: ADD_RESPONSE,
    DEL_REQUEST: DEL_RESPONSE,
    MODDN_REQUEST: MODDN_RESPONSE,
    COMPARE_REQUEST: COMPARE_RESPONSE,
    EXTENDED_REQUEST: EXTENDED_RESPONSE,
}

#: Response tags that end an operation (entries, references and intermediate
#: responses do not).
FINAL_RESPONSES: Final = frozenset(RESPONSE_FOR.values())

REQUEST_TAGS: Final = frozenset(RESPONSE_FOR) | {UNBIND_REQUEST, ABANDON_REQUEST}

#: Short operation names, used in logs, metrics labels and route matching.
OPERATION_NAMES: Final[dict[int, str]] = {
    BIND_REQUEST: "bind",
    UNBIND_REQUEST: "unbind",
    SEARCH_REQUEST: "search",
    MODIFY_REQUEST: "modify",
    ADD_REQUEST: "add",
    DEL_REQUEST: "delete",
    MODDN_REQUEST: "modifyDN",
    COMPARE_REQUEST: "compare",
    ABANDON_REQUEST: "abandon",
    EXTENDED_REQUEST: "extended",
}

CONTROLS_TAG: Final = 0xA0
SIMPLE_AUTH_TAG: Final = 0x80
SASL_AUTH_TAG: Final = 0xA3
EXTENDED_NAME_TAG: Final = 0x80
EXTENDED_VALUE_TAG: Final = 0x81
EXTENDED_RESPONSE_NAME_TAG: Final = 0x8A

STARTTLS_OID: Final = b"1.3.6.1.4.1.1466.20037"
NOTICE_OF_DISCONNECTION_OID: Final = b"1.3.6.1.4.1.1466.20036"

# result codes the proxy itself uses (RFC 4511 appendix A)
SUCCESS: Final = 0
OPERATIONS_ERROR: Final = 1
PROTOCOL_ERROR: Final = 2
TIME_LIMIT_EXCEEDED: Final = 3
SIZE_LIMIT_EXCEEDED: Final = 4
AUTH_METHOD_NOT_SUPPORTED: Final = 7
CONFIDENTIALITY_REQUIRED: Final = 13
SASL_BIND_IN_PROGRESS: Final = 14
INVALID_CREDENTIALS: Final = 49
INSUFFICIENT_ACCESS_RIGHTS: Final = 50
BUSY: Final = 51
UNAVAILABLE: Final = 52
UNWILLING_TO_PERFORM: Final = 53
OTHER: Final = 80

#: Default cap on one PDU from a client: large enough for any sane add or
#: modify (a few photos), small enough that a forged length cannot make us
#: buffer gigabytes.
DEFAULT_MAX_PDU_BYTES: Final = 4 * 1024 * 1024

_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02
_ENUMERATED: Final = 0x0A
_OCTET_STRING: Final = 0x04


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


def _readLength(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int] | None:
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
            if end >= 2 and data[0] == _SEQUENCE:
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
            if buf[pos] != _SEQUENCE:
                raise FramingError("not-ldap", f"expected an LDAPMessage SEQUENCE, got tag 0x{buf[pos]:02x}")
            first = buf[pos + 1]
            if first < 0x80:
                total = 2 + first
            else:
                header = _readLength(buf, pos + 1, end)
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


class ResponseScanner:
    """
    Walk a backend's response stream PDU by PDU without copying it.

    The relay forwards whole chunks of the backend's bytes; it only needs to
    know which operations a chunk ends (their final response), and for bind
    responses the result code.  C{feed} returns the bytes that are complete
    PDUs, ready to be written to the client as they are, and the
    C{(messageID, tag, resultCode)} of each final response among them
    (C{resultCode} is -1 when unreadable).  C{entries} counts search result
    entries by messageID, for the access log (pop it when the search ends).
    """

    def __init__(self, maxPDUBytes: int) -> None:
        self.maxPDUBytes = maxPDUBytes
        self._buffer = b""
        self.entries: dict[int, int] = {}

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
        while end - pos >= 2:
            if buf[pos] != _SEQUENCE:
                raise FramingError("not-ldap", f"backend sent tag 0x{buf[pos]:02x}, not an LDAPMessage")
            first = buf[pos + 1]
            if first < 0x80:  # the length forms slapd uses, inline
                bodyStart = pos + 2
                total = 2 + first
            elif first == 0x84 and end - pos >= 6:
                bodyStart = pos + 6
                total = 6 + int.from_bytes(buf[pos + 2 : pos + 6], "big")
            else:
                header = _readLength(buf, pos + 1, end)
                if header is None:
                    break
                length, bodyStart = header
                total = bodyStart - pos + length
            if total > maxBytes:
                raise FramingError("oversized", f"backend PDU of {total} bytes exceeds the limit of {maxBytes}")
            if end - pos < total:
                break
            # messageID: INTEGER, short length
            if buf[bodyStart] != _INTEGER or bodyStart + 2 >= pos + total:
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
                finals.append((messageID, tag, _resultCodeAt(buf, tagAt, pos + total)))
            elif tag == SEARCH_RESULT_ENTRY:
                messageID = int.from_bytes(buf[bodyStart + 2 : tagAt], "big")
                entries[messageID] = entries.get(messageID, 0) + 1
            pos += total
        if pos == end:
            self._buffer = b""
            return (buf if pos else b""), finals
        self._buffer = buf[pos:]
        return buf[:pos], finals


def _resultCodeAt(buf: bytes, tagAt: int, end: int) -> int:
    """The resultCode of the LDAPResult whose protocolOp tag is at C{tagAt}."""
    first = buf[tagAt + 1] if tagAt + 1 < end else 0x80
    if first < 0x80:
        pos = tagAt + 2
    else:
        header = _readLength(buf, tagAt + 1, end)
        if header is None:
            return -1
        _, pos = header
    if pos + 2 >= end or buf[pos] != _ENUMERATED:
        return -1
    n = buf[pos + 1]
    return int.from_bytes(buf[pos + 2 : pos + 2 + n], "big")


def readElement(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """
    C{(tag, contentStart, contentEnd)} of the BER element at C{buf[pos]},
    which must end by C{end}: the one step every byte-level walk inside an
    operation takes.

    @raise FramingError: truncated, indefinite-length or overrunning.
    """
    if pos + 2 > end:
        raise FramingError("malformed", "truncated BER element")
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        start = pos + 2
        length = first
    else:
        header = _readLength(buf, pos + 1, end)
        if header is None:
            raise FramingError("malformed", "truncated BER length")
        length, start = header
    if start + length > end:
        raise FramingError("malformed", "BER element overruns its container")
    return tag, start, start + length


class Envelope:
    """
    What the proxy reads of a request PDU without decoding it: its
    messageID, its operation tag, and where the operation's content lies, so
    the first field (target DN, bind name, extended OID) can be read on
    demand.

    One is made per request, so it is a plain slotted class (an attrs
    frozen class costs a microsecond more to build); treat it as immutable.

    @ivar contentStart: offset of the protocolOp's content (after its tag
        and length); C{contentEnd} the offset just past it.
    """

    __slots__ = ("messageID", "opTag", "contentStart", "contentEnd", "hasControls")

    def __init__(self, messageID: int, opTag: int, contentStart: int, contentEnd: int, hasControls: bool) -> None:
        self.messageID = messageID
        self.opTag = opTag
        self.contentStart = contentStart
        self.contentEnd = contentEnd
        self.hasControls = hasControls

    def _fields(self) -> tuple[int, int, int, int, bool]:
        return (self.messageID, self.opTag, self.contentStart, self.contentEnd, self.hasControls)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Envelope):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Envelope(messageID={}, opTag=0x{:02x}, contentStart={}, contentEnd={}, hasControls={})".format(
            *self._fields()[:1], self.opTag, self.contentStart, self.contentEnd, self.hasControls
        )

    @classmethod
    def fromBytes(cls, pdu: bytes) -> Envelope:
        """
        Read the envelope of one framed request PDU (as returned by
        L{Framer.feed}).

        @raise FramingError: not a well-formed LDAPMessage request.
        """
        end = len(pdu)
        header = _readLength(pdu, 1, end)
        if header is None:
            raise FramingError("malformed", "truncated LDAPMessage")
        _, pos = header
        if pos + 2 > end or pdu[pos] != _INTEGER:
            raise FramingError("malformed", "LDAPMessage without a messageID")
        idLength = pdu[pos + 1]
        if not 1 <= idLength <= 4 or pos + 2 + idLength >= end:
            raise FramingError("malformed", "LDAPMessage with a bad messageID")
        messageID = int.from_bytes(pdu[pos + 2 : pos + 2 + idLength], "big", signed=True)
        if messageID < 0:
            raise FramingError("malformed", "negative messageID")
        pos += 2 + idLength
        opTag = pdu[pos]
        if opTag not in REQUEST_TAGS:
            raise FramingError("malformed", f"unknown request operation tag 0x{opTag:02x}")
        header = _readLength(pdu, pos + 1, end)
        if header is None:
            raise FramingError("malformed", "truncated protocolOp")
        length, contentStart = header
        contentEnd = contentStart + length
        if contentEnd > end:
            raise FramingError("malformed", "protocolOp longer than its LDAPMessage")
        hasControls = False
        if contentEnd < end:
            if pdu[contentEnd] != CONTROLS_TAG:
                raise FramingError("malformed", "unexpected data after protocolOp")
            hasControls = True
        return cls(messageID, opTag, contentStart, contentEnd, hasControls)

    def _firstString(self, pdu: bytes, pos: int) -> tuple[bytes, int]:
        """Read the OCTET STRING (any tag) at C{pos} in the content."""
        header = _readLength(pdu, pos + 1, self.contentEnd)
        if header is None:
            raise FramingError("malformed", "truncated operation field")
        length, start = header
        if start + length > self.contentEnd:
            raise FramingError("malformed", "operation field overruns its operation")
        return pdu[start : start + length], start + length

    def targetDN(self, pdu: bytes) -> bytes | None:
        """
        The DN the operation acts on (the bind name for a bind, the base for
        a search), as the client sent it; L{None} for operations without
        one (extended, abandon, unbind).

        @raise FramingError: the field is malformed.
        """
        tag = self.opTag
        if tag == DEL_REQUEST:
            return pdu[self.contentStart : self.contentEnd]
        if tag == BIND_REQUEST:
            # version INTEGER, then name
            pos = self.contentStart
            if pos + 2 > self.contentEnd or pdu[pos] != _INTEGER:
                raise FramingError("malformed", "bind request without a version")
            pos += 2 + pdu[pos + 1]
            if pos >= self.contentEnd or pdu[pos] != _OCTET_STRING:
                raise FramingError("malformed", "bind request without a name")
            return self._firstString(pdu, pos)[0]
        if tag in (SEARCH_REQUEST, MODIFY_REQUEST, ADD_REQUEST, MODDN_REQUEST, COMPARE_REQUEST):
            pos = self.contentStart
            if pos >= self.contentEnd or pdu[pos] != _OCTET_STRING:
                raise FramingError("malformed", "operation without a DN")
            return self._firstString(pdu, pos)[0]
        return None

    def bindAuthentication(self, pdu: bytes) -> tuple[int, bytes]:
        """
        For a bind request: the authentication choice tag (L{SIMPLE_AUTH_TAG}
        or L{SASL_AUTH_TAG}) and, for simple binds, the password (for SASL,
        the mechanism name).

        @raise FramingError: not a well-formed bind request.
        """
        pos = self.contentStart
        if pos + 2 > self.contentEnd or pdu[pos] != _INTEGER:
            raise FramingError("malformed", "bind request without a version")
        pos += 2 + pdu[pos + 1]
        if pos >= self.contentEnd or pdu[pos] != _OCTET_STRING:
            raise FramingError("malformed", "bind request without a name")
        _, pos = self._firstString(pdu, pos)
        if pos >= self.contentEnd:
            raise FramingError("malformed", "bind request without authentication")
        choice = pdu[pos]
        if choice == SIMPLE_AUTH_TAG:
            return choice, self._firstString(pdu, pos)[0]
        if choice == SASL_AUTH_TAG:
            header = _readLength(pdu, pos + 1, self.contentEnd)
            if header is None:
                raise FramingError("malformed", "truncated SASL credentials")
            _, inner = header
            if inner >= self.contentEnd or pdu[inner] != _OCTET_STRING:
                raise FramingError("malformed", "SASL bind without a mechanism")
            return choice, self._firstString(pdu, inner)[0]
        return choice, b""

    def extendedName(self, pdu: bytes) -> bytes | None:
        """The requestName OID of an extended request, else L{None}."""
        if self.opTag != EXTENDED_REQUEST:
            return None
        pos = self.contentStart
        if pos >= self.contentEnd or pdu[pos] != EXTENDED_NAME_TAG:
            raise FramingError("malformed", "extended request without a name")
        return self._firstString(pdu, pos)[0]

    def abandonedID(self, pdu: bytes) -> int:
        """The messageID an abandon request names."""
        raw = pdu[self.contentStart : self.contentEnd]
        if not 1 <= len(raw) <= 4:
            raise FramingError("malformed", "abandon request with a bad messageID")
        return int.from_bytes(raw, "big", signed=True)


# --- writing ----------------------------------------------------------------


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
    return tlv(_SEQUENCE, tlv(_INTEGER, encodeInteger(messageID)) + protocolOp + controls)


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
        tlv(_ENUMERATED, encodeInteger(resultCode))
        + tlv(_OCTET_STRING, matchedDN)
        + tlv(_OCTET_STRING, diagnosticMessage.encode("utf-8"))
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
    content = tlv(_INTEGER, b"\x03") + tlv(_OCTET_STRING, name) + tlv(SIMPLE_AUTH_TAG, password)
    return message(messageID, tlv(BIND_REQUEST, content))


def unbindRequest(messageID: int) -> bytes:
    """An UnbindRequest PDU."""
    return message(messageID, bytes((UNBIND_REQUEST, 0)))


def abandonRequest(messageID: int, abandonedID: int) -> bytes:
    """An AbandonRequest PDU for the operation C{abandonedID}."""
    return message(messageID, tlv(ABANDON_REQUEST, encodeInteger(abandonedID)))
