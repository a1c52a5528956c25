# -*- test-case-name: tests.test_metrics -*-
"""
What the proxy tells operators: Prometheus metrics on a private registry.

L{Metrics} owns every metric.  The hot path calls a handful of methods
(L{Metrics.operationCompleted}, L{Metrics.connectionOpened}, ...) that only
increment pre-bound label children, cached per label tuple, so a completed
operation costs two dict lookups, one counter increment and one histogram
observation.  Values that already live in the proxy's state (backend up or
down, upstream connections, operations in flight) are read at scrape time by
a collector instead of being kept twice.

Labels are bounded: listener, route, pool and backend names come from
routes.ini, operation names and result codes from the protocol; never a DN,
a filter or a client address.

The site that serves them with the health endpoints is
L{ldaproute.ops.healthsite}.
"""

from __future__ import annotations

from bisect import bisect_left
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import twisted
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ldaproute import __version__
from ldaproute.backends.pool import WAIT_BUCKETS
from ldaproute.wire import ber

#: Operation duration buckets, seconds: sub-millisecond relays to
#: multi-second searches.
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

#: Connect latency buckets, seconds.
CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_OP_NAMES = {tag: name for tag, name in ber.OPERATION_NAMES.items()}


def operationName(tag: int) -> str:
    """The C{op} label of a request tag."""
    return _OP_NAMES.get(tag, "unknown")


