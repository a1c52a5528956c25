# -*- test-case-name: tests.test_cldap -*-
"""
Connectionless LDAP (CLDAP, RFC 1798) on UDP: the "LDAP ping" Windows and
SSSD clients send to find a domain controller (MS-ADTS 6.3.3).

Owns the UDP side only: reading a datagram (the same L{ber.Framer} and
L{ber.Envelope} as TCP), routing it as listener C{"cldap"}, and answering it
in one of two ways per backend:

  - forward mode (the backend has a C{cldap_port}, 389 by default): the
    request goes to the backend's CLDAP port under a proxy-chosen messageID
    (so clients that all use the same ID cannot be confused), every reply
    datagram comes back with the client's messageID put back, byte for byte
    otherwise.  No reply within C{cldap_timeout}: the next backend of the
    pool is tried, then the client gets unavailable (52).
  - answer mode (C{cldap_port = none}, e.g. OpenLDAP): a base search of the
    rootDSE is answered from a rootDSE fetched over TCP from a backend of
    the pool and cached for C{cldap_rootdse_ttl}; only the attributes asked
    for are returned.  Anything else (other bases or scopes, an AD Netlogon
    ping) gets unwillingToPerform (53) saying why.

Abuse: a datagram that is not whole, well-formed LDAP requests is dropped
and counted (C{dropped["malformed"]}), as are datagrams over the per-source
rate limit (C{cldap_rate_limit} per second, C{dropped["rate-limited"]}).
The proxy never sends a spoofable source more than C{cldap_amplification}
times the bytes it sent, except a backend's reply to a well-formed Netlogon
ping; a reply over the limit is replaced by a short result, or dropped
(C{dropped["amplification"]}) if even that is too big.

Replies over C{cldap_max_datagram}: never sent as one oversized datagram
(which IP would fragment) nor split.  The client gets instead a
SearchResultDone with sizeLimitExceeded (4) and "use LDAP over TCP", which
is what RFC 1798 clients and SSSD treat as "ask over TCP".  (AD's own
behaviour is to keep Netlogon replies small; it has no documented answer
for an oversized one.)  Counted in C{oversized}.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.config import Config
from ldaproute.configload.values import parseUDPEndpoint
from ldaproute.core.routing import noRouteResult
from ldaproute.listeners.rootdse import RootDSECache
from ldaproute.wire import ber
from ldaproute.wire.ber import ENUMERATED, OCTET_STRING, SEQUENCE, readExpected, readTLV
from ldaproute.wire.pdu import messageIDOf, opTagOf, withMessageID
from ldaproute.wire.results import searchResultEntry

#: The listener name CLDAP datagrams are routed under (C{listener = cldap}).
LISTENER = "cldap"

#: Sources remembered by the rate limiter before stale ones are forgotten.
_MAX_SOURCES = 65536


# --- byte-level reading of a search request ----------------------------------


@attrs.frozen
class SearchRequest:
    """What CLDAP needs of a search request: base, scope, attributes."""

    base: bytes
    scope: int
    attributes: tuple[bytes, ...]

    @property
    def isPing(self) -> bool:
        """A well-formed AD LDAP ping: rootDSE, base scope, Netlogon."""
        return (
            self.base == b""
            and self.scope == 0
            and len(self.attributes) == 1
            and self.attributes[0].lower() == b"netlogon"
        )


def readSearchRequest(pdu: bytes, envelope: ber.Envelope) -> SearchRequest:
    """
    Read base, scope and attribute list of a search request without ldaptor.

    @raise ber.FramingError: not a well-formed SearchRequest.
    """
    end = envelope.contentEnd
    fields = []
    pos = envelope.contentStart
    for _ in range(7):  # base, scope, deref, sizeLimit, timeLimit, typesOnly, filter
        tag, start, stop = readTLV(pdu, pos, end)
        fields.append((tag, start, stop))
        pos = stop
    noList = "search request without an attribute list"
    start, stop = readExpected(pdu, pos, end, SEQUENCE, noList)
    if stop != end:
        raise ber.FramingError("malformed", noList)
    attributes = []
    pos = start
    while pos < stop:
        aStart, aStop = readExpected(pdu, pos, stop, OCTET_STRING, "attribute list item is not a string")
        attributes.append(pdu[aStart:aStop])
        pos = aStop
    (baseTag, bStart, bStop), (scopeTag, sStart, sStop) = fields[0], fields[1]
    if baseTag != OCTET_STRING or scopeTag != ENUMERATED or sStop - sStart != 1:
        raise ber.FramingError("malformed", "search request with a bad base or scope")
    return SearchRequest(pdu[bStart:bStop], pdu[sStart], tuple(attributes))


# --- counters ----------------------------------------------------------------


@attrs.define
class CLDAPCounters:
    """What the CLDAP side has seen; read by tests and (later) metrics."""

    received: int = 0
    forwarded: int = 0
    answered: int = 0
    relayed: int = 0
    timeouts: int = 0
    oversized: int = 0
    dropped: dict[str, int] = attrs.field(factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def droppedTotal(self) -> int:
        return sum(self.dropped.values())


class RateLimiter:
    """A token bucket per source address: C{rate} datagrams a second, burst C{rate}."""

    def __init__(self, rate: int, clock: IReactorTime) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str) -> bool:
        now = self._clock.seconds()
        tokens, last = self._buckets.get(source, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate)
        if len(self._buckets) >= _MAX_SOURCES and source not in self._buckets:
            self._forgetStale(now)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1.0, now)
        return True

    def _forgetStale(self, now: float) -> None:
        full = 1.0  # a bucket idle for a second is full again: forget it
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        if len(self._buckets) >= _MAX_SOURCES:
            self._buckets.clear()


# --- the datagram protocols ------------------------------------------------------


@attrs.define
class _Pending:
    """A forwarded request waiting for its backend's reply."""

    clientID: int
    client: tuple[str, int]
    downstream: CLDAPProtocol
    requestSize: int
    isPing: bool
    candidates: list[BackendState]
    backend: BackendState | None = None
    timer: IDelayedCall | None = None
    startedAt: float = 0.0


