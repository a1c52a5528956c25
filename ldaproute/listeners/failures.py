# -*- test-case-name: tests.test_frontend -*-
"""
What a client connection does when a backend fails it: the part of
L{ldaproute.backends.interfaces.ILinkOwner} that answers for the backend.

A lost link's operations are answered unavailable (52), or sent again on a
new link when the replay rule allows (L{ldaproute.core.replay}); an
operation whose retry budget was spent is answered, or the client is
disconnected (C{on_backend_unavailable}); one past its operation timeout
is answered timeLimitExceeded (3); a refused bind replay loses the
session's identity.  L{BackendFailures} is a mixin of
L{ldaproute.listeners.frontend.FrontendProtocol}, which holds the state it
works on; the session core (L{ldaproute.core.session.Session}) decides
each case, this carries it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime, ITLSTransport

from ldaproute.backends.interfaces import IBackendLink
from ldaproute.config import Listener
from ldaproute.core.session import Outstanding, Session
from ldaproute.listeners.events import ClientEvents
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.listeners.links import ClientLinks


class BackendFailures:
    """The backend-failure callbacks of a client connection (a mixin; see the module docstring)."""

    # what the client connection provides
    session: Session[IBackendLink]
    transport: ITLSTransport
    _links: ClientLinks
    _events: ClientEvents
    _listener: Listener
    _reactor: IReactorTime
    _closing: bool

    def _completed(
        self, operation: Outstanding[IBackendLink], resultCode: int, link: IBackendLink | None, message: str = ""
    ) -> None:
        raise NotImplementedError

    def _disconnect(self, resultCode: int | None, diagnosticMessage: str) -> None:
        raise NotImplementedError

    def linkLost(self, link: IBackendLink, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        if self.session.tls.opaqueLink is link:
            self._closing = True
            self.transport.loseConnection()
            return
        self._links.lost(link)
        self.session.fanouts.linkLost(link, resultCode, reason)
        if not self._closing:
            answers, replays = self.session.linkLost(link, resultCode, reason, link.progressOf)
            self._failed(link, resultCode, reason, answers)
            if replays:
                self._events.replaying(link, len(replays), reason)
                self._links.replay(replays)

    def linkWaitedOut(self, link: IBackendLink, messageID: int, reason: str, resultCode: int) -> None:
        """
        No backend took an operation within its retry budget: answer it, or
        (C{on_backend_unavailable = disconnect}) end the connection as a
        directory that went away would, so that the client reconnects.
        """
        if self._closing:
            self.session.outstanding.pop(messageID, None)
            return
        waited = self.session.timedOut(messageID, reason, resultCode)
        if waited is None:
            return
        operation, answer = waited
        self._events.waitedOut(link, operation, reason, self._listener.onBackendUnavailable)
        if self._listener.onBackendUnavailable == "disconnect":
            self._completed(operation, resultCode, link, reason)
            self._disconnect(resultCode, reason)
            return
        self.transport.write(answer)
        self._completed(operation, resultCode, link, reason)
        self._links.answered()

    def linkOperationTimedOut(self, link: IBackendLink, messageID: int, reason: str) -> None:
        """Answer an operation the link abandoned after its operation_timeout."""
        if self._closing:
            self.session.outstanding.pop(messageID, None)
            return
        timedOut = self.session.timedOut(messageID, reason)
        if timedOut is None:
            return
        operation, answer = timedOut
        self._events.timedOut(link, operation, reason, self._reactor.seconds())
        self.transport.write(answer)
        self._completed(operation, ber.TIME_LIMIT_EXCEEDED, link, reason)

    def linkReplayFailed(self, link: IBackendLink, resultCode: int) -> None:
        reason = f"the backend refused to restore this session's bind (resultCode {resultCode})"
        self.session.fanouts.linkLost(link, ber.OPERATIONS_ERROR, reason)
        if not self._closing:
            self._failed(link, ber.OPERATIONS_ERROR, reason + ": bind again", self.session.replayRefused(link, resultCode))
        else:
            self.session.identityLost()

    def _failed(self, link: IBackendLink, resultCode: int, reason: str, answers: list[bytes]) -> None:
        """Write the answers for the operations a link lost."""
        if not answers:
            return
        self._events.failed(link, len(answers), resultCode, reason)
        self.transport.writeSequence(answers)
        self._links.answered()