class ByteCount:
    """A byte counter the hot path bumps without a lock (one reactor thread)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class HotPathCounts:
    """
    The per-operation metrics as plain numbers, turned into Prometheus
    families only when scraped.

    prometheus-client's own Counter and Histogram take a lock and, for a
    histogram, walk the buckets in Python on every observation; per
    operation that is several microseconds on a relay whose whole budget is
    a few tens.  The proxy runs on one reactor thread, so a dict increment
    and a C{bisect} serve, and the scrape does the formatting.
    """

    def __init__(self) -> None:
        self.operations: dict[tuple[int, str, str, int], int] = {}
        self.durations: dict[tuple[int, str], list[Any]] = {}
        self.bytes: dict[str, tuple[ByteCount, ByteCount]] = {}

    def operationCompleted(self, opTag: int, route: str, backend: str, code: int, seconds: float) -> None:
        operations = self.operations
        key = (opTag, route, backend, code)
        operations[key] = operations.get(key, 0) + 1
        histogram = self.durations.get((opTag, route))
        if histogram is None:
            histogram = self.durations[(opTag, route)] = [[0] * (len(DURATION_BUCKETS) + 1), 0.0]
        histogram[0][bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram[1] += seconds

    def byteCounters(self, listener: str) -> tuple[ByteCount, ByteCount]:
        counters = self.bytes.get(listener)
        if counters is None:
            counters = self.bytes[listener] = (ByteCount(), ByteCount())
        return counters

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        operations = CounterMetricFamily(
            "ldaproute_operations",
            "Operations completed, by operation, route, backend ('' when the proxy answered) and LDAP result code.",
            labels=["op", "route", "backend", "code"],
        )
        for (opTag, route, backend, code), count in sorted(self.operations.items()):
            operations.add_metric([operationName(opTag), route, backend, str(code)], count)
        yield operations
        duration = HistogramMetricFamily(
            "ldaproute_operation_duration_seconds",
            "Time from the request's arrival to its final response being written to the client.",
            labels=["op", "route"],
        )
        for (opTag, route), (counts, total) in sorted(self.durations.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            duration.add_metric([operationName(opTag), route], buckets, total)
        yield duration
        received = CounterMetricFamily("ldaproute_client_received_bytes", "Bytes received from clients.", labels=["listener"])
        sent = CounterMetricFamily("ldaproute_client_sent_bytes", "Bytes relayed from backends to clients.", labels=["listener"])
        for listener, (inbound, outbound) in sorted(self.bytes.items()):
            received.add_metric([listener], inbound.value)
            sent.add_metric([listener], outbound.value)
        yield received
        yield sent


class Metrics:
    """
    Every metric of one proxy process, on its own L{CollectorRegistry}.

    @ivar registry: what L{HealthSite} exposes.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._stateSource: Callable[[], Any] | None = None
        self.connectionsOpen = Gauge(
            "ldaproute_client_connections_open",
            "Client connections open now.",
            ["listener", "tls"],
            registry=registry,
        )
        self.connectionsTotal = Counter(
            "ldaproute_client_connections",
            "Client connections accepted.",
            ["listener", "tls"],
            registry=registry,
        )
        #: operations, their durations and client bytes: the per-operation
        #: metrics, kept as plain numbers (see L{HotPathCounts})
        self.hot = HotPathCounts()
        #: the hot counts' own method, bound here: one call less per operation
        self.operationCompleted = self.hot.operationCompleted
        registry.register(self.hot)
        self.binds = Counter(
            "ldaproute_binds",
            "Bind operations completed, by outcome (success, failure; SASL steps are not counted).",
            ["listener", "outcome"],
            registry=registry,
        )
        self.bindsThrottled = Counter(
            "ldaproute_binds_throttled",
            "Binds refused or delayed by bind throttling.",
            ["listener"],
            registry=registry,
        )
        self.cleartextSecretsRefused = Counter(
            "ldaproute_cleartext_secrets_refused",
            "Requests carrying a password refused on a connection without TLS (answered 13), by operation kind "
            "(simple_bind, sasl_bind, password_modify, add, modify, compare).",
            ["listener", "kind"],
            registry=registry,
        )
        self.tlsHandshakes = Counter(
            "ldaproute_tls_handshakes",
            "TLS handshakes, by side (client: towards clients, backend: towards backends) and outcome.",
            ["side", "outcome"],
            registry=registry,
        )
        self.pdusRejected = Counter(
            "ldaproute_pdus_rejected",
            "Client PDUs rejected before routing, by reason (each ends the connection).",
            ["listener", "reason"],
            registry=registry,
        )
        self.healthChecks = Counter(
            "ldaproute_backend_health_checks",
            "Active health checks, by backend and result (ok, failed).",
            ["backend", "result"],
            registry=registry,
        )
        self.healthCheckSeconds = Histogram(
            "ldaproute_backend_health_check_seconds",
            "Active health check latency.",
            ["backend"],
            buckets=CONNECT_BUCKETS,
            registry=registry,
        )
        self.reloads = Counter(
            "ldaproute_config_reloads",
            "Configuration reloads (SIGHUP), by outcome (success, invalid, refused).",
            ["outcome"],
            registry=registry,
        )
        self.reloadSuccessful = Gauge(
            "ldaproute_config_last_reload_successful",
            "1 if the last reload was applied (or none was tried), 0 if it was refused.",
            registry=registry,
        )
        self.reloadSuccessful.set(1)
        self.configLoaded = Gauge(
            "ldaproute_config_loaded_timestamp_seconds",
            "When the configuration in force was loaded (Unix time).",
            registry=registry,
        )
        self.draining = Gauge(
            "ldaproute_draining",
            "1 while the process is draining for shutdown.",
            registry=registry,
        )
        info = Info("ldaproute_build", "Version information.", registry=registry)
        info.info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "twisted": twisted.__version__,
            }
        )
        registry.register(_StateCollector(self))
        self._bindChildren: dict[tuple[str, bool], Any] = {}
        #: for the status page: backend -> (ok, seconds, when) of its last
        #: health check, and C{(when, outcome)} of the last reload
        self.lastHealthChecks: dict[str, tuple[bool, float, float]] = {}
        self.lastReload: tuple[float, str] | None = None

    def watchCLDAP(self, counters: Any) -> None:
        """Export the CLDAP relay's counters."""
        self.registry.register(_CLDAPCollector(counters))

    def watchState(self, source: Callable[[], Any]) -> None:
        """
        Read backend state at scrape time: C{source()} returns the
        L{ldaproute.runtime.Runtime} (its C{backends}, and its
        C{observer.connections}, each with C{session.outstanding}).
        """
        self._stateSource = source

    # --- hot path ---------------------------------------------------------

    #: One operation got its final response (L{HotPathCounts.operationCompleted}, bound in C{__init__}).
    operationCompleted: Callable[[int, str, str, int, float], None]

    def bindCompleted(self, listener: str, success: bool) -> None:
        key = (listener, success)
        child = self._bindChildren.get(key)
        if child is None:
            child = self._bindChildren[key] = self.binds.labels(listener, "success" if success else "failure")
        child.inc()

    def byteCounters(self, listener: str) -> tuple[ByteCount, ByteCount]:
        """C{(received, sent)} counters for one listener (each has C{inc(n)})."""
        return self.hot.byteCounters(listener)

    def connectionOpened(self, listener: str, tls: str) -> None:
        self.connectionsTotal.labels(listener, tls).inc()
        self.connectionsOpen.labels(listener, tls).inc()

    def connectionClosed(self, listener: str, tls: str) -> None:
        self.connectionsOpen.labels(listener, tls).dec()

    def pduRejected(self, listener: str, reason: str) -> None:
        self.pdusRejected.labels(listener, reason).inc()

    def healthChecked(self, backend: str, ok: bool, seconds: float) -> None:
        """For active health checks (pool.py): one result and its latency."""
        self.healthChecks.labels(backend, "ok" if ok else "failed").inc()
        self.healthCheckSeconds.labels(backend).observe(seconds)
        self.lastHealthChecks[backend] = (ok, seconds, time.time())

    def tlsHandshake(self, side: str, outcome: str) -> None:
        self.tlsHandshakes.labels(side, outcome).inc()

    def bindThrottled(self, listener: str) -> None:
        self.bindsThrottled.labels(listener).inc()

    def cleartextSecretRefused(self, listener: str, kind: str) -> None:
        """A request carrying a password was refused for want of TLS."""
        self.cleartextSecretsRefused.labels(listener, kind).inc()

    def reloaded(self, outcome: str, now: float) -> None:
        self.reloads.labels(outcome).inc()
        self.lastReload = (now, outcome)
        self.reloadSuccessful.set(1 if outcome == "success" else 0)
        if outcome == "success":
            self.configLoaded.set(now)


