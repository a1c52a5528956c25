# -*- test-case-name: tests.test_session -*-
"""
One client's session as a state machine, free of transports.

The client connection (L{ldaproute.listeners.frontend}) hands every request
PDU to L{Session.request} and gets back a decision: the L{Route} to forward
it to (the common case, returned as it is so the hot path allocates
nothing), or an L{Answer}, L{StartTLS}, L{PassStartTLS}, L{SpanSearch},
L{Abandon}, L{Unbind} or L{Close} (L{ldaproute.core.decisions}).  What
comes back from the backends (finals, a lost link, a timeout, a refused
bind replay) goes through L{Session.responded}, and L{Session.linkLost},
L{Session.replayRefused} and L{Session.timedOut} (kept in
L{ldaproute.core.lostlinks}): they keep the books,
report each operation that ends to the C{completed} callback (metrics,
access log) and return the answers the proxy owes the client.

The identity changes only through binds (and StartTLS, which leaves it
anonymous); each change bumps C{identityVersion}, and a link remembers the
version it carries (C{boundVersion}), so a link opened or reused later
replays the simple bind first, or, for a SASL identity, the client must
bind again (L{ldaproute.core.identities}).  The TLS phase and SASL-layer watch are a L{TLSState}
(L{ldaproute.core.tlsphase}); searches across routes and rewritten
operations are kept in L{ldaproute.core.slowpath}.  No Twisted imports:
C{tests/test_session.py} drives it with envelopes and bytes, as traces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ldaproute.core import limits
from ldaproute.core.admission import Admission
from ldaproute.core.decisions import (
    ANONYMOUS,
    CHECK_FLEET,
    IDENTITY_LOST,
    START_TLS,
    THROTTLED,
    UNBIND,
    Abandon,
    Answer,
    CheckFleet,
    Close,
    Identity,
    L,
    Outstanding,
    PassStartTLS,
    SpanSearch,
    StartTLS,
    Unbind,
)
from ldaproute.core.lostlinks import LostLinks
from ldaproute.core.rewrite import Rewriter
from ldaproute.core.routing import noRouteResult
from ldaproute.core.slowpath import FanOuts, Rewriting
from ldaproute.core.tlsphase import TLSPhase, TLSState
from ldaproute.wire import ber
from ldaproute.wire.attributes import isRootDSESearch

__all__ = [
    "ANONYMOUS",
    "CHECK_FLEET",
    "IDENTITY_LOST",
    "START_TLS",
    "THROTTLED",
    "UNBIND",
    "Abandon",
    "Answer",
    "CheckFleet",
    "Close",
    "Identity",
    "Outstanding",
    "PassStartTLS",
    "Session",
    "SpanSearch",
    "StartTLS",
    "TLSPhase",
    "Unbind",
]

if TYPE_CHECKING:
    from ldaproute.config import Listener, Route
    from ldaproute.core.policy import ListenerPolicy
    from ldaproute.core.routing import Router


_MUST_REBIND: Final = Answer(
    ber.OPERATIONS_ERROR, "the upstream connection was lost and a SASL bind cannot be replayed: bind again"
)
_ANONYMOUS_BIND_OK: Final = Answer(ber.SUCCESS, "")


class Session(LostLinks[L]):
    """
    The state of one client connection; see the module docstring.

    @ivar outstanding: operations by messageID, in the order sent.
    @ivar address: the client's IP address (for routing and throttling),
        or L{None} (a UNIX socket).
    @ivar tls: the L{TLSState}: its C{phase}, the link it pins an opaque
        session to, the SASL-layer watch.

    @param completed: called C{(operation, resultCode, link, message)} when a
        forwarded operation gets its final result (for metrics and the
        access log), before the session's identity follows a bind's result.
    @param clock: the time now, in seconds (C{reactor.seconds}), for the
        bind throttle's window.
    @param canTerminateTLS: whether a certificate is loaded for
        C{starttls = terminate}.
    """

    def __init__(
        self,
        peer: str,
        listener: Listener,
        policy: ListenerPolicy,
        completed: Callable[[Outstanding[L], int, L, str], None],
        clock: Callable[[], float],
        address: str | None = None,
        secure: bool = False,
        canTerminateTLS: bool = False,
        rewriterFor: Callable[[Route], Rewriter] = Rewriter,
    ) -> None:
        self.peer = peer
        self.listener = listener.name
        self._config = listener
        self._admission: Admission[L] = Admission(listener, policy, clock)
        self._completed = completed
        self.address = address
        super().__init__()
        self.outstanding: dict[int, Outstanding[L]] = {}
        self.tls: TLSState[L] = TLSState(listener.starttls, secure, canTerminateTLS)
        self.fanouts: FanOuts[L] = FanOuts(rewriterFor)
        self.rewriting = Rewriting(rewriterFor)
        #: messageIDs of root DSE reads on a cleartext connection, whose
        #: entries lose the SASL mechanisms the policy refuses here
        #: (L{ldaproute.core.slowpath.cleartextRootDSE})
        self.cleartextRootDSE: set[int] = set()
        #: the bind about to be decided again had the fleet's counts
        #: fetched (a shared throttle; see L{CheckFleet})
        self.fleetChecked = False

    # --- requests ------------------------------------------------------

    def request(
        self, envelope: ber.Envelope, pdu: bytes, router: Router, maxFilterDepth: int
    ) -> Route | Answer | Close | StartTLS | PassStartTLS | SpanSearch | Abandon | Unbind | CheckFleet:
        """
        Decide what becomes of one request PDU.  Forwarded requests are
        recorded by L{forwarded} once the caller has a link for them.
        """
        messageID = envelope.messageID
        tag = envelope.opTag
        if messageID == 0:
            return Close(ber.PROTOCOL_ERROR, "messageID 0 is reserved for unsolicited notifications", "malformed")
        if tag == ber.UNBIND_REQUEST:
            return UNBIND
        if tag == ber.ABANDON_REQUEST:
            return Abandon(envelope.abandonedID(pdu))
        if messageID in self.outstanding or messageID in self.fanouts.searches:
            return Close(
                ber.PROTOCOL_ERROR, f"messageID {messageID} is already in use by an outstanding operation", "malformed"
            )
        # the security policy step before anything is forwarded
        # (L{Admission.refusal}); a bind a shared throttle lets through asks
        # the fleet once (L{CheckFleet}), then is decided again
        refusal = self._admission.refusal(envelope, pdu, self.tls, len(self.outstanding), self.identity, self.address)
        if refusal is not None:
            if refusal is not CHECK_FLEET:
                return refusal
            checked, self.fleetChecked = self.fleetChecked, False
            if not checked:
                return refusal
        extendedOID = None
        passStartTLS = False
        if tag == ber.EXTENDED_REQUEST:
            extendedOID = envelope.extendedName(pdu)
            if extendedOID == ber.STARTTLS_OID:
                startTLS = self.tls.startTLS(len(self.outstanding))
                if startTLS is START_TLS:
                    self.tlsStarted()
                if startTLS is not None:
                    return startTLS
                passStartTLS = True
        if tag == ber.SEARCH_REQUEST:
            # every filter level takes at least two bytes: a short request
            # cannot nest too deep, so only longer ones are walked
            if envelope.contentEnd - envelope.contentStart > 2 * maxFilterDepth and limits.filterDepth(
                pdu, envelope, maxFilterDepth
            ) > maxFilterDepth:
                return Answer(
                    limits.ADMIN_LIMIT_EXCEEDED, f"search filter nested deeper than {maxFilterDepth} levels"
                )
        if self.mustRebind and tag != ber.BIND_REQUEST:
            return _MUST_REBIND

        targetDN = envelope.targetDN(pdu) if router.needsTargetDN else None
        if tag == ber.SEARCH_REQUEST and router.needsTargetDN:
            span = self.fanouts.plan(router, self.listener, pdu, targetDN, self.identity.dn, self.address)
            if span is not None:
                return span
        route = router.routeFor(
            self.listener,
            tag,
            targetDN,
            self.identity.dn if router.needsBoundDN else None,
            self.address,
            extendedOID,
        )
        if route is None:
            if tag == ber.BIND_REQUEST and Identity.ofBind(pdu, envelope).kind == "anonymous":
                # an anonymous simple bind that no route claims: the proxy
                # can say yes itself, since the links it opens later are
                # anonymous
                self.bindCompleted(None, ber.SUCCESS)
                return _ANONYMOUS_BIND_OK
            code, text = noRouteResult(tag)
            return Answer(code, text)
        if route.reject is not None:
            return Answer(route.reject.resultCode, route.reject.message, route.name)
        if passStartTLS:
            return PassStartTLS(route)
        return route

    def forwarded(
        self,
        envelope: ber.Envelope,
        pdu: bytes,
        link: L,
        route: Route,
        now: float,
        summary: object,
        startTLS: bool = False,
        sent: bytes = b"",
    ) -> bool:
        """
        The request goes to C{link} now (C{startTLS}: a L{PassStartTLS}
        decision), as C{sent} (the PDU after the route's rewrite; C{pdu}
        when empty): record it.  Returns whether the client has so many
        operations outstanding that its reading pauses.
        """
        messageID = envelope.messageID
        tag = envelope.opTag
        pending = None
        if tag == ber.BIND_REQUEST:
            pending = Identity.ofBind(pdu, envelope)
            choice, mechanism = envelope.bindAuthentication(pdu)
            self.tls.layerWatch.bindSent(messageID, mechanism if choice == ber.SASL_AUTH_TAG else None, link)
        elif startTLS:
            self.tls.passing(messageID)
        elif tag == ber.SEARCH_REQUEST and not self.tls.secure:
            # the length of the base first: a non-empty one ends the test
            baseLength = pdu[envelope.contentStart + 1]
            if (baseLength < 2 or baseLength == 0x81) and self._config.requireTLSForPasswords:
                if isRootDSESearch(pdu, envelope):
                    self.cleartextRootDSE.add(messageID)
        self.outstanding[messageID] = Outstanding(
            messageID, tag, link, now, route.name, pending, summary, route, sent or pdu
        )
        return len(self.outstanding) >= limits.PAUSE_OUTSTANDING

    def answered(self, envelope: ber.Envelope, answer: Answer) -> None:
        """
        C{answer} to the request C{envelope} was written to the client: a
        bind refused by policy leaves the connection anonymous (RFC 4511
        4.2.1).
        """
        if (answer.refusal is not None or answer.secret is not None) and envelope.opTag == ber.BIND_REQUEST:
            self.bindCompleted(None, answer.resultCode)

    def refused(self, envelope: ber.Envelope, resultCode: int) -> None:
        """A request could not be forwarded after all (its rewrite refused it)."""
        if envelope.opTag == ber.BIND_REQUEST:
            self.bindCompleted(None, resultCode)

    def abandon(self, messageID: int) -> Outstanding[L] | None:
        """The client abandoned an operation: the forwarded one, if any."""
        operation = self.outstanding.pop(messageID, None)
        if operation is not None:
            self.cleartextRootDSE.discard(messageID)
        return operation

    # --- answers from links --------------------------------------------

    def responded(self, link: L, finals: list[tuple[int, int, int]], message: str = "") -> None:
        """
        Final responses from C{link}, as C{(messageID, tag, resultCode)}:
        the operations they end are completed, binds change the identity
        (and count as failures for the throttle on 49), a StartTLS passed
        through pins C{link} on success.  C{message}: the proxy's own
        diagnostic, when the link answered in the backend's place.
        """
        outstanding = self.outstanding
        rewritingOps = self.rewriting.ops
        tls = self.tls
        for messageID, tag, code in finals:
            if rewritingOps:
                rewritingOps.pop(messageID, None)
            operation = outstanding.get(messageID)
            if operation is None:
                continue
            if tag == ber.BIND_RESPONSE and code != ber.SASL_BIND_IN_PROGRESS:
                self._forgetAbandonedBy(operation)
            del outstanding[messageID]
            link.operationEnded(messageID)
            self._completed(operation, code, link, message)
            if tag == ber.BIND_RESPONSE:
                self.tls.layerWatch.bindAnswered(messageID, code)
                if code == ber.INVALID_CREDENTIALS:
                    self._admission.bindFailed(self.address, operation.pending)
                if self.bindCompleted(operation.pending, code):
                    link.boundVersion = self.identityVersion
            elif messageID == tls.passthroughID:
                tls.answered(messageID, code, link)
                if tls.opaqueLink is link:
                    self.tlsStarted()  # the backend did the same on its side

    def _forgetAbandonedBy(self, bind: Outstanding[L]) -> None:
        """
        A bind completed: RFC 4511 4.2.1 has the server finish or abandon
        (slapd: without an answer) every operation sent before it on that
        connection, so those still outstanding will never be answered.
        Forget them, or they pile up to the read-pause limit.
        """
        outstanding = self.outstanding
        stale = []
        for op in outstanding.values():  # in the order they were sent
            if op is bind:
                break
            if op.link is bind.link:
                stale.append(op.messageID)
        for messageID in stale:
            del outstanding[messageID]
            bind.link.operationEnded(messageID)

    def countBindFailures(self, finals: list[tuple[int, int, int]]) -> list[object]:
        """
        With a shared throttle, before the answers in C{finals} go out:
        count their failed binds (49), and return the fleet's
        acknowledgements to wait for (L{Admission.countBindFailures}).
        """
        return self._admission.countBindFailures(self.address, finals, self.outstanding)

    def ended(self) -> None:
        """The connection is gone: nothing is outstanding any more."""
        self.outstanding.clear()
        self.fanouts.clear()
