# -*- test-case-name: tests.test_shared -*-
"""
One client's shared-mode link, in layers (L{ldaproute.backends.shared}'s
L{SharedLink} is the top one): L{LinkState} is what it holds and how it
asserts the client's identity; L{Waits} sends a request on a pool
connection, or makes it wait for one within its operation timeout and
retry budget, and settles what a lost connection leaves behind (sent
again by the replay rule, L{ldaproute.core.replay}, or answered);
L{ldaproute.backends.sharedclaims.Claims} holds a connection for a
stateful sequence or for one bind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ldaproute.backends import sequences, slowreaders
from ldaproute.backends.connection import BackendConnection
from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.backends.pool import BackendState
from ldaproute.backends.sharedholds import Claimant
from ldaproute.backends.sharedpool import SharedPool
from ldaproute.core.replay import ANSWERING, MAX_REPLAYS, mayReplay
from ldaproute.wire import ber
from ldaproute.wire.pdu import (
    PROXIED_AUTHZ_OID,
    controlOIDs,
    controlsAfter,
    messageIDElement,
    opSpan,
    proxiedAuthorization,
    reframeAt,
    withMessageID,
)


class LinkState:
    """What one client's shared link holds (see L{ldaproute.backends.shared.SharedLink})."""

    @property
    def _asLink(self) -> IBackendLink:
        """This link as its owner knows it (the top class provides L{IBackendLink})."""
        return cast(IBackendLink, self)

    def __init__(
        self, owner: ILinkOwner, shared: SharedPool, reactor: IReactorTime, backendName: Callable[[bytes], bytes] = bytes
    ) -> None:
        """
        @param backendName: the client's bind DN as the pool's backends know
            it (through the suffix rewrite of a route to the pool), for the
            Proxied Authorization control.
        """
        self._backendName = backendName
        #: search result entries relayed, by client messageID
        self.entries: dict[int, int] = {}
        self.backend: BackendState | None = None
        self._owner = owner
        self._shared = shared
        self._reactor = reactor
        self.pool = shared.poolState
        self.state = "ready"
        self.boundVersion = 0
        self.responseTransformer: Callable[[bytes], bytes] | None = None
        self._ops: dict[int, tuple[BackendConnection | None, int]] = {}
        #: C{(messageID, timeout)} of the operation about to be sent, when it has one
        self._timing: tuple[int, float] | None = None
        #: timers of operations waiting for a ready connection
        self._waitTimers: dict[int, IDelayedCall] = {}
        #: the retry budget of the operation about to be sent (L{operationStarted})
        self._budget = 0.0
        #: operations sent again after their connection died: how many times,
        #: and the backend and its L{BackendState.losses} after the last loss
        self._replays: dict[int, tuple[int, BackendState | None, int]] = {}
        #: operations waiting for a ready connection: their pool callback
        self._waiters: dict[int, tuple[str, Callable[[BackendConnection | None, str], None]]] = {}
        #: requests waiting to hold a connection (L{SharedPool.whenFree}): their claim
        self._claiming: dict[int, tuple[str, Claimant]] = {}
        self._control: tuple[Any, bytes] = (None, b"")
        self._controlsElement = b""
        #: what waits for a client that is not reading (L{slowreaders})
        self._buffer = slowreaders.ClientBuffer(self.pool.pool.clientBufferMax)
        #: the connections the current identity's operations go out on
        self._kind = "shared"
        #: binds in flight: client messageID -> the bind connection it holds
        self._binds: dict[int, BackendConnection] = {}
        #: SASL binds in flight (their connection decides on their answer: L{Claims._saslAnswered})
        self._saslBinds: set[int] = set()
        #: the bind connection a SASL exchange in progress (14) holds for its next step
        self._saslPin: BackendConnection | None = None
        self._saslPinTimer: IDelayedCall | None = None
        self._sequences = sequences.SequenceBook(shared.release, reactor, shared.poolState.pool.pagedIdleTimeout)

    def _identityControl(self) -> bytes:
        """The control asserting the client's identity (cached per identity,
        with the C{[0]} controls element holding only it)."""
        identity = self._owner.session.identity
        cached, control = self._control
        if cached is identity:
            return control
        if identity.kind == "anonymous" or not identity.name:
            # anonymous: on connections bound anonymously, never with the
            # service identity's rights (L{SharedPool.kindFor})
            control = b""
            self._kind = self._shared.kindFor(True)
        else:
            control = proxiedAuthorization(b"dn:" + self._backendName(identity.name))
            self._kind = "shared"
        self._control = (identity, control)
        self._controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
        return control

    def _takePin(self) -> BackendConnection | None:
        """The connection a SASL exchange in progress holds (no longer held by it), if any."""
        connection, self._saslPin = self._saslPin, None
        timer, self._saslPinTimer = self._saslPinTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        return connection

    def _answer(self, messageID: int, requestTag: int, resultCode: int, message: str) -> None:
        """The proxy's own final answer to a request, through the usual path."""
        responseTag = ber.RESPONSE_FOR[requestTag]
        self.backend = None
        self._owner.linkReceived(self._asLink, ber.result(messageID, responseTag, resultCode, message), [(messageID, responseTag, resultCode)]
        )


