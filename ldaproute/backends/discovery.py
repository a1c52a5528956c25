# -*- test-case-name: tests.integration.test_discovery -*-
"""
DNS SRV discovery: the backends of a pool with C{srv = _ldap._tcp.NAME}
come from that name's SRV records, resolved with C{twisted.names}.

Each record becomes a backend named C{POOL/TARGET:PORT}, reached with
C{ldap://TARGET:PORT}, with the record's priority (lower is preferred by
the C{failover} strategy) and weight (used by C{weighted}; a weight of 0
counts as 1).  The set is refreshed when the shortest TTL of the answer
runs out (bounded by L{MIN_REFRESH} and L{MAX_REFRESH}).  When DNS fails or
answers with no records, the previous set is kept and the query is retried
after L{RETRY_AFTER} seconds: a DNS outage must not empty a pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.python.failure import Failure

from ldaproute.config import Backend, BackendURL
from ldaproute.backends.pool import BackendState, PoolState

MIN_REFRESH = 1.0
MAX_REFRESH = 3600.0
RETRY_AFTER = 5.0
#: per-attempt timeouts of one lookup (the resolver's default waits a minute)
LOOKUP_TIMEOUTS = (1.0, 2.0)


def resolverFor(server: tuple[str, int] | None, reactor: Any) -> client.Resolver:
    """
    A resolver asking C{server}, or the servers of C{/etc/resolv.conf}
    (re-read as it changes); SRV records are never in a hosts file, so no
    hosts resolver is chained in front.
    """
    if server is None:
        return client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)
    return client.Resolver(servers=[server], reactor=reactor)


def backendsFromAnswers(poolName: str, answers: list[dns.RRHeader]) -> tuple[list[Backend], float | None]:
    """The backends an SRV answer names, ordered by priority, and its least TTL."""
    found: list[Backend] = []
    ttl: float | None = None
    for record in answers:
        if record.type != dns.SRV:
            continue
        payload = record.payload
        assert isinstance(payload, dns.Record_SRV)
        target = payload.target.name.decode("ascii").rstrip(".")
        if not target:
            continue  # "." means: no service here
        ttl = record.ttl if ttl is None else min(ttl, record.ttl)
        found.append(
            Backend(
                f"{poolName}/{target}:{payload.port}",
                BackendURL("ldap", target, payload.port),
                weight=max(1, payload.weight),
                priority=payload.priority,
            )
        )
    found.sort(key=lambda backend: (backend.priority, -backend.weight, backend.name))
    return found, ttl


class SRVDiscovery:
    """Keeps one pool's backends equal to its SRV records."""

    _log = Logger()

    def __init__(
        self,
        pool: PoolState,
        resolver: Any,
        reactor: Any,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.pool = pool
        self._resolver = resolver
        self._reactor = reactor
        self._changed = changed
        self._states: dict[str, BackendState] = {state.name: state for state in pool.backends}
        self._call: Any = None
        self._stopped = False

    def start(self) -> None:
        self.refresh()

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    def refresh(self) -> Any:
        name = self.pool.pool.srv
        assert name is not None
        d = self._resolver.lookupService(name, timeout=LOOKUP_TIMEOUTS)
        d.addCallbacks(self._resolved, self._failed)
        return d

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        self._call = self._reactor.callLater(delay, self.refresh)

    def _resolved(self, result: tuple[list[dns.RRHeader], Any, Any]) -> None:
        answers = result[0]
        backends, ttl = backendsFromAnswers(self.pool.name, answers)
        if not backends:
            self._log.warn(
                "SRV {srv} of pool {pool} has no records; keeping {count} backend(s)",
                srv=self.pool.pool.srv,
                pool=self.pool.name,
                count=len(self.pool.backends),
            )
            self._schedule(RETRY_AFTER)
            return
        states = []
        for backend in backends:
            state = self._states.get(backend.name)
            if state is None or state.backend != backend:
                state = BackendState(backend)
            states.append(state)
        self._states = {state.name: state for state in states}
        before = [state.name for state in self.pool.backends]
        after = [state.name for state in states]
        self.pool.setBackends(states)
        if before != after:
            self._log.info(
                "Pool {pool} now has backends {backends} (from SRV {srv})",
                pool=self.pool.name,
                backends=after,
                srv=self.pool.pool.srv,
            )
            self._changed()
        self._schedule(min(MAX_REFRESH, max(MIN_REFRESH, float(ttl or 0))))

    def _failed(self, reason: Failure) -> None:
        self._log.warn(
            "SRV lookup {srv} for pool {pool} failed ({error}); keeping {count} backend(s)",
            srv=self.pool.pool.srv,
            pool=self.pool.name,
            error=reason.getErrorMessage() or (reason.type.__name__ if reason.type else "?"),
            count=len(self.pool.backends),
        )
        self._schedule(RETRY_AFTER)


class DiscoveryService(Service):
    """Runs an L{SRVDiscovery} for every pool with C{srv} while the proxy runs."""

    def __init__(self, runtime: Any, reactor: Any, changed: Callable[[], None] = lambda: None) -> None:
        self._runtime = runtime
        self._reactor = reactor
        self._changed = changed
        self.discoveries: dict[str, SRVDiscovery] = {}

    def startService(self) -> None:
        super().startService()
        self.reconcile()

    def stopService(self) -> None:
        super().stopService()
        for discovery in self.discoveries.values():
            discovery.stop()
        self.discoveries.clear()

    def reconcile(self) -> None:
        """One discovery per SRV pool now configured (call after a reload)."""
        if not self.running:
            return
        for discovery in self.discoveries.values():
            discovery.stop()
        self.discoveries = {}
        for pool in self._runtime.backends.pools.values():
            if pool.pool.srv is None:
                continue
            resolver = resolverFor(pool.pool.srvResolver, self._reactor)
            discovery = SRVDiscovery(pool, resolver, self._reactor, self._changed)
            self.discoveries[pool.name] = discovery
            discovery.start()
