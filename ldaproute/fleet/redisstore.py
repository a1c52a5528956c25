# -*- test-case-name: tests.test_fleet_throttle -*-
"""
The Redis throttle store (C{throttle_store = redis://} or C{rediss://}):
an L{ldaproute.fleet.throttle.IThrottleStore} shared by every process of
every replica.

L{RedisStore} keeps each key as a sorted set of failure times with an
expiry of one window after its newest failure (a Lua script: prune, add,
expire, publish), so the counts are sliding windows like the local ones,
and an idle key costs nothing.  Keys are digests
(L{ldaproute.core.policy.throttleDigest}): Redis never holds a client
address or a DN.

Apart from L{ldaproute.fleet.throttle} because it is the one part that
speaks to a server: its connections, reconnection backoff, Lua scripts
and replay of failures seen during an outage.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import txredisapi
from prometheus_client.core import Metric
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.config import Config, ThrottleStore
from ldaproute.fleet.throttle import IThrottleStore, ThrottleExchange, encodeView, decodeView, StoreHealth

#: How long a failure's report may take before the store counts as down,
#: seconds.  Nothing waits for it but the store's own bookkeeping.
REPORT_TIMEOUT = 1.0
#: Connecting to Redis: the time allowed, and the backoff between attempts.
CONNECT_TIMEOUT = 2.0
RETRY_INITIAL = 0.25
RETRY_MAX = 5.0
#: Failures kept for replay while the store is unreachable, at most.
MAX_PENDING = 10_000
#: The Redis key prefix and the channel the counts are published on.
KEY_PREFIX = "ldaproute:throttle:"
CHANNEL = "ldaproute:throttle"
#: Failure times a key keeps at most (a throttled key gets no more
#: failures, so only concurrent binds can exceed the limit).
MAX_TIMES_PER_KEY = 1000

#: KEYS[1]: the key.  ARGV: failure time, window, a unique member, the
#: current time, the channel, the message prefix.  Prunes what left the
#: window, adds the failure (unless it is older than the window), keeps the
#: key for one window after its newest failure, and publishes every
#: failure time of the key to all processes.
RECORD_SCRIPT = """
local key = KEYS[1]
local at = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if at > now - window then
  redis.call('ZADD', key, at, ARGV[3])
end
redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(ARGV[7]) + 1))
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if #newest == 0 then
  return 0
