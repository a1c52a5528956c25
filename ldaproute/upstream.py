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
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ldaproute import ber, limits
from ldaproute.pool import BackendState, PoolState

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

    def linkLost(self, link: UpstreamLink, reason: str) -> None:
        """The link cannot carry operations any more."""

    def linkReplayFailed(self, link: UpstreamLink, resultCode: int) -> None:
        """The bind replayed for the client was refused by the backend."""

    def linkConnected(self, link: UpstreamLink) -> None:
        """The link's transport exists now (for flow control)."""


def endpointFor(reactor: object, state: BackendState, timeout: float) -> IStreamClientEndpoint:
    """The Twisted endpoint that reaches a backend."""
    url = state.backend.url
    if url.scheme == "ldapi":
        return UNIXClientEndpoint(reactor, url.host, timeout=timeout)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    if url.scheme == "ldaps":
        from twisted.internet.endpoints import wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(url.host), endpoint)
    return endpoint


class UpstreamProtocol(Protocol):
    """Bytes from one backend connection to its link, whole PDUs at a time."""

    def __init__(self, link: UpstreamLink) -> None:
        self._link = link
        self._scanner = ber.ResponseScanner(MAX_BACKEND_PDU_BYTES)

    def connectionMade(self) -> None:
        try:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
        except (AttributeError, OSError, socket.error):
            pass  # UNIX sockets have no Nagle

    def dataReceived(self, data: bytes) -> None:
        try:
            complete, finals = self._scanner.feed(data)
        except ber.FramingError as e:
            self._link.protocolFailed(f"backend sent a malformed response: {e}")
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        if complete:
            self._link.responsesReceived(complete, finals)

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        self._link.connectionLost(reason)


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

    # --- connecting -----------------------------------------------------

    def _connectNext(self) -> None:
        state = next(self._candidates, None)
        if state is None:
            self._giveUp()
            return
        self.backend = state
        self._tried.append(state.name)
        endpoint = self._endpointFactory(self._reactor, state, self._connectTimeout)
        d: Deferred[UpstreamProtocol] = endpoint.connect(_UpstreamFactory(self))
        d.addCallbacks(self._connected, self._connectFailed, errbackArgs=(state,))

    def _connected(self, protocol: UpstreamProtocol) -> None:
        assert self.backend is not None
        self.backend.connectSucceeded()
        self.backend.connections += 1
        if self.state == "closed":
            protocol.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._protocol = protocol
        self._owner.linkConnected(self)
        if self._replayBind is not None:
            self.state = "replaying"
            self._sendInternal(lambda messageID: ber.simpleBindRequest(messageID, *self._replayBind))  # type: ignore[misc]
        else:
            self._ready()

    def _connectFailed(self, reason: Failure, state: BackendState) -> None:
        state.connectFailed()
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
        tried = ", ".join(self._tried) or "none"
        self._fail(f"no backend of pool {self.pool.name!r} is reachable (tried: {tried})")

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
            self._protocol.transport.write(pdu)  # type: ignore[union-attr]
        elif self.state != "closed":
            self._queue.append(pdu)
            if self.state == "new":
                self.state = "connecting"
                self._connectNext()

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

    @property
    def transport(self) -> object | None:
        return self._protocol.transport if self._protocol is not None else None

    # --- receiving ------------------------------------------------------

    def responsesReceived(self, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        notice = False
        if self._internalIDs or any(messageID == 0 for messageID, _, _ in finals):
            data, finals, notice = self._filterOwn(data, finals)
        if data:
            self._owner.linkReceived(self, data, finals)
        if notice:
            # after what came before it, so no operation is answered twice
            self._log.info(
                "Backend {backend} sent a Notice of Disconnection; closing that upstream connection",
                backend=self.backend.name if self.backend else None,
                peer=self._peer,
            )
            self._fail(f"backend {self.backend.name if self.backend else '?'} sent a Notice of Disconnection")

    def _filterOwn(
        self, data: bytes, finals: list[tuple[int, int, int]]
    ) -> tuple[bytes, list[tuple[int, int, int]], bool]:
        """
        Take out responses to our own requests (bind replay) and unsolicited
        notifications, which are about this upstream connection, not the
        client's: a backend's Notice of Disconnection becomes a lost link.
        """
        keep: list[bytes] = []
        keptFinals = []
        finalCodes = {messageID: (tag, code) for messageID, tag, code in finals}
        for pdu in ber.Framer(MAX_BACKEND_PDU_BYTES).feed(data):
            envelopeID = _messageID(pdu)
            if envelopeID in self._internalIDs:
                if envelopeID in finalCodes:
                    self._internalIDs.discard(envelopeID)
                    _, code = finalCodes[envelopeID]
                    self._replayAnswered(code)
                continue
            if envelopeID == 0:
                # the link fails after the PDUs before this one are delivered
                return b"".join(keep), keptFinals, True
            keep.append(pdu)
            if envelopeID in finalCodes:
                tag, code = finalCodes[envelopeID]
                keptFinals.append((envelopeID, tag, code))
        return b"".join(keep), keptFinals, False

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
        if self.backend is not None:
            self.backend.connections -= 1
        self._protocol = None
        if self.state != "closed":
            self._fail(f"connection to backend {self.backend.name if self.backend else '?'} lost")

    def _fail(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self._queue = []
        self._owner.linkLost(self, reason)
        if self._protocol is not None:
            self._protocol.transport.abortConnection()  # type: ignore[union-attr]

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        """Close the upstream connection (politely with an Unbind when asked)."""
        if self.state == "closed":
            return
        wasReady = self.state in ("ready", "replaying")
        self.state = "closed"
        self._queue = []
        if self._protocol is None or self._protocol.transport is None:
            return
        transport = self._protocol.transport
        if abort:
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        if unbind and wasReady:
            transport.write(ber.unbindRequest(_INTERNAL_ID_BASE - 1))
        # a paused producer would keep the connection open after its buffer drains
        limits.releaseProducer(transport)
        transport.loseConnection()


def _messageID(pdu: bytes) -> int:
    """The messageID of a framed PDU (short-form header or long-form)."""
    first = pdu[1]
    pos = 2 if first < 0x80 else 2 + (first & 0x7F)
    n = pdu[pos + 1]
    return int.from_bytes(pdu[pos + 2 : pos + 2 + n], "big")
