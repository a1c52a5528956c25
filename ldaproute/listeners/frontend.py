# -*- test-case-name: tests.test_frontend -*-
"""
The proxy's server side: one client connection, as a thin adapter.

L{FrontendProtocol} turns client bytes into PDUs (L{ber.Framer}) and hands
each to the connection's L{Session} (L{ldaproute.core.session}), which
decides; this module carries the decisions out: writes the proxy's own
answers, sends forwarded PDUs on the session's link to each pool
(L{IBackendLink}), relays response bytes from the links untouched, and
owns what needs a reactor or a transport: timers, flow control, TLS.
Every operation the client sent gets a final result: from the backend,
or from the proxy when the backend cannot give one (unavailable, 52).
Bytes that are not LDAP end the connection with a Notice of
Disconnection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import error
from twisted.internet.interfaces import IAddress, IHandshakeListener, IReactorTime, ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.config import Listener, Route
from ldaproute.core import limits, session as core
from ldaproute.core.policy import ListenerPolicy
from ldaproute.core.session import Outstanding, Session
from ldaproute.core.slowpath import cleartextRootDSE
from ldaproute.listeners.events import ClientEvents
from ldaproute.listeners.answers import OwnAnswers
from ldaproute.listeners.failures import BackendFailures
from ldaproute.listeners.fleetwait import FLEET_WAIT, FleetWaits
from ldaproute.listeners.links import ClientLinks
from ldaproute.listeners.timers import ClientTimers
from ldaproute.listeners.tls import ServerTLS, startTLSResponse
from ldaproute.wire import ber
from ldaproute.wire.fastwrite import writerFor

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime

__all__ = ["FLEET_WAIT", "FrontendFactory", "FrontendProtocol", "describePeer"]


def describePeer(address: IAddress) -> tuple[str, str | None]:
    """C{(printable peer, IP address or None)} for logs and routing."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        name = getattr(address, "name", None)
        return (f"unix:{name.decode() if isinstance(name, bytes) else name or '?'}", None)
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}", host)


