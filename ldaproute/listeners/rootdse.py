# -*- test-case-name: tests.test_cldap -*-
"""
The rootDSE cache behind CLDAP's answer mode: a pool's rootDSE read over
TCP from one of its backends (L{RootDSECache}), kept for
C{cldap_rootdse_ttl} seconds, one fetch shared by concurrent pings.

Apart from L{ldaproute.listeners.cldap} because it is the relay's one TCP
client: its own connection protocol, timeouts and failover between a
pool's backends, none of which the datagram path needs to know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ldaproute.backends.pool import BackendState, PoolState
from ldaproute.backends.connecting import endpointFor
from ldaproute.wire import ber
from ldaproute.wire.pdu import opTagOf, rootDSESearchRequest, splitMessage
from ldaproute.wire.results import readEntry


__all__ = ["RootDSECache"]


class _RootDSEFetch(Protocol):
    """One TCP connection that reads a backend's rootDSE, then closes."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done: Deferred[bytes] | None = done
        self._scanner = ber.Framer(16 * 1024 * 1024)
        self._entry = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(rootDSESearchRequest(1, (b"*", b"+"), timeLimit=10))

    def dataReceived(self, data: bytes) -> None:
        try:
            pdus = self._scanner.feed(data)
        except ber.FramingError as e:
            self._finish(Failure(e))
            return
        for pdu in pdus:
            tag = opTagOf(pdu)
            if tag == ber.SEARCH_RESULT_ENTRY:
                self._entry = pdu
            elif tag == ber.SEARCH_RESULT_DONE:
                self._finish(self._entry)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._finish(Failure(ConnectionError("connection closed before the rootDSE arrived")))

    def _finish(self, result: Any) -> None:
        if self._done is None:
            return
        done, self._done = self._done, None
        if self.transport is not None:
            self.transport.loseConnection()
        if isinstance(result, Failure):
            done.errback(result)
        elif not result:
            done.errback(Failure(ConnectionError("the backend returned no rootDSE entry")))
        else:
            done.callback(result)


def _rootDSEAttributes(entryPDU: bytes) -> list[tuple[bytes, list[bytes]]]:
    return readEntry(splitMessage(entryPDU)[2])[1]


class RootDSECache:
    """
    A pool's rootDSE, fetched over TCP from one of its backends and kept
    for C{ttl} seconds; concurrent requests share one fetch.
    """

    _log = Logger()

    def __init__(self, reactor: Any, ttl: float, timeout: float, connect: Callable[..., Deferred[Any]] | None = None) -> None:
        self._reactor = reactor
        self.ttl = ttl
        self.timeout = timeout
        self._connect = connect or self._connectTCP
        self._cached: dict[str, tuple[float, list[tuple[bytes, list[bytes]]]]] = {}
        self._waiting: dict[str, list[Deferred[Any]]] = {}
        self.fetches = 0

    def get(self, pool: PoolState) -> Deferred[list[tuple[bytes, list[bytes]]]]:
        now = self._reactor.seconds()
        cached = self._cached.get(pool.name)
        d: Deferred[Any] = Deferred()
        if cached is not None and now - cached[0] < self.ttl:
            d.callback(cached[1])
            return d
        waiting = self._waiting.get(pool.name)
        if waiting is not None:
            waiting.append(d)
            return d
        self._waiting[pool.name] = [d]
        self._fetch(pool, [s for s in pool.candidates() if s.backend.cldapPort is None])
        return d

    def _fetch(self, pool: PoolState, candidates: list[BackendState]) -> None:
        if not candidates:
            self._deliver(pool.name, Failure(ConnectionError(f"no backend of pool {pool.name!r} gave its rootDSE")))
            return
        state, rest = candidates[0], candidates[1:]
        self.fetches += 1
        done: Deferred[bytes] = Deferred()
        done.addTimeout(self.timeout, self._reactor)
        self._connect(state, _RootDSEFetch(done)).addErrback(self._connectFailed, done)

        def ok(entry: bytes) -> None:
            attributes = _rootDSEAttributes(entry)
            self._cached[pool.name] = (self._reactor.seconds(), attributes)
            self._deliver(pool.name, attributes)

        def failed(reason: Failure) -> None:
            self._log.warn(
                "Cannot read the rootDSE of backend {backend} for CLDAP: {error}",
                backend=state.name, pool=pool.name, error=reason.getErrorMessage(),
            )
            self._fetch(pool, rest)

        done.addCallbacks(ok, failed)

    @staticmethod
    def _connectFailed(reason: Failure, done: Deferred[bytes]) -> None:
        """The fetch's connection failed: fail the fetch, unless it ended already (timeout)."""
        if not done.called:
            done.errback(reason)

    def _deliver(self, poolName: str, result: Any) -> None:
        for d in self._waiting.pop(poolName, []):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    def _connectTCP(self, state: BackendState, protocol: Protocol) -> Deferred[Any]:
        return connectProtocol(endpointFor(self._reactor, state, self.timeout), protocol)
