# -*- test-case-name: tests.test_fleet_wiring -*-
"""
The fleet's part of C{makeService}: one call that wires the shared
throttle store, the worker group's channel and endpoints, and the config
watcher into the proxy's service tree, so that L{ldaproute.service} only
calls L{wireFleet}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

from twisted.application.service import Service
from twisted.web.server import Site

from ldaproute.config import Config
from ldaproute.fleet.group import GroupHub, GroupMember, HubThrottleStore
from ldaproute.fleet.groupweb import DeferredJSONStatus, GroupMetricsResource, GroupStatus
from ldaproute.fleet.redisstore import RedisStore
from ldaproute.fleet.throttle import IThrottleStore, StoreCollector, ThrottleExchange
from ldaproute.fleet.watch import ConfigWatcher
from ldaproute.ops.healthsite import alive


class _RemoveDirectory(Service):
    """Removes the worker channel's private directory when the proxy stops."""

    def __init__(self, path: str) -> None:
        self._path = path

    def stopService(self) -> None:
        super().stopService()
        shutil.rmtree(self._path, ignore_errors=True)


def wireFleet(
    top: Any,
    config: Config,
    workerIndex: int,
    groupSocket: str | None,
    factories: Iterable[Any],
    site: Site | None,
    reactor: Any,
) -> list[str]:
    """
    Add the fleet's services to C{top} (a L{ldaproute.ops.lifecycle.ProxyService}).

    @param factories: the listeners' L{ldaproute.listeners.frontend.FrontendFactory}s,
        whose bind throttles are shared.
    @param site: worker 0's metrics site, whose C{/metrics}, C{/healthz} and
        C{/readyz} become the group's when workers share one endpoint.
    @return: the arguments worker 0 gives the workers it starts.
    """
    runtime = top.runtime
    metrics = runtime.observer.metrics
    exchange = ThrottleExchange(reactor)
    store: IThrottleStore | None = None
    workerArgs: list[str] = []
    if config.throttleStore is not None:
        redis = RedisStore(config, exchange, reactor)
        redis.setName("throttle-store")
        redis.setServiceParent(top)
        store = redis
    if config.workers > 1 and workerIndex == 0:
        directory = tempfile.mkdtemp(prefix="ldaproute-group-")
        _RemoveDirectory(directory).setServiceParent(top)
        hub = GroupHub(os.path.join(directory, "group.sock"), config.workers, exchange, reactor)
        hub.setName("group")
        hub.setServiceParent(top)
        if store is None:
            store = HubThrottleStore(hub)
        if site is not None and not config.metricsPerWorker:
            status = GroupStatus(hub, top.readiness.check, alive)
            root = site.resource
            root.putChild(b"metrics", GroupMetricsResource(metrics.registry, hub))
            root.putChild(b"healthz", DeferredJSONStatus(status.health))
            root.putChild(b"readyz", DeferredJSONStatus(status.ready))
        workerArgs = ["--group-socket", hub.socketPath]
    elif config.workers > 1 and groupSocket:
        member = GroupMember(groupSocket, workerIndex, exchange, metrics.registry, top.readiness.check, reactor)
        member.setName("group")
        member.setServiceParent(top)
        if store is None:
            store = member
    if store is not None:
        # only a shared store makes binds consult the fleet: one process
        # alone keeps today's path, with nothing added
        for factory in factories:
            exchange.attach(factory.listener.name, factory.policy.throttle)
        exchange.useStore(store)
        metrics.registry.register(StoreCollector(store))
    if config.watchConfig and workerIndex == 0 and os.path.isfile(config.path):
        watcher = ConfigWatcher(config.path, top.reload, reactor)
        watcher.setName("watch-config")
        watcher.setServiceParent(top)
    return workerArgs


__all__ = ["wireFleet"]