@implementer(IHandshakeListener, ILinkOwner)
class FrontendProtocol(OwnAnswers, BackendFailures, Protocol):
    """One client connection on a listener."""

    #: a TCP (or UNIX) connection that can start TLS: what listeners give us
    transport: ITLSTransport

    def __init__(
        self,
        listener: Listener,
        runtime: Runtime,
        reactor: IReactorTime,
        policy: ListenerPolicy | None = None,
        serverTLS: ServerTLS | None = None,
    ) -> None:
        self._listener = listener
        self._runtime = runtime
        self._reactor = reactor
        self._policy = policy if policy is not None else ListenerPolicy.fromListener(listener)
        self._serverTLS = serverTLS
        self._admitted = False
        self._timers = ClientTimers(reactor, listener.idleTimeout, listener.pduTimeout, self._idled, self._pduTimedOut)
        self._framer = ber.Framer(runtime.config.maxPDUBytes)
        self._links: ClientLinks
        self._closing = False
        self._opaque = False  # bytes relayed to one pinned link
        self._fleet: FleetWaits | None = None  # a bind throttle shared with other processes
        self.session: Session[IBackendLink]

    # --- connection events ------------------------------------------------

    def connectionMade(self) -> None:
        self._peerText, self._peerAddress = describePeer(self.transport.getPeer())
        self._events = ClientEvents(self._peerText, self._listener.name)
        self.session = Session(
            self._peerText, self._listener, self._policy, self._completed, self._reactor.seconds,
            self._peerAddress, ISSLTransport.providedBy(self.transport), self._serverTLS is not None,
            self._runtime.rewriterFor,
        )  # fmt: skip
        self._tls = self.session.tls
        self._links = ClientLinks(self, self.session, self._runtime, self._reactor, self.transport, self._events)
        throttle = self._policy.throttle
        if throttle is not None and throttle.shared:  # only then do binds and failed binds wait
            self._fleet = FleetWaits(
                self._reactor, self.session, throttle, self._links.gate, self._request, self.linkReceived,
                lambda: self._closing, lambda e: self._protocolError(e.reason, e.detail),
            )  # fmt: skip
        if not self._policy.limits.allowed(self._peerAddress):
            # behind haproxy: endpoints, the real client address is only known now
            self._events.refusedNetwork()
            self._closing = True
            self.transport.abortConnection()
            return
        refusal = self._policy.limits.admit(self._peerAddress)
        if refusal is not None:
            self._events.refusedAdmission(refusal)
            self._disconnect(ber.BUSY, refusal)
            return
        self._admitted = True
        self._timers.startIdle()
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass
        self.transport.registerProducer(self._links.producer, True)  # type: ignore[attr-defined]
        self._received, self._sent = self._runtime.observer.connectionOpened(self, self.transport)
        #: relayed responses go out through this (see L{ldaproute.wire.fastwrite})
        self._write = writerFor(self.transport)
        if isinstance(self.transport, HAProxyProtocolWrapper):
            self.dataReceived = self._afterProxyHeader  # type: ignore[method-assign]

    def _afterProxyHeader(self, data: bytes) -> None:
        """
        Behind C{haproxy:}, the client's address is known once the PROXY
        header has been read, just before the first bytes reach us.
        """
        del self.dataReceived
        self._peerText, self._peerAddress = describePeer(self.transport.getPeer())
        self.session.peer, self.session.address = self._peerText, self._peerAddress
        self._events.peer = self._peerText
        self.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        self._received.value += len(data)  # ByteCount.inc, inline
        if self._closing:
            return
        timers = self._timers
        if timers.idle is not None:
            timers.idle.reset(timers.idleTimeout)  # type: ignore[arg-type]
        tls = self._tls
        if tls.opaqueLink is not None or tls.layerWatch.armed is not None:
            if self._relayOpaque(data):
                return
        try:
            pdus = self._framer.feed(data)
            if timers.pdu is not None or self._framer.buffered:
                timers.framed(self._framer.buffered, bool(pdus))
            fleet = self._fleet
            for pdu in pdus:
                if fleet is not None and fleet.parked is not None:  # a bind waits for the fleet's counts
                    fleet.parked.append(pdu)
                    continue
                self._request(pdu)
                if self._closing:
                    return
        except ber.FramingError as e:
            self._protocolError(e.reason, e.detail)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if (
            not self._closing
            and (self.session.tls.phase is core.TLSPhase.SECURE or ISSLTransport.providedBy(self.transport))
            and isinstance(reason, Failure)
            and reason.check(error.ConnectionDone)
        ):
            # RFC 4511 4.14.3: the client removed TLS (close_notify, which
            # Twisted answers with ours).  The session does not go on in
            # cleartext: the connection closes, and whatever the client
            # sends after its close_notify (typically a cleartext Unbind)
            # is not read.  A normal end, not an error.
            self._events.removedTLS()
        self._closing = True
        self._timers.cancel()
        if self._admitted:
            self._admitted = False
            self._policy.limits.release(self._peerAddress)
        if self.session.tls.phase is core.TLSPhase.HANDSHAKING:
            self._runtime.observer.metrics.tlsHandshake("client", "failure")
            self._events.handshakeFailed(reason.getErrorMessage())
        self._links.closeAll()
        self.session.ended()
        self._runtime.observer.connectionClosed(self)

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: the client finished a TLS handshake."""
        self._runtime.observer.metrics.tlsHandshake("client", "success")
        if self.session.tls.handshakeCompleted():
            self._runtime.observer.connectionSecured(self, "starttls")
            self._events.secured()

    # --- requests: the session decides, this carries it out ---------------

    def _request(self, pdu: bytes) -> None:
        envelope = ber.Envelope.fromBytes(pdu)
        runtime = self._runtime
        decision = self.session.request(envelope, pdu, runtime.router, runtime.config.maxFilterDepth)
        if type(decision) is Route:  # the hot path: a plain forward
            unsent = self._links.forward(envelope, pdu, decision)
            if unsent is not None:
                self._answer(envelope, unsent, pdu)
        elif isinstance(decision, core.Answer):
            self._answer(envelope, decision, pdu)
        elif isinstance(decision, core.PassStartTLS):
            unsent = self._links.forward(envelope, pdu, decision.route, startTLS=True)
            if unsent is not None:
                self._answer(envelope, unsent, pdu)
        elif isinstance(decision, core.SpanSearch):
            if self._runtime.debug:
                self._events.spanned(envelope.messageID, [f"{sub.route}->{sub.pool}" for sub in decision.subs])
            write: Callable[[bytes], None] = self.transport.write
            if decision.plan.rootDSE and not self._tls.secure and self._listener.requireTLSForPasswords:
                write = self._writeCleartextRootDSE
            if not self._links.startSpan(envelope.messageID, decision, write):
                self._answer(envelope, core.IDENTITY_LOST, pdu)
        elif isinstance(decision, core.Abandon):
            self._links.abandon(decision.messageID, pdu)
        elif decision is core.UNBIND:
            self._disconnect(None, "")
        elif decision is core.START_TLS:
            self.transport.write(startTLSResponse(envelope.messageID))
            assert self._serverTLS is not None  # StartTLS is terminated only with a certificate
            self.transport.startTLS(self._serverTLS)
        elif isinstance(decision, core.Close):
            self._protocolError(decision.reason, decision.message)
        elif decision is core.CHECK_FLEET:
            assert self._fleet is not None
            if not self._fleet.ask(pdu, envelope.targetDN(pdu) or b""):
                self.session.fleetChecked = True  # nothing to wait for: decide on this process's counts
                self._request(pdu)

    # --- answers from links -----------------------------------------------

    def linkConnected(self, link: IBackendLink) -> None:
        """Back-pressure from the backend's side: its full buffer pauses us."""
        if self.transport is not None:
            self._links.connected(link)

    def linkReceived(
        self, link: IBackendLink, data: bytes, finals: list[tuple[int, int, int]], message: str = ""
    ) -> None:
        if self._fleet is not None and self._fleet.hold(link, data, finals):
            return  # behind a failed bind the fleet has not counted yet
        session = self.session
        if session.fanouts.subs:
            sends: list[tuple[IBackendLink, bytes]] = []
            data = session.fanouts.responses(data, sends)
            self._links.send(sends)
        if session.cleartextRootDSE:
            data = cleartextRootDSE(session.cleartextRootDSE, data, finals)
        if data:
            self._write(data)
            self._sent.value += len(data)
        if finals:
            session.responded(link, finals, message)
            if self._tls.opaqueLink is link and not self._opaque:
                self._pin(link, "passthrough")
            links = self._links
            if links.gate.paused:
                links.answered()

    def _relayOpaque(self, data: bytes) -> bool:
        """
        Relay C{data} untouched if this session is (or now becomes) an
        opaque SASL-layer session; see L{ldaproute.core.sasllayer}.
        """
        link = self.session.tls.clientBytes(data, self._framer.buffered == 0)
        if link is None:
            return False
        if not self._opaque:
            self._pin(link, "sasl")
        link.writeRaw(data)
        return True

    def _pin(self, link: IBackendLink, how: str) -> None:
        """
        The session is opaque now (C{how}: a SASL layer, or StartTLS passed
        through): only C{link} carries it, its bytes relayed as they are.
        """
        self._links.keepOnly(link)
        self._events.pinned(link, how, self.session.tls.layerWatch.mechanism)
        if how == "passthrough":
            self._timers.cancelPDU()
            self._runtime.observer.connectionSecured(self, "passthrough")
        self._opaque = True
        link.goOpaque()

    def linkTLSHandshake(self, link: IBackendLink, outcome: str) -> None:
        """A TLS handshake towards a backend: C{success} or C{failure}."""
        self._runtime.observer.metrics.tlsHandshake("backend", outcome)

    def linkReceivedRaw(self, link: IBackendLink, data: bytes) -> None:
        """Backend bytes of an opaque session."""
        self.transport.write(data)

    def _completed(
        self, operation: Outstanding[IBackendLink], resultCode: int, link: IBackendLink | None, message: str = ""
    ) -> None:
        now = self._reactor.seconds()
        self._runtime.observer.operationCompleted(
            self, operation.opTag, operation.messageID, operation.route, link, resultCode,
            operation.startedAt, now, operation.summary, message,
        )  # fmt: skip

    def _protocolError(self, kind: str, detail: str) -> None:
        self._events.protocolError(kind, detail)
        self._runtime.observer.pduRejected(self, kind)
        self._disconnect(ber.PROTOCOL_ERROR, detail)

    # --- timers -------------------------------------------------------------

    def _idled(self) -> None:
        if self._closing:
            return
        if self.session.outstanding:
            self._timers.startIdle()
            return
        self._events.idle()
        self._disconnect(ber.UNAVAILABLE, f"idle for {self._listener.idleTimeout:g}s")

    def _pduTimedOut(self) -> None:
        if self._closing:
            return
        self._events.pduTimedOut(self._listener.pduTimeout)
        self._disconnect(ber.PROTOCOL_ERROR, f"a PDU was not completed within {self._listener.pduTimeout:g}s")

    # --- the end ------------------------------------------------------------

    def shutDown(self) -> None:
        """The proxy is stopping: Notice of Disconnection (unavailable), then close."""
        if not self._closing:
            self._disconnect(ber.UNAVAILABLE, "the proxy is shutting down")

    def _disconnect(self, resultCode: int | None, diagnosticMessage: str) -> None:
        """
        Notice of Disconnection (unless C{resultCode} is L{None}: the
        client unbound), then close: the stream cannot go on.
        """
        self._closing = True
        if resultCode is not None:
            self.transport.write(ber.noticeOfDisconnection(resultCode, diagnosticMessage))
        self._links.closeAll()
        self.session.outstanding.clear()
        # a paused producer would keep the transport open after its buffer drains
        limits.releaseProducer(self.transport)
        self.transport.loseConnection()


class FrontendFactory(ServerFactory):
    """Makes a L{FrontendProtocol} for each client of one listener."""

    _log = Logger()
    noisy = False

    def __init__(
        self,
        listener: Listener,
        runtime: Runtime,
        reactor: IReactorTime,
        serverTLS: ServerTLS | None = None,
    ) -> None:
        self.listener = listener
        self.runtime = runtime
        self.reactor = reactor
        self.serverTLS = serverTLS
        self.policy = ListenerPolicy.fromListener(listener)

    def buildProtocol(self, addr: IAddress) -> FrontendProtocol | None:  # type: ignore[override]
        peerText, address = describePeer(addr)
        if not self.policy.limits.allowed(address):
            # closed at accept: returning None makes Twisted drop the socket
            self._log.warn(
                "Connection from {peer} refused: not in client_network", peer=peerText, listener=self.listener.name
            )
            return None
        protocol = FrontendProtocol(self.listener, self.runtime, self.reactor, self.policy, self.serverTLS)
        protocol.factory = self
        return protocol
