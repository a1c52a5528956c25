# -*- test-case-name: tests.test_shared -*-
"""
Shared mode (C{[ldaproute] mode = shared}): many clients multiplexed, per
operation, over a few upstream connections per pool.

Each client session gets a L{SharedLink} per pool, which offers the
frontend the methods of an L{ldaproute.backends.upstream.UpstreamLink} (C{send},
C{operationStarted}, C{close}...), but owns no connection: its operations go
out on the pool's L{SharedConnection}s under upstream messageIDs of the
connection's choosing, and their responses come back with the client's
messageID restored.  The rewrite is byte-level (L{ldaproute.wire.pdu.reframe}): the messageID
INTEGER and the lengths around it, never a decode.

Identity: binds are checked on dedicated bind connections (the result goes
back to the client; on success the frontend records the session's
identity); every other operation carries the client's identity to the
backend in a critical Proxied Authorization control (RFC 4370) that is
appended to the request's controls.  The shared connections are bound as
the pool's service identity (C{service_bind_dn}), which the backend must
allow to proxy (docs/shared-mode.rst).  SASL binds, StartTLS and extended
operations that change connection state are refused: they cannot share a
connection.  Paged-result searches of a client stay on one connection, the
one whose backend issued the cookie.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import error, tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.wire import ber
from ldaproute.wire.fastwrite import writerFor
from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.wire.pdu import (
    CANCEL_OID,
    PAGED_RESULTS_OID,
    PROXIED_AUTHZ_OID,
    abandonedIDAt,
    cancelIDAt,
    cancelRequest,
    controlsAfter,
    extendedNameAt,
    messageIDElement,
    messageIDSpan,
    opSpan,
    proxiedAuthorization,
    reframeAt,
)

if TYPE_CHECKING:  # the runtime is above this layer: named for annotations only
    from ldaproute.runtime import Runtime

WHOAMI_OID = b"1.3.6.1.4.1.4203.1.11.3"
PASSWORD_MODIFY_OID = b"1.3.6.1.4.1.4203.1.11.1"

#: Extended operations that run per operation and accept the Proxied
#: Authorization control in slapd.
_PROXIABLE_EXTENDED = frozenset({WHOAMI_OID, PASSWORD_MODIFY_OID})

NO_SUCH_OPERATION = 119
MAX_BACKEND_PDU_BYTES = 64 * 1024 * 1024
_MAX_ID = 0x7FFFFFFF

_log = Logger()


# --- the pool's connections --------------------------------------------------


def _batches(transport: object) -> bool:
    """
    Whether writes to C{transport} are collected and sent once per reactor
    turn: for TCP connections, where each write is otherwise a C{send()}
    of its own (L{writerFor}).  Other transports (TLS, test doubles) keep
    their own buffering.
    """
    return isinstance(transport, tcp.Connection)


class _Factory(Factory):
    noisy = False

    def __init__(self, connection: SharedConnection) -> None:
        self._connection = connection

    def buildProtocol(self, addr: object) -> SharedConnection:
        return self._connection


@implementer(IPushProducer)
class SharedConnection(Protocol):
    """
    One upstream connection of a shared pool, carrying the operations of
    many clients.

    States: C{connecting}, C{binding} (the service identity's bind is in
    flight), C{ready}, C{closed}.  C{kind} is C{"shared"} (operations,
    bound as the service identity) or C{"bind"} (client binds only).

    @ivar ops: upstream messageID -> C{(link, client messageID, request tag,
        the client's messageID INTEGER element)}.
    @ivar writable: False while the backend's socket buffer is full.
    """

    #: set by makeConnection: TCP, or TLS over TCP
    transport: ITCPTransport

    def __init__(self, shared: SharedPool, kind: str) -> None:
        self.shared = shared
        self.kind = kind
        self.state = "connecting"
        self.backend: BackendState | None = None
        self.ops: dict[int, tuple[SharedLink, int, int, bytes]] = {}
        self.writable = True
        self._nextID = 1
        self._serviceBindID: int | None = None
        self._buffer = b""
        self._candidates: Iterator[BackendState] = iter(())
        self._tried: list[str] = []
        # bind connections carry one bind at a time: slapd abandons every
        # operation outstanding on a connection when a bind arrives
        self._bindInFlight: int | None = None
        self._bindQueue: deque[tuple[int, bytes]] = deque()
        self._write: Callable[[bytes], None] = lambda data: None
        #: requests of this reactor turn, sent together (None: no batching)
        self._pending: list[bytes] | None = None

    @property
    def load(self) -> int:
        """Binds in flight or queued here."""
        return len(self._bindQueue) + (self._bindInFlight is not None)

    # --- connecting ------------------------------------------------------

    def start(self) -> None:
        self._candidates = self.shared.poolState.candidates()
        self._connectNext()

    def _connectNext(self) -> None:
        state = next(self._candidates, None)
        if state is None:
            tried = ", ".join(self._tried) or "none configured"
            self._closed(f"no backend of pool {self.shared.poolState.name!r} is reachable (tried: {tried})")
            return
        self.backend = state
        self._tried.append(state.name)
        state.connecting += 1
        shared = self.shared
        try:
            endpoint = shared.endpointFactory(shared.reactor, state, shared.poolState.pool.connectTimeout)
        except ValueError as e:
            self._connectFailed(Failure(e), state)
            return
        d = endpoint.connect(_Factory(self))
        d.addCallbacks(self._connected, self._connectFailed, errbackArgs=(state,))

    def _connected(self, protocol: object) -> None:
        assert self.backend is not None
        self.backend.connecting -= 1
        self.backend.connectSucceeded()
        self.backend.connections += 1
        if self.state == "closed":
            self.transport.loseConnection()
            return
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._write = writerFor(self.transport)
        if self.kind == "shared" and _batches(self.transport):
            # (a bind connection carries one bind at a time: nothing to batch)
            self._pending = []
        service = self.shared.serviceIdentity if self.kind == "shared" else None
        if service is not None:
            self.state = "binding"
            self._serviceBindID = self._allocate()
            self._send(ber.simpleBindRequest(self._serviceBindID, *service))
        else:
            self._ready()

    def _connectFailed(self, reason: Failure, state: BackendState) -> None:
        state.connecting -= 1
        state.connectFailed(f"cannot connect: {reason.getErrorMessage()}", self.shared.poolState.name)
        _log.warn(
            "Shared connection to backend {backend} of pool {pool} failed: {error}",
            backend=state.name,
            pool=self.shared.poolState.name,
            error=reason.getErrorMessage(),
        )
        if self.state != "closed":
            self._connectNext()

    def _ready(self) -> None:
        self.state = "ready"
        self.shared.connectionReady(self)

    # --- sending ---------------------------------------------------------

    def _allocate(self) -> int:
        ops = self.ops
        messageID = self._nextID
        while messageID in ops or messageID == self._serviceBindID:
            messageID = messageID + 1 if messageID < _MAX_ID else 1
        self._nextID = messageID + 1 if messageID < _MAX_ID else 1
        return messageID

    def submit(
        self,
        link: SharedLink,
        clientID: int,
        tag: int,
        pdu: bytes,
        control: bytes,
        parsed: tuple[int, int] | None = None,
        controlsElement: bytes | None = None,
    ) -> int:
        """
        Send a client's request here; returns its upstream messageID.

        @param parsed: C{(idEnd, opEnd)} of C{pdu} (L{opSpan}) when the
            caller has read them already.
        @param controlsElement: C{[0]} element holding only C{control}, when
            the caller has it built.
        """
        upstreamID = self._allocate()
        if tag != ber.ABANDON_REQUEST:
            self.ops[upstreamID] = (link, clientID, tag, messageIDElement(clientID))
        if parsed is None:
            parsed = opSpan(pdu)[1:]
        if controlsElement is None:
            controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
        data = reframeAt(pdu, parsed[0], parsed[1], upstreamID, control, controlsElement)
        if self.kind == "bind":
            if self._bindInFlight is not None:
                self._bindQueue.append((upstreamID, data))
                return upstreamID
            self._bindInFlight = upstreamID
        self._send(data)
        return upstreamID

    def _send(self, data: bytes) -> None:
        """
        Write C{data} to the backend: at the end of this reactor turn,
        together with every other request written meanwhile (many clients'
        PDUs in one C{send()}), or at once when not batching.
        """
        pending = self._pending
        if pending is None:
            self._write(data)
            return
        pending.append(data)
        if len(pending) == 1:
            self.shared.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._write(data)

    def _nextBind(self) -> None:
        self._bindInFlight = None
        queue = self._bindQueue
        while queue:
            upstreamID, data = queue.popleft()
            if upstreamID in self.ops:  # not given up by its client meanwhile
                self._bindInFlight = upstreamID
                self._send(data)
                return

    def abandon(self, upstreamID: int) -> None:
        """Abandon an operation upstream; its late responses are dropped."""
        entry = self.ops.pop(upstreamID, None)
        if entry is None or self.state != "ready":
            return
        if entry[2] != ber.BIND_REQUEST:  # binds cannot be abandoned (RFC 4511 4.11)
            self._send(ber.abandonRequest(self._allocate(), upstreamID))

    # IPushProducer: the backend's socket buffer
    def pauseProducing(self) -> None:
        self.writable = False

    def resumeProducing(self) -> None:
        self.writable = True
        self.shared.connectionWritable(self)

    def stopProducing(self) -> None:
        pass

    # --- receiving -------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        end = len(buf)
        pos = 0
        ops = self.ops
        out: dict[SharedLink, list[bytes]] = {}
        finals: dict[SharedLink, list[tuple[int, int, int]]] = {}
        bindDone = False
        try:
            while end - pos >= 2:
                if buf[pos] != 0x30:
                    raise ber.FramingError("not-ldap", f"backend sent tag 0x{buf[pos]:02x}, not an LDAPMessage")
                first = buf[pos + 1]
                if first < 0x80:
                    bodyStart = pos + 2
                    total = 2 + first
                else:
                    count = first & 0x7F
                    if count == 0 or count > 4:
                        raise ber.FramingError("malformed", "bad BER length from backend")
                    if end - pos < 2 + count:
                        break
                    bodyStart = pos + 2 + count
                    total = 2 + count + int.from_bytes(buf[pos + 2 : bodyStart], "big")
                    if total > MAX_BACKEND_PDU_BYTES:
                        raise ber.FramingError("oversized", f"backend PDU of {total} bytes")
                if end - pos < total:
                    break
                pduEnd = pos + total
                if buf[bodyStart] != 0x02:
                    raise ber.FramingError("malformed", "backend PDU without a messageID")
                idLength = buf[bodyStart + 1]
                idEnd = bodyStart + 2 + idLength
                if not 1 <= idLength <= 4 or idEnd >= pduEnd:
                    raise ber.FramingError("malformed", "backend PDU with a bad messageID")
                upstreamID = int.from_bytes(buf[bodyStart + 2 : idEnd], "big")
                tag = buf[idEnd]
                if upstreamID == self._bindInFlight and tag == ber.BIND_RESPONSE:
                    bindDone = True
                entry = ops.get(upstreamID)
                if entry is None:
                    if upstreamID == 0:
                        self._unsolicited()
                        return
                    if upstreamID == self._serviceBindID and tag == ber.BIND_RESPONSE:
                        self._serviceBound(ber.resultCodeAt(buf, idEnd, pduEnd))
                    pos = pduEnd
                    continue  # abandoned: dropped
                link, clientID, _, idElement = entry
                pieces = out.get(link)
                if pieces is None:
                    pieces = out[link] = []
                if len(idElement) == idEnd - bodyStart:
                    # same length: only the INTEGER changes, lengths stay
                    pieces.append(buf[pos:bodyStart])
                    pieces.append(idElement)
                else:
                    bodyLength = pduEnd - idEnd + len(idElement)
                    if bodyLength < 0x80:
                        pieces.append(bytes((0x30, bodyLength)))
                    else:
                        pieces.append(b"\x30" + ber.encodeLength(bodyLength))
                    pieces.append(idElement)
                pieces.append(buf[idEnd:pduEnd])
                if tag == ber.SEARCH_RESULT_ENTRY:
                    link.entries[clientID] = link.entries.get(clientID, 0) + 1
                if tag in ber.FINAL_RESPONSES:
                    del ops[upstreamID]
                    code = ber.resultCodeAt(buf, idEnd, pduEnd)
                    link.ended(clientID)
                    linkFinals = finals.get(link)
                    if linkFinals is None:
                        finals[link] = [(clientID, tag, code)]
                    else:
                        linkFinals.append((clientID, tag, code))
                pos = pduEnd
        except ber.FramingError as e:
            self._buffer = b""
            self._deliver(out, finals)
            self.protocolFailed(f"backend sent a malformed response: {e}")
            return
        self._buffer = buf[pos:] if pos < end else b""
        if bindDone and self.state == "ready":
            self._nextBind()
        self._deliver(out, finals)

    def _deliver(self, out: dict[SharedLink, list[bytes]], finals: dict[SharedLink, list[tuple[int, int, int]]]) -> None:
        for link, pieces in out.items():
            link.deliver(b"".join(pieces), finals.get(link, []))

    def _serviceBound(self, resultCode: int) -> None:
        self._serviceBindID = None
        if self.state != "binding":
            return
        if resultCode == ber.SUCCESS:
            self._ready()
            return
        _log.error(
            "Backend {backend} of pool {pool} refused the proxy's service identity (resultCode {resultCode}): "
            "check service_bind_dn and service_bind_password",
            backend=self.backend.name if self.backend else None,
            pool=self.shared.poolState.name,
            resultCode=resultCode,
        )
        self._closed(
            f"backend {self.backend.name if self.backend else '?'} refused the proxy's service identity "
            f"(resultCode {resultCode})"
        )
        self.transport.loseConnection()

    def _unsolicited(self) -> None:
        _log.info(
            "Backend {backend} sent an unsolicited notification; closing that shared connection",
            backend=self.backend.name if self.backend else None,
            pool=self.shared.poolState.name,
        )
        self._closed(f"backend {self.backend.name if self.backend else '?'} ended the connection")
        self.transport.abortConnection()

    # --- failure ---------------------------------------------------------

    def protocolFailed(self, reason: str) -> None:
        _log.warn("Backend {backend}: {reason}", backend=self.backend.name if self.backend else None, reason=reason)
        self._closed(reason)
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = error.ConnectionDone) -> None:  # type: ignore[assignment]
        if self.backend is not None:
            self.backend.connections -= 1
            if self.ops and self.state != "closed":
                self.backend.connectFailed(f"connection lost: {reason.getErrorMessage()}", self.shared.poolState.name)
        name = self.backend.name if self.backend else "?"
        self._closed(f"connection to backend {name} of pool {self.shared.poolState.name!r} lost")

    def _closed(self, reason: str) -> None:
        """Fail every operation this connection carried (52), once."""
        if self.state == "closed":
            return
        self.state = "closed"
        ops, self.ops = self.ops, {}
        self.shared.connectionClosed(self, reason)
        for link, clientID, tag, _ in ops.values():
            link.failed(clientID, tag, ber.UNAVAILABLE, reason)

    def close(self) -> None:
        if self.state == "closed":
            return
        ready = self.state in ("ready", "binding")
        self.state = "closed"
        self.shared.connectionClosed(self, "closed")
        if self.transport is not None:
            if ready:
                self._send(ber.unbindRequest(self._allocate()))
            self._flush()
            self.transport.loseConnection()


class SharedPool:
    """
    The shared connections of one pool: C{shared_connections} per backend
    for operations, C{bind_connections} per backend for binds, opened on
    first use and reopened on demand after a loss.  Requests wait in a
    queue while no connection of their kind is ready.
    """

    def __init__(self, poolState: PoolState, reactor: IReactorTime, endpointFactory: Callable[..., Any]) -> None:
        self.poolState = poolState
        self.reactor = reactor
        self.endpointFactory = endpointFactory
        pool = poolState.pool
        self.serviceIdentity: tuple[bytes, bytes] | None = None
        if pool.serviceBindDN:
            self.serviceIdentity = (pool.serviceBindDN.encode("utf-8"), (pool.serviceBindPassword or "").encode("utf-8"))
        self.connections: dict[str, list[SharedConnection]] = {"shared": [], "bind": []}
        self.ready: dict[str, list[SharedConnection]] = {"shared": [], "bind": []}
        self._turn = {"shared": 0, "bind": 0}
        self._waiting: dict[str, deque[Callable[[SharedConnection | None, str], None]]] = {
            "shared": deque(),
            "bind": deque(),
        }
        self._pausedClients: list[Any] = []

    def wanted(self, kind: str) -> int:
        pool = self.poolState.pool
        perBackend = pool.sharedConnections if kind == "shared" else pool.bindConnections
        return perBackend * max(1, len(self.poolState.backends))

    def pick(self, kind: str) -> SharedConnection | None:
        """A ready connection of C{kind}, in turn, preferring writable ones."""
        ready = self.ready[kind]
        pool = self.poolState.pool
        perBackend = pool.sharedConnections if kind == "shared" else pool.bindConnections
        missing = perBackend * max(1, len(self.poolState.backends)) - len(self.connections[kind])
        for _ in range(missing):
            self._open(kind)
        if not ready:
            return None
        if kind == "bind":
            return min(ready, key=lambda connection: connection.load)
        n = len(ready)
        turn = self._turn[kind]
        for i in range(n):
            connection = ready[(turn + i) % n]
            if connection.writable:
                self._turn[kind] = turn + i + 1
                return connection
        self._turn[kind] = turn + 1
        return ready[turn % n]

    def whenReady(self, kind: str, callback: Callable[[SharedConnection | None, str], None]) -> None:
        """Call C{callback(connection, "")} when one is ready, or C{(None, reason)}."""
        self._waiting[kind].append(callback)
        if not self.connections[kind]:
            self._open(kind)

    def _open(self, kind: str) -> None:
        connection = SharedConnection(self, kind)
        self.connections[kind].append(connection)
        connection.start()

    def connectionReady(self, connection: SharedConnection) -> None:
        kind = connection.kind
        self.ready[kind].append(connection)
        _log.info(
            "Shared {kind} connection to backend {backend} of pool {pool} is ready",
            kind=kind,
            backend=connection.backend.name if connection.backend else None,
            pool=self.poolState.name,
        )
        waiting = self._waiting[kind]
        while waiting and connection.state == "ready":
            waiting.popleft()(connection, "")

    def connectionClosed(self, connection: SharedConnection, reason: str) -> None:
        kind = connection.kind
        if connection in self.connections[kind]:
            self.connections[kind].remove(connection)
        if connection in self.ready[kind]:
            self.ready[kind].remove(connection)
        if not connection.writable:
            connection.writable = True
            self.connectionWritable(connection)
        waiting = self._waiting[kind]
        if waiting and not self.connections[kind]:
            # every attempt of this kind failed: the waiting requests too
            failed = list(waiting)
            waiting.clear()
            for callback in failed:
                callback(None, reason)

    def pauseClient(self, transport: Any) -> None:
        """A client fed a connection whose buffer is full: stop reading it."""
        if transport is not None and transport not in self._pausedClients:
            self._pausedClients.append(transport)
            transport.pauseProducing()

    def connectionWritable(self, connection: SharedConnection) -> None:
        if self._pausedClients and all(c.writable for c in self.ready["shared"] + self.ready["bind"]):
            paused, self._pausedClients = self._pausedClients, []
            for transport in paused:
                transport.resumeProducing()


def sharedPoolFor(runtime: Runtime, poolName: str, reactor: IReactorTime) -> SharedPool:
    """The L{SharedPool} for a pool of C{runtime}, which keeps it (made on first use)."""
    pools = runtime.sharedPools
    poolState = runtime.backends.pools[poolName]
    shared = pools.get(poolName)
    if shared is None or shared.poolState is not poolState:
        shared = pools[poolName] = SharedPool(poolState, reactor, runtime.endpointFactory)
    return shared


# --- one client's view ------------------------------------------------------------


class SharedLink:
    """
    One client session's link to a pool in shared mode, with the interface
    the frontend uses on an L{ldaproute.backends.upstream.UpstreamLink}.

    @ivar _ops: client messageID -> C{(connection, upstream messageID)} of
        operations sent and not yet answered (C{connection} is None while
        the request waits for a ready connection).
    """

    backend = None
    transport = None

    def __init__(self, owner: Any, shared: SharedPool, reactor: IReactorTime) -> None:
        #: search result entries relayed, by client messageID
        self.entries: dict[int, int] = {}
        self._owner = owner
        self._shared = shared
        self._reactor = reactor
        self.pool = shared.poolState
        self.state = "ready"
        self.boundVersion = 0
        self.responseTransformer: Callable[[bytes], bytes] | None = None
        self._ops: dict[int, tuple[SharedConnection | None, int]] = {}
        self._timers: dict[int, IDelayedCall] = {}
        self._control: tuple[Any, bytes] = (None, b"")
        self._controlsElement = b""
        self._pagedConnection: SharedConnection | None = None

    # --- requests ----------------------------------------------------------

    def send(self, pdu: bytes) -> None:
        if self.state == "closed":
            return
        messageID, idEnd, opEnd = opSpan(pdu)
        tag = pdu[idEnd]
        if tag == ber.ABANDON_REQUEST:
            self._abandon(abandonedIDAt(pdu, idEnd))
            return
        if tag == ber.BIND_REQUEST:
            envelope = ber.Envelope.fromBytes(pdu)
            if envelope.bindAuthentication(pdu)[0] != ber.SIMPLE_AUTH_TAG:
                self._answer(
                    messageID,
                    tag,
                    ber.AUTH_METHOD_NOT_SUPPORTED,
                    "SASL binds are not supported in shared mode: use mode = session for SASL clients",
                )
                return
            self._submit("bind", messageID, tag, pdu, b"")
            return
        controls = pdu[opEnd:]
        if controls and PROXIED_AUTHZ_OID in controls:
            self._answer(
                messageID,
                tag,
                ber.UNWILLING_TO_PERFORM,
                "the proxy asserts each client's identity with Proxied Authorization in shared mode: "
                "clients cannot send their own",
            )
            return
        if tag == ber.EXTENDED_REQUEST:
            oid = extendedNameAt(pdu, idEnd)
            if oid == CANCEL_OID:
                self._cancel(messageID, pdu, idEnd)
                return
            if oid not in _PROXIABLE_EXTENDED:
                what = "StartTLS" if oid == ber.STARTTLS_OID else f"the extended operation {oid.decode('ascii', 'replace')}"
                self._answer(
                    messageID,
                    tag,
                    ber.UNWILLING_TO_PERFORM,
                    f"{what} is not supported in shared mode (the upstream connection is shared): use mode = session",
                )
                return
        connection = None
        if tag == ber.SEARCH_REQUEST and controls and PAGED_RESULTS_OID in controls:
            # the cookie is only valid on the connection that issued it
            connection = self._pagedConnection
            if connection is None or connection.state != "ready":
                connection = self._pagedConnection = self._shared.pick("shared")
        control = self._identityControl()
        if connection is None:
            connection = self._shared.pick("shared")
            if connection is not None:
                # the common case, inline: a ready connection
                self._ops[messageID] = (
                    connection,
                    connection.submit(self, messageID, tag, pdu, control, (idEnd, opEnd), self._controlsElement),
                )
                if not connection.writable:
                    self._shared.pauseClient(getattr(self._owner, "transport", None))
                return
        self._submit("shared", messageID, tag, pdu, control, connection)

    def _identityControl(self) -> bytes:
        """The control asserting the client's identity (cached per identity,
        with the C{[0]} controls element holding only it)."""
        identity = self._owner.session.identity
        cached, control = self._control
        if cached is identity:
            return control
        if identity.kind == "anonymous" or not identity.name:
            # anonymous: asserted as such when the connections have an
            # identity of their own, which must not leak to the client
            control = proxiedAuthorization(b"") if self._shared.serviceIdentity is not None else b""
        else:
            name = identity.name
            replayName = getattr(self._owner, "_replayName", None)
            if replayName is not None:
                name = replayName(self.pool.name, name)
            control = proxiedAuthorization(b"dn:" + name)
        self._control = (identity, control)
        self._controlsElement = ber.tlv(ber.CONTROLS_TAG, control) if control else b""
        return control

    def _submit(
        self, kind: str, messageID: int, tag: int, pdu: bytes, control: bytes, connection: SharedConnection | None = None
    ) -> None:
        shared = self._shared
        if connection is None:
            connection = shared.pick(kind)
        if connection is not None:
            self._ops[messageID] = (connection, connection.submit(self, messageID, tag, pdu, control))
            if not connection.writable:
                shared.pauseClient(getattr(self._owner, "transport", None))
            return
        self._ops[messageID] = (None, 0)

        def ready(connection: SharedConnection | None, reason: str) -> None:
            if self._ops.get(messageID) != (None, 0):
                return  # abandoned or closed meanwhile
            if connection is None:
                del self._ops[messageID]
                self.failed(messageID, tag, ber.UNAVAILABLE, reason)
                return
            if tag == ber.SEARCH_REQUEST and kind == "shared" and PAGED_RESULTS_OID in controlsAfter(pdu, messageIDSpan(pdu)[2]):
                self._pagedConnection = connection
            self._ops[messageID] = (connection, connection.submit(self, messageID, tag, pdu, control))

        shared.whenReady(kind, ready)

    def _abandon(self, abandonedID: int) -> None:
        entry = self._ops.pop(abandonedID, None)
        self._cancelTimer(abandonedID)
        if entry is None:
            return
        connection, upstreamID = entry
        if connection is not None:
            connection.abandon(upstreamID)

    def _cancel(self, messageID: int, pdu: bytes, idEnd: int) -> None:
        cancelID = cancelIDAt(pdu, idEnd)
        connection, upstreamID = self._ops.get(cancelID, (None, 0)) if cancelID is not None else (None, 0)
        if connection is None:
            self._answer(messageID, ber.EXTENDED_REQUEST, NO_SUCH_OPERATION, "no such operation to cancel")
            return
        self._ops[messageID] = (connection, connection.submit(self, messageID, ber.EXTENDED_REQUEST, cancelRequest(messageID, upstreamID), b""))

    def _answer(self, messageID: int, requestTag: int, resultCode: int, message: str) -> None:
        """The proxy's own final answer to a request, through the usual path."""
        responseTag = ber.RESPONSE_FOR[requestTag]
        self._owner.linkReceived(
            self, ber.result(messageID, responseTag, resultCode, message), [(messageID, responseTag, resultCode)]
        )

    # --- responses ---------------------------------------------------------

    def entriesReturned(self, messageID: int) -> int:
        """Search result entries relayed for C{messageID} (for the access log)."""
        return self.entries.pop(messageID, 0)

    def ended(self, clientID: int) -> None:
        """A final response for C{clientID} arrived (called before L{deliver})."""
        self._ops.pop(clientID, None)

    def deliver(self, data: bytes, finals: list[tuple[int, int, int]]) -> None:
        if self.state == "closed":
            return
        if self.responseTransformer is not None:
            data = self.responseTransformer(data)
        self._owner.linkReceived(self, data, finals)

    def failed(self, clientID: int, requestTag: int, resultCode: int, reason: str) -> None:
        """The connection carrying C{clientID} died: answer it C{resultCode}."""
        self._ops.pop(clientID, None)
        if self.state == "closed" or requestTag not in ber.RESPONSE_FOR:
            return
        self._answer(clientID, requestTag, resultCode, reason)

    # --- operation timers ----------------------------------------------------

    def operationStarted(self, messageID: int, timeout: float | None = None) -> None:
        if timeout is not None:
            self._cancelTimer(messageID)
            self._timers[messageID] = self._reactor.callLater(timeout, self._timedOut, messageID, timeout)

    def operationEnded(self, messageID: int) -> None:
        self._cancelTimer(messageID)

    def _cancelTimer(self, messageID: int) -> None:
        if self._timers:
            timer = self._timers.pop(messageID, None)
            if timer is not None and timer.active():
                timer.cancel()

    def _timedOut(self, messageID: int, timeout: float) -> None:
        self._timers.pop(messageID, None)
        if messageID not in self._ops or self.state == "closed":
            return
        self._abandon(messageID)
        self._owner.linkOperationTimedOut(
            self,
            messageID,
            f"no answer from pool {self.pool.name!r} within the operation_timeout of {timeout:g}s; "
            "the operation was abandoned",
        )

    # --- the rest of the link interface ------------------------------------

    def rebind(self, credentials: tuple[bytes, bytes]) -> None:
        """Nothing to replay: the identity goes with every operation."""

    def pauseReading(self) -> None:
        """A slow client cannot pause a connection other clients share."""

    def resumeReading(self) -> None:
        pass

    def goOpaque(self) -> None:  # pragma: no cover - SASL layers are refused
        raise RuntimeError("shared links carry no opaque sessions")

    def writeRaw(self, data: bytes) -> None:  # pragma: no cover
        raise RuntimeError("shared links carry no opaque sessions")

    def close(self, unbind: bool = False, abort: bool = False) -> None:
        """The client left (or unbound): abandon its operations upstream."""
        if self.state == "closed":
            return
        self.state = "closed"
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        ops, self._ops = self._ops, {}
        for connection, upstreamID in ops.values():
            if connection is not None:
                connection.abandon(upstreamID)


def linkFor(owner: Any, runtime: Runtime, poolName: str, reactor: IReactorTime) -> SharedLink:
    """A new L{SharedLink} of a client session to a pool."""
    return SharedLink(owner, sharedPoolFor(runtime, poolName, reactor), reactor)
