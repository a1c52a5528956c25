# -*- test-case-name: tests.test_session -*-
"""
The listener's security policy as one part of a client session
(L{Admission}, owned by L{ldaproute.core.session.Session}): the step
before anything is forwarded (operations outstanding, secrets in
cleartext, the bind throttle, anonymous access), and the bind throttle's
books after a bind fails.

Apart from the session because it is policy, not the session's state: it
keeps none of its own across requests (the session passes in what it
needs), so it reads as the list of refusals it makes.  Pure, no Twisted
imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic

from ldaproute.core.decisions import CHECK_FLEET, THROTTLED, Answer, CheckFleet, Identity, L, Outstanding
from ldaproute.core.secrets import JUDGED_OPERATIONS
from ldaproute.core.tlsphase import TLSState
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.config import Listener
    from ldaproute.core.policy import ListenerPolicy

__all__ = ["Admission"]

_ANONYMOUS_REFUSED: Final = Answer(
    ber.INSUFFICIENT_ACCESS_RIGHTS, "anonymous access is not allowed on this listener: bind first"
)


class Admission(Generic[L]):
    """
    C{listener}'s policy for one session.

    @param clock: the time now, in seconds, for the bind throttle's window.
    """

    def __init__(self, listener: Listener, policy: ListenerPolicy, clock: Callable[[], float]) -> None:
        self._config = listener
        self._policy = policy
        self._clock = clock

    def refusal(
        self,
        envelope: ber.Envelope,
        pdu: bytes,
        tls: TLSState[L],
        outstanding: int,
        identity: Identity,
        address: str | None,
    ) -> Answer | CheckFleet | None:
        """
        The answer for a request the listener's policy refuses, L{None}, or
        L{CHECK_FLEET} for a bind a shared throttle lets through (the
        session asks the fleet once, then decides again).
        """
        listener = self._config
        tag = envelope.opTag
        if tls.passthroughID is not None:
            return tls.refusal()
        if listener.maxOutstanding is not None and outstanding >= listener.maxOutstanding:
            return Answer(
                ber.BUSY, f"too many operations outstanding on this connection (limit {listener.maxOutstanding})"
            )
        if tag in JUDGED_OPERATIONS and listener.requireTLSForPasswords and not tls.secure:
            secret = self._policy.secrets.secretIn(pdu, envelope)
            if secret is not None:
                return Answer(ber.CONFIDENTIALITY_REQUIRED, secret.refusal, secret=secret)
        if tag == ber.BIND_REQUEST:
            throttle = self._policy.throttle
            if throttle is not None:
                reason = throttle.refusal(address, envelope.targetDN(pdu) or b"", self._clock())
                if reason is not None:
                    return Answer(ber.UNWILLING_TO_PERFORM, reason, refusal=THROTTLED)
                if throttle.shared:
                    return CHECK_FLEET
            return None
        if not listener.allowAnonymous and identity.kind == "anonymous":
            if tag == ber.EXTENDED_REQUEST and envelope.extendedName(pdu) == ber.STARTTLS_OID:
                return None
            return _ANONYMOUS_REFUSED
        return None

    def bindFailed(self, address: str | None, pending: Identity | None) -> None:
        """
        A bind was refused with invalidCredentials (49): the throttle counts
        it (a shared throttle counted it before the answer, in
        L{countBindFailures}).
        """
        throttle = self._policy.throttle
        if throttle is not None and not throttle.shared:
            throttle.failed(address, pending.name if pending is not None else b"", self._clock())

    def countBindFailures(
        self, address: str | None, finals: list[tuple[int, int, int]], outstanding: dict[int, Outstanding[L]]
    ) -> list[object]:
        """
        With a shared throttle, before the answers in C{finals} go out:
        count their failed binds (49), and return the fleet's
        acknowledgements to wait for (L{ldaproute.listeners.fleetwait}).
        """
        throttle = self._policy.throttle
        acknowledgements: list[object] = []
        if throttle is None:
            return acknowledgements
        for messageID, tag, code in finals:
            if tag == ber.BIND_RESPONSE and code == ber.INVALID_CREDENTIALS:
                operation = outstanding.get(messageID)
                if operation is not None:
                    pending = operation.pending
                    name = pending.name if pending is not None else b""
                    acknowledgements += throttle.failed(address, name, self._clock())
        return acknowledgements
