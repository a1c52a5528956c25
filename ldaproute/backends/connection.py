# -*- test-case-name: tests.test_connection -*-
"""
One connection to one backend, as both connection modes use it.

A L{BackendConnection} reaches a backend through its pool's candidates
and prepares the connection (L{ldaproute.backends.connecting.Connector}:
accounting, PROXY header, C{ldaps} or StartTLS, the bind it carries, the
backend's Notice of Disconnection), then carries operations: queued until
ready, kept by upstream messageID with their timers and the backend's
in-flight count, abandoned upstream on timeout, failed together when the
connection is lost, and closed with an Unbind.

What it does with responses depends on who holds it (L{ldaproute.backends.responses}):
a session link relays them as the backend's bytes (L{RELAY}); the shared
pool demultiplexes them to many clients' links (L{DEMUX}).  Everything
else is the same code for both modes, so a fix here fixes both.

States, in order: C{new}, C{connecting} (a candidate's TCP/TLS connect is
in progress), C{starttls} (our StartTLS request is out), C{handshaking}
(TLS), C{binding} (our bind is out), C{ready}; C{closed} at any point.
Requests sent before C{ready} wait in a queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.backends import responses
from ldaproute.backends.connecting import ABANDON_ID, UNBIND_ID, EndpointFactory, endpointFor
from ldaproute.backends.inflight import InFlight
from ldaproute.backends.interfaces import IConnectionOwner
from ldaproute.backends.pool import PoolState
from ldaproute.core import limits
from ldaproute.wire import ber
from ldaproute.wire.fastwrite import writerFor
from ldaproute.wire.pdu import messageIDOf

__all__ = ["ABANDON_ID", "BackendConnection", "DEMUX", "EndpointFactory", "RELAY", "UNBIND_ID", "endpointFor"]

#: Response handling: relay the backend's bytes (session mode) or
#: demultiplex them to many clients (shared mode).
RELAY = "relay"
DEMUX = "demux"


def batches(transport: object) -> bool:
    """
    Whether writes to C{transport} are worth collecting once per reactor
    turn: for TCP connections, where each write is otherwise a C{send()}
    of its own.  Other transports (TLS, test doubles) buffer themselves.
    """
    return isinstance(transport, tcp.Connection)


@implementer(IPushProducer)
class BackendConnection(InFlight):
    """
    One connection to one backend of a pool; see the module docstring.

    @ivar ops: upstream messageID -> what the receiver needs to route its
        responses (L{None} when relaying), for operations in flight.
    @ivar writable: False while the backend's socket buffer is full (only
        tracked when the connection is its transport's producer).
    """

    def __init__(
        self,
        owner: IConnectionOwner,
        pool: PoolState,
        reactor: IReactorTime,
        endpointFactory: EndpointFactory | None = None,
        responsesBy: str = RELAY,
        bindAs: tuple[bytes, bytes] | None = None,
        peer: str = "",
        clientAddresses: tuple[Any, Any] | None = None,
        batch: bool = False,
        oneAtATime: bool = False,
        produces: bool = False,
        retryWhile: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(pool, reactor, endpointFactory, peer, clientAddresses, bindAs, responsesBy == DEMUX)
        #: whether to keep reconnecting although no operation of its own
        #: waits (shared connections: requests wait in their pool instead)
        self.retryWhile = retryWhile
        self.owner = owner
        self._batch = batch
        self._produces = produces
        self.opaque = False
        self.writable = True
        self.timers: dict[int, IDelayedCall] = {}
        self.receiver: responses.Receiver = responses.Demux(self) if self._demux else responses.Relay(self)
        self._write: Callable[[bytes], None] = lambda data: None
        self._queue: list[bytes] = []
        #: requests of this reactor turn, sent together (None: not batching)
        self._pending: list[bytes] | None = None
        #: C{oneAtATime}: requests waiting for the one in flight to end
        self._serial: deque[tuple[int, bytes]] | None = deque() if oneAtATime else None
        self.serialInFlight: int | None = None
        self.counted = False
        #: after L{fail}: the upstream messageIDs of operations that never went out
        self.unsent: frozenset[int] = frozenset()
        #: whether it was ever ready (it carried operations, not only tried)
        self.carried = False
        #: its backend's L{BackendState.losses} when it became ready
        self.readyAfterLosses = 0

    # --- after connecting (L{Connector}) -----------------------------------

    def _attached(self, transport: Any) -> None:
        assert self.backend is not None
        self.backend.inFlight += len(self.ops)
        self.counted = True
        self._write = writerFor(transport)
        if self._batch and batches(transport):
            self._pending = []
        if self._produces:
            transport.registerProducer(self, True)

    def _detached(self) -> None:
        assert self.backend is not None
        self.backend.inFlight -= len(self.ops)
        self.counted = False
        self.internal.clear()
        self.receiver.reset()
        self._pending = None

    def _ready(self) -> None:
        if self.waiting or self.reconnecting.rounds:
            self.reconnecting.served(self.backend.name if self.backend else "?")
        self.state = "ready"
        self.carried = True
        if self.backend is not None:
            self.readyAfterLosses = self.backend.losses
        queued, self._queue = self._queue, []
        if queued:
            self._send(b"".join(queued))
        self.owner.connectionReady(self)

    # --- sending ----------------------------------------------------------

    def send(self, pdu: bytes) -> None:
        """Send one request PDU now, or once ready; the first one connects."""
        if self.state == "ready":
            self._write(pdu)
        elif self.state != "closed":
            self._queue.append(pdu)
            if self.state == "new":
                self.connect()

    def submit(self, upstreamID: int, entry: Any, data: bytes, timeout: float | None = None, budget: float = 0.0) -> None:
        """
        Send a request of a demultiplexed connection under C{upstreamID}
        (fresh from L{allocateID}): L{operationStarted} and L{_send}, inline,
        as this is shared mode's per-operation path.  A request alone on the
        connection (nothing else in flight or waiting for the turn's write)
        goes out at once: it has nothing to share a write with, and waiting
        for the end of the turn costs a timed call per lone request.
        """
        self.ops[upstreamID] = entry
        if self.counted:
            self.backend.inFlight += 1  # type: ignore[union-attr]
        if timeout is not None:
            self.timers[upstreamID] = self.reactor.callLater(timeout, self._timedOut, upstreamID, timeout)
        if budget and self.state != "ready":
            self.waitFor(upstreamID, budget)
        serial = self._serial
        if serial is not None:
            if self.serialInFlight is not None:
                serial.append((upstreamID, data))
                return
            self.serialInFlight = upstreamID
        pending = self._pending  # L{_send}, inline
        if pending is None or (not pending and len(self.ops) == 1):
            self._write(data)
        else:
            pending.append(data)
            if len(pending) == 1:
                self.reactor.callLater(0, self._flush)

    def _send(self, data: bytes) -> None:
        """
        Write C{data}: at the end of this reactor turn together with every
        other request written meanwhile (many clients' PDUs in one
        C{send()}) when batching, else at once.
        """
        pending = self._pending
        if pending is None:
            self._write(data)
            return
        pending.append(data)
        if len(pending) == 1:
            self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._write(data)

    def serialEnded(self) -> None:
        """The request in flight of a one-at-a-time connection ended: next."""
        self.serialInFlight = None
        serial = self._serial
        while serial:
            upstreamID, data = serial.popleft()
            if upstreamID in self.ops:  # not given up meanwhile
                self.serialInFlight = upstreamID
                if self._pending:
                    self._send(data)  # behind what waits for the end of the turn
                else:
                    self._write(data)  # nothing else can go with it
                return

    def goOpaque(self) -> None:
        """From now on relay bytes both ways untouched (SASL layer, StartTLS passthrough)."""
        self.opaque = True
        self.receiver = responses.Opaque(self)

    def writeRaw(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(data)

    @property
    def transport(self) -> Any:
        return self._protocol.transport if self._protocol is not None else None

    def pauseReading(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.pauseProducing()

    def resumeReading(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.resumeProducing()

    # IPushProducer (with C{produces}): the backend's socket buffer
    def pauseProducing(self) -> None:
        self.writable = False

    def resumeProducing(self) -> None:
        self.writable = True
        self.owner.connectionWritable(self)

    def stopProducing(self) -> None:
        pass

    # --- failure and closing ------------------------------------------------

    def connectionLost(self, reason: Failure) -> None:
        if self.state in ("handshaking", "starttls"):
            self._tlsFailed(reason.getErrorMessage())
            return
        state = self.backend
        if state is not None:
            state.connections -= 1
        if self._protocol is not None:
            self._protocol.detach()  # nothing it may still deliver is for anyone
        self._protocol = None
        if self.state != "closed":
            if state is not None and self.ops:
                # dropped with work in flight: maybe one client's request, not a down backend
                state.connectionDropped(f"connection lost: {reason.getErrorMessage()}", self.pool.name)
            self.fail(f"connection to backend {state.name if state else '?'} of pool {self.pool.name!r} lost")
        self._uncount()

    def fail(self, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        """This connection cannot carry operations any more: tell the owner, once."""
        if self.state == "closed":
            return
        self.state = "closed"
        if self.backend is not None:
            self.backend.losses += 1
        unsent = {messageIDOf(pdu) for pdu in self._queue}
        if self._serial:
            unsent.update(upstreamID for upstreamID, _ in self._serial)
        self.unsent = frozenset(unsent)
        self._queue = []
        ops = dict(self.ops)
        self._uncount()
        self.owner.connectionLost(self, reason, resultCode, ops)
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _uncount(self) -> None:
        self.reconnecting.stop()
        for timer in self.timers.values():
            if timer.active():
                timer.cancel()
        self.timers.clear()
        if self.counted and self.backend is not None:
            self.backend.inFlight -= len(self.ops)
        self.counted = False
        self.ops.clear()
        self.receiver.reset()

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        """Close the connection: politely with an Unbind when asked, or abort it."""
        if self.state == "closed":
            return
        wasReady = self.state in ("ready", "binding", "starttls")
        self.state = "closed"
        self._queue = []
        self._uncount()
        transport = self.transport
        if transport is None:
            return
        if abort:
            transport.abortConnection()
            return
        if unbind and wasReady:
            self._send(ber.unbindRequest(self._ownID(UNBIND_ID)))
        self._flush()
        # a paused producer would keep the connection open after its buffer drains
        limits.releaseProducer(transport)
        transport.loseConnection()


#: "no such operation" in L{BackendConnection.ops}, whose values may be None
