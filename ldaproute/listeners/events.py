# -*- test-case-name: tests.test_frontend -*-
"""
The log events of one client connection, written once with their stable
fields (C{peer}, C{listener}, C{pool}, C{backend}, C{messageID}, C{op},
C{resultCode}, C{durationMs}; see the README), so the connection's code
reads as what it does.  One event per bad input, no traceback for a
client's mistake, never a credential: binds are logged by C{bindDN}.

The namespace stays C{ldaproute.listeners.frontend.FrontendProtocol}, the
one these events always had, for observers that filter on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from ldaproute.backends.interfaces import IBackendLink
from ldaproute.wire import ber

if TYPE_CHECKING:
    from ldaproute.core.secrets import Secret
    from ldaproute.core.session import Outstanding


def _backendName(link: IBackendLink) -> str | None:
    return link.backend.name if link.backend else None


class ClientEvents:
    """The events of the client C{peer} on the listener C{listener}."""

    _log = Logger(namespace="ldaproute.listeners.frontend.FrontendProtocol")

    def __init__(self, peer: str, listener: str) -> None:
        self.peer = peer
        self._listener = listener

    def refusedNetwork(self) -> None:
        self._log.warn("Connection from {peer} refused: not in client_network", peer=self.peer, listener=self._listener)

    def refusedAdmission(self, reason: str) -> None:
        self._log.warn("Connection from {peer} refused: {reason}", peer=self.peer, listener=self._listener, reason=reason)

    def removedTLS(self) -> None:
        self._log.info(
            "{peer} removed TLS (close_notify): connection closed, the session does not go on in cleartext",
            peer=self.peer, listener=self._listener,
        )  # fmt: skip

    def handshakeFailed(self, reason: str) -> None:
        self._log.warn("TLS handshake with {peer} failed: {reason}", peer=self.peer, listener=self._listener, reason=reason)

    def secured(self) -> None:
        self._log.info("TLS established with {peer}", peer=self.peer, listener=self._listener)

    def routed(self, messageID: int, opTag: int, route: str, pool: str | None) -> None:
        self._log.debug(
            "Operation {messageID} ({op}) routed by {route} to {pool}",
            messageID=messageID, op=ber.OPERATION_NAMES.get(opTag, hex(opTag)), route=route, pool=pool,
            peer=self.peer, listener=self._listener,
        )  # fmt: skip

    def rewritten(self, messageID: int, route: str, pool: str | None, rewrittenDN: str | None) -> None:
        self._log.debug(
            "Operation {messageID} rewritten by route {route} for pool {pool}: target {rewrittenDN}",
            messageID=messageID, route=route, pool=pool, rewrittenDN=rewrittenDN, peer=self.peer,
        )  # fmt: skip

    def spanned(self, messageID: int, routes: list[str]) -> None:
        self._log.debug(
            "Search {messageID} spans routes {routes}",
            messageID=messageID, routes=routes, peer=self.peer, listener=self._listener,
        )  # fmt: skip

    def bindRefused(self, event: str, bindDN: bytes, messageID: int, resultCode: int, reason: str) -> None:
        """A bind the listener's policy refused (C{event}: what refused it)."""
        self._log.warn(
            "{event} for {peer} (bindDN {bindDN}): {reason}",
            event=event, peer=self.peer, listener=self._listener, bindDN=bindDN.decode("utf-8", "replace"),
            op="bind", messageID=messageID, resultCode=resultCode, reason=reason,
        )  # fmt: skip

    def secretRefused(self, envelope: ber.Envelope, secret: Secret, target: bytes | None) -> None:
        """A request that would send a password over this cleartext connection was answered 13."""
        self._log.warn(
            "cleartext {kind} refused for {peer} ({description}, DN {bindDN}): TLS is required for passwords",
            kind=secret.kind.replace("_", " "), description=secret.description, peer=self.peer,
            listener=self._listener, bindDN=target.decode("utf-8", "replace") if target is not None else None,
            mechanism=secret.mechanism, attribute=secret.attribute,
            op=ber.OPERATION_NAMES.get(envelope.opTag, hex(envelope.opTag)), messageID=envelope.messageID,
            resultCode=ber.CONFIDENTIALITY_REQUIRED,
        )  # fmt: skip

    def protocolError(self, kind: str, detail: str) -> None:
        self._log.warn(
            "Protocol error from {peer}: {reason}; sent Notice of Disconnection",
            peer=self.peer, listener=self._listener, reason=detail, kind=kind,
        )  # fmt: skip

    def pduTimedOut(self, timeout: float | None) -> None:
        self._log.warn(
            "Protocol error from {peer}: a PDU was not completed within {timeout}s; sent Notice of Disconnection",
            peer=self.peer, listener=self._listener, timeout=timeout,
        )  # fmt: skip

    def idle(self) -> None:
        self._log.info("Closing idle connection from {peer}", peer=self.peer, listener=self._listener)

    def pinned(self, link: IBackendLink, how: str, mechanism: bytes | None) -> None:
        """The session became opaque (C{how}: C{sasl} or C{passthrough}), pinned to C{link}."""
        if how == "sasl":
            self._log.info(
                "{peer} negotiated a SASL security layer ({mechanism}); relaying its bytes opaquely to {backend}",
                peer=self.peer, listener=self._listener, backend=_backendName(link),
                mechanism=(mechanism or b"?").decode("ascii", "replace"),
            )  # fmt: skip
        else:
            self._log.info(
                "StartTLS passed through for {peer}: relaying to backend {backend} untouched",
                peer=self.peer, listener=self._listener, pool=link.pool.name, backend=_backendName(link),
            )  # fmt: skip

    def timedOut(self, link: IBackendLink, operation: Outstanding[IBackendLink], reason: str, now: float) -> None:
        self._log.warn(
            "Operation {messageID} of {peer} timed out: {reason}",
            messageID=operation.messageID, peer=self.peer, listener=self._listener, route=operation.route,
            pool=link.pool.name, backend=_backendName(link), reason=reason,
            op=ber.OPERATION_NAMES.get(operation.opTag, hex(operation.opTag)), resultCode=ber.TIME_LIMIT_EXCEEDED,
            durationMs=round((now - operation.startedAt) * 1000),
        )  # fmt: skip

    def waitedOut(self, link: IBackendLink, operation: Outstanding[IBackendLink], reason: str, then: str) -> None:
        """No backend took an operation within its retry budget; C{then}: C{answer} or C{disconnect}."""
        self._log.warn(
            "Operation {messageID} of {peer} found no backend within its retry budget ({then}): {reason}",
            messageID=operation.messageID, peer=self.peer, listener=self._listener, route=operation.route,
            pool=link.pool.name, reason=reason, then=then,
            op=ber.OPERATION_NAMES.get(operation.opTag, hex(operation.opTag)),
        )  # fmt: skip

    def replaying(self, link: IBackendLink, count: int, reason: str) -> None:
        """C{count} reads that C{link} lost unanswered go out again on a new connection."""
        self._log.info(
            "{count} read(s) of {peer} sent again on a new connection: {reason}",
            count=count, peer=self.peer, listener=self._listener, pool=link.pool.name,
            backend=_backendName(link), reason=reason,
        )  # fmt: skip

    def failed(self, link: IBackendLink, count: int, resultCode: int, reason: str) -> None:
        """C{count} operations that C{link} lost were answered C{resultCode}."""
        self._log.warn(
            "{count} operation(s) of {peer} answered {resultCode}: {reason}",
            count=count, peer=self.peer, listener=self._listener, pool=link.pool.name,
            backend=_backendName(link), resultCode=resultCode, reason=reason,
        )  # fmt: skip
