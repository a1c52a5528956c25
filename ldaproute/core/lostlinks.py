# -*- test-case-name: tests.test_session -*-
"""
The session core's books when a link fails: operations it lost, answered
or kept to send again (L{ldaproute.core.replay}), an operation past its
time limit or retry budget, a bind replay the backend refused.

L{LostLinks} is a mixin of L{ldaproute.core.session.Session}, whose state
(outstanding operations, TLS phase, identity: L{ldaproute.core.identities})
it works on; like the rest of
the core it returns the answers the client is owed and never writes.
"""

from __future__ import annotations

from collections.abc import Callable

from ldaproute.core.decisions import L, Outstanding
from ldaproute.core.identities import Identities
from ldaproute.core.replay import MAX_REPLAYS, mayReplay
from ldaproute.core.tlsphase import TLSState
from ldaproute.wire import ber


class LostLinks(Identities[L]):
    """How a session settles what a failing link leaves behind (a mixin; see the module docstring)."""

    # what the session provides
    tls: TLSState[L]
    cleartextRootDSE: set[int]
    _completed: Callable[[Outstanding[L], int, L, str], None]

    def linkLost(
        self, link: L, resultCode: int, reason: str, progressOf: Callable[[int], int] | None = None
    ) -> tuple[list[bytes], list[Outstanding[L]]]:
        """
        C{link} cannot carry operations any more: its operations complete
        with C{resultCode}, and the answers the client is owed for them
        are returned, in the order the operations were sent.

        With C{progressOf} (how far each operation got, see
        L{ldaproute.core.replay}), those that may be sent again stay
        outstanding instead, returned second for the caller to send on a
        new link: when the session's identity can be carried to a new
        connection and no bind was among the lost operations (what follows
        a bind depends on its outcome).
        """
        passthroughID = self.tls.passthroughID
        if passthroughID is not None:
            pending = self.outstanding.get(passthroughID)
            self.tls.linkLost(pending.link if pending is not None else None, link)
        failed = [operation for operation in self.outstanding.values() if operation.link is link]
        replays = []
        if (
            progressOf is not None
            and self.identity.replayable
            and not self.tls.opaqueLink
            and not any(operation.opTag == ber.BIND_REQUEST for operation in failed)
        ):
            kept = []
            for operation in failed:
                if operation.replays < MAX_REPLAYS and mayReplay(operation.sent, progressOf(operation.messageID)):
                    replays.append(operation)
                else:
                    kept.append(operation)
            failed = kept
        answers = []
        for operation in failed:
            del self.outstanding[operation.messageID]
            self.cleartextRootDSE.discard(operation.messageID)
            self._completed(operation, resultCode, link, reason)
            answers.append(ber.result(operation.messageID, ber.RESPONSE_FOR[operation.opTag], resultCode, reason))
            if operation.opTag == ber.BIND_REQUEST:
                self.bindCompleted(None, resultCode)
        return answers, replays

    def replayRefused(self, link: L, resultCode: int) -> list[bytes]:
        """
        The backend refused the bind replayed on C{link}: the identity is
        lost, and the link's operations are answered operationsError.
        """
        self.identityLost()
        return self.linkLost(
            link,
            ber.OPERATIONS_ERROR,
            f"the backend refused to restore this session's bind (resultCode {resultCode}): bind again",
        )[0]

    def timedOut(
        self, messageID: int, reason: str, resultCode: int = ber.TIME_LIMIT_EXCEEDED
    ) -> tuple[Outstanding[L], bytes] | None:
        """
        An operation exceeded its time limit (its link abandoned it), or
        its retry budget (C{resultCode} unavailable or busy): the
        operation and its answer, timeLimitExceeded (3) unless said
        otherwise, which the caller writes and then reports as completed.
        """
        operation = self.outstanding.pop(messageID, None)
        if operation is None:
            return None
        self.cleartextRootDSE.discard(messageID)
        if operation.opTag == ber.BIND_REQUEST:
            self.bindCompleted(None, resultCode)
        answer = ber.result(messageID, ber.RESPONSE_FOR[operation.opTag], resultCode, reason)
        return operation, answer