class Waits(LinkState):
    """Requests on the pool's connections: at once, waiting for one, or again after a loss."""

    def _timeoutFor(self, messageID: int) -> float | None:
        """The operation_timeout the owner gave for C{messageID} (L{operationStarted}), once."""
        timing = self._timing
        if timing is None:
            return None
        self._timing = None
        return timing[1] if timing[0] == messageID else None

    def _submitTo(
        self,
        connection: BackendConnection,
        messageID: int,
        tag: int,
        pdu: bytes,
        control: bytes,
        idEnd: int,
        opEnd: int,
        controlsElement: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        """
        Send a request C{pdu} of the client's (under the client's messageID,
        C{messageID}) on C{connection}, under an upstream messageID of its
        choosing (L{BackendConnection.upstreamIDFor}: when it is the
        client's and nothing is added, C{pdu} goes as it is).
        """
        upstreamID = connection.upstreamIDFor(messageID)
        if control or upstreamID != messageID:
            if controlsElement is None:
                controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
            data = reframeAt(pdu, idEnd, opEnd, upstreamID, control, controlsElement)
        else:
            data = pdu  # its own messageID and nothing to add: as it came
        # the answers carry the client's messageID element (when rewritten)
        idElement = messageIDElement(messageID) if upstreamID != messageID else b""
        self._ops[messageID] = (connection, upstreamID)
        if timeout is None and self._timing is not None:
            timeout = self._timeoutFor(messageID)
        connection.submit(upstreamID, (self, messageID, tag, idElement, data), data, timeout)
        if not connection.writable:
            self._shared.pauseClient(self._owner.transport)

    def _submit(self, kind: str, messageID: int, tag: int, pdu: bytes, control: bytes) -> None:
        shared = self._shared
        connection = shared.pick(kind)
        if connection is not None:
            _, idEnd, opEnd = opSpan(pdu)
            self._submitTo(connection, messageID, tag, pdu, control, idEnd, opEnd)
            return
        self._ops[messageID] = (None, 0)
        timeout = self._timeoutFor(messageID)
        budget = self._budget
        reactor = self._reactor
        since = reactor.seconds()
        if budget and (timeout is None or budget < timeout):
            # the budget counts inside operation_timeout
            self._waitTimers[messageID] = reactor.callLater(budget, self._budgetSpent, messageID, budget)
        elif timeout is not None:
            self._waitTimers[messageID] = reactor.callLater(timeout, self._waitedOut, messageID, timeout)

        def ready(connection: BackendConnection | None, reason: str) -> None:
            if self._waiters.get(messageID, (None, None))[1] is ready:
                del self._waiters[messageID]
            if self._ops.get(messageID) != (None, 0):
                return  # abandoned or closed meanwhile
            now = reactor.seconds()
            remaining = None if timeout is None else max(0.0, timeout - (now - since))
            timer = self._waitTimers.pop(messageID, None)
            if timer is not None and timer.active():
                timer.cancel()
            if connection is not None and connection.lastRounds:
                self.pool.faults.wait(now - since)  # it waited for a backend to come back
            if connection is None:
                del self._ops[messageID]
                self._answerFailed(None, messageID, tag, ber.UNAVAILABLE, reason)
                return
            _, idEnd, opEnd = opSpan(pdu)
            self._submitTo(connection, messageID, tag, pdu, control, idEnd, opEnd, timeout=remaining)

        self._waiters[messageID] = (kind, ready)
        shared.whenReady(kind, ready)

    def failed(
        self,
        connection: BackendConnection,
        clientID: int,
        requestTag: int,
        resultCode: int,
        reason: str,
        sent: bytes = b"",
        progress: int = ANSWERING,
    ) -> None:
        """
        The connection carrying C{clientID} died: send the request again
        (C{sent}, as it went upstream, the identity it asserted included)
        when the replay rule allows (L{ldaproute.core.replay}: nothing of
        its answer relayed yet), else answer it C{resultCode}.
        """
        self._ops.pop(clientID, None)
        self._binds.pop(clientID, None)
        self._saslBinds.discard(clientID)
        if self._saslPin is connection:
            self._takePin()
        self._sequences.endFor(clientID)
        if sent and self.state != "closed" and clientID not in self.entries:
            replays, backend, losses = self._replays.get(clientID, (0, None, 0))
            if backend is None or connection.backend is not backend or connection.readyAfterLosses >= losses:
                replays += 1  # (else lost in the death that lost it last time: not its doing)
            if replays <= MAX_REPLAYS and mayReplay(sent, progress):
                state = connection.backend
                self._replays[clientID] = (replays, state, state.losses if state is not None else 0)
                self.pool.faults.replay(requestTag)
                # on the next reactor turn: a backend that dies takes all its
                # connections at once, and the others' losses come first
                self._ops[clientID] = (None, 0)
                self._reactor.callLater(0, self._replay, clientID, requestTag, sent)
                return
        self._answerFailed(connection, clientID, requestTag, resultCode, reason)

    def _replay(self, clientID: int, requestTag: int, sent: bytes) -> None:
        if self.state == "closed" or self._ops.get(clientID) != (None, 0):
            return  # abandoned or closed meanwhile
        del self._ops[clientID]
        # on connections of the kind it went out on: with the identity it
        # asserted, or anonymous ones for an anonymous client's request
        upstreamID, opStart, _ = opSpan(sent)
        asserted = PROXIED_AUTHZ_OID in controlOIDs(controlsAfter(sent, opStart))
        if upstreamID != clientID:
            sent = withMessageID(sent, clientID)  # what L{_submitTo} takes: the client's messageID
        self._submit("shared" if asserted else self._shared.kindFor(True), clientID, requestTag, sent, b"")

    def _answerFailed(
        self, connection: BackendConnection | None, clientID: int, requestTag: int, resultCode: int, reason: str
    ) -> None:
        if self.state == "closed" or requestTag not in ber.RESPONSE_FOR:
            return
        responseTag = ber.RESPONSE_FOR[requestTag]
        self.backend = connection.backend if connection is not None else None
        self._owner.linkReceived(self._asLink, ber.result(clientID, responseTag, resultCode, reason), [(clientID, responseTag, resultCode)], reason
        )
        self.backend = None

    def timedOut(self, connection: BackendConnection, clientID: int, timeout: float) -> None:
        """The operation exceeded its time limit; its connection abandoned it upstream."""
        self._ops.pop(clientID, None)
        bindConnection = self._binds.pop(clientID, None)
        self._saslBinds.discard(clientID)
        if bindConnection is not None:
            # a bind cannot be abandoned: its connection carries nothing more
            self._shared.retire(bindConnection)
        self._sequences.endFor(clientID)
        if self.state == "closed":
            return
        self.backend = connection.backend
        name = self.backend.name if self.backend is not None else "?"
        self._owner.linkOperationTimedOut(self._asLink,
            clientID,
            f"no answer from backend {name} of pool {self.pool.name!r} within the operation_timeout of {timeout:g}s; "
            "the operation was abandoned",
        )
        self.backend = None

    def _budgetSpent(self, clientID: int, budget: float) -> None:
        """No connection of the pool was ready within the operation's retry budget."""
        self._waitTimers.pop(clientID, None)
        self._stopWaiting(clientID)
        if self._ops.pop(clientID, None) is None or self.state == "closed":
            return
        faults = self.pool.faults
        faults.budgetSpent += 1
        faults.wait(budget)
        tried = ", ".join(state.name for state in self.pool.backends) or "none configured"
        self._owner.linkWaitedOut(self._asLink,
            clientID,
            f"no backend of pool {self.pool.name!r} is reachable (tried: {tried}); "
            f"gave up after the retry_budget of {budget:g}s",
            ber.UNAVAILABLE,
        )

    def _waitedOut(self, clientID: int, timeout: float) -> None:
        self._waitTimers.pop(clientID, None)
        self._stopWaiting(clientID)
        if self._ops.pop(clientID, None) is None or self.state == "closed":
            return
        self._owner.linkOperationTimedOut(self._asLink,
            clientID,
            f"no connection to pool {self.pool.name!r} was ready within the operation_timeout of {timeout:g}s; "
            "the operation was abandoned",
        )

    def _cancelWait(self, messageID: int) -> None:
        timer = self._waitTimers.pop(messageID, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._stopWaiting(messageID)

    def _stopWaiting(self, messageID: int) -> None:
        """The operation no longer waits for a connection: the pool stops counting it."""
        waiter = self._waiters.pop(messageID, None)
        if waiter is not None:
            self._shared.stopWaiting(*waiter)
        if self._claiming:
            claim = self._claiming.pop(messageID, None)
            if claim is not None:
                self._shared.stopClaiming(*claim)
