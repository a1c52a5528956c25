# -*- test-case-name: tests.test_pool -*-
"""
Backends and pools at run time: which backend a new upstream connection
goes to, and what the proxy knows of each backend's state.

A L{BackendState} lives as long as its backend's name in the configuration
(a reload keeps the state of backends it keeps), so counters and health
survive reloads.  Choosing is cheap and synchronous; connecting is
upstream.py's business, probing is health.py's, and finding backends in DNS
is discovery.py's.

Strategies (C{strategy} in a C{[pool:NAME]} section) only order the
backends that are up; backends marked down always come last, so a pool
whose every member was marked down by a blip still gets a chance to
reconnect instead of refusing service.  Backends at their
C{max_connections} cap are left out entirely.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger

from ldaproute.backends.clienttls import clientOptionsFor
from ldaproute.config import Backend, Pool

_log = Logger()


class BackendState:
    """
    What the proxy knows about one backend right now.

    @ivar up: whether new sessions may use it.
    @ivar checked: whether a health checker decides C{up} (then only
        C{rise} good probes bring a backend back; without checks a
        successful connection does).
    @ivar connections: upstream connections open to it.
    @ivar connecting: upstream connections being opened to it (count
        against C{max_connections} too).
    @ivar inFlight: client operations sent to it and not yet answered.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        #: (the state lives as long as its configuration value: a changed backend gets a new state)
        self.name = backend.name
        self.up = True
        self.checked = False
        self.connections = 0
        self.connecting = 0
        self.inFlight = 0
        self.consecutiveFailures = 0
        self.consecutiveSuccesses = 0
        self.lastReason = ""
        self.connectsOK = 0
        self.connectsFailed = 0
        #: connections the backend closed under a client's operations
        self.connectionsDropped = 0
        #: its connections that failed under the proxy (lost, reset, a notice,
        #: garbage): one dying backend's losses arrive one by one, and a
        #: connection ready before a loss is likely lost in the same death
        self.losses = 0
        self._tls: tuple[Backend, IOpenSSLClientConnectionCreator] | None = None
        self._prober: Callable[[], None] | None = None

    def clientTLSOptions(self) -> IOpenSSLClientConnectionCreator:
        """
        The client TLS options towards this backend, built once for each
        configuration value of it (building reads the CA and key files): a
        reload that changes the backend's TLS settings builds new ones.

        @raise ValueError: unreadable or bad PEM files.
        """
        cached = self._tls
        if cached is None or cached[0] is not self.backend:
            options = clientOptionsFor(self.backend)
            self._tls = cached = (self.backend, options)
        return cached[1]

    def atCapacity(self) -> bool:
        """Whether another upstream connection would exceed C{max_connections}."""
        cap = self.backend.maxConnections
        return cap is not None and self.connections + self.connecting >= cap

    def connectFailed(self, reason: str = "connection failed", pool: str | None = None) -> None:
        """
        Passive health: a refused, reset or timed-out connection, or an
        operation timeout.  Marks the backend down at once: a new session
        must not wait for C{fall} probes to learn what a refusal said.
        """
        self.consecutiveSuccesses = 0
        self.consecutiveFailures += 1
        self.connectsFailed += 1
        self._setUp(False, reason, pool, "passive")

    def connectionDropped(self, reason: str, pool: str | None = None) -> None:
        """
        The backend closed (or reset) one upstream connection while
        operations were in flight on it.  That is not a failure every
        client would see: a backend drops a connection after one client's
        oversized or malformed request (389 DS past its 2 MiB limit, slapd
        past C{sockbuf_max_incoming_auth}), and marking it down would let any
        client take a healthy backend out of service at will.  So C{up}
        stays as it is; the health checker, if any, probes at once (see
        L{setProber}), and a backend that really died is marked down by the
        next refused connect or by its probes.
        """
        self.connectionsDropped += 1
        self.lastReason = reason
        _log.info(
            "Backend {backend} closed a connection with operations in flight ({reason}); "
            "not marked down, probing",
            backend=self.name,
            pool=pool,
            reason=reason,
        )
        prober = self._prober
        if prober is not None:
            prober()

    def setProber(self, prober: Callable[[], None] | None) -> None:
        """
        What L{connectionDropped} calls to have this backend probed now:
        the health checker's, while it checks this backend (L{None}: none).
        """
        self._prober = prober

    def connectSucceeded(self) -> None:
        self.consecutiveFailures = 0
        self.connectsOK += 1
        if not self.checked:
            self._setUp(True, "connected", None, "passive")

    def probed(self, ok: bool, reason: str, rise: int, fall: int, pool: str | None = None) -> bool:
        """
        One health probe's outcome; returns whether C{up} changed.  C{fall}
        failures in a row mark the backend down, C{rise} successes in a row
        mark it up.
        """
        self.checked = True
        if ok:
            self.consecutiveFailures = 0
            self.consecutiveSuccesses += 1
            if not self.up and self.consecutiveSuccesses >= rise:
                return self._setUp(True, reason, pool, "probe")
        else:
            self.consecutiveSuccesses = 0
            self.consecutiveFailures += 1
            if self.up and self.consecutiveFailures >= fall:
                return self._setUp(False, reason, pool, "probe")
        return False

    def _setUp(self, up: bool, reason: str, pool: str | None, source: str) -> bool:
        self.lastReason = reason
        if up == self.up:
            return False
        self.up = up
        _log.info(
            "Backend {backend} is now {health} ({source}: {reason})",
            backend=self.name,
            pool=pool,
            health="up" if up else "down",
            source=source,
            reason=reason,
            failures=self.consecutiveFailures,
            successes=self.consecutiveSuccesses,
        )
        return True


