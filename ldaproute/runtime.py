# -*- test-case-name: tests.test_service -*-
"""
The configuration in force, shared by every listener: the router, and the
pools with their backends' run-time state.

A reload builds a new L{Config} and applies it here in one step; a client
connection reads C{runtime.router} per operation, so new operations follow
the new rules while sessions and their upstream connections carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ldaproute.config import Config, Route
from ldaproute.core.dn import DNCache
from ldaproute.core.rewrite import Rewriter
from ldaproute.ops.observer import Observer
from ldaproute.backends.pool import Backends, BackendState
from ldaproute.backends.shared import SharedPool
from ldaproute.core.routing import Router
from ldaproute.backends.upstream import endpointFor


class Runtime:
    """
    The configuration in force and what is derived from it.

    @ivar endpointFactory: C{(reactor, backendState, timeout) -> endpoint},
        how upstream connections reach a backend (tests give a fake).
    """

    def __init__(
        self,
        config: Config,
        endpointFactory: Callable[[Any, BackendState, float], Any] = endpointFor,
        reactor: Any = None,
    ) -> None:
        """
        @param reactor: schedules the access log's batched writes; without
            one (tests) every access-log line is written at once.
        """
        #: parsed DNs, kept across reloads (a DN's meaning does not depend
        #: on the configuration)
        self.dnCache = DNCache()
        self._rewriters: dict[Route, Rewriter] = {}
        #: shared mode's pooled connections, by pool name (made on first use)
        self.sharedPools: dict[str, SharedPool] = {}
        self.backends = Backends()
        self.endpointFactory = endpointFactory
        callLater = reactor.callLater if reactor is not None else None
        self.observer = Observer(accessLog=config.accessLog, logFormat=config.logFormat, callLater=callLater)
        self.observer.metrics.watchState(lambda: self)
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Make C{config} the one in force for new operations."""
        self.backends.configure(config.backends, config.pools)
        self.router = Router(config.routes, self.dnCache)
        self._rewriters = {}
        self.config = config
        #: whether per-operation debug events are emitted at all (twistd's
        #: observers would format and write every debug event otherwise)
        self.debug = config.logLevel == "debug"
        self.observer.configure(config.accessLog, config.logFormat)

    def rewriterFor(self, route: Route) -> Rewriter:
        """
        The rewriter of a route with rewrite rules, built once per
        configuration: a reload starts afresh, so rewriters of routes that
        are gone are not kept.
        """
        rewriter = self._rewriters.get(route)
        if rewriter is None:
            rewriter = self._rewriters[route] = Rewriter(route, self.dnCache.parse)
        return rewriter
