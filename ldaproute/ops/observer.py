# -*- test-case-name: tests.test_observer -*-
"""
Where the frontend reports what happens: the live client connections
(for drain and for operations in flight), metrics, the access log and the
status page's recent history.

The frontend calls these methods from one-line hooks; everything operators
see about an operation is decided here, so frontend.py stays about bytes.
Connection numbers (the access log's C{conn=N}) and operation numbers
(C{op=M}) are given here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.interfaces import ISSLTransport

from ldaproute.wire import ber
from ldaproute.ops.accesslog import AccessLog, AccessLogWriter, Completion, Prefix, RequestSummary
from ldaproute.ops.metrics import Metrics
from ldaproute.ops.status import StatusBoard


@attrs.define
class _Connection:
    """What the observer keeps per client connection."""

    number: int
    tls: str
    operations: int = 0
    #: the access log's constant parts of this connection's lines, and the
    #: access log they were made for (made again after StartTLS or a reload)
    prefix: Prefix | None = None
    prefixFor: AccessLog | None = None


class Observer:
    """
    Live connections, metrics, the access log and the status board of one
    process.

    @ivar connections: the open client connections (L{FrontendProtocol}s).
    @ivar accessLog: the access log, or L{None} when C{access_log = off}.
    @ivar status: recent history for the status page.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        accessLog: str | None = "stdout",
        logFormat: str = "text",
        callLater: Callable[..., Any] | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.connections: set[Any] = set()
        self._callLater = callLater
        self._numbers: dict[Any, _Connection] = {}
        self._nextConnection = 0
        self.accessLog: AccessLog | None = None
        self.status = StatusBoard()
        self.configure(accessLog, logFormat)

    def configure(self, accessLog: str | None, logFormat: str = "text") -> None:
        """Apply the logging part of a (re)loaded configuration."""
        current = self.accessLog
        if current is not None and (accessLog != current.writer.destination or logFormat != current.logFormat):
            current.writer.close()
            current = None
        if accessLog is not None and current is None:
            current = AccessLog(AccessLogWriter(accessLog, self._callLater), logFormat)
        self.accessLog = current

    def reopenAccessLog(self) -> None:
        """Log rotation: the access log file is opened again (SIGUSR1, SIGHUP)."""
        if self.accessLog is not None:
            self.accessLog.writer.reopen()

    def flush(self) -> None:
        """Write access-log lines still queued (at shutdown)."""
        if self.accessLog is not None:
            self.accessLog.writer.flush()

    # --- hooks ------------------------------------------------------------

    def connectionOpened(self, protocol: Any, transport: Any) -> tuple[Any, Any]:
        """
        A client connected; returns the pre-bound C{(received, sent)} byte
        counters for its listener.
        """
        protocol.tlsLabel = "ldaps" if ISSLTransport.providedBy(transport) else "none"
        self.connections.add(protocol)
        self._nextConnection += 1
        self._numbers[protocol] = _Connection(self._nextConnection, protocol.tlsLabel)
        listener = protocol.session.listener
        self.metrics.connectionOpened(listener, protocol.tlsLabel)
        return self.metrics.byteCounters(listener)

    def connectionSecured(self, protocol: Any, how: str) -> None:
        """
        A cleartext connection switched to TLS (C{how}: C{starttls} when the
        proxy terminated it, C{passthrough} when the backend did): the open
        gauge moves to the new label (the total keeps the accepted one).
        """
        if protocol in self.connections and protocol.tlsLabel == "none":
            listener = protocol.session.listener
            self.metrics.connectionsOpen.labels(listener, "none").dec()
            protocol.tlsLabel = how
            self.metrics.connectionsOpen.labels(listener, how).inc()
            record = self._numbers[protocol]
            record.tls = how
            record.prefix = None

    def connectionClosed(self, protocol: Any) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            self._numbers.pop(protocol, None)
            self.metrics.connectionClosed(protocol.session.listener, protocol.tlsLabel)

    def connectionNumber(self, protocol: Any) -> int:
        """The C{conn=N} of a client connection (0 when not open)."""
        record = self._numbers.get(protocol)
        return record.number if record is not None else 0

    def summarize(self, protocol: Any, pdu: bytes, envelope: ber.Envelope) -> RequestSummary | None:
        """
        What the access log will say of a request, if it is on; called once
        per request, when it arrives (which numbers it: C{op=M}).
        """
        accessLog = self.accessLog
        if accessLog is None:
            return None
        record = self._numbers.get(protocol)
        number = 0
        if record is not None:
            record.operations += 1
            number = record.operations
        return accessLog.describe(pdu, envelope, number)

    def operationCompleted(
        self,
        protocol: Any,
        opTag: int,
        messageID: int,
        route: str,
        link: Any,
        resultCode: int,
        startedAt: float,
        now: float,
        summary: object = None,
        message: str = "",
    ) -> None:
        """
        One operation got its final result (from a backend or the proxy);
        C{message} is the proxy's own diagnostic message, when it answered.
        """
        backend = link.backend.name if link is not None and link.backend is not None else ""
        seconds = now - startedAt
        self.metrics.operationCompleted(opTag, route, backend, resultCode, seconds)
        session = protocol.session
        if opTag == ber.BIND_REQUEST and resultCode != ber.SASL_BIND_IN_PROGRESS:
            self.metrics.bindCompleted(session.listener, resultCode == ber.SUCCESS)
        entries = 0
        if opTag == ber.SEARCH_REQUEST and link is not None:
            entries = link.entriesReturned(messageID)
        self.status.operationCompleted(route, resultCode, now)
        accessLog = self.accessLog
        if accessLog is None and resultCode in _NOT_ERRORS:
            return
        record = self._numbers.get(protocol)
        if not isinstance(summary, RequestSummary):
            # (the session keeps it as an opaque value: core does not know ops)
            # answered without a description (StartTLS refusals...): it still
            # takes the next operation number, as it arrived just now
            number = 0
            if record is not None:
                record.operations += 1
                number = record.operations
            summary = RequestSummary(ber.OPERATION_NAMES.get(opTag, "unknown"), opNumber=number)
        conn, tls = (record.number, record.tls) if record is not None else (0, "none")
        if resultCode not in _NOT_ERRORS:
            self.status.errorSeen(
                Completion(conn, session.peer, session.listener, tls, summary, route, backend, resultCode, message,
                           entries, now, seconds)
            )  # fmt: skip
        if accessLog is not None:
            if record is None:
                prefix = accessLog.connectionPrefix(conn, session.peer, session.listener, tls)
            elif record.prefixFor is accessLog and record.prefix is not None:
                prefix = record.prefix
            else:
                prefix = record.prefix = accessLog.connectionPrefix(conn, session.peer, session.listener, tls)
                record.prefixFor = accessLog
            accessLog.lineCompleted(prefix, summary, route, backend, resultCode, message, entries, now, seconds)

    def pduRejected(self, protocol: Any, reason: str) -> None:
        self.metrics.pduRejected(protocol.session.listener, reason)

    def inFlight(self) -> int:
        """Operations of every client still waiting for their final result."""
        return sum(len(protocol.session.outstanding) for protocol in self.connections)


#: Result codes that are not errors: success, compareFalse/True, referral,
#: saslBindInProgress.
_NOT_ERRORS = frozenset({0, 5, 6, 10, 14})
