# -*- test-case-name: tests.test_ber -*-
"""
What the proxy reads of a request PDU without decoding it
(L{Envelope}): messageID, operation and, on demand, its first field.
One is made per request, on the hot path.
"""

from __future__ import annotations

from ldaproute.wire.tags import (
    BIND_REQUEST,
    SEARCH_REQUEST,
    MODIFY_REQUEST,
    ADD_REQUEST,
    DEL_REQUEST,
    MODDN_REQUEST,
    COMPARE_REQUEST,
    EXTENDED_REQUEST,
    REQUEST_TAGS,
    CONTROLS_TAG,
    SIMPLE_AUTH_TAG,
    SASL_AUTH_TAG,
    EXTENDED_NAME_TAG,
    INTEGER,
    OCTET_STRING,
)
from ldaproute.wire.framing import FramingError, readLength


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
        header = readLength(pdu, 1, end)
        if header is None:
            raise FramingError("malformed", "truncated LDAPMessage")
        _, pos = header
        if pos + 2 > end or pdu[pos] != INTEGER:
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
        header = readLength(pdu, pos + 1, end)
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
        header = readLength(pdu, pos + 1, self.contentEnd)
        if header is None:
            raise FramingError("malformed", "truncated operation field")
        length, start = header
        if start + length > self.contentEnd:
            raise FramingError("malformed", "operation field overruns its operation")
        return pdu[start : start + length], start + length

    def _bindName(self, pdu: bytes) -> tuple[bytes, int]:
        """
        The name of a bind request and the offset just past it, stepping
        over its version (L{targetDN} and L{bindAuthentication} both start
        with this walk).

        @raise FramingError: no version, no name, or a malformed name.
        """
        pos = self.contentStart
        if pos + 2 > self.contentEnd or pdu[pos] != INTEGER:
            raise FramingError("malformed", "bind request without a version")
        pos += 2 + pdu[pos + 1]
        if pos >= self.contentEnd or pdu[pos] != OCTET_STRING:
            raise FramingError("malformed", "bind request without a name")
        return self._firstString(pdu, pos)

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
            return self._bindName(pdu)[0]
        if tag in (SEARCH_REQUEST, MODIFY_REQUEST, ADD_REQUEST, MODDN_REQUEST, COMPARE_REQUEST):
            pos = self.contentStart
            if pos >= self.contentEnd or pdu[pos] != OCTET_STRING:
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
        _, pos = self._bindName(pdu)
        if pos >= self.contentEnd:
            raise FramingError("malformed", "bind request without authentication")
        choice = pdu[pos]
        if choice == SIMPLE_AUTH_TAG:
            return choice, self._firstString(pdu, pos)[0]
        if choice == SASL_AUTH_TAG:
            header = readLength(pdu, pos + 1, self.contentEnd)
            if header is None:
                raise FramingError("malformed", "truncated SASL credentials")
            _, inner = header
            if inner >= self.contentEnd or pdu[inner] != OCTET_STRING:
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