class _UpstreamDatagrams(DatagramProtocol):
    """The proxy's own UDP port towards backends' CLDAP services."""

    def __init__(self, relay: CLDAPRelay) -> None:
        self._relay = relay

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._relay.backendReplied(datagram, (addr[0], addr[1]))


class CLDAPRelay:
    """
    The CLDAP logic shared by every UDP listener: routing, forwarding with
    timeouts and failover, answer mode, the abuse guards and the counters.
    """

    _log = Logger()

    def __init__(self, runtime: Any, reactor: Any, send: Callable[[bytes, tuple[str, int]], None] | None = None) -> None:
        self._runtime = runtime
        self._reactor = reactor
        config = runtime.config
        self.counters = CLDAPCounters()
        self.limiter = RateLimiter(config.cldapRateLimit, reactor)
        self.rootDSE = RootDSECache(reactor, config.cldapRootDSETTL, config.cldapTimeout)
        self._pending: dict[int, _Pending] = {}
        self._sendUpstream = send
        #: round-trip times (seconds) of forwarded requests, latest last
        self.roundTrips: list[float] = []

    def upstreamProtocol(self) -> DatagramProtocol:
        protocol = _UpstreamDatagrams(self)

        def send(datagram: bytes, addr: tuple[str, int]) -> None:
            assert protocol.transport is not None, "sending before the upstream port is listening"
            protocol.transport.write(datagram, addr)

        self._sendUpstream = send
        return protocol

    @property
    def config(self) -> Config:
        return self._runtime.config

    # --- requests ---------------------------------------------------------

    def datagramReceived(self, downstream: CLDAPProtocol, datagram: bytes, addr: tuple[str, int]) -> None:
        counters = self.counters
        counters.received += 1
        if not self.limiter.allow(addr[0]):
            counters.drop("rate-limited")
            return
        try:
            framer = ber.Framer(self.config.cldapMaxDatagram)
            pdus = framer.feed(datagram)
            if not pdus or framer.buffered:
                raise ber.FramingError("malformed", "datagram is not whole LDAPMessages")
            requests = []
            for pdu in pdus:
                envelope = ber.Envelope.fromBytes(pdu)
                search = readSearchRequest(pdu, envelope) if envelope.opTag == ber.SEARCH_REQUEST else None
                requests.append((pdu, envelope, search))
        except ber.FramingError as e:
            counters.drop("malformed")
            self._log.debug("Dropped a malformed CLDAP datagram from {peer}: {reason}", peer=f"{addr[0]}:{addr[1]}",
                            reason=e.detail, listener=LISTENER)
            return
        for pdu, envelope, search in requests:
            self._request(downstream, addr, pdu, envelope, search, len(datagram))

    def _request(
        self, downstream: CLDAPProtocol, addr: tuple[str, int], pdu: bytes, envelope: ber.Envelope,
        search: SearchRequest | None, requestSize: int,
    ) -> None:
        if search is None:
            if envelope.opTag in (ber.ABANDON_REQUEST, ber.UNBIND_REQUEST):
                return  # nothing to answer (RFC 1798 allows abandon; unbind has no answer)
            self._answer(downstream, addr, requestSize, ber.resultFor(
                envelope, ber.UNWILLING_TO_PERFORM, "CLDAP serves search requests only"))
            return
        route = self._runtime.router.routeFor(LISTENER, ber.SEARCH_REQUEST, search.base, None, addr[0])
        if route is None or route.reject is not None:
            code, text = noRouteResult(ber.SEARCH_REQUEST) if route is None else (route.reject.resultCode, route.reject.message)
            self._answer(downstream, addr, requestSize, ber.resultFor(envelope, code, text))
            return
        pool = self._runtime.backends.pools[route.pool]
        candidates = list(pool.candidates())
        forwarding = [state for state in candidates if state.backend.cldapPort is not None]
        if forwarding:
            pending = _Pending(envelope.messageID, addr, downstream, requestSize, search.isPing, forwarding,
                               startedAt=self._reactor.seconds())
            self._forward(pending, pdu)
            return
        self._answerFromRootDSE(downstream, addr, pdu, envelope, search, requestSize, pool)

    # --- forward mode -------------------------------------------------------

    def _forward(self, pending: _Pending, pdu: bytes) -> None:
        if not pending.candidates:
            self.counters.timeouts += 1
            self._answer(pending.downstream, pending.client, pending.requestSize, ber.result(
                pending.clientID, ber.SEARCH_RESULT_DONE, ber.UNAVAILABLE,
                "no CLDAP backend answered in time"))
            return
        state = pending.candidates.pop(0)
        pending.backend = state
        proxyID = secrets.randbelow(0x7FFFFFFE) + 1
        while proxyID in self._pending:
            proxyID = secrets.randbelow(0x7FFFFFFE) + 1
        self._pending[proxyID] = pending
        pending.timer = self._reactor.callLater(self.config.cldapTimeout, self._timedOut, proxyID, pdu)
        self.counters.forwarded += 1
        assert self._sendUpstream is not None and state.backend.cldapPort is not None
        self._sendUpstream(withMessageID(pdu, proxyID), (state.backend.url.host, state.backend.cldapPort))

    def _timedOut(self, proxyID: int, pdu: bytes) -> None:
        pending = self._pending.pop(proxyID, None)
        if pending is None:
            return
        self._log.warn("CLDAP backend {backend} did not answer within {timeout} s",
                       backend=pending.backend.name if pending.backend else None,
                       timeout=self.config.cldapTimeout, peer=f"{pending.client[0]}:{pending.client[1]}",
                       listener=LISTENER)
        self._forward(pending, pdu)

    def backendReplied(self, datagram: bytes, addr: tuple[str, int]) -> None:
        try:
            pdus = ber.Framer(65536).feed(datagram)
            if not pdus:
                raise ber.FramingError("malformed", "empty reply")
            proxyID = messageIDOf(pdus[0])
        except ber.FramingError:
            self.counters.drop("backend-malformed")
            return
        pending = self._pending.get(proxyID)
        backend = pending.backend.backend if pending is not None and pending.backend is not None else None
        if pending is None or backend is None or addr != (backend.url.host, backend.cldapPort):
            self.counters.drop("unexpected-reply")
            return
        try:
            ids = {messageIDOf(pdu) for pdu in pdus}
            if ids != {proxyID}:
                raise ber.FramingError("malformed", "reply mixes messageIDs")
            finished = any(opTagOf(pdu) == ber.SEARCH_RESULT_DONE for pdu in pdus)
            reply = b"".join(withMessageID(pdu, pending.clientID) for pdu in pdus)
        except ber.FramingError:
            self.counters.drop("backend-malformed")
            return
        if finished:
            del self._pending[proxyID]
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
            self.roundTrips.append(self._reactor.seconds() - pending.startedAt)
            del self.roundTrips[:-1000]
        self.counters.relayed += 1
        self._answer(pending.downstream, pending.client, pending.requestSize, reply,
                     fromBackendPing=pending.isPing, messageID=pending.clientID)

    # --- answer mode -----------------------------------------------------------

    def _answerFromRootDSE(
        self, downstream: CLDAPProtocol, addr: tuple[str, int], pdu: bytes, envelope: ber.Envelope,
        search: SearchRequest, requestSize: int, pool: PoolState,
    ) -> None:
        def refuse(text: str) -> None:
            self._answer(downstream, addr, requestSize, ber.resultFor(envelope, ber.UNWILLING_TO_PERFORM, text))

        if search.base != b"" or search.scope != 0:
            refuse(f"pool {pool.name!r} has no CLDAP service: only base searches of the rootDSE are answered over UDP")
            return
        if any(a.lower() == b"netlogon" for a in search.attributes):
            refuse(f"pool {pool.name!r} has no CLDAP service: no Netlogon (AD LDAP ping) answers")
            return

        def answer(attributes: list[tuple[bytes, list[bytes]]]) -> None:
            wanted = {a.lower() for a in search.attributes}
            everything = not wanted or b"*" in wanted or b"+" in wanted
            chosen = [(n, v) for n, v in attributes if everything or n.lower() in wanted]
            entry = ber.message(envelope.messageID, searchResultEntry(b"", chosen))
            done = ber.result(envelope.messageID, ber.SEARCH_RESULT_DONE, ber.SUCCESS)
            self.counters.answered += 1
            self._answer(downstream, addr, requestSize, entry + done, messageID=envelope.messageID)

        def failed(reason: Failure) -> None:
            self._answer(downstream, addr, requestSize, ber.resultFor(
                envelope, ber.UNAVAILABLE, f"no backend of pool {pool.name!r} gave its rootDSE"))

        self.rootDSE.get(pool).addCallbacks(answer, failed)

    # --- replies and guards -------------------------------------------------------

    def _answer(
        self, downstream: CLDAPProtocol, addr: tuple[str, int], requestSize: int, reply: bytes | None,
        fromBackendPing: bool = False, messageID: int | None = None,
    ) -> None:
        if reply is None:
            return
        config = self.config
        if len(reply) > config.cldapMaxDatagram:
            self.counters.oversized += 1
            if messageID is None:
                messageID = messageIDOf(reply)
            reply = ber.result(messageID, ber.SEARCH_RESULT_DONE, ber.SIZE_LIMIT_EXCEEDED,
                               f"reply of {len(reply)} bytes exceeds the CLDAP datagram limit: use LDAP over TCP")
            fromBackendPing = False
        if not fromBackendPing and len(reply) > config.cldapAmplification * requestSize:
            self.counters.drop("amplification")
            return
        assert downstream.transport is not None  # answers go to the port a datagram came in on
        downstream.transport.write(reply, addr)

    def stop(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None and pending.timer.active():
                pending.timer.cancel()
        self._pending.clear()


class CLDAPProtocol(DatagramProtocol):
    """One UDP listener: datagrams in, to the shared L{CLDAPRelay}."""

    def __init__(self, relay: CLDAPRelay) -> None:
        self._relay = relay

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._relay.datagramReceived(self, datagram, (addr[0], addr[1]))


class CLDAPService(Service):
    """
    The C{cldap} endpoints of [ldaproute] and the proxy's UDP port towards
    backends, opened when the service starts.
    """

    name = "cldap"

    def __init__(self, runtime: Any, reactor: Any) -> None:
        self.runtime = runtime
        self.reactor = reactor
        self.relay = CLDAPRelay(runtime, reactor)
        self.ports: list[Any] = []
        observer = getattr(runtime, "observer", None)
        if observer is not None:
            observer.metrics.watchCLDAP(self.relay.counters)

    def startService(self) -> None:
        super().startService()
        self.ports.append(self.reactor.listenUDP(0, self.relay.upstreamProtocol()))
        for description in self.runtime.config.cldapEndpoints:
            port, interface = parseUDPEndpoint(description)
            self.ports.append(self.reactor.listenUDP(port, CLDAPProtocol(self.relay), interface=interface))

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        self.relay.stop()
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        return None
