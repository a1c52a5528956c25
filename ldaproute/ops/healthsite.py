# -*- test-case-name: tests.test_metrics -*-
"""
The small twisted.web site of the C{metrics} endpoint: C{/metrics} (the
private registry of L{ldaproute.ops.metrics.Metrics}, text format, or
OpenMetrics when the Accept header asks for it), C{/healthz} (the process
answers), C{/readyz} (listeners open, not draining, and a healthy backend
for a route; L{Readiness}), and the status page at C{/} and
C{/status.json} (L{ldaproute.ops.status}).

Apart from L{ldaproute.ops.metrics} because serving is not counting: the
hot path imports the metrics, never the web resources.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from ldaproute import __version__
from ldaproute.ops.metrics import Metrics
from ldaproute.ops.status import StatusPage


class MetricsResource(Resource):
    """C{/metrics}: the registry, in the format the Accept header asks for."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept")
        encoder, contentType = choose_encoder(accept or "")
        request.setHeader("Content-Type", contentType)
        return encoder(self._registry)


class JSONStatus(Resource):
    """A health endpoint: C{check()} returns C{(ok, body)}; 200 or 503."""

    isLeaf = True

    def __init__(self, check: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        super().__init__()
        self._check = check

    def render_GET(self, request: Request) -> bytes:
        ok, body = self._check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "no-store")
        return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


class Readiness:
    """
    What C{/readyz} decides: ready when every listener is open, the process
    is not draining, and at least one route's pool has a backend up.
    """

    def __init__(self, runtime: Any, listenersOpen: Callable[[], bool]) -> None:
        self._runtime = runtime
        self._listenersOpen = listenersOpen
        self.draining = False

    def check(self) -> tuple[bool, dict[str, Any]]:
        runtime = self._runtime
        pools = runtime.backends.pools
        routed = {route.pool for route in runtime.config.routes if route.pool is not None}
        poolsUp = {name: pools[name].anyUp() for name in sorted(routed) if name in pools}
        listenersOpen = self._listenersOpen()
        reasons = []
        if self.draining:
            reasons.append("draining for shutdown")
        if not listenersOpen:
            reasons.append("listeners are not open")
        if not any(poolsUp.values()):
            reasons.append("no routed pool has a backend up")
        ready = not reasons
        body: dict[str, Any] = {
            "status": "ready" if ready else "unready",
            "draining": self.draining,
            "listeners": "open" if listenersOpen else "closed",
            "pools": {name: "up" if up else "down" for name, up in poolsUp.items()},
        }
        if reasons:
            body["reasons"] = reasons
        return ready, body


def alive() -> tuple[bool, dict[str, Any]]:
    """C{/healthz}: the reactor turned to answer."""
    return True, {"status": "alive", "version": __version__, "pid": os.getpid()}


def healthSite(
    metrics: Metrics, readiness: Readiness, status: Callable[[], dict[str, Any]] | None = None
) -> Site:
    """
    The site for the C{metrics} endpoint; with C{status} (a snapshot
    source, see L{ldaproute.ops.status.statusSnapshot}) also the status
    page at C{/} and C{/status.json}.
    """
    root = Resource()
    if status is not None:
        root.putChild(b"", StatusPage(status))
        root.putChild(b"status.json", StatusPage(status, asJSON=True))
    root.putChild(b"metrics", MetricsResource(metrics.registry))
    root.putChild(b"healthz", JSONStatus(alive))
    root.putChild(b"readyz", JSONStatus(readiness.check))
    site = Site(root)
    site.noisy = False
    site.displayTracebacks = False
    # no access log for scrapes and probes: Site logs through twisted.logger otherwise
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


__all__ = ["Readiness", "alive", "healthSite"]