end
local ttl = math.ceil((tonumber(newest[2]) + window - now) * 1000)
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', key, ttl)
local scores = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local times = {}
for i = 2, #scores, 2 do times[#times + 1] = scores[i] end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. table.concat(times, ','))
return #times
"""


#: KEYS: the keys of one bind.  ARGV: the current time, the window.  The
#: failure times of each key still in the window.
COUNT_SCRIPT = """
local horizon = tonumber(ARGV[1]) - tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZRANGEBYSCORE', key, '(' .. horizon, '+inf', 'WITHSCORES')
end
return out
"""


class Reconnector:
    """
    Keeps one connection open, retrying with exponential backoff, and tells
    C{failed} why an attempt failed.  (Twisted's ClientService would do,
    but it logs every retry; an outage here is told once, by
    L{StoreHealth}.)
    """

    def __init__(self, endpoint: IStreamClientEndpoint, factory: Factory, reactor: Any) -> None:
        self._endpoint = endpoint
        self._factory = factory
        self._reactor = reactor
        self._delay = RETRY_INITIAL
        self._pending: Any = None
        self._protocol: Any = None
        self._stopped = False
        self.failed: Callable[[str], None] = lambda reason: None

    def start(self) -> None:
        self._stopped = False
        self._attempt()

    def _attempt(self) -> None:
        self._pending = None
        if self._stopped:
            return
        d = self._endpoint.connect(self._factory)
        d.addCallbacks(self._connected, self._connectFailed)

    def _connected(self, protocol: Any) -> None:
        if self._stopped:
            protocol.transport.loseConnection()
            return
        self._delay = RETRY_INITIAL
        self._protocol = protocol
        protocol.whenDisconnected().addCallback(self._disconnected)

    def _connectFailed(self, failure: Failure) -> None:
        self.failed(failure.getErrorMessage())
        self._retry()

    def _disconnected(self, protocol: Any) -> None:
        self._protocol = None
        self._retry()

    def _retry(self) -> None:
        if self._stopped or self._pending is not None:
            return
        self._pending = self._reactor.callLater(self._delay, self._attempt)
        self._delay = min(self._delay * 2, RETRY_MAX)

    def stop(self) -> None:
        self._stopped = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.loseConnection()


class _RedisFactory(Factory):
    """
    Builds txredisapi protocols for a L{Reconnector}; the few attributes
    and methods txredisapi's protocol calls on its factory live here.
    """

    noisy = False
    isLazy = True  # txredisapi: log an AUTH/SELECT failure rather than raise it

    def __init__(self, protocolClass: type, store: RedisStore, subscriber: bool) -> None:
        self._protocolClass = protocolClass
        self._store = store
        self._subscriber = subscriber

    def buildProtocol(self, addr: Any) -> Any:
        settings = self._store.settings
        assert settings.throttleStore is not None
        protocol = self._protocolClass(
            charset="utf-8",
            password=settings.throttleStorePassword,
            dbid=None if self._subscriber else settings.throttleStore.db,
            convertNumbers=False,
        )
        protocol.factory = self
        protocol.whenConnected().addCallback(self._store._ready, self._subscriber)
        protocol.whenDisconnected().addCallback(self._store._lost, self._subscriber)
        return protocol

    def stopTrying(self) -> None:
        """txredisapi, after AUTH or SELECT failed: the Reconnector keeps its backoff."""

    def connectionError(self, why: str) -> None:
        self._store.health.unreachable(why)


def _noDelay(transport: Any) -> None:
    """
    TCP_NODELAY on the Redis connection (through a TLS wrapper too):
    Twisted leaves Nagle's algorithm on, and a query that follows a report
    would wait for the delayed ACK.
    """
    while transport is not None:
        if hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
            return
        transport = getattr(transport, "transport", None)


class _Command(txredisapi.RedisProtocol):
    def connectionMade(self) -> Any:
        _noDelay(self.transport)
        return super().connectionMade()


class _Subscriber(txredisapi.SubscriberProtocol):
    def connectionMade(self) -> Any:
        _noDelay(self.transport)
        return super().connectionMade()

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory._store._published(message)


@implementer(IThrottleStore)
class RedisStore(Service):
    """
    Failure counts in Redis: one connection for the record script, one
    subscribed to the channel the counts come back on.  Both reconnect
    with backoff; a report that cannot be sent (or is not acknowledged in
    L{REPORT_TIMEOUT}) waits in a bounded queue and is replayed.
    """

    _log = Logger()

    def __init__(self, settings: Config, exchange: ThrottleExchange, reactor: Any) -> None:
        assert settings.throttleStore is not None
        self.settings = settings
        self._exchange = exchange
        self._reactor = reactor
        self.health = StoreHealth("redis", settings.throttleStore.url)
        self._pending: deque[tuple[str, str, float, float]] = deque(maxlen=MAX_PENDING)
        self._command: Any = None
        self._subscribed: Any = None
        self._member = 0
        self._token = f"{os.getpid()}.{id(self):x}"
        self._connectors: list[Reconnector] = []
        #: one channel per database, so that fleets sharing a server stay apart
        self.channel = f"{CHANNEL}:{settings.throttleStore.db}"

    def endpoint(self) -> IStreamClientEndpoint:
        """TCP, or TLS verified against C{throttle_store_ca_file} (or the system's CAs)."""
        store: ThrottleStore = self.settings.throttleStore  # type: ignore[assignment]
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, store.host, store.port, CONNECT_TIMEOUT)
        if store.tls:
            if self.settings.throttleStoreCAFile is not None:
                with open(self.settings.throttleStoreCAFile, "rb") as f:
                    trust: Any = ssl.Certificate.loadPEM(f.read())
            else:
                trust = ssl.platformTrust()
            endpoint = wrapClientTLS(ssl.optionsForClientTLS(store.host, trustRoot=trust), endpoint)
        return endpoint

    def startService(self) -> None:
        super().startService()
        endpoint = self.endpoint()
        for protocolClass, subscriber in ((_Command, False), (_Subscriber, True)):
            connector = Reconnector(endpoint, _RedisFactory(protocolClass, self, subscriber), self._reactor)
            connector.failed = self.health.unreachable
            connector.start()
            self._connectors.append(connector)

    def stopService(self) -> None:
        super().stopService()
        connectors, self._connectors = self._connectors, []
        for connector in connectors:
            connector.stop()

    # --- connections ------------------------------------------------------

    def _ready(self, protocol: Any, subscriber: bool) -> None:
        if subscriber:
            self._subscribed = protocol
            protocol.subscribe(self.channel)
        else:
            self._command = protocol
        if self._command is not None and self._subscribed is not None:
            self.health.reachable()
            self._replay()

    def _lost(self, protocol: Any, subscriber: bool) -> None:
        if subscriber and self._subscribed is protocol:
            self._subscribed = None
        elif not subscriber and self._command is protocol:
            self._command = None
        if self.running:
            self.health.unreachable("connection lost")

    # --- reports ------------------------------------------------------------

    def record(self, listener: str, digest: str, at: float, window: float) -> Deferred[None] | None:
        if self._command is None or self._subscribed is None:
            self._pending.append((listener, digest, at, window))
            return None
        return self._send(listener, digest, at, window)

    def _send(self, listener: str, digest: str, at: float, window: float) -> Deferred[None]:
        self._member += 1
        protocol = self._command
        d = protocol.eval(
            RECORD_SCRIPT,
            keys=[f"{KEY_PREFIX}{listener}:{digest}"],
            args=[
                repr(at),
                repr(window),
                f"{at!r}:{self._token}:{self._member}",
                repr(self._reactor.seconds()),
                self.channel,
                encodeView(listener, digest, ()),
                str(MAX_TIMES_PER_KEY),
            ],
        )
        d.addTimeout(REPORT_TIMEOUT, self._reactor)
        d.addCallbacks(lambda _: None, self._notRecorded, errbackArgs=(protocol, (listener, digest, at, window)))
        return d

    def query(self, listener: str, digests: list[str], window: float) -> Deferred[None] | None:
        protocol = self._command
        if protocol is None or self._subscribed is None:
            return None
        d = protocol.eval(
            COUNT_SCRIPT,
            keys=[f"{KEY_PREFIX}{listener}:{digest}" for digest in digests],
            args=[repr(self._reactor.seconds()), repr(window)],
        )
        d.addTimeout(REPORT_TIMEOUT, self._reactor)
        d.addCallbacks(self._counted, self._notCounted, callbackArgs=(listener, digests), errbackArgs=(protocol,))
        return d

    def _counted(self, replies: Any, listener: str, digests: list[str]) -> None:
        for digest, scores in zip(digests, replies or ()):
            if isinstance(scores, list):
                self._exchange.observed(listener, digest, [float(t) for t in scores[1::2]])

    def _notCounted(self, failure: Failure, protocol: Any) -> None:
        if self._command is protocol:
            self._command = None
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # the Reconnector reconnects
        self.health.unreachable(failure.getErrorMessage() or (failure.type.__name__ if failure.type else "?"))

    def _notRecorded(self, failure: Failure, protocol: Any, report: tuple[str, str, float, float]) -> None:
        self._pending.append(report)
        if self._command is protocol:
            self._command = None
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # the Reconnector reconnects
        self.health.unreachable(failure.getErrorMessage() or (failure.type.__name__ if failure.type else "?"))

    def _replay(self) -> None:
        now = self._reactor.seconds()
        pending, self._pending = self._pending, deque(maxlen=MAX_PENDING)
        for listener, digest, at, window in pending:
            if at > now - window:
                self._send(listener, digest, at, window)

    def _published(self, message: Any) -> None:
        try:
            listener, digest, times = decodeView(message)
        except (ValueError, UnicodeDecodeError):
            self._log.warn("Ignored a message on {channel} that is not a throttle count", channel=self.channel)
            return
        self._exchange.observed(listener, digest, times)

    def families(self) -> Iterator[Metric]:
        return self.health.families(len(self._pending))


__all__ = [
    "IThrottleStore",
    "ThrottleExchange",
    "RedisStore",
    "StoreHealth",
    "StoreCollector",
    "encodeView",
    "decodeView",
    "RECORD_SCRIPT",
]
