# -*- test-case-name: tests.test_shared -*-
"""
Shared mode's backend connections of one pool: C{shared_connections} per
backend for operations (bound as the pool's service identity, requests
batched per reactor turn), and bind connections for client binds, one
bind at a time each (slapd abandons every operation outstanding on a
connection when a bind arrives): C{bind_connections} per backend kept
open, more opened while binds wait for one, up to C{max_bind_connections}
per backend (session mode runs as many binds at once as it has clients;
binds waiting behind one another on two connections were what made shared
mode's binds slower).  Each is a
L{ldaproute.backends.connection.BackendConnection} that demultiplexes its
responses to the clients' L{ldaproute.backends.shared.SharedLink}s; the
pool opens them on first use, reopens them on demand after a loss, and
keeps requests waiting while no connection of their kind is ready.

Stateful sequences (L{ldaproute.backends.sequences}: paged results, sort,
virtual list view) each hold one shared connection exclusively
(L{SharedPool.claim}, L{SharedPool.release}); stateless operations still go
out on it.  When every shared connection holds one, the pool opens another
for the sequence (kind C{"sequence"}: it carries only that sequence and is
closed when it ends), unless every backend is at its C{max_connections};
then the sequence waits for one to be released (L{SharedPool.whenFree}).
Who holds which connection, and who waits for one, is kept in
L{ldaproute.backends.sharedholds}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ldaproute.backends.connection import DEMUX, BackendConnection, EndpointFactory
from ldaproute.backends.interfaces import IConnectionOwner
from ldaproute.backends.pool import PoolState
from ldaproute.backends.sharedholds import CLAIMED_AS, KINDS, SINGLE_USE, Holds
from ldaproute.core.replay import SENT, UNSENT
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime

_log = Logger()

#: connections bound as the pool's service identity
_SERVICE_BOUND = frozenset({"shared", "sequence"})

@implementer(IConnectionOwner)
class SharedPool(Holds):
    """The shared and bind connections of one pool, and who waits for them."""

    def __init__(
        self,
        poolState: PoolState,
        reactor: IReactorTime,
        endpointFactory: EndpointFactory,
        tlsHandshake: Callable[[str], None] | None = None,
    ) -> None:
        self.poolState = poolState
        self.reactor = reactor
        self.endpointFactory = endpointFactory
        self._tlsHandshake = tlsHandshake
        pool = poolState.pool
        self.serviceIdentity: tuple[bytes, bytes] | None = None
        if pool.serviceBindDN:
            self.serviceIdentity = (pool.serviceBindDN.encode("utf-8"), (pool.serviceBindPassword or "").encode("utf-8"))
        self.connections: dict[str, list[BackendConnection]] = {kind: [] for kind in KINDS}
        self.ready: dict[str, list[BackendConnection]] = {kind: [] for kind in KINDS}
        self._kinds: dict[BackendConnection, str] = {}
        self._turn = {"shared": 0, "anonymous": 0}
        self._waiting: dict[str, deque[Callable[[BackendConnection | None, str], None]]] = {
            kind: deque() for kind in KINDS
        }
        super().__init__()
        self._pausedClients: list[Any] = []

    def kindFor(self, anonymous: bool) -> str:
        """
        The connections a client's operations go out on: anonymous clients'
        on connections bound anonymously, without Proxied Authorization
        (389 Directory Server refuses the empty authzId with 12), when the
        shared ones carry the pool's service identity.
        """
        return "anonymous" if anonymous and self.serviceIdentity is not None else "shared"

    def pick(self, kind: str) -> BackendConnection | None:
        """
        A ready connection of C{kind} (C{"shared"}: binds L{claim} theirs)
        in turn, preferring writable ones (and, with C{strategy =
        least-outstanding}, the backend with the fewest operations in flight).
        """
        ready = self.ready[kind]
        pool = self.poolState.pool
        # L{wanted}, inline: this runs for every operation
        missing = pool.sharedConnections * (len(self.poolState.backends) or 1) - len(self.connections[kind])
        if missing > 0:
            for _ in range(missing):
                self._open(kind)
        n = len(ready)
        if not n:
            return None
        turn = self._turn[kind]
        if pool.strategy == "least-outstanding" and n > 1:
            self._turn[kind] = turn + 1
            return min(
                (ready[(turn + i) % n] for i in range(n)),
                key=lambda c: (not c.writable, c.backend.inFlight if c.backend else 0, len(c.ops)),
            )
        for i in range(n):
            connection = ready[(turn + i) % n]
            if connection.writable:
                self._turn[kind] = turn + i + 1
                return connection
        self._turn[kind] = turn + 1
        return ready[turn % n]

    def whenReady(self, kind: str, callback: Callable[[BackendConnection | None, str], None]) -> None:
        """Call C{callback(connection, "")} when one is ready, or C{(None, reason)}."""
        self._waiting[kind].append(callback)
        if not self.connections[kind]:
            self._open(kind)

    def stopWaiting(self, kind: str, callback: Callable[[BackendConnection | None, str], None]) -> None:
        """A request given up (answered, abandoned, closed) no longer waits for a connection."""
        try:
            self._waiting[kind].remove(callback)
        except ValueError:
            pass

    def _open(self, kind: str) -> None:
        operations = kind != "bind"
        connection = BackendConnection(
            self,
            self.poolState,
            self.reactor,
            self.endpointFactory,
            DEMUX,
            bindAs=self.serviceIdentity if kind in _SERVICE_BOUND else None,
            batch=operations,  # a bind connection carries one bind at a time: nothing to batch
            oneAtATime=not operations,
            produces=True,
            # while requests wait for a connection of this kind (or claim
            # one), within their retry budget (L{ldaproute.backends.shared.SharedLink}),
            # keep trying
            retryWhile=lambda: bool(self._waiting[kind] or self._claimants[CLAIMED_AS[kind]])
            and self.poolState.pool.retryBudget > 0,
        )
        self.connections[kind].append(connection)
        self._kinds[connection] = kind
        connection.connect()

    def _forget(self, connection: BackendConnection, reason: str) -> None:
        kind = self._kinds.pop(connection, None)
        if kind is None:
            return
        if connection in self.connections[kind]:
            self.connections[kind].remove(connection)
        if connection in self.ready[kind]:
            self.ready[kind].remove(connection)
        self.held.discard(connection)
        if not connection.writable:
            connection.writable = True
            self.connectionWritable(connection)
        waiting = self._waiting[kind]
        if waiting and not self.connections[kind]:
            if connection.carried and self.poolState.pool.retryBudget > 0:
                # the last of its kind died after carrying operations while
                # requests wait within their retry budget: a new one
                # reconnects for them (a connection that never got ready,
                # its service identity refused say, fails them at once)
                self._open(kind)
            else:
                # every attempt of this kind failed: the waiting requests too
                failed = list(waiting)
                waiting.clear()
                for callback in failed:
                    callback(None, reason)
        claimKind = CLAIMED_AS[kind]
        waitingClaims = self._claimants[claimKind]
        if waitingClaims and reason and not any(self.connections[k] for k in KINDS if CLAIMED_AS[k] == claimKind):
            # every connection of the kind is gone: nothing to wait for
            claimants = list(waitingClaims)
            waitingClaims.clear()
            for claimant in claimants:
                claimant(None, reason)

    def pauseClient(self, transport: Any) -> None:
        """A client fed a connection whose buffer is full: stop reading it."""
        if transport is not None and transport not in self._pausedClients:
            self._pausedClients.append(transport)
            transport.pauseProducing()

    # --- IConnectionOwner --------------------------------------------------

    def connectionAttempt(self, connection: object, backend: object) -> None:
        """Each shared connection knows its own backend."""

    def connectionMadeTo(self, connection: object) -> None:
        """The connection is its transport's producer: nothing else to register."""

    def connectionReady(self, connection: BackendConnection) -> None:  # type: ignore[override]
        kind = self._kinds.get(connection)
        if kind is None:
            return
        self.ready[kind].append(connection)
        _log.info(
            "Shared {kind} connection to backend {backend} of pool {pool} is ready",
            kind=kind,
            backend=connection.backend.name if connection.backend else None,
            pool=self.poolState.name,
        )
        waiting = self._waiting[kind]
        while waiting and connection.state == "ready":
            waiting.popleft()(connection, "")
        if connection.state == "ready" and connection not in self.held:
            if not self._grant(connection) and kind in SINGLE_USE:
                self._forget(connection, "")
                connection.close(unbind=True)

    def connectionBindRefused(self, connection: BackendConnection, resultCode: int) -> None:  # type: ignore[override]
        name = connection.backend.name if connection.backend else "?"
        _log.error(
            "Backend {backend} of pool {pool} refused the proxy's service identity (resultCode {resultCode}): "
            "check service_bind_dn and service_bind_password",
            backend=name,
            pool=self.poolState.name,
            resultCode=resultCode,
        )
        connection.fail(f"backend {name} refused the proxy's service identity (resultCode {resultCode})")

    def connectionTLSHandshake(self, connection: object, outcome: str) -> None:
        if self._tlsHandshake is not None:
            self._tlsHandshake(outcome)

    def connectionLost(self, connection: BackendConnection, reason: str, resultCode: int, operations: dict[int, Any]) -> None:  # type: ignore[override]
        """
        Every operation the connection carried is sent again on another
        (reads, by the replay rule) or answered unavailable (52), once.
        """
        self._forget(connection, reason)
        unsent = connection.unsent
        for upstreamID, entry in operations.items():
            if entry is not None:
                link, clientID, tag, _, sent = entry
                progress = UNSENT if upstreamID in unsent else SENT
                link.failed(connection, clientID, tag, ber.UNAVAILABLE, reason, sent, progress)

    def connectionOperationTimedOut(self, connection: object, messageID: int, operation: Any, timeout: float) -> None:
        if operation is not None:
            link, clientID = operation[0], operation[1]
            link.timedOut(connection, clientID, timeout)

    def connectionWaitedOut(self, connection: object, messageID: int, operation: Any, reason: str, resultCode: int) -> None:
        if operation is not None:
            link, clientID, tag = operation[0], operation[1], operation[2]
            link.failed(connection, clientID, tag, resultCode, reason)

    def connectionWritable(self, connection: object) -> None:
        if self._pausedClients and all(c.writable for kind in KINDS for c in self.ready[kind]):
            paused, self._pausedClients = self._pausedClients, []
            for transport in paused:
                transport.resumeProducing()

    def responsesReceived(self, connection: object, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        """Not called: shared connections demultiplex to links."""

    def rawReceived(self, connection: object, data: bytes) -> None:
        """Not called: shared connections carry no opaque sessions."""


def sharedPoolFor(runtime: Runtime, poolName: str, reactor: IReactorTime) -> SharedPool:
    """The runtime's L{SharedPool} for one of its pools (made on first use)."""
    poolState = runtime.backends.pools[poolName]
    shared = runtime.sharedPools.get(poolName)
    if shared is None or shared.poolState is not poolState:
        metrics = runtime.observer.metrics
        shared = runtime.sharedPools[poolName] = SharedPool(
            poolState, reactor, runtime.endpointFactory, lambda outcome: metrics.tlsHandshake("backend", outcome)
        )
    return shared
