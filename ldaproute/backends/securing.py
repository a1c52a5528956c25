# -*- test-case-name: tests.test_connection -*-
"""
Between connected and ready: securing a fresh backend connection (C{ldaps}
or StartTLS, verified, never a cleartext fallback) and binding it as asked
(the session's replayed bind, or the pool's service identity), with the
proxy's own requests under messageIDs of their own whose answers never
reach a client.

L{Securing} is a mixin of L{ldaproute.backends.connecting.Connector}, whose
state (the transport, the candidate being tried, the queue) it works on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from ldaproute.backends.interfaces import IConnectionOwner
from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.wire import ber
from ldaproute.wire.pdu import startTLSRequest

if TYPE_CHECKING:
    from ldaproute.backends.connecting import BackendProtocol
    from ldaproute.backends.responses import Receiver

#: messageIDs of the proxy's own requests on a relayed connection (StartTLS,
#: bind replay): clients count up from 1, so the top of the range does not
#: collide in practice, and collisions are checked.
INTERNAL_ID_BASE = 0x7FFFFF00
ABANDON_ID = INTERNAL_ID_BASE - 2  # an AbandonRequest gets no response: one ID serves
UNBIND_ID = INTERNAL_ID_BASE - 1
_MAX_ID = 0x7FFFFFFF


class Securing:
    """TLS and binds towards the backend (a mixin; see the module docstring)."""

    # what the connection provides
    _log: Logger
    owner: IConnectionOwner
    state: str
    pool: PoolState
    backend: BackendState | None
    _protocol: BackendProtocol | None
    _peer: str
    _demux: bool
    _nextID: int
    _bindAs: tuple[bytes, bytes] | None
    _queue: list[bytes]
    ops: dict[int, Any]
    internal: dict[int, Callable[[int], None]]
    receiver: Receiver
    _candidates: Iterator[BackendState]

    def _secured(self) -> None:
        raise NotImplementedError

    def _connectNext(self) -> None:
        raise NotImplementedError

    def _detached(self) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    # --- TLS towards the backend -------------------------------------------

    def tlsHandshakeCompleted(self) -> None:
        self.owner.connectionTLSHandshake(self, "success")
        if self.state == "handshaking":
            self._secured()

    def _startTLSAnswered(self, resultCode: int) -> None:
        assert self.backend is not None and self._protocol is not None
        if resultCode != ber.SUCCESS:
            self._tlsFailed(f"the backend refused StartTLS (resultCode {resultCode})")
            return
        self.state = "handshaking"
        try:
            options = self.backend.clientTLSOptions()
        except ValueError as e:
            self._tlsFailed(str(e))
            return
        self._protocol.transport.startTLS(options)  # type: ignore[union-attr]

    def _tlsFailed(self, reason: str) -> None:
        """TLS could not be set up (refused, untrusted or misnamed certificate): try the next candidate."""
        state = self.backend
        assert state is not None
        self.owner.connectionTLSHandshake(self, "failure")
        self._log.error(
            "TLS to backend {backend} of pool {pool} failed: {reason}",
            backend=state.name,
            pool=self.pool.name,
            reason=reason,
            peer=self._peer,
            tls=state.backend.tls,
        )
        state.connectFailed(f"TLS failed: {reason}", self.pool.name)
        state.connections -= 1
        self._detached()
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.detach()
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        if self.state != "closed":
            self.state = "connecting"
            self._connectNext()

    # --- the proxy's own requests ---------------------------------------------

    def allocateID(self) -> int:
        """
        A free upstream messageID (demultiplexed connections): none in
        flight, and none an abandoned operation's late responses may still
        come under.
        """
        ops = self.ops
        internal = self.internal
        dropped = self.receiver.dropped
        messageID = self._nextID
        while messageID in ops or messageID in internal or messageID in dropped:
            messageID = messageID + 1 if messageID < _MAX_ID else 1
        self._nextID = messageID + 1 if messageID < _MAX_ID else 1
        return messageID

    def allocateFrom(self, messageID: int) -> None:
        """L{allocateID} goes on from C{messageID} at least (L{responses.Demux.drop})."""
        if messageID > self._nextID:
            self._nextID = messageID if messageID <= _MAX_ID else 1

    def upstreamIDFor(self, clientID: int) -> int:
        """
        The upstream messageID for a client's request on this demultiplexed
        connection: the client's own when it is free here (as L{allocateID}
        judges), so the request and its answers keep their messageIDs and
        need no rewriting (most often: a bind connection carries one request
        at a time; clients' messageIDs rarely meet on one connection); else
        one L{allocateID} chooses.
        """
        receiver = self.receiver
        if (
            clientID in self.ops
            or clientID in self.internal
            or clientID in receiver.dropped
            or not receiver.keepsIDs
        ):
            return self.allocateID()
        return clientID

    def _internalID(self) -> int:
        if self._demux:
            return self.allocateID()
        messageID = INTERNAL_ID_BASE
        while messageID in self.internal or messageID in self.ops:
            messageID += 1
        return messageID

    def _sendInternal(self, makePDU: Callable[[int], bytes], answered: Callable[[int], None]) -> None:
        messageID = self._internalID()
        self.internal[messageID] = answered
        self._send(makePDU(messageID))

    def bind(self, credentials: tuple[bytes, bytes]) -> None:
        """
        Carry C{credentials} (a simple bind's DN and password) to the
        backend before anything else that is sent: a bind the proxy sends
        and answers itself.  Before the connection is secured, this only
        changes what will be bound.
        """
        self._bindAs = credentials
        if self.state == "ready":
            self._startBind(credentials)

    def _startBind(self, credentials: tuple[bytes, bytes]) -> None:
        self.state = "binding"
        self._sendInternal(lambda messageID: ber.simpleBindRequest(messageID, *credentials), self._bindAnswered)

    def _bindAnswered(self, resultCode: int) -> None:
        if self.state != "binding":
            return
        if resultCode != ber.SUCCESS:
            self._queue = []
            self.owner.connectionBindRefused(self, resultCode)
            if self.state != "binding":
                return
        self._ready()

    def _proceed(self) -> None:
        """Secured: bind as asked, then ready."""
        if self._bindAs is not None:
            self._startBind(self._bindAs)
        else:
            self._ready()
