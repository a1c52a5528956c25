# -*- test-case-name: tests.test_connection -*-
"""
Reaching a backend and preparing the connection: the first half of a
L{ldaproute.backends.connection.BackendConnection}'s life, and what ends it
from the backend's side.

L{Connector} goes through the pool's candidates, best first, until one
accepts, counting every attempt against its backend (C{connecting},
C{connections}, and the C{ok}/C{failed} connects: an attempt succeeds only
once it is as secure as configured, so a backend whose certificate fails
verification counts one failed attempt, not one of each).  It sends the
PROXY header when the backend wants one and secures the connection:
C{ldaps} (the endpoint is TLS-wrapped) or StartTLS, the proxy's own first
request; a refused or failed TLS set-up is a failed attempt, never a
cleartext fallback.

When no candidate takes the connection (refused, reset, timed out, every
backend at its cap) while operations wait for it with a retry budget
(C{retry_budget}), it does not give up: it tries the pool's candidates
again, after a pause that starts at a few milliseconds and doubles up to
C{retry_backoff_max}, so that a backend restarting (or a pool whose every
member was marked down by a blip) serves them as soon as it accepts.
Each waiting operation is answered unavailable (or busy) only when its own
budget is spent; the connection gives up when nothing waits any more.  One
event is logged per such sequence of attempts, not one per attempt.

Then it binds, when given an identity to carry (the session's replayed
bind, or the pool's service identity): the proxy's own requests (StartTLS,
binds) go out under messageIDs of their own and their answers never reach a
client.  A backend that sends what is not LDAP, or its Notice of
Disconnection, ends the connection.

L{BackendProtocol} is one attempt's protocol; an attempt given up is
detached, so its transport's late events reach nobody.  Securing and
binding a connection is L{ldaproute.backends.securing}'s part; the books
of operations waiting through reconnect rounds are
L{ldaproute.backends.waiting}'s.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.backends.interfaces import IConnectionOwner
from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.backends.securing import ABANDON_ID, INTERNAL_ID_BASE, UNBIND_ID, Securing
from ldaproute.backends.waiting import Reconnecting
from ldaproute.wire import ber
from ldaproute.wire.pdu import startTLSRequest
from ldaproute.wire.results import noticeOf
from ldaproute.wire.proxyheader import proxyHeader


EndpointFactory = Callable[[Any, BackendState, float], IStreamClientEndpoint]


def endpointFor(reactor: Any, state: BackendState, timeout: float) -> IStreamClientEndpoint:
    """The Twisted endpoint that reaches a backend (TLS-wrapped for C{ldaps})."""
    url = state.backend.url
    if url.scheme == "ldapi":
        return UNIXClientEndpoint(reactor, url.host, timeout=timeout)
    endpoint: IStreamClientEndpoint
    if isIPAddress(url.host):
        # an address needs no resolver thread and no happy-eyeballs race:
        # connecting is most of what connection churn costs
        endpoint = TCP4ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    elif isIPv6Address(url.host):
        endpoint = TCP6ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    if state.backend.tls == "ldaps" or url.scheme == "ldaps":
        endpoint = wrapClientTLS(state.clientTLSOptions(), endpoint)
    return endpoint


@implementer(IHandshakeListener)
class BackendProtocol(Protocol):
    """One connection attempt's protocol: transport events to its connection."""

    def __init__(self, connection: Any) -> None:
        #: the L{ldaproute.backends.connection.BackendConnection}, or None once detached
        self.connection = connection

    def detach(self) -> None:
        self.connection = None

    def connectionMade(self) -> None:
        transport: Any = self.transport  # TCP, TLS or UNIX: only TCP has Nagle
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass  # UNIX sockets have no Nagle

    def dataReceived(self, data: bytes) -> None:
        connection = self.connection
        if connection is not None:
            connection.receiver.feed(data)

    def handshakeCompleted(self) -> None:
        if self.connection is not None:
            self.connection.tlsHandshakeCompleted()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if self.connection is not None:
            self.connection.connectionLost(reason)


class _AttemptFactory(Factory):
    """One connection attempt's factory; quiet, as there are many."""

    noisy = False

    def __init__(self, connection: Connector) -> None:
        self._connection = connection

    def buildProtocol(self, addr: object) -> BackendProtocol:
        return BackendProtocol(self._connection)