#: How long operations waited for a backend, seconds (the wait histogram).
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolFaults:
    """
    What a pool's operations went through when its backends failed, kept
    as plain counts that the metrics read at scrape time (and that survive
    reloads, as counters must): operations that waited for a backend and
    how long, operations replayed on a new connection (by request tag),
    operations answered unavailable because their retry budget was spent,
    and (shared mode) searches abandoned because their client was not
    reading (L{ldaproute.backends.slowreaders}).
    """

    def __init__(self) -> None:
        self.waited = 0
        self.waitSum = 0.0
        #: per bucket of L{WAIT_BUCKETS}, plus one for +Inf (not cumulative)
        self.waitBuckets = [0] * (len(WAIT_BUCKETS) + 1)
        self.replayed: dict[int, int] = {}
        self.budgetSpent = 0
        self.slowReaderShed = 0

    def wait(self, seconds: float) -> None:
        """An operation waited C{seconds} for a connection to take it."""
        self.waited += 1
        self.waitSum += seconds
        self.waitBuckets[bisect_left(WAIT_BUCKETS, seconds)] += 1

    def replay(self, opTag: int) -> None:
        """An operation was sent again on a new connection."""
        self.replayed[opTag] = self.replayed.get(opTag, 0) + 1


class PoolState:
    """
    One pool at run time: its backends' states and the strategy's cursor.

    L{candidates} yields backends in the order a new upstream connection
    should try them.  For a pool discovered in DNS (C{srv}), the backend
    list is replaced by L{setBackends} as records change.
    """

    def __init__(self, pool: Pool, states: dict[str, BackendState], faults: PoolFaults | None = None) -> None:
        self.pool = pool
        self.name = pool.name
        self.faults = faults if faults is not None else PoolFaults()
        self.backends: list[BackendState] = [states[backend.name] for backend in pool.backends]
        self._turn = itertools.count()
        self._currentWeight: dict[str, int] = {}

    def setBackends(self, backends: Sequence[BackendState]) -> None:
        """Replace the members (DNS discovery); new sessions see them at once."""
        self.backends = list(backends)

    def candidates(self) -> Iterator[BackendState]:
        """Backends to try for a new upstream connection, best first."""
        backends = [state for state in self.backends if not state.atCapacity()]
        n = len(self.backends)
        if not backends:
            return
        # decided up front: trying a backend changes its state
        up = [state for state in backends if state.up]
        down = [state for state in backends if not state.up]
        strategy = self.pool.strategy
        if strategy == "failover":
            # stable: configuration order among equal priorities
            up.sort(key=lambda state: state.backend.priority)
            down.sort(key=lambda state: state.backend.priority)
        elif strategy == "weighted":
            up = self._weighted(up)
        elif strategy == "least-outstanding":
            start = next(self._turn) % n
            rotated = {id(state): (i - start) % n for i, state in enumerate(self.backends)}
            up.sort(key=lambda state: (state.inFlight, state.connections, rotated[id(state)]))
        else:
            start = next(self._turn) % n
            rotated = {id(state): (i - start) % n for i, state in enumerate(self.backends)}
            up.sort(key=lambda state: rotated[id(state)])
            down.sort(key=lambda state: rotated[id(state)])
        yield from up
        yield from down

    def _weighted(self, up: list[BackendState]) -> list[BackendState]:
        """
        Smooth weighted round-robin (as nginx): over any run of sessions
        each backend's share is its weight over the total, without bursts.
        The winner comes first, the rest follow by weight.
        """
        if not up:
            return up
        total = 0
        best: BackendState | None = None
        for state in up:
            weight = state.backend.weight
            total += weight
            current = self._currentWeight.get(state.name, 0) + weight
            self._currentWeight[state.name] = current
            if best is None or current > self._currentWeight[best.name]:
                best = state
        assert best is not None
        self._currentWeight[best.name] -= total
        rest = sorted((state for state in up if state is not best), key=lambda state: -state.backend.weight)
        return [best, *rest]

    def anyUp(self) -> bool:
        return any(state.up for state in self.backends)

    def allAtCapacity(self) -> bool:
        """Whether every backend is at its connection cap (answer busy)."""
        return bool(self.backends) and all(state.atCapacity() for state in self.backends)


class Backends:
    """
    Every backend's state and every pool, built from a configuration and
    rebuilt on reload, keeping the state objects of backends that stay.
    """

    def __init__(self) -> None:
        self.states: dict[str, BackendState] = {}
        self.pools: dict[str, PoolState] = {}
        #: by pool name, kept across reloads (counters only go up)
        self.faults: dict[str, PoolFaults] = {}

    def configure(self, backends: dict[str, Backend], pools: dict[str, Pool]) -> None:
        states = {}
        for name, backend in backends.items():
            state = self.states.get(name)
            if state is None or state.backend != backend:
                state = BackendState(backend)
            states[name] = state
        old = self.pools
        self.states = states
        self.pools = {
            name: PoolState(pool, states, self.faults.setdefault(name, PoolFaults())) for name, pool in pools.items()
        }
        for name, poolState in self.pools.items():
            previous = old.get(name)
            if poolState.pool.srv is not None and previous is not None and previous.pool.srv == poolState.pool.srv:
                # keep what DNS said until discovery says otherwise
                poolState.setBackends(previous.backends)
