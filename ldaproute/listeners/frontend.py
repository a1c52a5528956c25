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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import error
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IAddress, IDelayedCall, IHandshakeListener, IPushProducer, IReactorTime, ISSLTransport, ITLSTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.wire import ber
from ldaproute.core import fanout, limits, secrets
from ldaproute.backends import shared
from ldaproute.wire.attributes import isRootDSESearch
from ldaproute.wire.fastwrite import writerFor
from ldaproute.config import Listener
from ldaproute.core.policy import ListenerPolicy
from ldaproute.core.routing import noRouteResult
from ldaproute.core.sasllayer import SecurityLayerWatch
from ldaproute.core.session import Outstanding, Session
from ldaproute.core.rewrite import Refused, Rewriter
from ldaproute.listeners.tls import ServerTLS
from ldaproute.wire.pdu import (
    PAGED_RESULTS_OID,
    controlOIDs,
    messageIDOf,
    searchSizeLimit,
    searchWith,
    splitMessage,
    startTLSResponse,
    withMessageID,
)
from ldaproute.backends.upstream import UpstreamLink

if TYPE_CHECKING:  # the runtime is above this layer: named for annotations only
    from ldaproute.runtime import Runtime

#: messageIDs of the proxy's fan-out sub-searches on upstream links (below
#: the links' own internal IDs).
_FANOUT_ID_BASE = 0x70000000
#: The longest a bind waits for the fleet's counts before it is decided on
#: this process's own, and a failed bind's answer for the fleet to count
#: the failure (Redis, or the worker group), seconds; see C{_askFleet}
#: and C{_holdAnswers}.  One store round trip is typical.
FLEET_WAIT = 0.1


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


