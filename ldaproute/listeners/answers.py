# -*- test-case-name: tests.test_frontend_security -*-
"""
The proxy's own answers to a client's requests: what the session core
decided to answer itself (L{ldaproute.core.decisions.Answer}: a policy
refusal, a throttled bind, a password refused over cleartext, a reject
route, no route), written, logged without a credential, counted, and put
in the access log like any other operation.

L{OwnAnswers} is a mixin of L{ldaproute.listeners.frontend.FrontendProtocol},
which holds the transport, the session and the observer it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime, ITLSTransport

from ldaproute.backends.interfaces import IBackendLink
from ldaproute.config import Listener
from ldaproute.core import secrets, session as core
from ldaproute.core.session import Session
from ldaproute.listeners.events import ClientEvents
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.runtime import Runtime


class OwnAnswers:
    """Answers the proxy writes itself (a mixin; see the module docstring)."""

    # what the client connection provides
    session: Session[IBackendLink]
    transport: ITLSTransport
    _events: ClientEvents
    _listener: Listener
    _reactor: IReactorTime
    _runtime: Runtime

    def _answer(self, envelope: ber.Envelope, answer: core.Answer, pdu: bytes | None = None) -> None:
        if answer.refusal is not None:
            self._refused(envelope, answer, pdu)
        elif answer.secret is not None:
            # a password over cleartext: one warning (never the secret), counted by kind
            self._events.secretRefused(envelope, answer.secret, envelope.targetDN(pdu) if pdu is not None else None)
            self._runtime.observer.metrics.cleartextSecretRefused(self._listener.name, answer.secret.kind)
        written = ber.resultFor(envelope, answer.resultCode, answer.message)
        if written is not None:
            self.transport.write(written)
            now = self._reactor.seconds()
            observer = self._runtime.observer
            # a request refused for carrying a password is not described (nor numbered)
            summary = observer.summarize(self, pdu, envelope) if pdu is not None and answer.secret is None else None
            observer.operationCompleted(
                self, envelope.opTag, envelope.messageID, answer.route, None, answer.resultCode, now, now, summary,
                answer.message,
            )  # fmt: skip
        self.session.answered(envelope, answer)

    def _writeCleartextRootDSE(self, pdu: bytes) -> None:
        """A fan-out's root DSE PDU to a cleartext client (see L{cleartextRootDSE})."""
        self.transport.write(secrets.cleartextRootDSE(pdu))

    def _refused(self, envelope: ber.Envelope, answer: core.Answer, pdu: bytes | None) -> None:
        """A bind the listener's policy refused: one warning, and the throttle metric."""
        if answer.refusal == core.THROTTLED:
            self._runtime.observer.metrics.bindThrottled(self._listener.name)
        name = (envelope.targetDN(pdu) if pdu is not None else None) or b""
        self._events.bindRefused(answer.refusal, name, envelope.messageID, answer.resultCode, answer.message)  # type: ignore[arg-type]
