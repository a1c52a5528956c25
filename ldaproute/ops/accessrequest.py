# -*- test-case-name: tests.test_accesslog -*-
"""
What the access log says of a request, read from its bytes.

A bind has its DN and method (C{simple}, or C{sasl} and the mechanism:
never a credential), a search its base, scope, filter, attribute count and
size limit, a compare its DN and attribute, add, delete, modify and modify
DN their DN, an extended operation its OID and name.  The filter keeps its
shape and attribute names and replaces every assertion value with C{?}: a
filter such as C{(userPassword=secret)} is logged as C{(userPassword=?)}.

Why a separate module with a cache (L{RequestShapes}): describing a search
and formatting its fields was about half the access log's cost per
operation, yet real clients send a handful of search shapes (the same base,
scope, filter attributes and attribute list) with different assertion
values.  The redacted description does not depend on those values, so the
shape's bytes without them are the key of its description, formatted once
for the text and JSON lines.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ldaproute.wire import ber
from ldaproute.wire.ber import readLength

_SCOPES = {0: "base", 1: "one", 2: "sub", 3: "children"}
_MAX_FILTER = 256
_MAX_DEPTH = 12
_MAX_DN = 512
#: Search shapes kept by one L{RequestShapes} (then it starts again).
MAX_SHAPES = 512


#: Names of the extended operations an operator meets (RFC 4511 4.12).
EXTENDED_NAMES: dict[bytes, str] = {
    ber.STARTTLS_OID: "StartTLS",
    b"1.3.6.1.4.1.4203.1.11.3": "WhoAmI",
    b"1.3.6.1.4.1.4203.1.11.1": "PasswordModify",
    b"1.3.6.1.1.8": "Cancel",
    b"1.3.6.1.4.1.1466.101.119.1": "Refresh",
    b"1.3.6.1.1.21.1": "StartTransaction",
    b"1.3.6.1.1.21.3": "EndTransaction",
    b"1.3.6.1.4.1.4203.1.11.2": "NoticeOfDisconnection",
    b"1.3.6.1.1.19": "Turn",
    b"1.2.840.113556.1.4.1781": "FastBind",
}


class RequestSummary(NamedTuple):
    """
    What the access log says about one request, read when it arrived (a
    named tuple: one is made per operation, and a tuple is the cheapest
    object to make).

    @ivar kind: the operation's short name (C{search}, C{bind}...).
    @ivar fields: C{(name, value)} pairs of the fields of that kind.
    @ivar size: the request's length in bytes.
    @ivar opNumber: the operation's number on its connection (C{op=M}).
    @ivar text: the kind and fields as logfmt (C{search base="..." ... }),
        when a cached shape has made it (else L{requestText} makes it).
    @ivar json: the kind and fields as members of a JSON object, likewise.
    """

    kind: str
    fields: tuple[tuple[str, str | int], ...] = ()
    size: int = 0
    opNumber: int = 0
    text: str | None = None
    json: str | None = None

    def get(self, name: str) -> str | int | None:
        """The value of one field, or L{None}."""
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def __eq__(self, other: object) -> bool:
        """Equal descriptions (the preformatted forms follow from them)."""
        if not isinstance(other, RequestSummary):
            return NotImplemented
        return self[:4] == other[:4]

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self[:4])

    def __repr__(self) -> str:
        return f"RequestSummary({self.kind!r}, {self.fields!r}, {self.size}, {self.opNumber})"


#: C{tuple.__new__}: a L{RequestSummary} made without its Python C{__new__}.
_newSummary = tuple.__new__


def _string(pdu: bytes, pos: int, end: int) -> tuple[bytes, int] | None:
    header = readLength(pdu, pos + 1, end)
    if header is None:
        return None
    length, start = header
    if start + length > end:
        return None
    return pdu[start : start + length], start + length


def _text(raw: bytes, limit: int = _MAX_DN) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describeRequest(pdu: bytes, envelope: ber.Envelope, opNumber: int = 0) -> RequestSummary:
    """
    The access-log fields of a request, from its bytes; never a credential
    or an assertion value.  A malformed field ends the description early.
    """
    tag = envelope.opTag
    if tag == ber.SEARCH_REQUEST:
        try:
            quick = _quickSearch(pdu, envelope.contentStart, envelope.contentEnd, opNumber)
        except IndexError:  # a field longer than the request: the careful path says so
            quick = None
        if quick is not None:
            return quick
    kind = ber.OPERATION_NAMES.get(tag, "unknown")
    fields: list[tuple[str, str | int]] = []
    try:
        if tag == ber.SEARCH_REQUEST:
            _searchFields(pdu, envelope, fields)
        elif tag == ber.BIND_REQUEST:
            name = envelope.targetDN(pdu) or b""
            fields.append(("dn", _text(name)))
            choice, credential = envelope.bindAuthentication(pdu)
            if choice == ber.SASL_AUTH_TAG:
                fields.append(("method", "sasl"))
                fields.append(("mech", _text(credential, 32)))
            elif credential:
                fields.append(("method", "simple"))
            else:
                fields.append(("method", "unauthenticated" if name else "anonymous"))
        elif tag == ber.EXTENDED_REQUEST:
            oid = envelope.extendedName(pdu) or b""
            fields.append(("oid", _text(oid, 64)))
            fields.append(("name", EXTENDED_NAMES.get(oid, "unknown")))
        elif tag == ber.COMPARE_REQUEST:
            _compareFields(pdu, envelope, fields)
        else:
            target = envelope.targetDN(pdu)
            if target is not None:
                fields.append(("dn", _text(target)))
    except (IndexError, ValueError, ber.FramingError):
        pass
    return RequestSummary(kind, tuple(fields), len(pdu), opNumber)


def _content(pdu: bytes, pos: int) -> tuple[int, int]:
    """C{(start, end)} of the content of the TLV at C{pos} (definite lengths:
    the framer has refused the others)."""
    first = pdu[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    count = first & 0x7F
    start = pos + 2 + count
    return start, start + int.from_bytes(pdu[pos + 2 : start], "big")


def _quickSearch(pdu: bytes, pos: int, end: int, opNumber: int) -> RequestSummary | None:
    """
    The common search in one pass, without calls: short-form lengths for
    every field, a short base and a one-assertion or presence filter.
    L{None} for anything else (then L{_searchFields} reads it).
    """
    n = pdu[pos + 1]
    if n >= 0x80:
        return None
    start = pos + 2
    pos = start + n
    base = pdu[start:pos]
    scope = _SCOPES.get(pdu[pos + 2], "?") if pdu[pos + 1] == 1 else "?"
    pos += 2 + pdu[pos + 1]
    pos += 2 + pdu[pos + 1]  # derefAliases
    n = pdu[pos + 1]
    if n >= 0x80:
        return None
    sizeLimit = int.from_bytes(pdu[pos + 2 : pos + 2 + n], "big")
    pos += 2 + n
    pos += 2 + pdu[pos + 1]  # timeLimit
    pos += 2 + pdu[pos + 1]  # typesOnly
    tag = pdu[pos]
    n = pdu[pos + 1]
    if n >= 0x80 or pos + 2 + n > end:
        return None
    if tag == 0x87:
        text = f"({pdu[pos + 2 : pos + 2 + n].decode('ascii', 'replace')}=*)"
    else:
        operator = _OPERATORS.get(tag)
        if operator is None or pdu[pos + 3] >= 0x80:
            return None
        text = f"({pdu[pos + 4 : pos + 4 + pdu[pos + 3]].decode('ascii', 'replace')}{operator})"
    pos += 2 + n
    count = 0
    if pos < end:
        n = pdu[pos + 1]
        if n >= 0x80:
            return None
        inner, stop = pos + 2, min(pos + 2 + n, end)
        while inner < stop:
            inner += 2 + pdu[inner + 1]
            count += 1
    if len(base) > _MAX_DN or len(text) > 64:
        return None
    return RequestSummary(
        "search",
        (("base", base.decode("utf-8", "replace")), ("scope", scope), ("filter", text), ("attrs", count),
         ("sizelimit", sizeLimit)),
        len(pdu),
        opNumber,
    )  # fmt: skip


def _skip(pdu: bytes, pos: int) -> int:
    """The offset past the TLV at C{pos}."""
    first = pdu[pos + 1]
    if first < 0x80:
        return pos + 2 + first
    return _content(pdu, pos)[1]


def _searchFields(pdu: bytes, envelope: ber.Envelope, fields: list[tuple[str, str | int]]) -> None:
    end = envelope.contentEnd
    start, pos = _content(pdu, envelope.contentStart)
    if pos > end:
        return
    base = _text(pdu[start:pos])
    if pdu[pos + 1] == 1:  # scope: ENUMERATED, one octet
        scope = _SCOPES.get(pdu[pos + 2], "?")
        pos += 3
    else:
        start, pos = _content(pdu, pos)
        scope = _SCOPES.get(int.from_bytes(pdu[start:pos], "big"), "?")
    pos = _skip(pdu, pos)  # derefAliases
    start, pos = _content(pdu, pos)  # sizeLimit
    sizeLimit = int.from_bytes(pdu[start:pos], "big")
    pos = _skip(pdu, _skip(pdu, pos))  # timeLimit, typesOnly
    if pos > end:
        fields.append(("base", base))
        return
    summary = _filter(pdu, pos, end, 0)
    if summary is None:
        fields += (("base", base), ("scope", scope), ("filter", "?"))
        return
    text, pos = summary
    if len(text) > _MAX_FILTER:
        text = text[: _MAX_FILTER - 3] + "..."
    count = 0
    if pos < end:
        inner, stop = _content(pdu, pos)
        stop = min(stop, end)
        while inner < stop:
            inner = _skip(pdu, inner)
            count += 1
    fields += (("base", base), ("scope", scope), ("filter", text), ("attrs", count), ("sizelimit", sizeLimit))


def _compareFields(pdu: bytes, envelope: ber.Envelope, fields: list[tuple[str, str | int]]) -> None:
    pos, end = envelope.contentStart, envelope.contentEnd
    entry = _string(pdu, pos, end)
    if entry is None:
        return
    fields.append(("dn", _text(entry[0])))
    pos = entry[1]
    ava = ber.readLength(pdu, pos + 1, end) if pos < end else None
    if ava is None:
        return
    attribute = _string(pdu, ava[1], end)
    if attribute is not None:
        fields.append(("attr", _attr(attribute[0])))


def _attr(value: bytes) -> str:
    return value.decode("ascii", "replace")[:64]


_OPERATORS = {0xA3: "=?", 0xA4: "=*?*", 0xA5: ">=?", 0xA6: "<=?", 0xA8: "~=?"}


def _filter(pdu: bytes, pos: int, end: int, depth: int) -> tuple[str, int] | None:
    """The summary of the filter at C{pos} and the offset past it."""
    if pos + 1 >= end or depth > _MAX_DEPTH:
        return None
    tag = pdu[pos]
    start, stop = _content(pdu, pos)
    if stop > end:
        return None
    if tag in (0xA0, 0xA1):  # and, or
        parts = []
        inner = start
        while inner < stop:
            item = _filter(pdu, inner, stop, depth + 1)
            if item is None:
                return None
            parts.append(item[0])
            inner = item[1]
        return f"({'&' if tag == 0xA0 else '|'}{''.join(parts)})", stop
    if tag == 0xA2:  # not
        item = _filter(pdu, start, stop, depth + 1)
        return (f"(!{item[0]})", stop) if item is not None else None
    if tag == 0x87:  # present
        return f"({_attr(pdu[start:stop])}=*)", stop
    operator = _OPERATORS.get(tag)
    if operator is not None:
        inner, after = _content(pdu, start)
        if after > stop:
            return None
        return f"({_attr(pdu[inner:after])}{operator})", stop
    if tag == 0xA9:  # extensibleMatch: [2] type if present
        inner, attrName = start, ""
        while inner < stop:
            field = _string(pdu, inner, stop)
            if field is None:
                break
            if pdu[inner] == 0x82:
                attrName = _attr(field[0])
            inner = field[1]
        return f"({attrName}:=?)", stop
    return "(?)", stop



# --- the request's part of a line ------------------------------------------------

def logfmtValue(value: str) -> str:
    """A logfmt value: bare when it can be, else in double quotes (JSON
    escapes for anything unprintable)."""
    if '"' in value or "\\" in value or not value.isprintable():
        return json.dumps(value, ensure_ascii=False)
    if not value or " " in value or "=" in value:
        return f'"{value}"'
    return value


def _quoted(value: str) -> str:
    """A value that is nearly always quoted (DNs, filters)."""
    if '"' in value or "\\" in value or not value.isprintable():
        return json.dumps(value, ensure_ascii=False)
    return f'"{value}"'



def requestText(summary: RequestSummary) -> str:
    """The kind and fields of a request as logfmt, ending in a space (a
    cached shape's summaries share theirs)."""
    text = summary.text
    if text is None:
        parts = [f"{summary.kind} "]
        for key, value in summary.fields:
            if type(value) is int:
                parts.append(f"{key}={value} ")
            elif key in ("base", "filter"):
                parts.append(f"{key}={_quoted(value)} ")  # type: ignore[arg-type]
            else:
                parts.append(f"{key}={logfmtValue(value)} ")  # type: ignore[arg-type]
        text = "".join(parts)
    return text


def requestJSON(summary: RequestSummary) -> str:
    """The kind and fields of a request as the members of a JSON object
    (C{"search", "base": "..."}: the value of C{type} first)."""
    text = summary.json
    if text is None:
        parts = [json.dumps(summary.kind, ensure_ascii=False)]
        for key, value in summary.fields:
            parts.append(f', "{key}": {json.dumps(value, ensure_ascii=False)}')
        text = "".join(parts)
    return text


class RequestShapes:
    """
    L{describeRequest} with the descriptions of common search shapes kept
    (at most L{MAX_SHAPES}, then it starts again), each with its text and
    JSON forms made once.  One per access log.
    """

    def __init__(self, maxShapes: int = MAX_SHAPES) -> None:
        self._maxShapes = maxShapes
        self._shapes: dict[bytes, RequestSummary] = {}

    def describe(self, pdu: bytes, envelope: ber.Envelope, opNumber: int = 0) -> RequestSummary:
        """
        The description of one request (see L{describeRequest}).

        A common search is looked up by its shape: its bytes without the
        assertion value, when it has short-form lengths everywhere, a
        one-octet scope, derefAliases, sizeLimit, timeLimit and typesOnly
        (what clients send for a size limit under 128) and one
        equality-like assertion or a presence filter.  Everything its
        description reads is in them (the base, scope, size limit, the
        filter's tag and attribute, the attribute list), and they parse one
        way only, so equal shapes have equal descriptions.  Any other
        request is described without the cache.  The key is made inline,
        in as few steps as it can be: this runs for every search while the
        access log is on, and a call costs as much as the rest.
        """
        if envelope.opTag != 0x63:  # ber.SEARCH_REQUEST
            return describeRequest(pdu, envelope, opNumber)
        pos = envelope.contentStart
        end = envelope.contentEnd
        try:
            n = pdu[pos + 1]
            p = pos + 2 + n
            if n >= 0x80 or pdu[p + 1 : p + 15 : 3] != b"\x01\x01\x01\x01\x01":
                return describeRequest(pdu, envelope, opNumber)
            p += 15
            n = pdu[p + 1]
            stop = p + 2 + n
            tag = pdu[p]
            if n >= 0x80 or stop > end:
                return describeRequest(pdu, envelope, opNumber)
            if tag == 0x87:
                key = pdu[pos:end]
            else:
                value = p + 4 + pdu[p + 3]
                if tag not in _OPERATORS or value + 2 + pdu[value + 1] != stop:
                    return describeRequest(pdu, envelope, opNumber)
                key = pdu[pos : p + 1] + pdu[p + 2 : value] + pdu[stop:end]
        except IndexError:
            return describeRequest(pdu, envelope, opNumber)
        shape = self._shapes.get(key)
        if shape is None:
            return self._kept(key, pdu, envelope, opNumber)
        return _newSummary(RequestSummary, (shape[0], shape[1], len(pdu), opNumber, shape[4], shape[5]))

    def _kept(self, key: bytes, pdu: bytes, envelope: ber.Envelope, opNumber: int) -> RequestSummary:
        """A new shape: described, formatted and kept."""
        shape = describeRequest(pdu, envelope, opNumber)
        shape = shape._replace(text=requestText(shape), json=requestJSON(shape))
        if len(self._shapes) >= self._maxShapes:
            self._shapes.clear()
        self._shapes[key] = shape
        return shape