class Connector(Securing):
    """
    Candidates to a secured, bound transport.  A subclass carries on from
    L{_attached} (a transport exists), L{_ready} (secured and bound) and
    L{_detached} (TLS failed: forget that transport), and provides C{fail}
    and C{_send}.

    States here: C{new}, C{connecting}, C{starttls} (our StartTLS request
    is out), C{handshaking}, C{binding} (our bind is out); C{closed} at any
    point.
    """

    _log = Logger()
    owner: IConnectionOwner
    #: requests waiting for the connection to be ready (see the subclass)
    _queue: list[bytes]
    #: keep reconnecting while this says so, although no operation of the
    #: connection's own waits (see the subclass)
    retryWhile: Callable[[], bool] | None = None

    def __init__(
        self,
        pool: PoolState,
        reactor: IReactorTime,
        endpointFactory: EndpointFactory | None,
        peer: str,
        clientAddresses: tuple[Any, Any] | None,
        bindAs: tuple[bytes, bytes] | None,
        demux: bool,
    ) -> None:
        self.pool = pool
        self.reactor = reactor
        self._endpointFactory = endpointFactory or endpointFor
        self._peer = peer
        self._clientAddresses = clientAddresses  # (peer, host), for send_proxy
        self.state = "new"
        self.backend: BackendState | None = None
        self._protocol: BackendProtocol | None = None
        self._candidates: Iterator[BackendState] = iter(())
        self._tried: list[str] = []
        self._skippedFull: list[str] = []
        self._bindAs = bindAs
        self._demux = demux
        self._nextID = 1
        #: operations carried, by upstream messageID (see the subclass)
        self.ops: dict[int, Any] = {}
        #: our own requests in flight: messageID -> what to do with the resultCode
        self.internal: dict[int, Callable[[int], None]] = {}
        #: operations waiting for this connection within their retry budget,
        #: and the reconnect rounds that serve them
        self.reconnecting = Reconnecting(reactor, pool, peer)
        #: (the same dict, for a cheap test on the per-operation path)
        self.waiting = self.reconnecting.waiting
        self._failure = ("", ber.UNAVAILABLE)
        #: failed because no candidate took the connection (not lost after it)
        self.gaveUp = False

    def connect(self) -> None:
        """Start connecting to the best candidate of the pool."""
        if self.state != "new":
            return
        self.state = "connecting"
        self._candidates = self.pool.candidates()
        self._connectNext()

    def _connectNext(self) -> None:
        if self.state != "connecting":
            return
        state = next(self._candidates, None)
        if state is None:
            self._giveUp()
            return
        if state.atCapacity():
            self._skippedFull.append(state.name)
            self._connectNext()
            return
        self.backend = state
        self.owner.connectionAttempt(self, state)
        self._tried.append(state.name)
        state.connecting += 1
        try:
            endpoint = self._endpointFactory(self.reactor, state, self.pool.pool.connectTimeout)
        except ValueError as e:  # unreadable TLS files
            self._connectFailed(Failure(e), state)
            return
        d = endpoint.connect(_AttemptFactory(self))
        d.addCallbacks(self._connected, self._connectFailed, errbackArgs=(state,))

    def _connected(self, protocol: BackendProtocol) -> None:
        state = self.backend
        assert state is not None
        state.connecting -= 1
        state.connections += 1
        transport: Any = protocol.transport
        if self.state == "closed":
            state.connections -= 1
            protocol.detach()
            transport.loseConnection()
            return
        self._protocol = protocol
        self._attached(transport)
        sendProxy = state.backend.sendProxy
        if sendProxy != "none" and self._clientAddresses is not None:
            transport.write(proxyHeader(sendProxy, *self._clientAddresses))
        self.owner.connectionMadeTo(self)
        if state.backend.tls == "ldaps" or state.backend.url.scheme == "ldaps":
            self.state = "handshaking"
        elif state.backend.tls == "starttls":
            self.state = "starttls"
            self._sendInternal(startTLSRequest, self._startTLSAnswered)
        else:
            self._secured()

    def _secured(self) -> None:
        assert self.backend is not None
        self.backend.connectSucceeded()
        self._proceed()

    def _connectFailed(self, reason: Failure, state: BackendState) -> None:
        state.connecting -= 1
        state.connectFailed(f"cannot connect: {reason.getErrorMessage()}", self.pool.name)
        if not self.reconnecting.rounds:  # while retrying, one event for the whole sequence
            self._log.warn(
                "Cannot connect to backend {backend} of pool {pool}: {error}",
                backend=state.name,
                pool=self.pool.name,
                error=reason.getErrorMessage(),
                peer=self._peer,
            )
        if self.state != "closed":
            self._connectNext()

    def _giveUp(self) -> None:
        """Every candidate failed: wait and try again if operations wait for us, else fail."""
        if not self._tried and (self._skippedFull or self.pool.allAtCapacity()):
            full = ", ".join(self._skippedFull or [state.name for state in self.pool.backends])
            self._failure = (
                f"every backend of pool {self.pool.name!r} is at its max_connections ({full}): try again later",
                ber.BUSY,
            )
        else:
            tried = ", ".join(self._tried) or "none configured"
            self._failure = (f"no backend of pool {self.pool.name!r} is reachable (tried: {tried})", ber.UNAVAILABLE)
        retryWhile = self.retryWhile
        if (self.waiting or (retryWhile is not None and retryWhile())) and self.pool.backends:
            for upstreamID in [upstreamID for upstreamID in self.ops if upstreamID not in self.waiting]:
                self._waitedOut(upstreamID, 0.0)  # no budget: answered now
            if self.waiting or (retryWhile is not None and retryWhile()):
                self.state = "retrying"
                self.reconnecting.later(self._retry, self._failure[0])
                return
        self.gaveUp = True
        self.fail(*self._failure)

    # --- riding out a backend's absence (retry_budget) -----------------------

    def waitFor(self, upstreamID: int, budget: float) -> None:
        """
        An operation waits for this connection to be ready: it may wait
        C{budget} seconds, reconnect rounds included, before it is answered.
        """
        self.reconnecting.wait(upstreamID, budget, self._waitedOut)

    @property
    def lastRounds(self) -> int:
        """The reconnect rounds the last sequence took before it was served."""
        return self.reconnecting.lastRounds

    def _retry(self) -> None:
        if self.state != "retrying":
            return
        self.state = "connecting"
        self._tried = []
        self._skippedFull = []
        self._candidates = self.pool.candidates()
        self._connectNext()

    def _waitedOut(self, upstreamID: int, budget: float) -> None:
        """An operation's budget is spent (or it had none) while no backend took the connection."""
        waited = self.reconnecting.forget(upstreamID)
        if self.state == "closed" or upstreamID not in self.ops:
            return
        entry = self.ops[upstreamID]
        self._unqueue(upstreamID)
        self.reconnecting.spent(waited)
        reason, resultCode = self._failure
        if not reason:
            reason, resultCode = f"no backend of pool {self.pool.name!r} took the connection", ber.UNAVAILABLE
        if budget:
            reason += f"; gave up after the retry_budget of {budget:g}s"
        self.owner.connectionWaitedOut(self, upstreamID, entry, reason, resultCode)
        if not self.waiting and not self.ops and self.state in ("connecting", "retrying"):
            self.reconnecting.gaveUp()
            self.gaveUp = True
            self.fail(reason, resultCode)

    def protocolFailed(self, reason: str) -> None:
        """The backend sent something that is not LDAP: give it up."""
        self._log.warn("Backend {backend}: {reason}", backend=self.backend.name if self.backend else None, reason=reason, peer=self._peer)
        self.fail(reason)

    def noticeReceived(self, pdu: bytes) -> None:
        """
        The backend's unsolicited notification (in practice the Notice of
        Disconnection, RFC 4511 4.4.1, as AD sends on its idle timeout):
        this connection is over.  Like a dropped connection, every
        operation on it is answered unavailable (52); unlike one, the
        backend is not marked down (it said goodbye, it did not fail).
        """
        resultCode, text = noticeOf(pdu)
        name = self.backend.name if self.backend else "?"
        self._log.info(
            "Backend {backend} sent a Notice of Disconnection (resultCode {resultCode}: {reason}); "
            "closing that upstream connection",
            backend=name,
            pool=self.pool.name,
            resultCode=resultCode,
            reason=text,
            peer=self._peer,
        )
        detail = f": {text}" if text else ""
        self.fail(
            f"backend {name} of pool {self.pool.name!r} ended the connection with a Notice of "
            f"Disconnection (resultCode {resultCode}{detail})"
        )

    # --- what a subclass does -------------------------------------------------

    def _attached(self, transport: Any) -> None:
        """A transport exists now (not secured yet)."""
        raise NotImplementedError

    def _detached(self) -> None:
        """The transport is given up (TLS failed); another candidate follows."""
        raise NotImplementedError

    def fail(self, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        """Secured and bound: carry operations."""
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _unqueue(self, upstreamID: int) -> None:
        """Take a request that has not gone out yet out of the queue."""
        raise NotImplementedError
