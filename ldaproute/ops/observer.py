# -*- test-case-name: tests.test_observer -*-
"""
Where the frontend reports what happens: the live client connections
(for drain and for operations in flight), metrics and the access log.

The frontend calls these methods from one-line hooks; everything operators
see about an operation is decided here, so frontend.py stays about bytes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport

from ldaproute.wire import ber
from ldaproute.ops.accesslog import AccessLog, RequestSummary, describeRequest
from ldaproute.ops.metrics import Metrics


class Observer:
    """
    Live connections, metrics and the access log of one process.

    @ivar connections: the open client connections (L{FrontendProtocol}s).
    @ivar accessLog: the access log, or L{None} when C{access_log = off}.
    """

    def __init__(self, metrics: Metrics | None = None, accessLog: bool = True) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.connections: set[Any] = set()
        self.accessLog: AccessLog | None = AccessLog() if accessLog else None

    def configure(self, accessLog: bool) -> None:
        """Apply the logging part of a (re)loaded configuration."""
        if accessLog and self.accessLog is None:
            self.accessLog = AccessLog()
        elif not accessLog:
            self.accessLog = None

    # --- hooks ------------------------------------------------------------

    def connectionOpened(self, protocol: Any, transport: Any) -> tuple[Any, Any]:
        """
        A client connected; returns the pre-bound C{(received, sent)} byte
        counters for its listener.
        """
        protocol.tlsLabel = "ldaps" if ISSLTransport.providedBy(transport) else "none"
        self.connections.add(protocol)
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

    def connectionClosed(self, protocol: Any) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            self.metrics.connectionClosed(protocol.session.listener, protocol.tlsLabel)

    def summarize(self, pdu: bytes, envelope: ber.Envelope) -> RequestSummary | None:
        """What the access log will say of a request, if it is on."""
        return describeRequest(pdu, envelope) if self.accessLog is not None else None

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
        summary: RequestSummary | None = None,
    ) -> None:
        """One operation got its final result (from a backend or the proxy)."""
        backend = link.backend.name if link is not None and link.backend is not None else ""
        seconds = now - startedAt
        self.metrics.operationCompleted(opTag, route, backend, resultCode, seconds)
        session = protocol.session
        if opTag == ber.BIND_REQUEST and resultCode != ber.SASL_BIND_IN_PROGRESS:
            self.metrics.bindCompleted(session.listener, resultCode == ber.SUCCESS)
        entries = 0
        if opTag == ber.SEARCH_REQUEST and link is not None:
            entries = link.entriesReturned(messageID)
        accessLog = self.accessLog
        if accessLog is not None:
            accessLog.operationCompleted(
                session.peer,
                session.listener,
                session.identity.name,
                opTag,
                messageID,
                summary,
                route,
                backend or None,
                resultCode,
                entries,
                seconds,
            )

    def pduRejected(self, protocol: Any, reason: str) -> None:
        self.metrics.pduRejected(protocol.session.listener, reason)

    def inFlight(self) -> int:
        """Operations of every client still waiting for their final result."""
        return sum(len(protocol.session.outstanding) for protocol in self.connections)
