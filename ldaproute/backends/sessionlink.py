# -*- test-case-name: tests.test_upstream_pools -*-
"""
Session mode (C{[ldaproute] mode = session}, the default): each client
connection gets a backend connection of its own per pool it uses.

A L{SessionLink} is a thin layer over one L{BackendConnection} that relays:
messageIDs pass through unchanged, the client's PDUs queue until the
connection (and, if needed, the replay of the client's bind) is ready, and
response bytes go back to the client exactly as the backend sent them.
What is particular to a session is small: the bind replayed when the
client's identity must be carried to a new backend connection, the opaque
relay of a SASL security layer or a StartTLS passthrough, and the policy
for an operation timeout (the backend stopped answering: leave it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ldaproute.backends.connection import RELAY, BackendConnection, EndpointFactory
from ldaproute.backends.interfaces import IBackendLink, IConnectionOwner, ILinkOwner
from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.backends.responses import Relay
from ldaproute.core.replay import ANSWERING, NO_BACKEND, SENT, UNSENT
from ldaproute.wire import ber


@implementer(IBackendLink, IConnectionOwner)
class SessionLink:
    """One client session's exclusive connection to one pool."""

    _log = Logger()

    def __init__(
        self,
        owner: ILinkOwner,
        pool: PoolState,
        reactor: IReactorTime,
        replayBind: tuple[bytes, bytes] | None,
        peer: str,
        endpointFactory: EndpointFactory | None = None,
        clientAddresses: tuple[Any, Any] | None = None,
    ) -> None:
        self._owner = owner
        self.pool = pool
        self._peer = peer
        self.boundVersion = 0
        #: slow-path hook: whole response PDUs in, rewritten PDUs out
        #: (set by the owner for links that carry rewritten operations)
        self.responseTransformer: Callable[[bytes], bytes] | None = None
        #: the backend the connection is (or was last) connected or connecting to
        self.backend: BackendState | None = None
        self.connection = connection = BackendConnection(
            self, pool, reactor, endpointFactory, RELAY, bindAs=replayBind, peer=peer, clientAddresses=clientAddresses
        )
        # The per-operation methods of IBackendLink are the connection's own,
        # bound here: a session link adds nothing to them, and a call less on
        # each is what keeps one connection class as cheap as the old stack.
        #: L{IBackendLink.send}: now, or queued until the connection is ready
        #: (the first PDU starts connecting, so that a connection failure,
        #: however fast, finds the operation registered with the owner)
        self.send: Callable[[bytes], None] = connection.send
        #: L{IBackendLink.operationStarted}: counted against the backend, timed
        self.operationStarted: Callable[..., None] = connection.operationStarted
        #: L{IBackendLink.operationEnded}
        self.operationEnded: Callable[[int], None] = connection.operationEnded
        #: L{IBackendLink.entriesReturned}
        self.entriesReturned: Callable[[int], int] = connection.entriesReturned

    @property
    def transport(self) -> Any:
        return self.connection.transport

    @property
    def state(self) -> str:
        return self.connection.state

    # --- IBackendLink (with the four bound in __init__) ----------------------

    def progressOf(self, messageID: int) -> int:
        """How far an operation got (for replays after this link is lost)."""
        connection = self.connection
        if connection.gaveUp:
            return NO_BACKEND
        if messageID in connection.unsent:
            return UNSENT
        receiver = connection.receiver
        if not isinstance(receiver, Relay) or receiver.answering(messageID):
            return ANSWERING
        return SENT

    def rebind(self, credentials: tuple[bytes, bytes]) -> None:
        """Carry the client's current identity to this link before anything else is sent on it."""
        self.connection.bind(credentials)

    def abandon(self, messageID: int, pdu: bytes) -> None:
        """
        The client's Abandon goes to the backend as the client sent it,
        behind the operation it abandons (in the queue while the connection
        opens).  RFC 4511 4.11 lets the backend answer what it had started;
        the client asked for no more, so late responses are dropped.
        """
        connection = self.connection
        if messageID in connection.ops:
            connection.operationEnded(messageID)
            connection.receiver.drop(messageID)
        connection.send(pdu)

    def pauseReading(self) -> None:
        self.connection.pauseReading()

    def resumeReading(self) -> None:
        self.connection.resumeReading()

    def goOpaque(self) -> None:
        """
        The session negotiated a SASL security layer (see
        L{ldaproute.core.sasllayer}) or passed StartTLS through: from now
        on, bytes in both directions are relayed untouched.
        """
        self.connection.goOpaque()

    def writeRaw(self, data: bytes) -> None:
        self.connection.writeRaw(data)

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        self.connection.close(unbind, abort)

    # --- IConnectionOwner ------------------------------------------------------

    def connectionAttempt(self, connection: object, backend: object) -> None:
        self.backend = backend  # type: ignore[assignment]

    def connectionMadeTo(self, connection: object) -> None:
        self._owner.linkConnected(self)

    def connectionReady(self, connection: object) -> None:
        """Nothing to do: queued requests went out."""

    def connectionBindRefused(self, connection: object, resultCode: int) -> None:
        self._log.warn(
            "Backend {backend} refused the replayed bind (resultCode {resultCode})",
            backend=self.backend.name if self.backend else None,
            resultCode=resultCode,
            peer=self._peer,
        )
        self._owner.linkReplayFailed(self, resultCode)

    def connectionTLSHandshake(self, connection: object, outcome: str) -> None:
        self._owner.linkTLSHandshake(self, outcome)

    def connectionLost(self, connection: object, reason: str, resultCode: int, operations: dict[int, object]) -> None:
        self._owner.linkLost(self, reason, resultCode)

    def connectionOperationTimedOut(self, connection: object, messageID: int, operation: object, timeout: float) -> None:
        """
        The backend did not answer in time: answer the client, and leave
        this backend (the session's next operation reconnects, to one that
        is up).
        """
        backend = self.backend
        name = backend.name if backend else "?"
        if backend is not None:
            backend.connectFailed("operation timed out", self.pool.name)
        self._owner.linkOperationTimedOut(
            self,
            messageID,
            f"no answer from backend {name} of pool {self.pool.name!r} within the "
            f"operation_timeout of {timeout:g}s; the operation was abandoned",
        )
        if self.connection.transport is None or self.connection.state == "closed":
            return  # still connecting: the request left the queue, connecting goes on
        self.connection.close(unbind=True)
        self._owner.linkLost(self, f"backend {name} of pool {self.pool.name!r} stopped answering (operation timeout)", ber.UNAVAILABLE)

    def connectionWaitedOut(self, connection: object, messageID: int, operation: object, reason: str, resultCode: int) -> None:
        self._owner.linkWaitedOut(self, messageID, reason, resultCode)

    def connectionWritable(self, connection: object) -> None:
        """Not a producer: the client's reading is paused by the owner."""

    def responsesReceived(self, connection: object, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        if self.responseTransformer is not None:
            data = self.responseTransformer(data)
        self._owner.linkReceived(self, data, finals)

    def rawReceived(self, connection: object, data: bytes) -> None:
        self._owner.linkReceivedRaw(self, data)