@implementer(IHandshakeListener)
class FrontendProtocol(Protocol):
    """One client connection on a listener."""

    #: set by makeConnection: TCP, TLS over TCP, or a PROXY-header wrapper of them
    transport: ITLSTransport

    _log = Logger()

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
        self._secure = False  # TLS: ldaps listener or after StartTLS
        self._tlsState = "none"  # "none", "handshaking" (terminate), "done"
        self._passthroughID: int | None = None  # StartTLS forwarded, not answered
        self._idleTimer: IDelayedCall | None = None
        self._pduTimer: IDelayedCall | None = None
        self._framer = ber.Framer(runtime.config.maxPDUBytes)
        self._links: dict[str, UpstreamLink] = {}
        self._closing = False
        #: answers queued behind a failed bind the fleet has not counted yet
        self._heldAnswers: list[tuple[Any, bytes, list[Any]]] | None = None
        #: requests queued behind a bind that waits for the fleet's counts
        self._parkedPDUs: list[bytes] | None = None
        self._fleetChecked = False
        self._releasing = False
        #: whether bind throttling is shared with other processes (a
        #: throttle store): only then do binds and failed binds wait
        self._fleetShared = self._policy.throttle is not None and self._policy.throttle.shared
        self.session: Session
        self._layerWatch = SecurityLayerWatch()
        self._opaqueLink: UpstreamLink | None = None
        # slow path state: rewritten operations by messageID, fan-outs by
        # client messageID, their sub-searches by sub-search messageID
        self._rewritingOps: dict[int, Rewriter] = {}
        self._fanouts: dict[int, fanout.FanOut] = {}
        self._fanoutSubs: dict[int, tuple[fanout.FanOut, fanout.SubSearch]] = {}
        self._nextSubID = _FANOUT_ID_BASE
        #: messageIDs of root DSE reads on a cleartext connection, whose
        #: entries lose the SASL mechanisms the policy refuses here
        self._cleartextRootDSE: set[int] = set()

    # --- connection events ------------------------------------------------

    def connectionMade(self) -> None:
        self._peerText, self._peerAddress = describePeer(self.transport.getPeer())
        self.session = Session(self._peerText, self._listener.name)
        self._secure = ISSLTransport.providedBy(self.transport)
        if not self._policy.limits.allowed(self._peerAddress):
            # behind haproxy: endpoints, the real client address is only known now
            self._log.warn(
                "Connection from {peer} refused: not in client_network", peer=self._peerText, listener=self._listener.name
            )
            self._closing = True
            self.transport.abortConnection()
            return
        refusal = self._policy.limits.admit(self._peerAddress)
        if refusal is not None:
            self._log.warn(
                "Connection from {peer} refused: {reason}", peer=self._peerText, listener=self._listener.name, reason=refusal
            )
            self._disconnect(ber.BUSY, refusal)
            return
        self._admitted = True
        self._armIdleTimer()
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass
        self._gate = limits.ReadGate(self.transport)
        self._linksProducer = _LinksProducer(self._links)
        self.transport.registerProducer(self._linksProducer, True)  # type: ignore[attr-defined]
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
        self.session.peer = self._peerText
        self.dataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        self._received.inc(len(data))
        if self._closing:
            return
        if self._idleTimer is not None:
            self._idleTimer.reset(self._listener.idleTimeout)  # type: ignore[arg-type]
        if self._opaqueLink is not None or self._layerWatch.armed is not None:
            if self._relayOpaque(data):
                return
        try:
            pdus = self._framer.feed(data)
            if self._pduTimer is not None or self._framer.buffered:
                self._pduTimerAfter(bool(pdus))
            for pdu in pdus:
                if self._parkedPDUs is not None:  # a bind waits for the fleet's counts
                    self._parkedPDUs.append(pdu)
                    continue
                self._request(pdu)
                if self._closing:
                    return
        except ber.FramingError as e:
            self._protocolError(e)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if (
            not self._closing
            and (self._tlsState == "done" or ISSLTransport.providedBy(self.transport))
            and isinstance(reason, Failure)
            and reason.check(error.ConnectionDone)
        ):
            # RFC 4511 4.14.3: the client removed TLS (close_notify, which
            # Twisted answers with ours).  The session does not go on in
            # cleartext: the connection closes, and whatever the client
            # sends after its close_notify (typically a cleartext Unbind)
            # is not read.  A normal end, not an error.
            self._log.info(
                "{peer} removed TLS (close_notify): connection closed, the session does not go on in cleartext",
                peer=self._peerText,
                listener=self._listener.name,
            )
        self._closing = True
        self._securityConnectionLost(reason)
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()
        self._fanouts.clear()
        self._fanoutSubs.clear()
        self._runtime.observer.connectionClosed(self)

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
        if messageID in session.outstanding or messageID in self._fanouts:
            raise ber.FramingError("malformed", f"messageID {messageID} is already in use by an outstanding operation")
        if self._refusedByPolicy(envelope, pdu):
            return
        extendedOID = None
        if tag == ber.EXTENDED_REQUEST:
            extendedOID = envelope.extendedName(pdu)
            if extendedOID == ber.STARTTLS_OID and self._startTLS(envelope):
                return
        if tag == ber.SEARCH_REQUEST:
            maxDepth = self._runtime.config.maxFilterDepth
            # every filter level takes at least two bytes: a short request
            # cannot nest too deep, so only longer ones are walked
            if envelope.contentEnd - envelope.contentStart > 2 * maxDepth and limits.filterDepth(
                pdu, envelope, maxDepth
            ) > maxDepth:
                self._answer(
                    envelope, limits.ADMIN_LIMIT_EXCEEDED, f"search filter nested deeper than {maxDepth} levels", pdu=pdu
                )
                return
        if session.mustRebind and tag != ber.BIND_REQUEST:
            self._answer(
                envelope,
                ber.OPERATIONS_ERROR,
                "the upstream connection was lost and a SASL bind cannot be replayed: bind again",
                pdu=pdu,
            )
            return

        if tag == ber.SEARCH_REQUEST and not self._secure and self._listener.requireTLSForPasswords:
            # a second byte test keeps the common case (a non-empty base) cheap
            if pdu[envelope.contentStart + 1] in (0, 1, 0x81) and isRootDSESearch(pdu, envelope):
                self._cleartextRootDSE.add(messageID)

        runtime = self._runtime
        router = runtime.router
        targetDN = envelope.targetDN(pdu) if router.needsTargetDN else None
        if tag == ber.SEARCH_REQUEST and router.needsTargetDN and self._searchAcrossRoutes(envelope, pdu, targetDN):
            return
        route = router.routeFor(
            self._listener.name,
            tag,
            targetDN,
            session.identity.dn if router.needsBoundDN else None,
            self._peerAddress,
            extendedOID,
        )
        if runtime.debug:
            self._log.debug(
                "Operation {messageID} ({op}) routed by {route} to {pool}",
                messageID=messageID,
                op=ber.OPERATION_NAMES.get(tag, hex(tag)),
                route=route.name if route is not None else None,
                pool=route.pool if route is not None else None,
                peer=self._peerText,
                listener=self._listener.name,
            )
        if route is None and tag == ber.BIND_REQUEST and session.bindStarted(pdu, envelope).kind == "anonymous":
            # an anonymous simple bind that no route claims: the proxy can
            # say yes itself, since the links it opens later are anonymous
            session.bindCompleted(None, ber.SUCCESS)
            self._answer(envelope, ber.SUCCESS, "", pdu=pdu)
            return
        if route is None:
            code, text = noRouteResult(tag)
            self._answer(envelope, code, text, pdu=pdu)
            return
        if route.reject is not None:
            self._answer(envelope, route.reject.resultCode, route.reject.message, route.name, pdu)
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
                pdu=pdu,
            )
            return
        requestPDU = pdu  # as the client sent it, for the access log
        if route.rewrites:
            try:
                pdu = self._rewriteRequest(route, link, messageID, pdu)
            except Refused as e:
                if isBind:
                    session.bindCompleted(None, e.resultCode)
                self._answer(envelope, e.resultCode, e.message, pdu=pdu)
                return
        session.outstanding[messageID] = Outstanding(
            messageID, tag, link, self._reactor.seconds(), route.name, pending,
            runtime.observer.summarize(self, requestPDU, envelope),
        )
        if isBind:
            choice, mechanism = envelope.bindAuthentication(pdu)
            self._layerWatch.bindSent(messageID, mechanism if choice == ber.SASL_AUTH_TAG else None, link)
        elif extendedOID == ber.STARTTLS_OID:
            self._passthroughID = messageID
        timeout = route.operationTimeout or link.pool.pool.operationTimeout
        link.operationStarted(messageID, timeout)
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
        if self._runtime.config.mode == "shared":
            return self._sharedLinkFor(poolName)
        session = self.session
        identity = session.identity
        link = self._links.get(poolName)
        if link is not None and (isBind or link.boundVersion == session.identityVersion):
            return link
        if not isBind and not identity.replayable:
            session.identityLost()
            return None
        replay = None if isBind else (self._replayName(poolName, identity.name), identity.password)
        if link is not None:
            link.rebind(replay)  # type: ignore[arg-type]
            link.boundVersion = session.identityVersion
            return link
        if identity.kind == "anonymous":
            replay = None
        runtime = self._runtime
        pool = runtime.backends.pools[poolName]
        link = UpstreamLink(
            self, pool, self._reactor, pool.pool.connectTimeout, replay, self._peerText, runtime.endpointFactory,
            (self.transport.getPeer(), self.transport.getHost()),
        )
        link.boundVersion = session.identityVersion
        self._links[poolName] = link
        return link

    def _sharedLinkFor(self, poolName: str) -> Any:
        """Shared mode: the session's view of the pool's shared connections."""
        link = self._links.get(poolName)
        if link is None:
            link = shared.linkFor(self, self._runtime, poolName, self._reactor)  # type: ignore[assignment]
            self._links[poolName] = link  # type: ignore[assignment]
        link.boundVersion = self.session.identityVersion  # type: ignore[union-attr]
        return link

    def _replayName(self, poolName: str, name: bytes) -> bytes:
        """The bind DN to replay on a pool, through the suffix rewrite of
        the first route to that pool that has one."""
        for route in self._runtime.router.routes:
            if route.pool == poolName and route.rewriteSuffix is not None:
                return self._runtime.rewriterFor(route).dnToBackend(name)
        return name

    def _abandon(self, messageID: int, pdu: bytes) -> None:
        search = self._fanouts.pop(messageID, None)
        if search is not None:
            search.finished = True
            self._abandonSubs(search.pending())
            return
        operation = self.session.outstanding.pop(messageID, None)
        if operation is not None:
            operation.link.operationEnded(messageID)
            operation.link.send(pdu)
            self._outstandingAnswered()

    def _unbind(self) -> None:
        self._closing = True
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()
        # a paused producer would keep the transport open after its buffer drains
        limits.releaseProducer(self.transport)
        self.transport.loseConnection()

    # --- answers from links -----------------------------------------------

    def linkConnected(self, link: UpstreamLink) -> None:
        """Back-pressure from the backend's side: its full buffer pauses us."""
        transport: Any = link.transport
        if transport is not None and self.transport is not None:
            # not the client transport itself: when the upstream connection
            # is lost Twisted calls stopProducing on its producer, which
            # would close the client (a backend death must not end sessions)
            transport.registerProducer(_ClientReading(self._gate), True)
            if self._linksProducer.paused:  # the client is not reading
                link.pauseReading()

    def linkReceived(self, link: UpstreamLink, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        if self._fleetShared:
            if self._heldAnswers is not None:
                self._heldAnswers.append((link, data, finals))
                return
            if finals and not self._releasing:
                acknowledged = self._recordBindFailures(finals)
                if acknowledged:
                    self._holdAnswers(acknowledged, (link, data, finals))
                    return
        if self._fanoutSubs:
            data = self._fanoutResponses(data)
        if self._cleartextRootDSE:
            data = self._filterRootDSE(data, finals)
        if data:
            self._write(data)
            self._sent.inc(len(data))
        outstanding = self.session.outstanding
        for messageID, tag, code in finals:
            if self._rewritingOps:
                self._rewritingOps.pop(messageID, None)
            operation = outstanding.get(messageID)
            if operation is None:
                continue
            if tag == ber.BIND_RESPONSE and code != ber.SASL_BIND_IN_PROGRESS:
                self._forgetAbandonedBy(operation)
            del outstanding[messageID]
            link.operationEnded(messageID)
            self._completed(operation, code, link)
            if tag == ber.BIND_RESPONSE:
                self._layerWatch.bindAnswered(messageID, code)
                if code == ber.INVALID_CREDENTIALS and not self._fleetShared:
                    self._bindFailed(operation.pending)  # shared: counted before the answer went out
                if self.session.bindCompleted(operation.pending, code):
                    link.boundVersion = self.session.identityVersion
            elif messageID == self._passthroughID:
                self._passthroughAnswered(link, code)
        if finals:
            self._outstandingAnswered()

    def _recordBindFailures(self, finals: list[tuple[int, int, int]]) -> list[Deferred[Any]]:
        """
        Count the failed binds among C{finals}; the fleet acknowledgements
        (L{ldaproute.fleet.throttle}) still awaited.
        """
        waiting: list[Deferred[Any]] = []
        for messageID, tag, code in finals:
            if tag == ber.BIND_RESPONSE and code == ber.INVALID_CREDENTIALS:
                operation = self.session.outstanding.get(messageID)
                if operation is not None:
                    for ack in self._bindFailed(operation.pending):
                        if isinstance(ack, Deferred) and not ack.called:
                            waiting.append(ack)
        return waiting

    def _holdAnswers(self, acknowledged: list[Deferred[Any]], first: tuple[Any, bytes, list[Any]]) -> None:
        """
        A failed bind's answer waits until the fleet has counted the
        failure, at most L{FLEET_WAIT}: the guesser learns of the
        failure only once every other process has too, so a next guess on
        another process or replica meets the shared count.  Only failed
        binds wait; what the link sends meanwhile queues behind them.
        """
        self._heldAnswers = [first]
        timer = self._reactor.callLater(FLEET_WAIT, self._releaseAnswers)
        gatherResults(acknowledged, consumeErrors=True).addBoth(lambda _: self._releaseAnswers(timer))

    def _releaseAnswers(self, timer: IDelayedCall | None = None) -> None:
        held, self._heldAnswers = self._heldAnswers, None
        if timer is not None and timer.active():
            timer.cancel()
        if held is None or self._closing:
            return
        first, *rest = held
        self._releasing = True  # its failures are counted already
        try:
            self.linkReceived(*first)
        finally:
            self._releasing = False
        for later in rest:  # may hold again; what follows queues behind it
            self.linkReceived(*later)

    def _filterRootDSE(self, data: bytes, finals: list[tuple[int, int, int]]) -> bytes:
        """
        The root DSE read on a cleartext connection, as this client may see
        it: without the SASL mechanisms it would be refused for here.
        """
        reads = self._cleartextRootDSE
        out = []
        for pdu in ber.Framer(1 << 62).feed(data):
            out.append(secrets.cleartextRootDSE(pdu) if messageIDOf(pdu) in reads else pdu)
        for messageID, _, _ in finals:
            reads.discard(messageID)
        return b"".join(out)

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
            bind.link.operationEnded(messageID)

    def _relayOpaque(self, data: bytes) -> bool:
        """
        Relay C{data} untouched if this session is (or now becomes) an
        opaque SASL-layer session; see L{ldaproute.core.sasllayer}.
        """
        link = self._opaqueLink
        if link is None:
            link = self._layerWatch.check(data, self._framer.buffered == 0)
            if link is None:
                return False
            self._opaqueLink = link
            for name, other in list(self._links.items()):
                if other is not link:
                    del self._links[name]
                    other.close(unbind=True)
            link.goOpaque()
            self._log.info(
                "{peer} negotiated a SASL security layer ({mechanism}); relaying its bytes opaquely to {backend}",
                peer=self._peerText,
                listener=self._listener.name,
                mechanism=(self._layerWatch.mechanism or b"?").decode("ascii", "replace"),
                backend=link.backend.name if link.backend else None,
            )
        link.writeRaw(data)
        return True

    def linkTLSHandshake(self, link: UpstreamLink, outcome: str) -> None:
        """A TLS handshake towards a backend: C{success} or C{failure}."""
        self._runtime.observer.metrics.tlsHandshake("backend", outcome)

    def linkReceivedRaw(self, link: UpstreamLink, data: bytes) -> None:
        """Backend bytes of an opaque session."""
        self.transport.write(data)

    def linkLost(self, link: UpstreamLink, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        if self._opaqueLink is link:
            self._closing = True
            self.transport.loseConnection()
            return
        if self._passthroughID is not None:
            pending = self.session.outstanding.get(self._passthroughID)
            if pending is None or pending.link is link:
                self._passthroughID = None  # answered 52 below; still cleartext
        if self._links.get(link.pool.name) is link:
            del self._links[link.pool.name]
        self._failSubSearches(link, resultCode, reason)
        self._failOperations(link, resultCode, reason)

    def linkOperationTimedOut(self, link: UpstreamLink, messageID: int, reason: str) -> None:
        """Answer an operation the link abandoned after its operation_timeout."""
        operation = self.session.outstanding.pop(messageID, None)
        if operation is None or self._closing:
            return
        if operation.opTag == ber.BIND_REQUEST:
            self.session.bindCompleted(None, ber.TIME_LIMIT_EXCEEDED)
        self._log.warn(
            "Operation {messageID} of {peer} timed out: {reason}",
            messageID=messageID,
            peer=self._peerText,
            listener=self._listener.name,
            route=operation.route,
            pool=link.pool.name,
            backend=link.backend.name if link.backend else None,
            op=ber.OPERATION_NAMES.get(operation.opTag, hex(operation.opTag)),
            resultCode=ber.TIME_LIMIT_EXCEEDED,
            durationMs=round((self._reactor.seconds() - operation.startedAt) * 1000),
        )
        self.transport.write(
            ber.result(messageID, ber.RESPONSE_FOR[operation.opTag], ber.TIME_LIMIT_EXCEEDED, reason)
        )
        self._completed(operation, ber.TIME_LIMIT_EXCEEDED, link, reason)

    def linkReplayFailed(self, link: UpstreamLink, resultCode: int) -> None:
        self.session.identityLost()
        self._failSubSearches(
            link, ber.OPERATIONS_ERROR, f"the backend refused to restore this session's bind (resultCode {resultCode})"
        )
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
            self._completed(operation, resultCode, link, reason)
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
        self.transport.writeSequence(answers)
        self._outstandingAnswered()

    # --- the slow path: rewriting and searches across routes -------------

    def _rewriteRequest(self, route: Any, link: UpstreamLink, messageID: int, pdu: bytes) -> bytes:
        """The request through the route's rewriter; responses to it will
        come back through the same rewriter (the link's transformer)."""
        rewriter = self._runtime.rewriterFor(route)
        rewritten = rewriter.request(pdu)
        self._rewritingOps[messageID] = rewriter
        if link.responseTransformer is None:
            link.responseTransformer = self._rewriteResponses
        if self._runtime.debug:
            self._log.debug(
                "Operation {messageID} rewritten by route {route} for pool {pool}: target {rewrittenDN}",
                messageID=messageID,
                route=route.name,
                pool=route.pool,
                rewrittenDN=_targetText(rewritten),
                peer=self._peerText,
            )
        return rewritten

    def _rewriteResponses(self, data: bytes) -> bytes:
        ops = self._rewritingOps
        if not ops:
            return data
        out = []
        for pdu in ber.Framer(1 << 62).feed(data):
            rewriter = ops.get(messageIDOf(pdu))
            out.append(rewriter.response(pdu) if rewriter is not None else pdu)
        return b"".join(out)

    def _searchAcrossRoutes(self, envelope: ber.Envelope, pdu: bytes, base: bytes | None) -> bool:
        """
        Serve a root DSE read or a search spanning routes with a
        L{fanout.FanOut}; False when one route serves the search as usual.
        """
        session = self.session
        boundDN = session.identity.dn
        plan = fanout.planSearch(self._runtime.router, self._listener.name, pdu, base, boundDN, self._peerAddress)
        if plan is None:
            return False
        messageID = envelope.messageID
        if len(plan.targets) > 1 and PAGED_RESULTS_OID in controlOIDs(splitMessage(pdu)[3]):
            self._answer(
                envelope,
                ber.UNWILLING_TO_PERFORM,
                "paged results cannot span routes: search below one naming context at a time",
            )
            return True
        subs = []
        for target in plan.targets:
            route = target.route
            subID = self._nextSubID
            self._nextSubID = _FANOUT_ID_BASE + (self._nextSubID + 1 - _FANOUT_ID_BASE) % 0x0FFFFF00
            subPDU = searchWith(withMessageID(pdu, subID), target.base, target.scope)
            rewriter = None
            if route.rewrites:
                rewriter = self._runtime.rewriterFor(route)
                try:
                    subPDU = rewriter.request(subPDU)
                except Refused as e:
                    self._answer(envelope, e.resultCode, e.message)
                    return True
            assert route.pool is not None  # reject routes are never search targets
            subs.append(fanout.SubSearch(route.name, route.pool, subID, subPDU, rewriter))
        links = []
        for sub in subs:
            link = self._linkFor(sub.pool, False)
            if link is None:
                self._answer(
                    envelope,
                    ber.OPERATIONS_ERROR,
                    "this operation needs a new upstream connection and a SASL bind cannot be replayed: bind again",
                )
                return True
            links.append(link)
        write: Callable[[bytes], None] = self.transport.write
        if messageID in self._cleartextRootDSE:
            self._cleartextRootDSE.discard(messageID)
            write = self._writeCleartextRootDSE
        search = fanout.FanOut(
            messageID,
            searchSizeLimit(pdu),
            subs,
            write,
            plan.entryHook if plan.rootDSE and subs else None,
        )
        if self._runtime.debug:
            self._log.debug(
                "Search {messageID} spans routes {routes}",
                messageID=messageID,
                routes=[f"{sub.route}->{sub.pool}" for sub in subs],
                peer=self._peerText,
                listener=self._listener.name,
            )
        if plan.rootDSE and not subs:
            search.writeEntry(fanout.rootDSEEntry(plan.namingContexts))
            search.start()
            return True
        self._fanouts[messageID] = search
        for sub, link in zip(subs, links):
            sub.link = link
            self._fanoutSubs[sub.subID] = (search, sub)
        for sub, link in zip(subs, links):
            if search.finished:
                break
            link.send(sub.pdu)
        return True

    def _writeCleartextRootDSE(self, pdu: bytes) -> None:
        """A fan-out's root DSE PDU to a cleartext client (see L{_filterRootDSE})."""
        self.transport.write(secrets.cleartextRootDSE(pdu))

    def _fanoutResponses(self, data: bytes) -> bytes:
        """Take the fan-out sub-searches' PDUs out of a chunk."""
        keep = []
        subs = self._fanoutSubs
        for pdu in ber.Framer(1 << 62).feed(data):
            found = subs.get(messageIDOf(pdu))
            if found is None:
                keep.append(pdu)
                continue
            search, sub = found
            abandon = search.pduReceived(sub, pdu)
            if sub.resultCode is not None:
                subs.pop(sub.subID, None)
            self._fanoutProgress(search, abandon)
        return b"".join(keep)

    def _failSubSearches(self, link: UpstreamLink, resultCode: int, reason: str) -> None:
        """Sub-searches on a link that lost them count as failed."""
        if not self._fanoutSubs:
            return
        for subID, (search, sub) in list(self._fanoutSubs.items()):
            if sub.link is link:
                del self._fanoutSubs[subID]
                search.subFailed(sub, resultCode, reason)
                self._fanoutProgress(search, [])

    def _fanoutProgress(self, search: fanout.FanOut, abandon: list[fanout.SubSearch]) -> None:
        if abandon:
            self._abandonSubs(abandon)
        if search.finished and self._fanouts.get(search.messageID) is search:
            del self._fanouts[search.messageID]

    def _abandonSubs(self, subs: list[fanout.SubSearch]) -> None:
        for sub in subs:
            if sub.link is not None:
                sub.link.send(ber.message(self._nextSubID, ber.tlv(ber.ABANDON_REQUEST, ber.encodeInteger(sub.subID))))
                self._nextSubID += 1
    def _completed(self, operation: Outstanding, resultCode: int, link: UpstreamLink | None, message: str = "") -> None:
        now = self._reactor.seconds()
        self._runtime.observer.operationCompleted(
            self, operation.opTag, operation.messageID, operation.route, link, resultCode,
            operation.startedAt, now, operation.summary, message,
        )  # fmt: skip

    # --- the proxy's own answers ------------------------------------------

    def _answer(
        self, envelope: ber.Envelope, resultCode: int, diagnosticMessage: str, route: str = "", pdu: bytes | None = None
    ) -> None:
        answer = ber.resultFor(envelope, resultCode, diagnosticMessage)
        if answer is not None:
            self.transport.write(answer)
            now = self._reactor.seconds()
            observer = self._runtime.observer
            summary = observer.summarize(self, pdu, envelope) if pdu is not None else None
            observer.operationCompleted(
                self, envelope.opTag, envelope.messageID, route, None, resultCode, now, now, summary, diagnosticMessage
            )

    def _protocolError(self, reason: ber.FramingError) -> None:
        self._log.warn(
            "Protocol error from {peer}: {reason}; sent Notice of Disconnection",
            peer=self._peerText,
            listener=self._listener.name,
            reason=reason.detail,
            kind=reason.reason,
        )
        self._runtime.observer.pduRejected(self, reason.reason)
        self._disconnect(ber.PROTOCOL_ERROR, reason.detail)

    # --- security policy (see policy.py and tls.py) ------------------------

    def _refusedByPolicy(self, envelope: ber.Envelope, pdu: bytes) -> bool:
        """
        Answer a request that the listener's policy refuses; C{True} when
        answered (nothing goes upstream).
        """
        listener = self._listener
        session = self.session
        tag = envelope.opTag
        if self._passthroughID is not None:
            self._answer(envelope, ber.OPERATIONS_ERROR, "StartTLS is in progress: wait for its response", pdu=pdu)
            return True
        if listener.maxOutstanding is not None and len(session.outstanding) >= listener.maxOutstanding:
            self._answer(
                envelope,
                ber.BUSY,
                f"too many operations outstanding on this connection (limit {listener.maxOutstanding})",
                pdu=pdu,
            )
            return True
        if listener.requireTLSForPasswords and not self._secure:
            secret = self._policy.secrets.secretIn(pdu, envelope)
            if secret is not None:
                self._refuseSecret(envelope, pdu, secret)
                return True
        if tag == ber.BIND_REQUEST:
            name = envelope.targetDN(pdu) or b""
            refusal = None
            if self._policy.throttle is not None:
                reason = self._policy.throttle.refusal(self._peerAddress, name, self._reactor.seconds())
                if reason is None and self._fleetShared:
                    checked, self._fleetChecked = self._fleetChecked, False
                    if not checked and self._askFleet(pdu, name):
                        return True  # decided when the fleet's counts are in
                if reason is not None:
                    refusal = (ber.UNWILLING_TO_PERFORM, reason, "bind throttled")
                    self._runtime.observer.metrics.bindThrottled(listener.name)
            if refusal is not None:
                code, message, event = refusal
                self._log.warn(
                    "{event} for {peer} (bindDN {bindDN}): {reason}",
                    event=event,
                    peer=self._peerText,
                    listener=listener.name,
                    bindDN=name.decode("utf-8", "replace"),
                    op="bind",
                    messageID=envelope.messageID,
                    resultCode=code,
                    reason=message,
                )
                self._answer(envelope, code, message, pdu=pdu)
                # RFC 4511 4.2.1: a failed bind leaves the connection anonymous
                session.bindCompleted(None, code)
                return True
            return False
        if not listener.allowAnonymous and session.identity.kind == "anonymous":
            if tag == ber.EXTENDED_REQUEST and envelope.extendedName(pdu) == ber.STARTTLS_OID:
                return False
            self._answer(
                envelope,
                ber.INSUFFICIENT_ACCESS_RIGHTS,
                "anonymous access is not allowed on this listener: bind first",
                pdu=pdu,
            )
            return True
        return False

    def _askFleet(self, pdu: bytes, name: bytes) -> bool:
        """
        With a shared throttle store: park the bind (and whatever the
        client sends after it) until the fleet's latest counts for its
        address and DN are in, at most L{FLEET_WAIT}; then decide again.
        C{False} when there is nothing to wait for (store unreachable).
        """
        answer = self._policy.throttle.askFleet(self._peerAddress, name)  # type: ignore[union-attr]
        if not isinstance(answer, Deferred) or answer.called:
            return False
        self._parkedPDUs = []
        self._gate.pause("fleet")
        timer = self._reactor.callLater(FLEET_WAIT, self._fleetAnswered, pdu, None)
        answer.addBoth(lambda _: self._fleetAnswered(pdu, timer))
        return True

    def _fleetAnswered(self, pdu: bytes, timer: IDelayedCall | None) -> None:
        if self._parkedPDUs is None or self._closing:
            return  # the timer or the answer came first, or the client left
        if timer is not None and timer.active():
            timer.cancel()
        parked, self._parkedPDUs = self._parkedPDUs, None
        self._gate.resume("fleet")
        self._fleetChecked = True
        try:
            for index, next in enumerate([pdu, *parked]):
                if self._closing:
                    return
                if self._parkedPDUs is not None:  # parked again by a later bind
                    self._parkedPDUs.extend(parked[index - 1 :])
                    return
                self._request(next)
                self._fleetChecked = False  # only ever for the bind that waited
        except ber.FramingError as e:
            self._protocolError(e)

    def _refuseSecret(self, envelope: ber.Envelope, pdu: bytes, secret: secrets.Secret) -> None:
        """
        Answer a request that would send a password over this cleartext
        connection: confidentialityRequired (13), one warning (never the
        secret), counted by kind; nothing goes upstream.
        """
        listener = self._listener.name
        target = envelope.targetDN(pdu)
        self._log.warn(
            "cleartext {kind} refused for {peer} ({description}, DN {bindDN}): TLS is required for passwords",
            kind=secret.kind.replace("_", " "),
            description=secret.description,
            peer=self._peerText,
            listener=listener,
            bindDN=target.decode("utf-8", "replace") if target is not None else None,
            mechanism=secret.mechanism,
            attribute=secret.attribute,
            op=ber.OPERATION_NAMES.get(envelope.opTag, hex(envelope.opTag)),
            messageID=envelope.messageID,
            resultCode=ber.CONFIDENTIALITY_REQUIRED,
        )
        self._runtime.observer.metrics.cleartextSecretRefused(listener, secret.kind)
        self._answer(envelope, ber.CONFIDENTIALITY_REQUIRED, secret.refusal)
        if envelope.opTag == ber.BIND_REQUEST:
            # RFC 4511 4.2.1: a failed bind leaves the connection anonymous
            self.session.bindCompleted(None, ber.CONFIDENTIALITY_REQUIRED)

    def _startTLS(self, envelope: ber.Envelope) -> bool:
        """
        The StartTLS extended request (RFC 4511 4.14, RFC 4513 3); C{True}
        when answered here, C{False} to forward it (passthrough).
        """
        mode = self._listener.starttls
        if mode == "off":
            self._answer(envelope, ber.PROTOCOL_ERROR, "StartTLS is not offered on this listener")
            return True
        if self._secure or self._tlsState != "none":
            self._answer(envelope, ber.OPERATIONS_ERROR, "TLS is already established on this connection")
            return True
        if self.session.outstanding:
            self._answer(envelope, ber.OPERATIONS_ERROR, "StartTLS is refused while operations are outstanding")
            return True
        if mode == "passthrough":
            return False
        if self._serverTLS is None:
            self._answer(envelope, ber.UNAVAILABLE, "StartTLS is not available: no certificate loaded")
            return True
        self.transport.write(startTLSResponse(envelope.messageID))
        self.transport.startTLS(self._serverTLS)
        self.session.tlsStarted()
        self._secure = True  # every byte from now on is inside TLS
        self._tlsState = "handshaking"
        return True

    def handshakeCompleted(self) -> None:
        """IHandshakeListener: the client finished a TLS handshake."""
        self._runtime.observer.metrics.tlsHandshake("client", "success")
        if self._tlsState == "handshaking":
            self._tlsState = "done"
            self._runtime.observer.connectionSecured(self, "starttls")
            self._log.info("TLS established with {peer}", peer=self._peerText, listener=self._listener.name)

    def _passthroughAnswered(self, link: UpstreamLink, resultCode: int) -> None:
        self._passthroughID = None
        if resultCode != ber.SUCCESS:
            return  # the session stays cleartext and usable
        self._log.info(
            "StartTLS passed through for {peer}: relaying to backend {backend} untouched",
            peer=self._peerText,
            listener=self._listener.name,
            pool=link.pool.name,
            backend=link.backend.name if link.backend else None,
        )
        for other in [other for other in self._links.values() if other is not link]:
            del self._links[other.pool.name]
            other.close(unbind=True)
        self._opaqueLink = link
        self._secure = True
        self.session.tlsStarted()  # the backend did the same on its side
        self._cancelTimer("_pduTimer")
        self._runtime.observer.connectionSecured(self, "passthrough")
        link.goOpaque()

    def _bindFailed(self, pending: Any) -> list[object]:
        throttle = self._policy.throttle
        if throttle is None:
            return []
        name = pending.name if pending is not None else b""
        return throttle.failed(self._peerAddress, name, self._reactor.seconds())

    def _armIdleTimer(self) -> None:
        timeout = self._listener.idleTimeout
        if timeout is not None:
            self._idleTimer = self._reactor.callLater(timeout, self._idleTimedOut)

    def _idleTimedOut(self) -> None:
        self._idleTimer = None
        if self._closing:
            return
        if self.session.outstanding:
            self._armIdleTimer()
            return
        self._log.info("Closing idle connection from {peer}", peer=self._peerText, listener=self._listener.name)
        self._disconnect(ber.UNAVAILABLE, f"idle for {self._listener.idleTimeout:g}s")

    def _pduTimerAfter(self, completed: bool) -> None:
        """Slow-loris defence: a started PDU must complete within pdu_timeout."""
        timeout = self._listener.pduTimeout
        if timeout is None:
            return
        if self._framer.buffered == 0:
            self._cancelTimer("_pduTimer")
        elif self._pduTimer is None:
            self._pduTimer = self._reactor.callLater(timeout, self._pduTimedOut)
        elif completed:
            self._pduTimer.reset(timeout)

    def _pduTimedOut(self) -> None:
        self._pduTimer = None
        if self._closing:
            return
        self._log.warn(
            "Protocol error from {peer}: a PDU was not completed within {timeout}s; sent Notice of Disconnection",
            peer=self._peerText,
            listener=self._listener.name,
            timeout=self._listener.pduTimeout,
        )
        self._disconnect(ber.PROTOCOL_ERROR, f"a PDU was not completed within {self._listener.pduTimeout:g}s")

    def _cancelTimer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            setattr(self, name, None)
            if timer.active():
                timer.cancel()

    def _securityConnectionLost(self, reason: Failure) -> None:
        self._cancelTimer("_idleTimer")
        self._cancelTimer("_pduTimer")
        if self._admitted:
            self._admitted = False
            self._policy.limits.release(self._peerAddress)
        if self._tlsState == "handshaking":
            self._runtime.observer.metrics.tlsHandshake("client", "failure")
            self._log.warn(
                "TLS handshake with {peer} failed: {reason}",
                peer=self._peerText,
                listener=self._listener.name,
                reason=reason.getErrorMessage(),
            )
    def shutDown(self) -> None:
        """The proxy is stopping: Notice of Disconnection (unavailable), then close."""
        if not self._closing:
            self._disconnect(ber.UNAVAILABLE, "the proxy is shutting down")

    def _disconnect(self, resultCode: int, diagnosticMessage: str) -> None:
        """Notice of Disconnection, then close: the stream cannot go on."""
        self._closing = True
        self.transport.write(ber.noticeOfDisconnection(resultCode, diagnosticMessage))
        self._closeLinks(unbind=True)
        self.session.outstanding.clear()
        # a paused producer would keep the transport open after its buffer drains
        limits.releaseProducer(self.transport)
        self.transport.loseConnection()

    def _closeLinks(self, unbind: bool) -> None:
        links = list(self._links.values())
        self._links.clear()
        for link in links:
            link.close(unbind=unbind)


def _targetText(pdu: bytes) -> str | None:
    try:
        envelope = ber.Envelope.fromBytes(pdu)
        target = envelope.targetDN(pdu)
    except Exception:
        return None
    return target.decode("utf-8", "replace") if target is not None else None


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
