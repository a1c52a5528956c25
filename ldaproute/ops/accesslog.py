# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one line per completed operation, written in batches.

Why batches: formatting one twisted.logger event per operation through
twistd's observers cost 76-81 CPU-us per search at 16 clients, more than
relaying the search.  Here a line is one f-string appended to a list, and
L{AccessLogWriter} writes the list with one unbuffered C{os.write} per
flush (a timer, C{FLUSH_INTERVAL} after the first line of a batch, or at
once when C{FLUSH_BYTES} are waiting), so the per-operation cost is the
formatting alone.

What a request says is read from its bytes (L{describeRequest}) only while
the access log is on, and only the fields of its kind: a bind has its DN
and method (C{simple}, or C{sasl} and the mechanism: never a credential),
a search its base, scope, filter, attribute count and size limit, a
compare its DN and attribute, add, delete, modify and modify DN their DN,
an extended operation its OID and name.  The filter keeps its shape and
attribute names and replaces every assertion value with C{?}: a filter
such as C{(userPassword=secret)} is logged as C{(userPassword=?)}.

Every line carries C{conn} (the connection's number in this process) and
C{op} (the operation's number on that connection, from 1), slapd's
C{conn=N op=M} habit, so one client's lines can be grepped together.  The
fields, in order, are listed in L{FIELDS}; README.rst has the table.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import Logger

from ldaproute.wire import ber
from ldaproute.wire.ber import readLength

_log = Logger()

#: Seconds between the first line of a batch and its write.
FLUSH_INTERVAL = 0.25
#: A batch this large is written at once, without waiting for the timer.
FLUSH_BYTES = 64 * 1024
#: Lines kept while the destination cannot take them (a full pipe); beyond
#: this the oldest are dropped and counted.
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: The diagnostic message is shortened to this many characters.
MAX_MESSAGE = 120

#: The fields of a line, in the order they are written (those of the
#: operation's kind only; C{msg} only when the result carries one).
FIELDS = (
    "time", "conn", "op", "client", "listener", "tls", "type",
    "dn", "method", "mech",  # bind
    "base", "scope", "filter", "attrs", "sizelimit",  # search (compare: dn, attr)
    "attr", "oid", "name",  # compare; extended
    "route", "backend", "result", "msg", "entries", "bytes", "ms",
)  # fmt: skip

_SCOPES = {0: "base", 1: "one", 2: "sub", 3: "children"}
_MAX_FILTER = 256
_MAX_DEPTH = 12
_MAX_DN = 512

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


class RequestSummary:
    """
    What the access log says about one request, read when it arrived (a
    plain class with slots: one is made per operation).

    @ivar kind: the operation's short name (C{search}, C{bind}...).
    @ivar fields: C{(name, value)} pairs of the fields of that kind.
    @ivar size: the request's length in bytes.
    @ivar opNumber: the operation's number on its connection (C{op=M}).
    """

    __slots__ = ("kind", "fields", "size", "opNumber")

    def __init__(self, kind: str, fields: tuple[tuple[str, str | int], ...] = (), size: int = 0, opNumber: int = 0) -> None:
        self.kind = kind
        self.fields = fields
        self.size = size
        self.opNumber = opNumber

    def get(self, name: str) -> str | int | None:
        """The value of one field, or L{None}."""
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestSummary):
            return NotImplemented
        return (self.kind, self.fields, self.size, self.opNumber) == (other.kind, other.fields, other.size, other.opNumber)

    def __repr__(self) -> str:
        return f"RequestSummary({self.kind!r}, {self.fields!r}, {self.size}, {self.opNumber})"


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
        quick = _quickSearch(pdu, envelope.contentStart, envelope.contentEnd, opNumber)
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
    ava = readLength(pdu, pos + 1, end) if pos < end else None
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


# --- formatting -----------------------------------------------------------------

def _quote(value: str) -> str:
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


def shorten(message: str, limit: int = MAX_MESSAGE) -> str:
    """A diagnostic message cut to C{limit} characters, on one line."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


class _Clock:
    """ISO 8601 UTC timestamps with milliseconds; the date part is formatted
    once a second, the whole stamp once a millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._second = -1
        self._prefix = ""
        self._stamp = ""

    def stamp(self, now: float) -> str:
        ms = int(now * 1000.0)
        if ms == self._ms:
            return self._stamp
        self._ms = ms
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        self._stamp = stamp = f"{self._prefix}{ms % 1000:03d}Z"
        return stamp


@attrs.frozen
class Completion:
    """One failed operation, as the status page keeps it."""

    conn: int
    client: str
    listener: str
    tls: str
    summary: RequestSummary
    route: str
    backend: str
    resultCode: int
    message: str
    entries: int
    now: float
    seconds: float


def _requestText(summary: RequestSummary) -> str:
    """The request's fields as logfmt (the common search written out)."""
    fields = summary.fields
    if summary.kind == "search" and len(fields) == 5:
        (_, base), (_, scope), (_, text), (_, attrs), (_, sizeLimit) = fields
        return f"base={_quoted(base)} scope={scope} filter={_quoted(text)} attrs={attrs} sizelimit={sizeLimit}"  # type: ignore[arg-type]
    return " ".join([f"{k}={v}" if type(v) is int else f"{k}={_quote(v)}" for k, v in fields])  # type: ignore[arg-type]


def textLine(
    clock: _Clock, conn: int, client: str, listener: str, tls: str, summary: RequestSummary, route: str,
    backend: str, resultCode: int, message: str, entries: int, now: float, seconds: float,
) -> str:
    """The logfmt line of one completed operation."""
    request = _requestText(summary)
    msg = f" msg={_quote(shorten(message))}" if message else ""
    stamp = clock._stamp if int(now * 1000.0) == clock._ms else clock.stamp(now)
    if " " in client or "=" in client or '"' in client or "\\" in client or not client.isprintable():
        client = _quote(client)
    return (
        f"{stamp} conn={conn} op={summary.opNumber} client={client} listener={listener} "
        f"tls={tls} type={summary.kind} {request}{' ' if request else ''}route={route or '-'} backend={backend or '-'} "
        f"result={resultCode}{msg} entries={entries} bytes={summary.size} ms={seconds * 1000.0:.3f}\n"
    )  # fmt: skip


def jsonLine(
    clock: _Clock, conn: int, client: str, listener: str, tls: str, summary: RequestSummary, route: str,
    backend: str, resultCode: int, message: str, entries: int, now: float, seconds: float,
) -> str:
    """The JSON object (one line) of one completed operation."""
    record: dict[str, Any] = {
        "time": clock.stamp(now), "conn": conn, "op": summary.opNumber, "client": client,
        "listener": listener, "tls": tls, "type": summary.kind,
    }  # fmt: skip
    record.update(summary.fields)
    record["route"] = route or None
    record["backend"] = backend or None
    record["result"] = resultCode
    if message:
        record["msg"] = shorten(message)
    record["entries"] = entries
    record["bytes"] = summary.size
    record["ms"] = round(seconds * 1000.0, 3)
    return json.dumps(record, ensure_ascii=False) + "\n"


# --- writing --------------------------------------------------------------------


class AccessLogWriter:
    """
    Lines kept in memory and written in batches with C{os.write}.

    @param destination: C{stdout} or a file path (opened for appending,
        created if missing, reopened by L{reopen} after log rotation).
    @param callLater: C{reactor.callLater}; with L{None} every line is
        written at once (tests, and the CLI).
    """

    def __init__(
        self, destination: str, callLater: Callable[..., Any] | None = None, flushInterval: float = FLUSH_INTERVAL
    ) -> None:
        self.destination = destination
        self._callLater = callLater
        self._flushInterval = flushInterval
        self._pending: list[str] = []
        self._pendingBytes = 0
        self._timer: Any = None
        self._fd = -1
        self._ownsFD = False
        #: lines dropped because the destination could not take them
        self.dropped = 0
        self._open()

    def _open(self) -> None:
        if self.destination == "stdout":
            self._fd, self._ownsFD = 1, False
            return
        self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._ownsFD = True

    def write(self, line: str) -> None:
        """Queue one line (ending in a newline)."""
        self._pending.append(line)
        self._pendingBytes += len(line)
        if self._callLater is None or self._pendingBytes >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._callLater(self._flushInterval, self.flush)

    def flush(self) -> None:
        """Write what is queued; what the destination refuses now waits."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending = []
        self._pendingBytes = 0
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                self._keep(bytes(view))
                return
            except OSError as e:
                self.dropped += data.count(b"\n")
                _log.error("The access log cannot be written to {destination}: {error}; lines dropped",
                           destination=self.destination, error=errno.errorcode.get(e.errno or 0, str(e)))
                return
            view = view[written:]

    def _keep(self, rest: bytes) -> None:
        """A full pipe (a slow log reader): keep the rest for the next flush,
        within L{MAX_PENDING_BYTES}."""
        if len(rest) > MAX_PENDING_BYTES:
            cut = rest.index(b"\n", len(rest) - MAX_PENDING_BYTES) + 1
            self.dropped += rest[:cut].count(b"\n")
            rest = rest[cut:]
        text = rest.decode("utf-8", "replace")
        self._pending.insert(0, text)
        self._pendingBytes += len(text)
        if self._callLater is not None and self._timer is None:
            self._timer = self._callLater(self._flushInterval, self.flush)

    def reopen(self) -> None:
        """After log rotation (SIGUSR1, SIGHUP): write to a fresh file of the
        same name.  Queued lines go to the old file first."""
        self.flush()
        if not self._ownsFD:
            return
        old = self._fd
        try:
            self._open()
        except OSError as e:
            _log.error("The access log {destination} cannot be reopened: {error}; still writing the old file",
                       destination=self.destination, error=e.strerror)
            return
        os.close(old)

    def close(self) -> None:
        """Write what is queued and close the file."""
        self.flush()
        if self._ownsFD:
            os.close(self._fd)
            self._ownsFD = False


class AccessLog:
    """
    Formats completions as text (logfmt) or JSON lines for a writer.

    @param logFormat: C{text} or C{json}.
    """

    def __init__(self, writer: AccessLogWriter, logFormat: str = "text") -> None:
        self.writer = writer
        self.logFormat = logFormat
        self._format = jsonLine if logFormat == "json" else textLine
        self._clock = _Clock()

    def operationCompleted(
        self, conn: int, client: str, listener: str, tls: str, summary: RequestSummary, route: str,
        backend: str, resultCode: int, message: str, entries: int, now: float, seconds: float,
    ) -> None:
        """Write the line of one completed operation (see L{FIELDS})."""
        self.writer.write(
            self._format(
                self._clock, conn, client, listener, tls, summary, route, backend, resultCode, message, entries, now, seconds
            )
        )  # fmt: skip


def parseTextLine(line: str) -> dict[str, str]:
    """
    The fields of one text line (time first), for tests and tools: the
    inverse of L{textLine}.
    """
    out: dict[str, str] = {}
    stamp, _, rest = line.rstrip("\n").partition(" ")
    out["time"] = stamp
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(rest):
        equals = rest.index("=", pos)
        key = rest[pos:equals]
        pos = equals + 1
        if rest.startswith('"', pos):
            value, pos = decoder.raw_decode(rest, pos)
        else:
            space = rest.find(" ", pos)
            space = len(rest) if space < 0 else space
            value, pos = rest[pos:space], space
        out[key] = value
        pos += 1
    return out
