# -*- test-case-name: tests.test_shared -*-
"""
The top layer below L{ldaproute.backends.shared.SharedLink}: connections
a link holds for itself, for a stateful sequence (paged results, sort,
VLV: L{ldaproute.backends.sequences}) or for one bind, SASL exchanges
included (L{ldaproute.backends.sharedsasl}): pinned to their bind
connection step by step, the identity learned with Who Am I.
"""

from __future__ import annotations

from collections.abc import Callable

from ldaproute.backends import sequences, sharedsasl
from ldaproute.backends.connection import BackendConnection
from ldaproute.backends.sharedlinkparts import Waits
from ldaproute.backends.sharedrules import bindAuthenticationTag
from ldaproute.core.decisions import ANONYMOUS, Identity
from ldaproute.core.replay import ANSWERING
from ldaproute.wire import ber
from ldaproute.wire.pdu import messageIDElement


class Claims(Waits):
    """Connections held for a stateful sequence or one bind."""

    def _sendInSequence(self, messageID: int, pdu: bytes, idEnd: int, opEnd: int, kind: str, size: int, cookie: bytes) -> None:
        """
        A search that starts or continues a stateful sequence: on the
        connection the sequence holds, or on one claimed for it.
        """
        book = self._sequences
        sequence = book.continued(kind, cookie)
        if sequence is None and kind == sequences.PAGED and cookie:
            self._unknownCookie(messageID, size)
            return
        if sequence is not None:
            connection = sequence.connection
            if connection is None or connection.state != "ready":
                book.end(sequence)
                self._answer(messageID, ber.SEARCH_REQUEST, ber.UNWILLING_TO_PERFORM, sequences.LOST)
                return
            book.sent(sequence, messageID)
            self._submitTo(connection, messageID, ber.SEARCH_REQUEST, pdu, self._identityControl(), idEnd, opEnd)
            return
        def send(connection: BackendConnection, timeout: float | None) -> None:
            book.sent(book.start(kind, connection), messageID)
            self._submitTo(
                connection, messageID, ber.SEARCH_REQUEST, pdu, self._identityControl(), idEnd, opEnd, timeout=timeout
            )

        self._identityControl()  # the connection kind of the identity
        connection = self._shared.claim(self._kind)
        if connection is not None:
            send(connection, None)
            return
        # without an operation_timeout: long enough for an idle sequence to give its connection back
        self._whenClaimed(self._kind, messageID, ber.SEARCH_REQUEST, send, self._busy, 2 * book.idleTimeout)

    def _bind(self, messageID: int, pdu: bytes, idEnd: int, opEnd: int) -> None:
        """
        A bind, alone on a bind connection (L{SharedPool.claim}) until its
        result; a SASL bind's steps on the connection its exchange holds
        (L{_saslPin}), each judged before it goes upstream
        (L{sharedsasl.stepRefusal}).
        """
        if bindAuthenticationTag(pdu, idEnd) == ber.SASL_AUTH_TAG:
            try:
                mechanism, credentials = sharedsasl.saslCredentials(pdu, idEnd)
            except ber.FramingError as e:
                self._unpin()
                self._answer(messageID, ber.BIND_REQUEST, ber.PROTOCOL_ERROR, f"malformed SASL bind: {e}")
                return
            refused = sharedsasl.stepRefusal(mechanism, credentials)
            if refused is not None:
                self._unpin()
                self._answer(messageID, ber.BIND_REQUEST, ber.AUTH_METHOD_NOT_SUPPORTED, refused)
                return
            self._saslBinds.add(messageID)
        connection = self._takePin() if self._saslPin is not None else None
        if connection is not None:
            # the next step (or a new bind, which ends the exchange: RFC 4511 4.2.1)
            if connection.state == "ready":
                self._binds[messageID] = connection
                self._submitTo(connection, messageID, ber.BIND_REQUEST, pdu, b"", idEnd, opEnd)
                return
            self._shared.release(connection)
        connection = self._shared.claim("bind")
        if connection is not None:
            self._binds[messageID] = connection
            self._submitTo(connection, messageID, ber.BIND_REQUEST, pdu, b"", idEnd, opEnd)
            return

        def send(connection: BackendConnection, timeout: float | None) -> None:
            self._binds[messageID] = connection
            self._submitTo(connection, messageID, ber.BIND_REQUEST, pdu, b"", idEnd, opEnd, timeout=timeout)

        self._whenClaimed("bind", messageID, ber.BIND_REQUEST, send, self._waitedOut, None)

    def _whenClaimed(
        self,
        kind: str,
        messageID: int,
        tag: int,
        send: Callable[[BackendConnection, float | None], None],
        waitedOut: Callable[[int, float], None],
        defaultWait: float | None,
    ) -> None:
        """
        Wait for a connection of C{kind} to hold (L{SharedPool.whenFree}),
        within the operation's timeout (else C{defaultWait}, if any; then
        C{waitedOut}), and C{send} the request on it.
        """
        self._ops[messageID] = (None, 0)
        opTimeout = self._timeoutFor(messageID)
        wait = opTimeout if opTimeout is not None else defaultWait
        budget = self._budget
        since = self._reactor.seconds()
        if budget and (wait is None or budget < wait) and not self._shared.canConnect(kind):
            # no connection of the kind is up: it waits for one to be made,
            # within its retry budget, as any request (L{Waits._submit})

            def budgetSpent() -> None:
                if not self._shared.canConnect(kind):
                    self._budgetSpent(messageID, budget)
                    return
                # the backend came back, and its connections are held by
                # others: the claim waits its turn, as one made then would
                self._waitTimers.pop(messageID, None)
                if wait is not None:
                    left = max(0.0, wait - (self._reactor.seconds() - since))
                    self._waitTimers[messageID] = self._reactor.callLater(left, waitedOut, messageID, wait)

            self._waitTimers[messageID] = self._reactor.callLater(budget, budgetSpent)
        elif wait is not None:
            self._waitTimers[messageID] = self._reactor.callLater(wait, waitedOut, messageID, wait)

        def claimed(connection: BackendConnection | None, reason: str) -> bool:
            if self._claiming.get(messageID, (None, None))[1] is claimed:
                del self._claiming[messageID]
            if self.state == "closed" or self._ops.get(messageID) != (None, 0):
                return False  # abandoned, answered or closed meanwhile
            remaining = None if opTimeout is None else max(0.0, opTimeout - (self._reactor.seconds() - since))
            timer = self._waitTimers.pop(messageID, None)
            if timer is not None and timer.active():
                timer.cancel()
            del self._ops[messageID]
            if connection is None:
                self._answerFailed(None, messageID, tag, ber.UNAVAILABLE, reason)
                return False
            send(connection, remaining)
            return True

        self._claiming[messageID] = (kind, claimed)
        self._shared.whenFree(kind, claimed)

    def _unknownCookie(self, messageID: int, size: int) -> None:
        """A page of a sequence this link does not hold (ended, or idle too long)."""
        if size == 0:  # giving up a sequence that is over already
            self.backend = None
            self._owner.linkReceived(self._asLink, sequences.endedSequenceDone(messageID), [(messageID, ber.SEARCH_RESULT_DONE, 0)])
            return
        self._answer(messageID, ber.SEARCH_REQUEST, ber.UNWILLING_TO_PERFORM, sequences.unknownCookie(self._sequences.idleTimeout))

    def _busy(self, messageID: int, timeout: float) -> None:
        """No connection became free for a new sequence in time."""
        self._waitTimers.pop(messageID, None)
        if self._ops.pop(messageID, None) is None or self.state == "closed":
            return
        self._answer(messageID, ber.SEARCH_REQUEST, ber.BUSY, sequences.busy(self.pool.name, timeout))

    # --- SASL binds (L{ldaproute.backends.sharedsasl}) -------------------------

    def _unpin(self) -> None:
        """
        The SASL exchange in progress, if any, ends unfinished: its
        connection is closed, not given back (slapd takes a later bind
        with the same mechanism there as the exchange's next step).
        """
        connection = self._takePin()
        if connection is not None:
            self._shared.retire(connection)

    def _saslAnswered(self, connection: BackendConnection, data: bytes, finals: list[tuple[int, int, int]]) -> bool:
        """
        A response on a SASL bind's connection (which carries nothing else):
        a step (14) keeps the connection for the next; success is held
        until Who Am I names the identity (L{_WhoAmI}); anything else gives
        the connection back.  Whether C{data} goes to the client now.
        """
        for clientID, _, code in finals:
            if clientID not in self._saslBinds:
                continue
            self._saslBinds.discard(clientID)
            if self.state == "closed":
                if code == ber.SASL_BIND_IN_PROGRESS:
                    self._shared.retire(connection)  # (L{_unpin})
                else:
                    self._shared.release(connection)
                return False
            if code == ber.SASL_BIND_IN_PROGRESS:
                # held for the next step, which a client sends at once: not for ever
                self._saslPin = connection
                self._saslPinTimer = self._reactor.callLater(sharedsasl.STEP_TIMEOUT, self._unpin)
            elif code == ber.SUCCESS:
                probe = _WhoAmI(self, clientID, data)
                upstreamID = connection.allocateID()
                request = sharedsasl.whoAmIRequest(upstreamID)
                connection.submit(
                    upstreamID, (probe, clientID, ber.EXTENDED_REQUEST, messageIDElement(clientID), b""), request,
                    self.pool.pool.operationTimeout,
                )
                return False
            else:
                self._shared.release(connection)
        return True

    def _saslLearned(self, connection: BackendConnection | None, clientID: int, bindResponse: bytes, answer: bytes) -> None:
        """
        Who Am I answered (C{answer}; empty: it failed) after a SASL bind's
        success: the session takes the DN it names and the client gets the
        bind's success, or the bind is answered with why the identity
        cannot be asserted.
        """
        if connection is not None:
            self._shared.release(connection)
        if self.state == "closed":
            return
        try:
            code, authzId = sharedsasl.whoAmIAnswer(answer) if answer else (-1, b"")
        except ber.FramingError:
            code, authzId = -1, b""
        if code != ber.SUCCESS:
            self._answer(
                clientID, ber.BIND_REQUEST, ber.UNAVAILABLE,
                "the backend accepted the SASL bind but did not answer Who Am I on its connection: "
                "shared mode cannot learn the identity to assert; bind again",
            )
            return
        dn, why = sharedsasl.boundDN(authzId)
        if dn is None:
            self._answer(clientID, ber.BIND_REQUEST, ber.UNWILLING_TO_PERFORM, why)
            return
        self._owner.session.bindIdentityLearned(clientID, Identity("sasl", dn) if dn else ANONYMOUS)
        if self.responseTransformer is not None:  # as L{SharedLink.deliver} does
            bindResponse = self.responseTransformer(bindResponse)
        self.backend = connection.backend if connection is not None else None
        self._owner.linkReceived(self._asLink, bindResponse, [(clientID, ber.BIND_RESPONSE, ber.SUCCESS)])
        self.backend = None


class _WhoAmI:
    """
    The proxy's own Who Am I on a SASL bind's connection, in the place of
    a link for the connection's demultiplexer: its answer goes to the link
    that holds the bind (L{Claims._saslLearned}), never to the client.
    """

    def __init__(self, link: Claims, clientID: int, bindResponse: bytes) -> None:
        self.entries: dict[int, int] = {}
        self._link = link
        self._clientID = clientID
        self._bindResponse = bindResponse

    def ended(self, clientID: int) -> None:
        """Its answer arrived (L{deliver} follows)."""

    def deliver(self, connection: BackendConnection, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        self._link._saslLearned(connection, self._clientID, self._bindResponse, data)

    def failed(
        self, connection: BackendConnection, clientID: int, requestTag: int, resultCode: int, reason: str,
        sent: bytes = b"", progress: int = ANSWERING,
    ) -> None:
        """The connection died before answering: the bind is answered unavailable."""
        self._link._saslLearned(None, self._clientID, self._bindResponse, b"")

    def timedOut(self, connection: BackendConnection, clientID: int, timeout: float) -> None:
        """No answer in time: the connection carries nothing more."""
        self._link._shared.retire(connection)
        self._link._saslLearned(None, self._clientID, self._bindResponse, b"")
