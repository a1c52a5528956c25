# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: one line per completed operation, written in batches
(L{ldaproute.ops.accesswriter}).

Every line carries C{conn} (the connection's number in this process) and
C{op} (the operation's number on that connection, from 1), slapd's
C{conn=N op=M} habit, so one client's lines can be grepped together.  The
fields, in order, are listed in L{FIELDS}; README.rst has the table.  What
a request says is read from its bytes (L{ldaproute.ops.accessrequest})
only while the access log is on, and only the fields of its kind.

Why the line is made the way it is: the access log must cost at most a few
CPU-microseconds per operation (issue 16).  So what is constant for a
connection (its number, client, listener, TLS state) is formatted once per
connection as a prefix (L{AccessLog.connectionPrefix}, made again when TLS
starts), what is constant for a request's shape once per shape (its text
and JSON forms, cached by L{RequestShapes}), the time once per
millisecond, and a line is one %-format of a template per format: no dict,
no C{json.dumps}, no join per line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import attrs

from ldaproute.ops.accessrequest import (
    EXTENDED_NAMES,
    RequestShapes,
    RequestSummary,
    describeRequest,
    logfmtValue,
    requestJSON,
    requestText,
)
from ldaproute.ops.accesswriter import FLUSH_BYTES, FLUSH_INTERVAL, MAX_PENDING_BYTES, AccessLogWriter
from ldaproute.wire import ber

__all__ = [
    "EXTENDED_NAMES", "FIELDS", "FLUSH_BYTES", "FLUSH_INTERVAL", "MAX_MESSAGE", "MAX_PENDING_BYTES", "AccessLog",
    "AccessLogWriter", "Completion", "Prefix", "RequestSummary", "describeRequest", "parseTextLine", "shorten",
]  # fmt: skip

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


#: A connection's constant parts of a line: what comes before the operation
#: number and what comes after it (up to the operation's kind).
Prefix = tuple[str, str]

_TEXT = "%s %s%d%s%sroute=%s backend=%s result=%d%s entries=%d bytes=%d ms=%.3f\n"
_JSON = '{"time": "%s%s%d%s%s, "route": %s, "backend": %s, "result": %d%s, "entries": %d, "bytes": %d, "ms": %.3f}\n'


def _jsonString(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


class AccessLog:
    """
    Formats completions as text (logfmt) or JSON lines for a writer.

    @param logFormat: C{text} or C{json}.
    """

    def __init__(self, writer: AccessLogWriter, logFormat: str = "text") -> None:
        self.writer = writer
        self.logFormat = logFormat
        self._json = logFormat == "json"
        self._clock = _Clock()
        self._shapes = RequestShapes()
        #: what the line of a request will say of it (called when it
        #: arrives): L{RequestShapes.describe}
        self.describe: Callable[[bytes, ber.Envelope, int], RequestSummary] = self._shapes.describe
        #: route and backend names as JSON values (names from the configuration)
        self._names: dict[str, str] = {"": "null"}

    def _name(self, name: str) -> str:
        """A route or backend name as a JSON value, kept (a few hundred at
        most: names come from the configuration, which may be reloaded)."""
        if len(self._names) >= 256:
            self._names = {"": "null"}
        text = self._names[name] = _jsonString(name) if name else "null"
        return text


    def connectionPrefix(self, conn: int, client: str, listener: str, tls: str) -> Prefix:
        """The constant parts of a connection's lines, to keep with the
        connection (and make again when its TLS state changes)."""
        if self._json:
            return (
                f'", "conn": {conn}, "op": ',
                f', "client": {_jsonString(client)}, "listener": {_jsonString(listener)}, "tls": {_jsonString(tls)}, '
                f'"type": ',
            )  # fmt: skip
        return f"conn={conn} op=", f" client={logfmtValue(client)} listener={listener} tls={tls} type="

    def operationCompleted(
        self, conn: int, client: str, listener: str, tls: str, summary: RequestSummary, route: str,
        backend: str, resultCode: int, message: str, entries: int, now: float, seconds: float,
    ) -> None:
        """Write the line of one completed operation (see L{FIELDS})."""
        self.lineCompleted(
            self.connectionPrefix(conn, client, listener, tls), summary, route, backend, resultCode, message, entries,
            now, seconds,
        )  # fmt: skip

    def lineCompleted(
        self, prefix: Prefix, summary: RequestSummary, route: str, backend: str, resultCode: int, message: str,
        entries: int, now: float, seconds: float,
    ) -> None:
        """L{operationCompleted} with the connection's L{connectionPrefix}."""
        clock = self._clock
        stamp = clock._stamp if int(now * 1000.0) == clock._ms else clock.stamp(now)
        if self._json:
            names = self._names
            routeText = names.get(route)
            if routeText is None:
                routeText = self._name(route)
            backendText = names.get(backend)
            if backendText is None:
                backendText = self._name(backend)
            request = summary.json
            line = _JSON % (
                stamp, prefix[0], summary.opNumber, prefix[1], requestJSON(summary) if request is None else request,
                routeText, backendText, resultCode, f', "msg": {_jsonString(shorten(message))}' if message else "",
                entries, summary.size, seconds * 1000.0,
            )  # fmt: skip
        else:
            request = summary.text
            line = _TEXT % (
                stamp, prefix[0], summary.opNumber, prefix[1], requestText(summary) if request is None else request,
                route or "-", backend or "-", resultCode, f" msg={logfmtValue(shorten(message))}" if message else "",
                entries, summary.size, seconds * 1000.0,
            )  # fmt: skip
        self.writer.write(line)


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
