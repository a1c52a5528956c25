# -*- test-case-name: tests.test_shared -*-
"""
Shared mode (C{[ldaproute] mode = shared}): many clients multiplexed, per
operation, over a few upstream connections per pool.

Each client session gets a L{SharedLink} per pool, which provides
L{IBackendLink} like session mode's link, but owns no connection: its
operations go out on the pool's backend connections
(L{ldaproute.backends.sharedpool}) under upstream messageIDs of the
connection's choosing, and their responses come back with the client's
messageID restored.  The rewrite is byte-level
(L{ldaproute.wire.pdu.reframeAt}): the messageID INTEGER and the lengths
around it, never a decode.

Identity: binds are checked on dedicated bind connections (the result goes
back to the client; on success the frontend records the session's
identity); every other operation carries the client's identity to the
backend in a critical Proxied Authorization control (RFC 4370) that is
appended to the request's controls.  The shared connections are bound as
the pool's service identity (C{service_bind_dn}), which the backend must
allow to proxy (docs/shared-mode.rst).  SASL binds, StartTLS and extended
operations that change connection state are refused: they cannot share a
connection.  Paged-result searches of a client stay on one connection, the
one whose backend issued the cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from ldaproute.backends.connection import BackendConnection
from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.backends import slowreaders
from ldaproute.backends.pool import BackendState
from ldaproute.backends.sharedpool import SharedPool
from ldaproute.core.replay import ANSWERING, MAX_REPLAYS, mayReplay
from ldaproute.core.slowpath import replayName
from ldaproute.wire import ber
from ldaproute.wire.pdu import (
    CANCEL_OID,
    PAGED_RESULTS_OID,
    PROXIED_AUTHZ_OID,
    abandonedIDAt,
    cancelIDAt,
    cancelRequest,
    extendedNameAt,
    messageIDElement,
    opSpan,
    proxiedAuthorization,
    reframeAt,
)

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime

WHOAMI_OID = b"1.3.6.1.4.1.4203.1.11.3"
PASSWORD_MODIFY_OID = b"1.3.6.1.4.1.4203.1.11.1"

#: Extended operations that run per operation and accept the Proxied
#: Authorization control in slapd.
_PROXIABLE_EXTENDED = frozenset({WHOAMI_OID, PASSWORD_MODIFY_OID})

NO_SUCH_OPERATION = 119


def refusal(pdu: bytes, tag: int, opStart: int, controls: bytes) -> tuple[int, str] | None:
    """
    C{(resultCode, diagnosticMessage)} for a request that cannot share a
    connection (SASL binds, extended operations that change the
    connection's state, StartTLS among them), or that would undo the
    identity the proxy asserts (its own Proxied Authorization); else None.
    """
    if tag == ber.BIND_REQUEST:
        if ber.Envelope.fromBytes(pdu).bindAuthentication(pdu)[0] != ber.SIMPLE_AUTH_TAG:
            return (
                ber.AUTH_METHOD_NOT_SUPPORTED,
                "SASL binds are not supported in shared mode: use mode = session for SASL clients",
            )
        return None
    if controls and PROXIED_AUTHZ_OID in controls:
        return (
            ber.UNWILLING_TO_PERFORM,
            "the proxy asserts each client's identity with Proxied Authorization in shared mode: "
            "clients cannot send their own",
        )
    if tag == ber.EXTENDED_REQUEST:
        oid = extendedNameAt(pdu, opStart)
        if oid != CANCEL_OID and oid not in _PROXIABLE_EXTENDED:
            what = "StartTLS" if oid == ber.STARTTLS_OID else f"the extended operation {oid.decode('ascii', 'replace')}"
            return (
                ber.UNWILLING_TO_PERFORM,
                f"{what} is not supported in shared mode (the upstream connection is shared): use mode = session",
            )
    return None


# --- the pool's connections (L{ldaproute.backends.sharedpool}) -------------------


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


# --- one client's view ------------------------------------------------------------


@implementer(IBackendLink)
class SharedLink:
    """
    One client session's link to a pool in shared mode.

    @ivar backend: the backend whose answers are being delivered (while the
        owner's L{ILinkOwner.linkReceived} runs), else L{None}: the
        client's operations spread over the pool's backends.
    @ivar _ops: client messageID -> C{(connection, upstream messageID)} of
        operations sent and not yet answered (C{connection} is None while
        the request waits for a ready connection).
    """

    transport = None

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
        #: how many times operations were sent again after their connection died
        self._replays: dict[int, int] = {}
        #: operations waiting for a ready connection: their pool callback
        self._waiters: dict[int, tuple[str, Callable[[BackendConnection | None, str], None]]] = {}
        self._control: tuple[Any, bytes] = (None, b"")
        self._controlsElement = b""
        self._pagedConnection: BackendConnection | None = None
        #: what waits for a client that is not reading (L{slowreaders})
        self._buffer = slowreaders.ClientBuffer(self.pool.pool.clientBufferMax)

    # --- requests ----------------------------------------------------------

    def send(self, pdu: bytes) -> None:
        if self.state == "closed":
            return
        messageID, idEnd, opEnd = opSpan(pdu)
        tag = pdu[idEnd]
        if tag == ber.ABANDON_REQUEST:
            self._abandon(abandonedIDAt(pdu, idEnd))
            return
        controls = pdu[opEnd:]
        if tag == ber.BIND_REQUEST or tag == ber.EXTENDED_REQUEST or (controls and PROXIED_AUTHZ_OID in controls):
            refused = refusal(pdu, tag, idEnd, controls)
            if refused is not None:
                self._answer(messageID, tag, *refused)
                return
            if tag == ber.BIND_REQUEST:
                self._submit("bind", messageID, tag, pdu, b"")
                return
            if extendedNameAt(pdu, idEnd) == CANCEL_OID:
                self._cancel(messageID, pdu, idEnd)
                return
        connection = None
        if tag == ber.SEARCH_REQUEST and controls and PAGED_RESULTS_OID in controls:
            # the cookie is only valid on the connection that issued it
            connection = self._pagedConnection
            if connection is None or connection.state != "ready":
                connection = self._pagedConnection = self._shared.pick("shared")
        control = self._identityControl()
        if connection is None:
            connection = self._shared.pick("shared")
            if connection is not None:
                # the common case, inline (L{_submitTo}): a ready connection
                upstreamID = connection.allocateID()
                self._ops[messageID] = (connection, upstreamID)
                timing = self._timing
                timeout = None
                if timing is not None:
                    self._timing = None
                    if timing[0] == messageID:
                        timeout = timing[1]
                data = reframeAt(pdu, idEnd, opEnd, upstreamID, control, self._controlsElement)
                connection.submit(upstreamID, (self, messageID, tag, messageIDElement(messageID), data), data, timeout)
                if not connection.writable:
                    self._shared.pauseClient(self._owner.transport)
                return
        self._submit("shared", messageID, tag, pdu, control, connection)

    def _identityControl(self) -> bytes:
        """The control asserting the client's identity (cached per identity,
        with the C{[0]} controls element holding only it)."""
        identity = self._owner.session.identity
        cached, control = self._control
        if cached is identity:
            return control
        if identity.kind == "anonymous" or not identity.name:
            # anonymous: asserted as such when the connections have an
            # identity of their own, which must not leak to the client
            control = proxiedAuthorization(b"") if self._shared.serviceIdentity is not None else b""
        else:
            name = identity.name
            name = self._backendName(name)
            control = proxiedAuthorization(b"dn:" + name)
        self._control = (identity, control)
        self._controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
        return control

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
        """Send a request on C{connection} under an upstream messageID of its choosing."""
        upstreamID = connection.allocateID()
        if controlsElement is None:
            controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
        data = reframeAt(pdu, idEnd, opEnd, upstreamID, control, controlsElement)
        self._ops[messageID] = (connection, upstreamID)
        if timeout is None:
            timeout = self._timeoutFor(messageID)
        connection.submit(upstreamID, (self, messageID, tag, messageIDElement(messageID), data), data, timeout)
        if not connection.writable:
            self._shared.pauseClient(self._owner.transport)

    def _submit(
        self, kind: str, messageID: int, tag: int, pdu: bytes, control: bytes, connection: BackendConnection | None = None
    ) -> None:
        shared = self._shared
        if connection is None:
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
            if tag == ber.SEARCH_REQUEST and kind == "shared" and PAGED_RESULTS_OID in pdu[opEnd:]:
                self._pagedConnection = connection
            self._submitTo(connection, messageID, tag, pdu, control, idEnd, opEnd, timeout=remaining)

        self._waiters[messageID] = (kind, ready)
        shared.whenReady(kind, ready)

    def _abandon(self, abandonedID: int) -> None:
        entry = self._ops.pop(abandonedID, None)
        self._cancelWait(abandonedID)
        if entry is None:
            return
        connection, upstreamID = entry
        if connection is not None:
            connection.abandon(upstreamID)

    def _cancel(self, messageID: int, pdu: bytes, idEnd: int) -> None:
        cancelID = cancelIDAt(pdu, idEnd)
        entry = self._ops.get(cancelID) if cancelID is not None else None
        connection, upstreamID = entry if entry is not None else (None, 0)
        if connection is None:
            self._answer(messageID, ber.EXTENDED_REQUEST, NO_SUCH_OPERATION, "no such operation to cancel")
            return
        request = cancelRequest(messageID, upstreamID)
        _, idEnd, opEnd = opSpan(request)
        self._submitTo(connection, messageID, ber.EXTENDED_REQUEST, request, b"", idEnd, opEnd)

    def _answer(self, messageID: int, requestTag: int, resultCode: int, message: str) -> None:
        """The proxy's own final answer to a request, through the usual path."""
        responseTag = ber.RESPONSE_FOR[requestTag]
        self.backend = None
        self._owner.linkReceived(
            self, ber.result(messageID, responseTag, resultCode, message), [(messageID, responseTag, resultCode)]
        )

    # --- from the pool's connections ------------------------------------------

    def entriesReturned(self, messageID: int) -> int:
        """Search result entries relayed for C{messageID} (for the access log)."""
        return self.entries.pop(messageID, 0)

    def ended(self, clientID: int) -> None:
        """A final response for C{clientID} arrived (called before L{deliver})."""
        self._ops.pop(clientID, None)
        if self._replays:
            self._replays.pop(clientID, None)

    def deliver(self, connection: BackendConnection, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        if self.state == "closed":
            return
        if self.responseTransformer is not None:
            data = self.responseTransformer(data)
        self.backend = connection.backend
        self._owner.linkReceived(self, data, finals)
        self.backend = None
        buffer = self._buffer
        if buffer.paused and buffer.delivered(len(data)):
            self._shed()

    def _shed(self) -> None:
        """
        The client is not reading and more than C{client_buffer_max} waits
        for it: its searches on shared connections are abandoned upstream
        and answered adminLimitExceeded (L{slowreaders}).
        """
        if self.state == "closed":
            return
        shed = list(slowreaders.sheddable(self._ops))
        if not shed:
            return
        buffer = self._buffer
        slowreaders.logShed(self._owner.session.peer, self.pool.name, buffer.limit, buffer.held, [s[0] for s in shed])
        reason = slowreaders.diagnostic(buffer.limit)
        self.pool.faults.slowReaderShed += len(shed)
        for clientID, connection, upstreamID in shed:
            del self._ops[clientID]
            self._replays.pop(clientID, None)
            connection.abandon(upstreamID)
            self._answerFailed(connection, clientID, ber.SEARCH_REQUEST, slowreaders.ADMIN_LIMIT_EXCEEDED, reason)

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
        if sent and self.state != "closed" and clientID not in self.entries:
            replays = self._replays.get(clientID, 0)
            if replays < MAX_REPLAYS and mayReplay(sent, progress):
                self._replays[clientID] = replays + 1
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
        self._submit("shared", clientID, requestTag, sent, b"")

    def _answerFailed(
        self, connection: BackendConnection | None, clientID: int, requestTag: int, resultCode: int, reason: str
    ) -> None:
        if self.state == "closed" or requestTag not in ber.RESPONSE_FOR:
            return
        responseTag = ber.RESPONSE_FOR[requestTag]
        self.backend = connection.backend if connection is not None else None
        self._owner.linkReceived(
            self, ber.result(clientID, responseTag, resultCode, reason), [(clientID, responseTag, resultCode)], reason
        )
        self.backend = None

    def timedOut(self, connection: BackendConnection, clientID: int, timeout: float) -> None:
        """The operation exceeded its time limit; its connection abandoned it upstream."""
        self._ops.pop(clientID, None)
        if self.state == "closed":
            return
        self.backend = connection.backend
        name = self.backend.name if self.backend is not None else "?"
        self._owner.linkOperationTimedOut(
            self,
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
        self._owner.linkWaitedOut(
            self,
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
        self._owner.linkOperationTimedOut(
            self,
            clientID,
            f"no connection to pool {self.pool.name!r} was ready within the operation_timeout of {timeout:g}s; "
            "the operation was abandoned",
        )

    # --- operation timers ----------------------------------------------------

    def operationStarted(self, messageID: int, timeout: float | None = None, budget: float = 0.0) -> None:
        """The next request sent carries C{timeout} to the connection that takes it."""
        if timeout is not None:
            self._timing = (messageID, timeout)
        self._budget = budget

    def progressOf(self, messageID: int) -> int:
        """A shared link is never lost as a whole: its connections' operations are answered one by one."""
        return ANSWERING

    def abandon(self, messageID: int, pdu: bytes) -> None:
        """The client's Abandon: L{send} maps it to the upstream operation (or drops it)."""
        self.send(pdu)

    def operationEnded(self, messageID: int) -> None:
        """Counted by the connection when its final arrived; a waiting one stops waiting."""
        if self._waitTimers:
            self._cancelWait(messageID)

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

    # --- the rest of the link interface ------------------------------------

    def rebind(self, credentials: tuple[bytes, bytes]) -> None:
        """Nothing to replay: the identity goes with every operation."""

    def pauseReading(self) -> None:
        """
        A slow client cannot pause a connection other clients share: what
        it is sent from now on is counted against C{client_buffer_max}
        instead (L{slowreaders}).
        """
        self._buffer.pause()

    def resumeReading(self) -> None:
        """The client's transport is empty again (L{pauseReading})."""
        self._buffer.resume()

    def goOpaque(self) -> None:  # pragma: no cover - SASL layers are refused
        raise RuntimeError("shared links carry no opaque sessions")

    def writeRaw(self, data: bytes) -> None:  # pragma: no cover
        raise RuntimeError("shared links carry no opaque sessions")

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        """The client left (or unbound): abandon its operations upstream."""
        if self.state == "closed":
            return
        self.state = "closed"
        for timer in self._waitTimers.values():
            if timer.active():
                timer.cancel()
        self._waitTimers.clear()
        for messageID in list(self._waiters):
            self._stopWaiting(messageID)
        ops, self._ops = self._ops, {}
        for connection, upstreamID in ops.values():
            if connection is not None:
                connection.abandon(upstreamID)


def linkFor(owner: ILinkOwner, runtime: Runtime, poolName: str, reactor: IReactorTime) -> SharedLink:
    """A new L{SharedLink} of a client session to a pool."""
    return SharedLink(
        owner,
        sharedPoolFor(runtime, poolName, reactor),
        reactor,
        lambda name: replayName(runtime.rewriterFor, runtime.router, poolName, name),
    )
