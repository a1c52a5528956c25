# -*- test-case-name: tests.test_frontend -*-
"""
One client connection's links to its pools, and the flow control between
the client's transport and theirs.

L{ClientLinks} opens a link per pool on first use (an exclusive upstream
connection in C{session} mode, a view of the pool's shared connections in
C{shared} mode), makes it carry the session's identity (a bind replay when
the session's L{ldaproute.core.session.Session.replayFor} says so), and
closes them.  Each transport is the other's producer (as in
C{twisted.protocols.portforward}): a client that does not read pauses
every link (L{LinksProducer}); a backend that does not read pauses the
client (L{ClientReading}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer, IReactorTime, ITransport
from zope.interface import implementer

from ldaproute.backends import shared
from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.backends.sessionlink import SessionLink
from ldaproute.core import limits
from ldaproute.config import Route
from ldaproute.core.decisions import IDENTITY_LOST, Answer, Outstanding, SpanSearch
from ldaproute.core.rewrite import Refused
from ldaproute.core.session import Session
from ldaproute.core.slowpath import replayName
from ldaproute.listeners.events import ClientEvents
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime


@implementer(IPushProducer)
class LinksProducer:
    """
    Pauses every upstream connection of a client whose transport buffer is
    full, so a slow reader does not make the proxy hold a whole result.
    """

    def __init__(self, links: dict[str, IBackendLink]) -> None:
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
class ClientReading:
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


class ClientLinks:
    """
    The links of one client connection, by pool name.

    @param owner: the client connection the links report to.
    @param transport: the client's transport (its addresses go to the
        backend in a PROXY header when a pool sends one).
    """

    def __init__(
        self,
        owner: ILinkOwner,
        session: Session[IBackendLink],
        runtime: Runtime,
        reactor: IReactorTime,
        transport: ITransport,
        events: ClientEvents,
    ) -> None:
        self._owner = owner
        self._session = session
        self._runtime = runtime
        self._reactor = reactor
        self._transport = transport
        self._events = events
        self.byPool: dict[str, IBackendLink] = {}
        self.producer = LinksProducer(self.byPool)
        self.gate = limits.ReadGate(transport)

    def forward(self, envelope: ber.Envelope, pdu: bytes, route: Route, startTLS: bool = False) -> Answer | None:
        """
        Send a request to the session's link to C{route}'s pool (through
        the route's rewriter if it has one); the answer to write instead
        when it cannot be sent.
        """
        messageID = envelope.messageID
        runtime = self._runtime
        if runtime.debug:
            self._events.routed(messageID, envelope.opTag, route.name, route.pool)
        link = self.byPool.get(route.pool)  # type: ignore[arg-type]
        if link is None or link.boundVersion != self._session.identityVersion:
            link = self.linkFor(route.pool, envelope.opTag == ber.BIND_REQUEST)  # type: ignore[arg-type]
            if link is None:
                return IDENTITY_LOST
        sent = pdu
        if route.rewrites:
            try:
                sent = self._rewrite(route, link, messageID, pdu)
            except Refused as e:
                self._session.refused(envelope, e.resultCode)
                return Answer(e.resultCode, e.message)
        summary = runtime.observer.summarize(self._owner, pdu, envelope)  # as the client sent it
        pause = self._session.forwarded(envelope, pdu, link, route, self._reactor.seconds(), summary, startTLS, sent)
        pool = link.pool.pool
        budget = route.retryBudget
        link.operationStarted(
            messageID, route.operationTimeout or pool.operationTimeout, pool.retryBudget if budget is None else budget
        )
        link.send(sent)
        if pause:
            self.gate.pause("outstanding")
        return None

    def _rewrite(self, route: Route, link: IBackendLink, messageID: int, pdu: bytes) -> bytes:
        """
        The request through the route's rewriter; responses to it come
        back through the same rewriter (the link's transformer).

        @raise Refused: the rewrite refuses the request.
        """
        rewriting = self._session.rewriting
        rewritten = rewriting.request(route, messageID, pdu)
        if link.responseTransformer is None:
            link.responseTransformer = rewriting.responses
        if self._runtime.debug:
            self._events.rewritten(messageID, route.name, route.pool, _targetText(rewritten))
        return rewritten

    def replay(self, operations: list[Outstanding[IBackendLink]]) -> None:
        """
        Send again, in their order, operations whose link was lost before
        they were answered (L{ldaproute.core.replay}): on a new link to the
        same pool, which carries the session's identity first (its simple
        bind replayed), and waits within the retry budget for a backend.
        """
        for operation in operations:
            route = operation.rule
            assert route is not None and route.pool is not None
            link = self.linkFor(route.pool, False)
            if link is None:  # cannot happen: the session checked the identity
                continue
            operation.link = link
            operation.replays += 1
            if route.rewrites and link.responseTransformer is None:
                link.responseTransformer = self._session.rewriting.responses
            pool = link.pool
            pool.faults.replay(operation.opTag)
            budget = route.retryBudget
            link.operationStarted(
                operation.messageID,
                route.operationTimeout or pool.pool.operationTimeout,
                pool.pool.retryBudget if budget is None else budget,
            )
            link.send(operation.sent)

    def abandon(self, messageID: int, pdu: bytes) -> None:
        """The client's Abandon goes to the link that holds the operation."""
        sends = self._session.fanouts.abandon(messageID)
        if sends is not None:
            self.send(sends)
            return
        operation = self._session.abandon(messageID)
        if operation is not None:
            operation.link.abandon(messageID, pdu)
            self.answered()
            return
        # already answered (or unknown): the backend sees it anyway, as it
        # would without the proxy (ldapsearch -e '!abandon' sends it after
        # the result); shared links, whose IDs are remapped, have no transport
        for link in list(self.byPool.values()):
            if link.transport is not None:
                link.abandon(messageID, pdu)

    def answered(self) -> None:
        """Operations got their answers: the client may be read again."""
        if self.gate.paused and len(self._session.outstanding) < limits.PAUSE_OUTSTANDING:
            self.gate.resume("outstanding")

    @staticmethod
    def send(sends: list[tuple[IBackendLink, bytes]]) -> None:
        for link, pdu in sends:
            link.send(pdu)

    def linkFor(self, poolName: str, isBind: bool) -> IBackendLink | None:
        """
        The session's link to a pool, opened if need be, carrying the
        client's current identity (replayed when it does not yet); L{None}
        when the identity cannot be carried (a SASL bind).
        """
        session = self._session
        link = self.byPool.get(poolName)
        if self._runtime.config.mode == "shared":
            if link is None:
                link = self.byPool[poolName] = shared.linkFor(self._owner, self._runtime, poolName, self._reactor)
                if self.producer.paused:  # the client is not reading already
                    link.pauseReading()
            link.boundVersion = session.identityVersion
            return link
        if link is not None and (isBind or link.boundVersion == session.identityVersion):
            return link
        replay = session.replayFor(link.boundVersion if link is not None else None, isBind)
        if isinstance(replay, Answer):
            return None
        if replay is not None:
            replay = (replayName(self._runtime.rewriterFor, self._runtime.router, poolName, replay[0]), replay[1])
        if link is not None:
            link.rebind(replay)  # type: ignore[arg-type]
        else:
            link = self.byPool[poolName] = self._open(poolName, replay)
        link.boundVersion = session.identityVersion
        return link

    def startSpan(self, messageID: int, span: SpanSearch, write: Callable[[bytes], None]) -> bool:
        """
        Serve a root DSE read or a search spanning routes (its answers
        written with C{write}); C{False} when a link it needs cannot carry
        the session's identity (nothing was sent).
        """
        links = []
        for sub in span.subs:
            link = self.linkFor(sub.pool, False)
            if link is None:
                return False
            links.append(link)
        fanouts = self._session.fanouts
        for link, pdu in fanouts.start(messageID, span, links, write):
            if messageID not in fanouts:
                break  # finished already
            link.send(pdu)
        return True

    def _open(self, poolName: str, replay: tuple[bytes, bytes] | None) -> IBackendLink:
        """A new session-mode link to a pool."""
        runtime = self._runtime
        pool = runtime.backends.pools[poolName]
        transport: Any = self._transport
        return SessionLink(
            self._owner, pool, self._reactor, replay, self._session.peer,
            runtime.endpointFactory, (transport.getPeer(), transport.getHost()),
        )  # fmt: skip

    def connected(self, link: IBackendLink) -> None:
        """Back-pressure from the backend's side: its full buffer pauses the client."""
        transport: Any = link.transport
        if transport is not None:
            # not the client transport itself: when the upstream connection
            # is lost Twisted calls stopProducing on its producer, which
            # would close the client (a backend death must not end sessions)
            transport.registerProducer(ClientReading(self.gate), True)
            if self.producer.paused:  # the client is not reading
                link.pauseReading()

    def lost(self, link: IBackendLink) -> None:
        """C{link} is gone: the next operation for its pool opens another."""
        if self.byPool.get(link.pool.name) is link:
            del self.byPool[link.pool.name]

    def keepOnly(self, link: IBackendLink) -> None:
        """The session is pinned to C{link}: the others close (with an Unbind)."""
        for other in [other for other in self.byPool.values() if other is not link]:
            del self.byPool[other.pool.name]
            other.close(unbind=True)

    def closeAll(self) -> None:
        """Close every link, politely (an Unbind each)."""
        links = list(self.byPool.values())
        self.byPool.clear()
        for link in links:
            link.close(unbind=True)


def _targetText(pdu: bytes) -> str | None:
    """The target DN of a request, for a debug event."""
    try:
        envelope = ber.Envelope.fromBytes(pdu)
        target = envelope.targetDN(pdu)
    except (ber.FramingError, ValueError, IndexError):
        return None
    return target.decode("utf-8", "replace") if target is not None else None
