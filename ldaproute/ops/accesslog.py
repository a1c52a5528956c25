# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one structured event per completed operation.

What a request says is read from its bytes only when the access log is on
(L{describeRequest}: base DN, scope, a filter summary).  The filter summary
keeps the filter's shape and attribute names and replaces every assertion
value with C{?}, so a filter such as C{(userPassword=secret)} is logged as
C{(userPassword=?)}: values never reach the log, whatever the attribute.
Bind credentials are never read here at all.

Event fields (stable): C{peer}, C{listener}, C{bindDN} (the session's
identity after the operation), C{op}, C{messageID}, C{baseDN} (the search
base; for other operations the DN they name: entry, bind name), C{scope}, C{filter}, C{route}, C{backend},
C{resultCode}, C{entries}, C{durationMs}; C{log_namespace} is
C{ldaproute.access}.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger

from ldaproute.wire import ber
from ldaproute.wire.ber import readLength

#: Access events have their own namespace, so they can be filtered or routed.
_accessLog = Logger(namespace="ldaproute.access")

_SCOPES = {0: "base", 1: "one", 2: "sub", 3: "children"}
_MAX_FILTER = 256
_MAX_DEPTH = 12


@attrs.frozen
class RequestSummary:
    """What the access log says about a request, read from its bytes."""

    baseDN: str | None = None
    scope: str | None = None
    filter: str | None = None


_EMPTY = RequestSummary()


def _string(pdu: bytes, pos: int, end: int) -> tuple[bytes, int] | None:
    header = readLength(pdu, pos + 1, end)
    if header is None:
        return None
    length, start = header
    return pdu[start : start + length], start + length


def describeRequest(pdu: bytes, envelope: ber.Envelope) -> RequestSummary:
    """Base DN, scope and filter summary of a search; the DN of others."""
    try:
        if envelope.opTag != ber.SEARCH_REQUEST:
            target = envelope.targetDN(pdu) if envelope.opTag != ber.EXTENDED_REQUEST else None
            return RequestSummary(baseDN=target.decode("utf-8", "replace")) if target is not None else _EMPTY
        pos, end = envelope.contentStart, envelope.contentEnd
        base = _string(pdu, pos, end)
        if base is None:
            return _EMPTY
        baseDN, pos = base
        fields = []
        for _ in range(5):  # scope, derefAliases, sizeLimit, timeLimit, typesOnly
            item = _string(pdu, pos, end)
            if item is None:
                return RequestSummary(baseDN.decode("utf-8", "replace"))
            fields.append(item[0])
            pos = item[1]
        scope = _SCOPES.get(int.from_bytes(fields[0], "big"), "?")
        summary = _filter(pdu, pos, end, 0)
        text = summary[0] if summary is not None else "?"
        if len(text) > _MAX_FILTER:
            text = text[: _MAX_FILTER - 3] + "..."
        return RequestSummary(baseDN.decode("utf-8", "replace"), scope, text)
    except (IndexError, ValueError):
        return _EMPTY


def _attr(value: bytes) -> str:
    return value.decode("ascii", "replace")[:64]


def _filter(pdu: bytes, pos: int, end: int, depth: int) -> tuple[str, int] | None:
    """The summary of the filter at C{pos} and the offset past it."""
    if pos >= end or depth > _MAX_DEPTH:
        return None
    tag = pdu[pos]
    header = readLength(pdu, pos + 1, end)
    if header is None:
        return None
    length, start = header
    stop = start + length
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
    if tag in (0xA3, 0xA4, 0xA5, 0xA6, 0xA8):
        attr = _string(pdu, start, stop)
        if attr is None:
            return None
        operator = {0xA3: "=?", 0xA4: "=*?*", 0xA5: ">=?", 0xA6: "<=?", 0xA8: "~=?"}[tag]
        return f"({_attr(attr[0])}{operator})", stop
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


class AccessLog:
    """Emits the access event of each completed operation."""

    def operationCompleted(
        self,
        peer: str,
        listener: str,
        bindDN: bytes,
        opTag: int,
        messageID: int,
        summary: RequestSummary | None,
        route: str,
        backend: str | None,
        resultCode: int,
        entries: int,
        seconds: float,
    ) -> None:
        summary = summary or _EMPTY
        fields: dict[str, Any] = dict(
            peer=peer,
            listener=listener,
            bindDN=bindDN.decode("utf-8", "replace"),
            op=ber.OPERATION_NAMES.get(opTag, "unknown"),
            messageID=messageID,
            baseDN=summary.baseDN,
            scope=summary.scope,
            filter=summary.filter,
            route=route,
            backend=backend,
            resultCode=resultCode,
            entries=entries,
            durationMs=round(seconds * 1000.0, 3),
        )
        # the line is formatted here, once: Twisted's own formatting of a
        # thirteen-field format string costs more than the relay itself
        fields["accessLine"] = (
            f"{peer} {fields['op']} base={summary.baseDN!r} scope={summary.scope} filter={summary.filter} "
            f"route={route} backend={backend} -> {resultCode} entries={entries} {fields['durationMs']}ms"
        )
        _accessLog.info("{accessLine}", **fields)
