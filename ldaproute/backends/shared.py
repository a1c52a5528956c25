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
allow to proxy (README.rst, "Shared mode").  SASL binds run on a bind
connection too, their steps pinned to it, and on success the proxy learns
the identity to assert with Who Am I there (L{ldaproute.backends.sharedsasl}:
mechanisms that would put a security layer in force are refused).
StartTLS and extended operations that change connection state are
refused: they cannot share a connection.  Stateful sequences (paged results, sort, virtual list view:
L{ldaproute.backends.sequences}) each hold a connection of their own for
as long as they last.  The link's state, its waits and failures and its
claims on connections are the layers below L{SharedLink}, in
L{ldaproute.backends.sharedlinkparts}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ldaproute.backends.connection import BackendConnection
from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.backends import sequences, slowreaders
from ldaproute.backends.sharedclaims import Claims
from ldaproute.backends.sharedpool import sharedPoolFor
from ldaproute.backends.sharedrules import (
    NO_SUCH_OPERATION,
    PASSWORD_MODIFY_OID,
    WHOAMI_OID,
    refusal,
    whoAmIResponse,
    withUserIdentity,
)
from ldaproute.core.replay import ANSWERING
from ldaproute.core.slowpath import replayName
from ldaproute.wire import ber
from ldaproute.wire.pdu import (
    CANCEL_OID,
    PROXIED_AUTHZ_OID,
    abandonedIDAt,
    cancelIDAt,
    cancelRequest,
    extendedNameAt,
    messageSpans,
    opSpan,
    reframeAt,
)

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime

__all__ = ["NO_SUCH_OPERATION", "PASSWORD_MODIFY_OID", "SharedLink", "WHOAMI_OID", "linkFor", "refusal", "sharedPoolFor"]

# --- one client's view ------------------------------------------------------------


@implementer(IBackendLink)
class SharedLink(Claims):
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

    # --- requests ----------------------------------------------------------

    def send(self, pdu: bytes) -> None:
        if self.state == "closed":
            return
        messageID, idStart, idEnd, opEnd = messageSpans(pdu)
        tag = pdu[idEnd]
        if tag == ber.ABANDON_REQUEST:
            self._abandon(abandonedIDAt(pdu, idEnd))
            return
        controls = pdu[opEnd:]
        if tag == ber.BIND_REQUEST:
            # (no L{refusal}: a bind's controls go as they are, SASL steps are judged one by one)
            self._bind(messageID, pdu, idEnd, opEnd)
            return
        if tag == ber.EXTENDED_REQUEST or (controls and PROXIED_AUTHZ_OID in controls):
            refused = refusal(pdu, tag, idEnd, controls)
            if refused is not None:
                self._answer(messageID, tag, *refused)
                return
            oid = extendedNameAt(pdu, idEnd)
            if oid == CANCEL_OID:
                self._cancel(messageID, pdu, idEnd)
                return
            if oid == WHOAMI_OID:
                self._whoAmI(messageID)
                return
            if oid == PASSWORD_MODIFY_OID:
                identity = self._owner.session.identity
                if identity.kind != "anonymous" and identity.name:
                    completed = withUserIdentity(pdu, idEnd, opEnd, self._backendName(identity.name))
                    if completed is not None:
                        pdu = completed
                        messageID, idStart, idEnd, opEnd = messageSpans(pdu)
        if tag == ber.SEARCH_REQUEST and controls and sequences.mayBeStateful(controls):
            try:
                stateful = sequences.classify(controls)
            except ber.FramingError as e:
                self._answer(messageID, tag, ber.PROTOCOL_ERROR, f"malformed search control: {e}")
                return
            if stateful is not None:
                self._sendInSequence(messageID, pdu, idEnd, opEnd, *stateful)
                return
        cached, control = self._control  # L{_identityControl}'s cache, inline
        if cached is not self._owner.session.identity:
            control = self._identityControl()
        connection = self._shared.pick(self._kind)
        if connection is not None:
            # the common case, inline (L{_submitTo}): a ready connection
            upstreamID = connection.upstreamIDFor(messageID)
            self._ops[messageID] = (connection, upstreamID)
            timing = self._timing
            timeout = None
            if timing is not None:
                self._timing = None
                if timing[0] == messageID:
                    timeout = timing[1]
            if control or upstreamID != messageID:
                data = reframeAt(pdu, idEnd, opEnd, upstreamID, control, self._controlsElement)
            else:
                data = pdu  # its own messageID and nothing to add: as it came
            # the answers carry back the client's own messageID element
            connection.submit(upstreamID, (self, messageID, tag, pdu[idStart:idEnd], data), data, timeout)
            if not connection.writable:
                self._shared.pauseClient(self._owner.transport)
            return
        self._submit(self._kind, messageID, tag, pdu, control)

    # --- stateful sequences (L{ldaproute.backends.sequences}) ----------------

    def _abandon(self, abandonedID: int) -> None:
        if abandonedID in self._binds:
            return  # binds cannot be abandoned (RFC 4511 4.11): its result comes
        entry = self._ops.pop(abandonedID, None)
        self._cancelWait(abandonedID)
        if entry is None:
            return
        connection, upstreamID = entry
        if connection is not None:
            connection.abandon(upstreamID)
        self._sequences.endFor(abandonedID)

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

    def _whoAmI(self, messageID: int) -> None:
        """Who Am I, answered from the identity the proxy verified (the same for every backend)."""
        identity = self._owner.session.identity
        authzId = b"" if identity.kind == "anonymous" or not identity.name else b"dn:" + identity.name
        self.backend = None
        self._owner.linkReceived(
            self, whoAmIResponse(messageID, authzId), [(messageID, ber.EXTENDED_RESPONSE, ber.SUCCESS)]
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
        if self._binds:
            connection = self._binds.pop(clientID, None)
            if connection is not None and clientID not in self._saslBinds:
                self._shared.release(connection)  # (a SASL bind's: L{deliver} decides)

    def deliver(self, connection: BackendConnection, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        if self._saslBinds and not self._saslAnswered(connection, data, finals):
            return
        if self.state == "closed":
            return
        if self.responseTransformer is not None:
            data = self.responseTransformer(data)
        inSequence = self._sequences.inFlight
        if inSequence:
            for clientID, _, resultCode in finals:
                if clientID in inSequence:
                    self._sequences.answered(clientID, data, resultCode)
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

    def goOpaque(self) -> None:  # pragma: no cover - SASL layers are refused (L{sharedsasl})
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
        for messageID in [*self._waiters, *self._claiming]:
            self._stopWaiting(messageID)
        ops, self._ops = self._ops, {}
        binds = self._binds
        for clientID, (connection, upstreamID) in ops.items():
            # a bind cannot be abandoned: its result, when it comes, frees its connection (L{ended})
            if connection is not None and clientID not in binds:
                connection.abandon(upstreamID)
        self._sequences.endAll()
        self._unpin()


def linkFor(owner: ILinkOwner, runtime: Runtime, poolName: str, reactor: IReactorTime) -> SharedLink:
    """A new L{SharedLink} of a client session to a pool."""
    return SharedLink(
        owner,
        sharedPoolFor(runtime, poolName, reactor),
        reactor,
        lambda name: replayName(runtime.rewriterFor, runtime.router, poolName, name),
    )
