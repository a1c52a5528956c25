# -*- test-case-name: tests.test_frontend -*-
"""
The proxy's server side: one client connection.

L{FrontendProtocol} turns client bytes into PDUs (L{ber.Framer}), reads
each PDU's envelope, asks the router where it goes, and writes it to the
session's upstream link for that pool; response bytes from the links are
written back untouched.  Every operation the client sent gets a final
result: from the backend, or from the proxy when the backend cannot give
one (unavailable, 52).  Bytes that are not LDAP end the connection with a
Notice of Disconnection.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute import ber, limits
from ldaproute.config import Listener
from ldaproute.routing import noRouteResult
from ldaproute.runtime import Runtime
from ldaproute.session import Outstanding, Session
from ldaproute.upstream import UpstreamLink


def describePeer(address: IAddress) -> tuple[str, str | None]:
    """C{(printable peer, IP address or None)} for logs and routing."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        name = getattr(address, "name", None)
        return (f"unix:{name.decode() if isinstance(name, bytes) else name or '?'}", None)
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}", host)


@implementer(IPushProducer)
class _LinksProducer:
    """
    Pauses every upstream connection of a client whose transport buffer is
    full, so a slow reader does not make the proxy hold a whole result.
    """

    def __init__(self, links: dict[str, UpstreamLink]) -> None:
        self._links = links
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True
        for link in self._links.values():
            link.pauseReading()

    def resumeProducing(self) -> None:
        self.paused = False
        for link in self._links.values():
            link.resumeReading()

    def stopProducing(self) -> None:
        pass


@implementer(IPushProducer)
class _ClientReading:
    """
    The client's transport as the producer for one upstream connection: a
    backend that cannot keep up pauses the client's reading.  Unlike the
    transport itself, it ignores C{stopProducing}, which Twisted calls when
    the upstream connection closes: losing a backend must not cut the
    client off.
    """

    def __init__(self, gate: limits.ReadGate) -> None:
        self._gate = gate

    def pauseProducing(self) -> None:
        self._gate.pause(self)

    def resumeProducing(self) -> None:
        self._gate.resume(self)

    def stopProducing(self) -> None:
        self._gate.resume(self)  # the backend that paused us is gone


