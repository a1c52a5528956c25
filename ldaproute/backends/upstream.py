# -*- test-case-name: tests.test_frontend -*-
"""
The proxy's client side: one session's connection to one pool.

An L{UpstreamLink} connects lazily to a backend chosen by the pool, trying
the next candidate when one refuses or times out, holds the client's PDUs
until the connection (and, if needed, the replay of the client's bind) is
ready, then writes them as they come.  Response bytes go back to its owner
in whole-PDU chunks, exactly as the backend sent them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime, IStreamClientEndpoint, ITLSTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.wire import ber
from ldaproute.core import limits
from ldaproute.wire.fastwrite import writerFor
from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.wire.pdu import messageIDOf, noticeOf, startTLSRequest
from ldaproute.wire.proxyheader import proxyHeader

#: Largest PDU accepted from a backend: a search entry with big binary
#: values is legitimately large; a corrupt length is not.
MAX_BACKEND_PDU_BYTES = 64 * 1024 * 1024

#: messageIDs the proxy uses for its own requests on a client's upstream
#: connection (bind replay); clients count up from 1, so the top of the
#: range does not collide in practice, and collisions are checked.
_INTERNAL_ID_BASE = 0x7FFFFF00


class LinkOwner(TypingProtocol):
    """What an L{UpstreamLink} reports to (the frontend)."""

    def linkReceived(self, link: UpstreamLink, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        """Complete response PDUs for the client, and the operations they end."""

    def linkLost(self, link: UpstreamLink, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        """The link cannot carry operations any more."""

    def linkOperationTimedOut(self, link: UpstreamLink, messageID: int, reason: str) -> None:
        """An operation exceeded its time limit and was abandoned upstream."""

    def linkReplayFailed(self, link: UpstreamLink, resultCode: int) -> None:
        """The bind replayed for the client was refused by the backend."""

    def linkConnected(self, link: UpstreamLink) -> None:
        """The link's transport exists now (for flow control)."""

    def linkTLSHandshake(self, link: UpstreamLink, outcome: str) -> None:
        """A TLS handshake towards the backend ended (C{success}, C{failure})."""


