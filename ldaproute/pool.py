# -*- test-case-name: tests.test_pool -*-
"""
Backends and pools at run time: which backend a new upstream connection
goes to, and what the proxy knows of each backend's state.

A L{BackendState} lives as long as its backend's name in the configuration
(a reload keeps the state of backends it keeps), so counters and health
survive reloads.  Choosing is cheap and synchronous; connecting is
upstream.py's business.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from ldaproute.config import Backend, Pool


class BackendState:
    """
    What the proxy knows about one backend right now.

    @ivar up: whether new sessions may use it (connection failures mark it
        down until it answers again).
    @ivar connections: upstream connections open to it.
    @ivar inFlight: operations sent to it and not yet answered.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.up = True
        self.connections = 0
        self.inFlight = 0
        self.consecutiveFailures = 0
        self.connectsOK = 0
        self.connectsFailed = 0

    @property
    def name(self) -> str:
        return self.backend.name

    def connectFailed(self) -> None:
        """Passive health: a refused or timed-out connection."""
        self.consecutiveFailures += 1
        self.connectsFailed += 1
        self.up = False

    def connectSucceeded(self) -> None:
        self.consecutiveFailures = 0
        self.connectsOK += 1
        self.up = True


class PoolState:
    """
    One pool at run time: its backends' states and the strategy's cursor.

    L{candidates} yields backends in the order a new upstream connection
    should try them: backends that are up first (in strategy order), then
    the ones marked down, so a pool whose every member was marked down by a
    blip still gets a chance to reconnect instead of refusing service.
    """

    def __init__(self, pool: Pool, states: dict[str, BackendState]) -> None:
        self.pool = pool
        self.backends = [states[backend.name] for backend in pool.backends]
        self._turn = itertools.count()

    @property
    def name(self) -> str:
        return self.pool.name

    def candidates(self) -> Iterator[BackendState]:
        """Backends to try for a new upstream connection, best first."""
        n = len(self.backends)
        start = next(self._turn) % n
        ordered = self.backends[start:] + self.backends[:start]
        # decided up front: trying a backend changes its state
        up = [state for state in ordered if state.up]
        down = [state for state in ordered if not state.up]
        yield from up
        yield from down

    def anyUp(self) -> bool:
        return any(state.up for state in self.backends)


class Backends:
    """
    Every backend's state and every pool, built from a configuration and
    rebuilt on reload, keeping the state objects of backends that stay.
    """

    def __init__(self) -> None:
        self.states: dict[str, BackendState] = {}
        self.pools: dict[str, PoolState] = {}

    def configure(self, backends: dict[str, Backend], pools: dict[str, Pool]) -> None:
        states = {}
        for name, backend in backends.items():
            state = self.states.get(name)
            if state is None or state.backend != backend:
                state = BackendState(backend)
            states[name] = state
        self.states = states
        self.pools = {name: PoolState(pool, states) for name, pool in pools.items()}