class FrontendProtocol(Protocol):
    """One client connection on a listener."""

    _log = Logger()

    def __init__(self, listener: Listener, runtime: Runtime, reactor: IReactorTime) -> None:
        self._listener = listener
        self._runtime = runtime
        self._reactor = reactor
        self._framer = ber.Framer(runtime.config.maxPDUBytes)
        self._links: dict[str, UpstreamLink] = {}
        self._closing = False
        self.session: Session

    # --- connection events ------------------------------------------------

    def connectionMade(self) -> None:
        self._peerText, self._peerAddress = describePeer(self.transport.getPeer())  # type: ignore[union-attr]
        self.session = Session(self._peerText, self._listener.name)
        try:
            self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        except (AttributeError, OSError, socket.error):
            pass
        self._gate = limits.ReadGate(self.transport)
        self._linksProducer = _LinksProducer(self._links)
        self.transport.registerProducer(self._linksProducer, True)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            for pdu in self._framer.feed(data):
                self._request(pdu)
                if self._closing:
                    return
        except ber.FramingError as e:
            self._protocolError(e)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._closing = True
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()

    # --- requests ---------------------------------------------------------

    def _request(self, pdu: bytes) -> None:
        envelope = ber.Envelope.fromBytes(pdu)
        messageID = envelope.messageID
        tag = envelope.opTag
        session = self.session
        if messageID == 0:
            raise ber.FramingError("malformed", "messageID 0 is reserved for unsolicited notifications")
        if tag == ber.UNBIND_REQUEST:
            self._unbind()
            return
        if tag == ber.ABANDON_REQUEST:
            self._abandon(envelope.abandonedID(pdu), pdu)
            return
        if messageID in session.outstanding:
            raise ber.FramingError("malformed", f"messageID {messageID} is already in use by an outstanding operation")
        extendedOID = None
        if tag == ber.EXTENDED_REQUEST:
            extendedOID = envelope.extendedName(pdu)
            if extendedOID == ber.STARTTLS_OID:
                self._answer(envelope, ber.PROTOCOL_ERROR, "StartTLS is not offered on this listener")
                return
        if tag == ber.SEARCH_REQUEST:
            maxDepth = self._runtime.config.maxFilterDepth
            if limits.filterDepth(pdu, envelope, maxDepth) > maxDepth:
                self._answer(
                    envelope, limits.ADMIN_LIMIT_EXCEEDED, f"search filter nested deeper than {maxDepth} levels"
                )
                return
        if session.mustRebind and tag != ber.BIND_REQUEST:
            self._answer(
                envelope,
                ber.OPERATIONS_ERROR,
                "the upstream connection was lost and a SASL bind cannot be replayed: bind again",
            )
            return

        runtime = self._runtime
        router = runtime.router
        targetDN = envelope.targetDN(pdu) if router.needsTargetDN else None
        route = router.routeFor(
            self._listener.name,
            tag,
            targetDN,
            session.identity.dn if router.needsBoundDN else None,
            self._peerAddress,
            extendedOID,
        )
        if route is None:
            code, text = noRouteResult(tag)
            self._answer(envelope, code, text)
            return
        if route.reject is not None:
            self._answer(envelope, route.reject.resultCode, route.reject.message)
            return
        assert route.pool is not None

        pending = None
        isBind = tag == ber.BIND_REQUEST
        if isBind:
            pending = session.bindStarted(pdu, envelope)
        link = self._linkFor(route.pool, isBind)
        if link is None:
            self._answer(
                envelope,
                ber.OPERATIONS_ERROR,
                "this operation needs a new upstream connection and a SASL bind cannot be replayed: bind again",
            )
            return
        session.outstanding[messageID] = Outstanding(
            messageID, tag, link, self._reactor.seconds(), route.name, pending
        )
        link.send(pdu)
        if len(session.outstanding) >= limits.PAUSE_OUTSTANDING:
            self._gate.pause("outstanding")

    def _outstandingAnswered(self) -> None:
        if self._gate.paused and len(self.session.outstanding) < limits.PAUSE_OUTSTANDING:
            self._gate.resume("outstanding")

    def _linkFor(self, poolName: str, isBind: bool) -> UpstreamLink | None:
        """
        The session's link to a pool, opened if need be, carrying the
        client's current identity (replayed when it does not yet).
        """
        session = self.session
        identity = session.identity
        link = self._links.get(poolName)
        if link is not None and (isBind or link.boundVersion == session.identityVersion):
            return link
        if not isBind and not identity.replayable:
            session.identityLost()
            return None
        replay = None if isBind else (identity.name, identity.password)
        if link is not None:
            link.rebind(replay)  # type: ignore[arg-type]
            link.boundVersion = session.identityVersion
            return link
        if identity.kind == "anonymous":
            replay = None
        runtime = self._runtime
        pool = runtime.backends.pools[poolName]
        link = UpstreamLink(
            self, pool, self._reactor, pool.pool.connectTimeout, replay, self._peerText, runtime.endpointFactory
        )
        link.boundVersion = session.identityVersion
        self._links[poolName] = link
        return link

    def _abandon(self, messageID: int, pdu: bytes) -> None:
        operation = self.session.outstanding.pop(messageID, None)
        if operation is not None:
            operation.link.send(pdu)
            self._outstandingAnswered()

    def _unbind(self) -> None:
        self._closing = True
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()
        # a paused producer would keep the transport open after its buffer drains
        limits.releaseProducer(self.transport)
        self.transport.loseConnection()  # type: ignore[union-attr]

    # --- answers from links -----------------------------------------------

    def linkConnected(self, link: UpstreamLink) -> None:
        """Back-pressure from the backend's side: its full buffer pauses us."""
        transport: Any = link.transport
        if transport is not None and self.transport is not None:
            transport.registerProducer(_ClientReading(self._gate), True)
            if self._linksProducer.paused:  # the client is not reading
                link.pauseReading()

    def linkReceived(self, link: UpstreamLink, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        outstanding = self.session.outstanding
        for messageID, tag, code in finals:
            operation = outstanding.get(messageID)
            if operation is None:
                continue
            if tag == ber.BIND_RESPONSE and code != ber.SASL_BIND_IN_PROGRESS:
                self._forgetAbandonedBy(operation)
            del outstanding[messageID]
            if tag == ber.BIND_RESPONSE:
                if self.session.bindCompleted(operation.pending, code):
                    link.boundVersion = self.session.identityVersion
        if finals:
            self._outstandingAnswered()

    def _forgetAbandonedBy(self, bind: Outstanding) -> None:
        """
        A bind completed: RFC 4511 4.2.1 has the server finish or abandon
        (slapd: without an answer) every operation sent before it on that
        connection, so those still outstanding will never be answered.
        Forget them, or they pile up to the read-pause limit.
        """
        outstanding = self.session.outstanding
        stale = []
        for op in outstanding.values():  # in the order they were sent
            if op is bind:
                break
            if op.link is bind.link:
                stale.append(op.messageID)
        for messageID in stale:
            del outstanding[messageID]

    def linkLost(self, link: UpstreamLink, reason: str) -> None:
        if self._links.get(link.pool.name) is link:
            del self._links[link.pool.name]
        self._failOperations(link, ber.UNAVAILABLE, reason)

    def linkReplayFailed(self, link: UpstreamLink, resultCode: int) -> None:
        self.session.identityLost()
        self._failOperations(
            link,
            ber.OPERATIONS_ERROR,
            f"the backend refused to restore this session's bind (resultCode {resultCode}): bind again",
        )

    def _failOperations(self, link: UpstreamLink, resultCode: int, reason: str) -> None:
        outstanding = self.session.outstanding
        failed = [operation for operation in outstanding.values() if operation.link is link]
        if not failed or self._closing:
            return
        answers = []
        for operation in failed:
            del outstanding[operation.messageID]
            answers.append(
                ber.result(operation.messageID, ber.RESPONSE_FOR[operation.opTag], resultCode, reason)
            )
            if operation.opTag == ber.BIND_REQUEST:
                self.session.bindCompleted(None, resultCode)
        self._log.warn(
            "{count} operation(s) of {peer} answered {resultCode}: {reason}",
            count=len(answers),
            peer=self._peerText,
            listener=self._listener.name,
            pool=link.pool.name,
            backend=link.backend.name if link.backend else None,
            resultCode=resultCode,
            reason=reason,
        )
        self.transport.writeSequence(answers)  # type: ignore[union-attr]
        self._outstandingAnswered()

    # --- the proxy's own answers ------------------------------------------

    def _answer(self, envelope: ber.Envelope, resultCode: int, diagnosticMessage: str) -> None:
        answer = ber.resultFor(envelope, resultCode, diagnosticMessage)
        if answer is not None:
            self.transport.write(answer)  # type: ignore[union-attr]

    def _protocolError(self, reason: ber.FramingError) -> None:
        self._log.warn(
            "Protocol error from {peer}: {reason}; sent Notice of Disconnection",
            peer=self._peerText,
            listener=self._listener.name,
            reason=reason.detail,
            kind=reason.reason,
        )
        self._disconnect(ber.PROTOCOL_ERROR, reason.detail)

    def _disconnect(self, resultCode: int, diagnosticMessage: str) -> None:
        """Notice of Disconnection, then close: the stream cannot go on."""
        self._closing = True
        self.transport.write(ber.noticeOfDisconnection(resultCode, diagnosticMessage))  # type: ignore[union-attr]
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()
        # a paused producer would keep the transport open after its buffer drains
        limits.releaseProducer(self.transport)
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _closeLinks(self, unbind: bool) -> None:
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.close(unbind=unbind)


class FrontendFactory(ServerFactory):
    """Makes a L{FrontendProtocol} for each client of one listener."""

    noisy = False

    def __init__(self, listener: Listener, runtime: Runtime, reactor: IReactorTime) -> None:
        self.listener = listener
        self.runtime = runtime
        self.reactor = reactor

    def buildProtocol(self, addr: IAddress) -> FrontendProtocol:
        protocol = FrontendProtocol(self.listener, self.runtime, self.reactor)
        protocol.factory = self
        return protocol
