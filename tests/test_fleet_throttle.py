"""
The shared throttle store without a network: the published message
format, one log event per outage, the Redis store's bookkeeping while
Redis is away (reports kept and replayed, queries not waited for), and the
exchange between listeners' throttles and a store.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from ldaproute.config import Config
from ldaproute.core.policy import BindThrottle, throttleDigest
from ldaproute.fleet.redisstore import RedisStore
from ldaproute.fleet.throttle import StoreHealth, ThrottleExchange, decodeView, encodeView

BASE = "[backend:b]\nurl = ldap://h\n[pool:p]\nbackends = b\n[route:r]\npool = p\n"


def test_viewRoundTrip() -> None:
    message = encodeView("default", "ab" * 16, [1.5, 2.25])
    assert decodeView(message.encode()) == ("default", "ab" * 16, [1.5, 2.25])
    assert decodeView(encodeView("default", "ab" * 16, ())) == ("default", "ab" * 16, [])


def test_oneEventPerOutage() -> None:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        health = StoreHealth("redis", "redis://r:6379/0")
        health.reachable()
        for _ in range(5):
            health.unreachable("connection refused")
        health.reachable()
        health.unreachable("connection lost")
    finally:
        globalLogPublisher.removeObserver(events.append)
    told = [e["log_format"].split(" ")[3] for e in events if e.get("store") == "redis://r:6379/0"]
    assert told == ["connected", "is", "is", "is"]
    assert [e["log_level"].name for e in events if e.get("store")] == ["info", "warn", "info", "warn"]
    assert health.outages == 2


class FakeStore:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str, float, float]] = []
        self.queried: list[tuple[str, list[str], float]] = []

    def record(self, listener: str, digest: str, at: float, window: float) -> Deferred[None]:
        self.recorded.append((listener, digest, at, window))
        return succeed(None)

    def query(self, listener: str, digests: list[str], window: float) -> None:
        self.queried.append((listener, digests, window))

    def families(self) -> list[Any]:
        return []


def test_exchangeRoutesByListener() -> None:
    clock = Clock()
    clock.advance(100)
    exchange = ThrottleExchange(clock)
    a, b = BindThrottle(2, 30), BindThrottle(2, 60)
    exchange.attach("a", a)
    exchange.attach("b", b)
    exchange.attach("c", None)
    store = FakeStore()
    exchange.useStore(store)  # type: ignore[arg-type]
    a.failed(None, b"uid=x", 99.0)
    assert store.recorded == [("a", throttleDigest("dn", b"uid=x"), 99.0, 30)]
    assert b.askFleet("10.1.1.1", b"") is None and store.queried == [("b", [throttleDigest("address", "10.1.1.1")], 60)]
    exchange.observed("b", throttleDigest("address", "10.1.1.1"), [98.0, 99.0])
    assert b.refusal("10.1.1.1", b"", 100.0) is not None
    assert a.refusal("10.1.1.1", b"", 100.0) is None  # another listener's counts


def test_redisAwayKeepsReportsAndNeverWaits() -> None:
    config = Config.fromString("[ldaproute]\nlisten = tcp:1\nthrottle_store = redis://127.0.0.1:1/3\n" + BASE)
    clock = Clock()
    clock.advance(1000)
    store = RedisStore(config, ThrottleExchange(clock), clock)
    assert store.channel == "ldaproute:throttle:3"
    assert store.record("default", "d" * 32, 999.0, 60) is None
    assert store.query("default", ["d" * 32], 60) is None
    samples = {s.name: s.value for f in store.families() for s in f.samples}
    assert samples == {
        "ldaproute_throttle_store_up": 0,
        "ldaproute_throttle_store_outages_total": 0,
        "ldaproute_throttle_store_pending": 1,
    }


def test_throttleFleetViewAddsOwnFailures() -> None:
    """Through a store outage: what the fleet last said plus what happened here since."""
    throttle = BindThrottle(5, 60)
    throttle.shareWith(lambda kind, digest, now: None)
    digest = throttleDigest("dn", b"uid=x")
    throttle.observe(digest, [1.0, 2.0], 3.0)
    for t in (4.0, 5.0):
        throttle.failed(None, b"uid=x", t)
    assert throttle.refusal(None, b"uid=x", 6.0) is None
    throttle.failed(None, b"uid=x", 6.0)
    assert throttle.refusal(None, b"uid=x", 7.0) == "too many failed binds for this DN; try again in 54s"