class _CLDAPCollector:
    """The CLDAP relay's counters (see L{ldaproute.listeners.cldap.CLDAPCounters}), read at scrape time."""

    def __init__(self, counters: Any) -> None:
        self._counters = counters

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        counters = self._counters
        datagrams = CounterMetricFamily(
            "ldaproute_cldap_datagrams",
            "CLDAP datagrams by what happened to them (received, forwarded to a backend, answered by the proxy, "
            "backend reply relayed, backend timeout, reply too big for UDP).",
            labels=["outcome"],
        )
        for outcome, value in (
            ("received", counters.received),
            ("forwarded", counters.forwarded),
            ("answered", counters.answered),
            ("relayed", counters.relayed),
            ("timeout", counters.timeouts),
            ("oversized", counters.oversized),
        ):
            datagrams.add_metric([outcome], value)
        yield datagrams
        dropped = CounterMetricFamily(
            "ldaproute_cldap_dropped", "CLDAP datagrams dropped without a reply, by reason.", labels=["reason"]
        )
        for reason, value in sorted(counters.dropped.items()):
            dropped.add_metric([reason], value)
        yield dropped


class _StateCollector:
    """Backend state read at scrape time from the proxy's own objects."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        source = self._metrics._stateSource
        state = source() if source is not None else None
        families = self._families()
        up, connections, inFlight, poolHealthy, connects, waited, waitSeconds, replayed, budgetSpent, shed = families
        if state is not None:
            for name, backendState in sorted(state.backends.states.items()):
                up.add_metric([name], 1 if backendState.up else 0)
                connections.add_metric([name], backendState.connections)
                # kept by the backend connections in both modes (what least-outstanding orders by)
                inFlight.add_metric([name], backendState.inFlight)
                connects.add_metric([name, "ok"], getattr(backendState, "connectsOK", 0))
                connects.add_metric([name, "failed"], getattr(backendState, "connectsFailed", 0))
            for name, pool in sorted(state.backends.pools.items()):
                poolHealthy.add_metric([name], sum(1 for b in pool.backends if b.up))
            for name, faults in sorted(state.backends.faults.items()):
                waited.add_metric([name], faults.waited)
                cumulative = 0
                buckets = []
                for bound, count in zip((*WAIT_BUCKETS, float("inf")), faults.waitBuckets):
                    cumulative += count
                    buckets.append((_bucketLabel(bound), cumulative))
                waitSeconds.add_metric([name], buckets, faults.waitSum)
                for tag, count in sorted(faults.replayed.items()):
                    replayed.add_metric([name, operationName(tag)], count)
                budgetSpent.add_metric([name], faults.budgetSpent)
                shed.add_metric([name], faults.slowReaderShed)
        yield from families

    @staticmethod
    def _families() -> tuple[Any, ...]:
        return (
            GaugeMetricFamily("ldaproute_backend_up", "1 if the backend takes new connections, 0 if marked down.", labels=["backend"]),
            GaugeMetricFamily("ldaproute_upstream_connections_open", "Upstream connections open to the backend.", labels=["backend"]),
            GaugeMetricFamily("ldaproute_backend_operations_in_flight", "Operations sent to the backend and not yet answered.", labels=["backend"]),
            GaugeMetricFamily("ldaproute_pool_backends_up", "Backends of the pool that are up.", labels=["pool"]),
            CounterMetricFamily(
                "ldaproute_upstream_connects",
                "Upstream connection attempts, by backend and result (ok, failed).",
                labels=["backend", "result"],
            ),
            CounterMetricFamily(
                "ldaproute_operations_waited",
                "Operations that waited, within their retry budget, for a backend of the pool to take them.",
                labels=["pool"],
            ),
            HistogramMetricFamily(
                "ldaproute_operation_wait_seconds",
                "How long operations waited for a backend of the pool (retry budget).",
                labels=["pool"],
            ),
            CounterMetricFamily(
                "ldaproute_operations_replayed",
                "Operations sent again on a new connection after theirs died (reads only).",
                labels=["pool", "op"],
            ),
            CounterMetricFamily(
                "ldaproute_operations_budget_spent",
                "Operations answered unavailable (or disconnected) because no backend took them within the retry budget.",
                labels=["pool"],
            ),
            CounterMetricFamily(
                "ldaproute_slow_reader_searches_abandoned",
                "Shared mode: searches abandoned and answered adminLimitExceeded (11) because more than "
                "client_buffer_max waited in the proxy for a client that was not reading.",
                labels=["pool"],
            ),
        )


def _bucketLabel(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


__all__ = ["Metrics", "DURATION_BUCKETS", "operationName"]