def endpointFor(reactor: object, state: BackendState, timeout: float) -> IStreamClientEndpoint:
    """The Twisted endpoint that reaches a backend."""
    url = state.backend.url
    if url.scheme == "ldapi":
        return UNIXClientEndpoint(reactor, url.host, timeout=timeout)
    endpoint: IStreamClientEndpoint
    if isIPAddress(url.host):
        # an address needs no resolver thread and no happy-eyeballs race:
        # connecting is most of what connection churn costs
        endpoint = TCP4ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    elif isIPv6Address(url.host):
        endpoint = TCP6ClientEndpoint(reactor, url.host, url.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    if state.backend.tls == "ldaps" or url.scheme == "ldaps":
        endpoint = wrapClientTLS(state.clientTLSOptions(), endpoint)
    return endpoint


@implementer(IHandshakeListener)
class UpstreamProtocol(Protocol):
    """
    Bytes from one backend connection to its link, whole PDUs at a time
    (or untouched once C{opaque}: SASL layer or StartTLS passthrough).
    """

    #: set by makeConnection: TCP, or TLS over TCP (ldaps, StartTLS)
    transport: ITLSTransport

    def __init__(self, link: UpstreamLink) -> None:
        self._link = link
        self._scanner = ber.ResponseScanner(MAX_BACKEND_PDU_BYTES)
        self.opaque = False  # after a SASL security layer: bytes, not PDUs
        self.detached = False  # after a failed TLS set-up: ignored

    def handshakeCompleted(self) -> None:
        if not self.detached:
            self._link.tlsHandshakeCompleted()

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError, socket.error):
            pass  # UNIX sockets have no Nagle
        #: requests go out through this (see L{ldaproute.wire.fastwrite})
        self.write = writerFor(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.detached:
            return
        if self.opaque:
            self._link.rawReceived(data)
            return
        try:
            complete, finals = self._scanner.feed(data)
        except ber.FramingError as e:
            self._link.protocolFailed(f"backend sent a malformed response: {e}")
            self.transport.abortConnection()
            return
        if complete:
            self._link.responsesReceived(complete, finals)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if not self.detached:
            self._link.connectionLost(reason)


#: "no such operation" in L{UpstreamLink._operations}, whose values may be None
_ABSENT: Any = object()


class _UpstreamFactory(Factory):
    """One connection attempt's factory; quiet, as there is one per session."""

    noisy = False

    def __init__(self, link: UpstreamLink) -> None:
        self._link = link

    def buildProtocol(self, addr: object) -> UpstreamProtocol:
        return UpstreamProtocol(self._link)


class UpstreamLink:
    """
    One session's upstream connection to one pool.

    States: C{connecting} (PDUs queue), C{replaying} (our bind replay is in
    flight; PDUs queue), C{ready} (PDUs are written at once), C{closed}.
    """

    _log = Logger()

    def __init__(
        self,
        owner: LinkOwner,
        pool: PoolState,
        reactor: IReactorTime,
        connectTimeout: float,
        replayBind: tuple[bytes, bytes] | None,
        peer: str,
        endpointFactory: Callable[[Any, BackendState, float], IStreamClientEndpoint] | None = None,
        clientAddresses: tuple[Any, Any] | None = None,
    ) -> None:
        self._endpointFactory = endpointFactory or endpointFor
        self._owner = owner
        self.pool = pool
        self._reactor = reactor
        self._connectTimeout = connectTimeout
        self._replayBind = replayBind
        self._peer = peer
        self.state = "new"
        self.boundVersion = 0
        self.backend: BackendState | None = None
        self._queue: list[bytes] = []
        self._protocol: UpstreamProtocol | None = None
        self._internalIDs: set[int] = set()
        self._candidates: Iterator[BackendState] = pool.candidates()
        self._tried: list[str] = []
        self._skippedFull: list[str] = []
        #: client operations on this link not yet answered, with their
        #: operation-timeout timers (L{None}: no limit)
        self._operations: dict[int, IDelayedCall | None] = {}
        #: abandoned after a timeout: their late responses are dropped
        self._dropIDs: set[int] = set()
        self._counted = False
        #: slow-path hook: whole response PDUs in, rewritten PDUs out
        #: (set by the owner for links that carry rewritten operations)
        self.responseTransformer: Callable[[bytes], bytes] | None = None
        self._clientAddresses = clientAddresses  # (peer, host), for send_proxy

    # --- connecting -----------------------------------------------------

    def _connectNext(self) -> None:
        state = next(self._candidates, None)
        if state is None:
            self._giveUp()
            return
        if state.atCapacity():
            self._skippedFull.append(state.name)
            self._connectNext()
            return
        self.backend = state
        self._tried.append(state.name)
        state.connecting += 1
        try:
            endpoint = self._endpointFactory(self._reactor, state, self._connectTimeout)
        except ValueError as e:  # unreadable TLS files
            self._connectFailed(Failure(e), state)
            return
        d: Deferred[UpstreamProtocol] = endpoint.connect(_UpstreamFactory(self))  # type: ignore[assignment]
        d.addCallbacks(self._connected, self._connectFailed, errbackArgs=(state,))

    def _connected(self, protocol: UpstreamProtocol) -> None:
        assert self.backend is not None
        self.backend.connecting -= 1
        self.backend.connectSucceeded()
        self.backend.connections += 1
        self.backend.inFlight += len(self._operations)
        self._counted = True
        if self.state == "closed":
            protocol.transport.loseConnection()
            return
        self._protocol = protocol
        if self.backend.backend.sendProxy != "none" and self._clientAddresses is not None:
            protocol.transport.write(proxyHeader(self.backend.backend.sendProxy, *self._clientAddresses))
        self._owner.linkConnected(self)
        tls = self.backend.backend.tls
        if tls == "ldaps":
            self.state = "handshaking"
        elif tls == "starttls":
            self.state = "starttls"
            self._sendInternal(startTLSRequest)
        else:
            self._afterSecured()

    def _afterSecured(self) -> None:
        """The connection is as secure as configured: replay, then ready."""
        if self._replayBind is not None:
            self.state = "replaying"
            self._sendInternal(lambda messageID: ber.simpleBindRequest(messageID, *self._replayBind))
        else:
            self._ready()

    def _connectFailed(self, reason: Failure, state: BackendState) -> None:
        state.connecting -= 1
        state.connectFailed(f"cannot connect: {reason.getErrorMessage()}", self.pool.name)
        self._log.warn(
            "Cannot connect to backend {backend} of pool {pool}: {error}",
            backend=state.name,
            pool=self.pool.name,
            error=reason.getErrorMessage(),
            peer=self._peer,
        )
        if self.state == "closed":
            return
        self._connectNext()

    def _giveUp(self) -> None:
        if not self._tried and (self._skippedFull or self.pool.allAtCapacity()):
            full = ", ".join(self._skippedFull or [state.name for state in self.pool.backends])
            self._fail(
                f"every backend of pool {self.pool.name!r} is at its max_connections ({full}): try again later",
                ber.BUSY,
            )
            return
        if not self._tried:
            self._fail(f"pool {self.pool.name!r} has no backends (none configured or discovered yet)")
            return
        tried = ", ".join(self._tried)
        self._fail(f"no backend of pool {self.pool.name!r} is reachable (tried: {tried})")

    def tlsHandshakeCompleted(self) -> None:
        self._owner.linkTLSHandshake(self, "success")
        if self.state == "handshaking":
            self._afterSecured()

    def _startTLSAnswered(self, resultCode: int) -> None:
        assert self.backend is not None and self._protocol is not None
        if resultCode != ber.SUCCESS:
            self._tlsFailed(f"the backend refused StartTLS (resultCode {resultCode})")
            return
        self.state = "handshaking"
        try:
            options = self.backend.clientTLSOptions()
        except ValueError as e:
            self._tlsFailed(str(e))
            return
        self._protocol.transport.startTLS(options)

    def _tlsFailed(self, reason: str) -> None:
        """
        TLS to the backend could not be set up (refused, untrusted or
        misnamed certificate): a failed backend connection, never a
        cleartext fallback.  The next candidate is tried.
        """
        state = self.backend
        assert state is not None
        self._owner.linkTLSHandshake(self, "failure")
        self._log.error(
            "TLS to backend {backend} of pool {pool} failed: {reason}",
            backend=state.name,
            pool=self.pool.name,
            reason=reason,
            peer=self._peer,
            tls=state.backend.tls,
        )
        state.connectFailed()
        state.connections -= 1
        protocol, self._protocol = self._protocol, None
        self._internalIDs.clear()
        if protocol is not None:
            protocol.detached = True
            if protocol.transport is not None:
                protocol.transport.abortConnection()
        if self.state == "closed":
            return
        self.state = "connecting"
        self._connectNext()

    def _ready(self) -> None:
        self.state = "ready"
        queued, self._queue = self._queue, []
        if queued:
            self._write(queued)

    # --- sending --------------------------------------------------------

    def send(self, pdu: bytes) -> None:
        """
        Send one request PDU, now or as soon as the link is ready; the
        first PDU starts connecting (so that a connection failure, however
        fast, finds the operation registered with the owner).
        """
        if self.state == "ready":
            self._protocol.write(pdu)  # type: ignore[union-attr]
        elif self.state != "closed":
            self._queue.append(pdu)
            if self.state == "new":
                self.state = "connecting"
                self._connectNext()

    def goOpaque(self) -> None:
        """
        The session negotiated a SASL security layer (see
        L{ldaproute.core.sasllayer}): from now on, bytes in both directions are
        relayed untouched.
        """
        if self._protocol is not None:
            self._protocol.opaque = True

    def writeRaw(self, data: bytes) -> None:
        """Client bytes of an opaque session, as they are."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.write(data)

    def rawReceived(self, data: bytes) -> None:
        self._owner.linkReceivedRaw(self, data)  # type: ignore[attr-defined]
    # --- operations in flight (least-outstanding, operation timeouts) -------

    def operationStarted(self, messageID: int, timeout: float | None = None) -> None:
        """
        A client operation is being sent on this link: count it against
        the backend, and abandon it after C{timeout} seconds.
        """
        self._dropIDs.discard(messageID)
        timer = None
        if timeout is not None:
            timer = self._reactor.callLater(timeout, self._timedOut, messageID, timeout)
        old = self._operations.pop(messageID, _ABSENT)
        if old is _ABSENT:
            if self._counted and self.backend is not None:
                self.backend.inFlight += 1
        elif old is not None and old.active():
            old.cancel()
        self._operations[messageID] = timer

    def operationEnded(self, messageID: int) -> None:
        """A client operation got its final result (or was abandoned)."""
        timer = self._operations.pop(messageID, _ABSENT)
        if timer is _ABSENT:
            return
        if timer is not None and timer.active():
            timer.cancel()
        if self._counted and self.backend is not None:
            self.backend.inFlight -= 1

    def _timedOut(self, messageID: int, timeout: float) -> None:
        if messageID not in self._operations or self.state == "closed":
            return
        self._operations[messageID] = None
        self.operationEnded(messageID)
        backendName = self.backend.name if self.backend else "?"
        reason = (
            f"no answer from backend {backendName} of pool {self.pool.name!r} within the "
            f"operation_timeout of {timeout:g}s; the operation was abandoned"
        )
        if self.backend is not None:
            self.backend.connectFailed("operation timed out", self.pool.name)
        if self._protocol is None:
            # still connecting: take the PDU out of the queue, keep connecting
            self._queue = [pdu for pdu in self._queue if messageIDOf(pdu) != messageID]
            self._owner.linkOperationTimedOut(self, messageID, reason)
            return
        # Abandon it upstream, answer it, and leave this backend: the next
        # operation of the session reconnects (to a backend that is up).
        self._dropIDs.add(messageID)
        transport = self._protocol.transport
        transport.write(ber.abandonRequest(self._nextInternalID(), messageID))
        self._owner.linkOperationTimedOut(self, messageID, reason)
        if self.state != "closed":
            self.state = "closed"
            self._queue = []
            self._uncount()
            self._owner.linkLost(
                self, f"backend {backendName} of pool {self.pool.name!r} stopped answering (operation timeout)"
            )
            transport.write(ber.unbindRequest(_INTERNAL_ID_BASE - 1))
            transport.loseConnection()

    def _nextInternalID(self) -> int:
        # an AbandonRequest gets no response, so one fixed ID serves
        return _INTERNAL_ID_BASE - 2

    def _uncount(self) -> None:
        for timer in self._operations.values():
            if timer is not None and timer.active():
                timer.cancel()
        if self._counted and self.backend is not None:
            self.backend.inFlight -= len(self._operations)
        self._operations.clear()
        self._dropIDs.clear()

    def rebind(self, credentials: tuple[bytes, bytes]) -> None:
        """
        Carry the client's current identity to this link before anything
        else is sent on it: a simple bind the proxy sends and answers itself.
        """
        self._replayBind = credentials
        if self.state == "ready":
            self.state = "replaying"
            self._sendInternal(lambda messageID: ber.simpleBindRequest(messageID, *credentials))

    def _write(self, pdus: list[bytes]) -> None:
        self._protocol.transport.writeSequence(pdus)  # type: ignore[union-attr]

    def _sendInternal(self, makePDU: object) -> None:
        messageID = _INTERNAL_ID_BASE + len(self._internalIDs)
        self._internalIDs.add(messageID)
        self._protocol.transport.write(makePDU(messageID))  # type: ignore[operator,union-attr]

    def pauseReading(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeReading(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.resumeProducing()  # type: ignore[attr-defined]

    def entriesReturned(self, messageID: int) -> int:
        """Search result entries relayed for C{messageID} (counted once)."""
        protocol = self._protocol
        return protocol._scanner.entries.pop(messageID, 0) if protocol is not None else 0

    @property
    def transport(self) -> object | None:
        return self._protocol.transport if self._protocol is not None else None

    # --- receiving ------------------------------------------------------

    def responsesReceived(self, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        notice = None
        if self._internalIDs or self._dropIDs or any(messageID == 0 for messageID, _, _ in finals):
            data, finals, notice = self._filterOwn(data, finals)
        if data:
            if self.responseTransformer is not None:
                data = self.responseTransformer(data)
            self._owner.linkReceived(self, data, finals)
        if notice is not None:
            self._noticeReceived(notice)

    def _noticeReceived(self, pdu: bytes) -> None:
        """
        The backend's unsolicited notification (in practice the Notice of
        Disconnection, RFC 4511 4.4.1, as AD sends on its idle timeout):
        this upstream connection is over.  Like a dropped connection, every
        operation still on it is answered unavailable (52) and the client's
        next operation reconnects; unlike one, the backend is not marked
        down (it said goodbye, it did not fail).
        """
        resultCode, text = noticeOf(pdu)
        backendName = self.backend.name if self.backend else "?"
        self._log.info(
            "Backend {backend} sent a Notice of Disconnection (resultCode {resultCode}: {reason}); "
            "closing that upstream connection",
            backend=backendName,
            pool=self.pool.name,
            resultCode=resultCode,
            reason=text,
            peer=self._peer,
        )
        detail = f": {text}" if text else ""
        self._fail(
            f"backend {backendName} of pool {self.pool.name!r} ended the connection with a Notice of "
            f"Disconnection (resultCode {resultCode}{detail})"
        )

    def _filterOwn(
        self, data: bytes, finals: list[tuple[int, int, int]]
    ) -> tuple[bytes, list[tuple[int, int, int]], bytes | None]:
        """
        Take out responses to our own requests (bind replay) and unsolicited
        notifications, which are about this upstream connection, not the
        client's: a backend's Notice of Disconnection becomes a lost link.
        """
        keep: list[bytes] = []
        keptFinals: list[tuple[int, int, int]] = []
        finalCodes = {messageID: (tag, code) for messageID, tag, code in finals}
        for pdu in ber.Framer(MAX_BACKEND_PDU_BYTES).feed(data):
            envelopeID = messageIDOf(pdu)
            if envelopeID in self._internalIDs:
                if envelopeID in finalCodes:
                    self._internalIDs.discard(envelopeID)
                    _, code = finalCodes[envelopeID]
                    if self.state == "starttls":
                        self._startTLSAnswered(code)
                    else:
                        self._replayAnswered(code)
                continue
            if envelopeID in self._dropIDs:
                if envelopeID in finalCodes:
                    self._dropIDs.discard(envelopeID)
                continue
            if envelopeID == 0:
                # the connection ends here: what came before it is relayed
                # first, then the link fails (L{_noticeReceived})
                return b"".join(keep), keptFinals, pdu
            keep.append(pdu)
            if envelopeID in finalCodes:
                tag, code = finalCodes[envelopeID]
                keptFinals.append((envelopeID, tag, code))
        return b"".join(keep), keptFinals, None

    def _replayAnswered(self, resultCode: int) -> None:
        if self.state != "replaying":
            return
        if resultCode == ber.SUCCESS:
            self._ready()
            return
        self._log.warn(
            "Backend {backend} refused the replayed bind (resultCode {resultCode})",
            backend=self.backend.name if self.backend else None,
            resultCode=resultCode,
            peer=self._peer,
        )
        self._queue = []
        self._owner.linkReplayFailed(self, resultCode)
        self._ready()

    # --- failure and closing ----------------------------------------------

    def protocolFailed(self, reason: str) -> None:
        self._log.warn(
            "Backend {backend}: {reason}",
            backend=self.backend.name if self.backend else None,
            reason=reason,
            peer=self._peer,
        )
        self._fail(reason)

    def connectionLost(self, reason: Failure) -> None:
        if self.state in ("handshaking", "starttls"):
            self._tlsFailed(reason.getErrorMessage())
            return
        if self.backend is not None:
            self.backend.connections -= 1
        self._protocol = None
        if self.state != "closed":
            if self.backend is not None and self._operations:
                # dropped with work in flight: a failure, not an idle close
                self.backend.connectFailed(f"connection lost: {reason.getErrorMessage()}", self.pool.name)
            self._fail(f"connection to backend {self.backend.name if self.backend else '?'} of pool {self.pool.name!r} lost")
        self._uncount()

    def _fail(self, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._queue = []
        self._uncount()
        self._owner.linkLost(self, reason, resultCode)
        if self._protocol is not None:
            self._protocol.transport.abortConnection()

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        """Close the upstream connection (politely with an Unbind when asked)."""
        if self.state == "closed":
            return
        wasReady = self.state in ("ready", "replaying", "starttls")
        self.state = "closed"
        self._queue = []
        self._uncount()
        if self._protocol is None or self._protocol.transport is None:
            return
        transport = self._protocol.transport
        if abort:
            transport.abortConnection()
            return
        if unbind and wasReady:
            transport.write(ber.unbindRequest(_INTERNAL_ID_BASE - 1))
        # a paused producer would keep the connection open after its buffer drains
        limits.releaseProducer(transport)
        transport.loseConnection()
