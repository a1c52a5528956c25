# -*- test-case-name: tests.test_fleet_throttle -*-
"""
Bind-throttle counts shared between processes, without letting a bind
stall on the store.

The decision stays in L{ldaproute.core.policy.BindThrottle}: it refuses a
bind when this process's own count, or the fleet's count as last heard,
reaches the limit.  This module moves the counts between processes:

 - every failure is reported to the process's L{IThrottleStore}, which
   keeps one count per key for the whole fleet and pushes the key's
   failure times to every process (L{BindThrottle.observe}); the failed
   bind's answer waits for that report to be acknowledged (at most
   C{FLEET_WAIT}, 100 ms, in the frontend);
 - a bind that the in-memory counts would let through first asks the
   store for the current counts of its address and DN (L{IThrottleStore.query},
   same bound) and is decided on the answer.

Together they make the shared limit exact for a guesser who waits for
each answer, wherever the next guess lands: the failure is in the store
before the guesser hears of it, and the next bind reads the store.
Pushed views alone would not do: on a loaded host a fast client's next
bind reached another process before the view did (measured).

When the store is unreachable nothing waits (there is nothing to ask) and
the in-memory counts decide: this process's failures plus the fleet's
counts it last heard of, so an outage never opens the door wider than one
process alone.  Failures seen meanwhile are replayed, within their window,
when the store is back.

The Redis store (L{ldaproute.fleet.redisstore.RedisStore}) is in its own
module; this one keeps the interface, the exchange between a process's
throttles and its store, and the store's health and metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface

from ldaproute.core.policy import BindThrottle


class IThrottleStore(Interface):
    """Where a process reports bind failures so that the fleet counts them once."""

    def record(listener: str, digest: str, at: float, window: float) -> Deferred[None] | None:
        """
        One failure of key C{digest} on C{listener} at C{at}; returns at
        once.  The fleet's count for the key comes back through
        L{ThrottleExchange.observed}.

        @return: a Deferred that fires (never fails) once every process
            has been sent the new count, or L{None} when that is already
            done or cannot be (store unreachable: nothing is worth waiting
            for).
        """

    def query(listener: str, digests: list[str], window: float) -> Deferred[None] | None:
        """
        The fleet's current failure times of C{digests}, delivered through
        L{ThrottleExchange.observed} before the returned Deferred fires
        (never fails); L{None} when the store cannot answer now.
        """

    def families() -> Iterable[Metric]:
        """The store's own metrics (reachability, outages, pending reports)."""


class ThrottleExchange:
    """
    The listeners' throttles of one process and the store they share
    through: hands each failure to the store, each fleet view to the
    throttle of its listener.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._throttles: dict[str, BindThrottle] = {}
        self.store: IThrottleStore | None = None

    def attach(self, listener: str, throttle: BindThrottle | None) -> None:
        """Share C{throttle}'s failures (a listener without a throttle: nothing)."""
        if throttle is None:
            return
        self._throttles[listener] = throttle
        throttle.shareWith(partial(self._failed, listener, throttle.window), partial(self._ask, listener, throttle.window))

    def useStore(self, store: IThrottleStore) -> None:
        self.store = store

    def _failed(self, listener: str, window: float, kind: str, digest: str, at: float) -> Deferred[None] | None:
        if self.store is None:
            return None
        return self.store.record(listener, digest, at, window)

    def _ask(self, listener: str, window: float, digests: list[str]) -> Deferred[None] | None:
        if self.store is None:
            return None
        return self.store.query(listener, digests, window)

    def observed(self, listener: str, digest: str, times: Iterable[float]) -> None:
        """The fleet's failure times for one key of C{listener}."""
        throttle = self._throttles.get(listener)
        if throttle is not None:
            throttle.observe(digest, times, self._reactor.seconds())

    def windowOf(self, listener: str) -> float | None:
        throttle = self._throttles.get(listener)
        return None if throttle is None else throttle.window


def encodeView(listener: str, digest: str, times: Iterable[float]) -> str:
    """The message that carries a key's failure times (see L{decodeView})."""
    return f"{listener}\t{digest}\t" + ",".join(repr(t) for t in times)


def decodeView(message: str | bytes) -> tuple[str, str, list[float]]:
    """
    C{(listener, digest, times)} of a published message.

    @raise ValueError: not such a message.
    """
    text = message.decode("utf-8") if isinstance(message, bytes) else message
    listener, digest, times = text.split("\t")
    return listener, digest, [float(t) for t in times.split(",") if t]


class StoreHealth:
    """
    Whether a store is reachable, with one log event per change: an outage
    is told once when it starts and once when it ends, however many
    failures happen in between.
    """

    _log = Logger()

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where
        self.up = False
        self.outages = 0
        self._everUp = False
        self._toldDown = False

    def reachable(self) -> None:
        if self.up:
            return
        self.up = True
        if self._toldDown:
            self._log.info(
                "Throttle store {store} is reachable again: bind failures are counted across the fleet",
                store=self.where,
            )
        elif not self._everUp:
            self._log.info("Throttle store {store} connected", store=self.where)
        self._everUp = True
        self._toldDown = False

    def unreachable(self, reason: str) -> None:
        if self._toldDown:
            return
        self.up = False
        self._toldDown = True
        self.outages += 1
        self._log.warn(
            "Throttle store {store} is unreachable ({reason}): bind failures are counted in this process "
            "only until it is back",
            store=self.where,
            reason=reason,
        )

    def families(self, pending: int) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ldaproute_throttle_store_up",
            "1 if the shared bind-throttle store is reachable; 0 while binds are throttled on local counts only.",
            labels=["store"],
        )
        up.add_metric([self.kind], 1 if self.up else 0)
        yield up
        outages = CounterMetricFamily(
            "ldaproute_throttle_store_outages",
            "Times the shared bind-throttle store became unreachable.",
            labels=["store"],
        )
        outages.add_metric([self.kind], self.outages)
        yield outages
        waiting = GaugeMetricFamily(
            "ldaproute_throttle_store_pending",
            "Bind failures waiting to be reported to the shared store (replayed when it is back).",
            labels=["store"],
        )
        waiting.add_metric([self.kind], pending)
        yield waiting


class StoreCollector:
    """Registers a store's families on a prometheus registry."""

    def __init__(self, store: IThrottleStore) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return list(self._store.families())

    def collect(self) -> list[Metric]:
        return list(self._store.families())
