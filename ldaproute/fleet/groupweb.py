# -*- test-case-name: tests.test_fleet_group -*-
"""
Worker 0's HTTP endpoints for the group: C{/metrics} summing every
worker's (L{GroupMetricsResource}) and C{/healthz}, C{/readyz} for the
group (L{GroupStatus} through L{DeferredJSONStatus}).

Apart from L{ldaproute.fleet.group} because they are twisted.web
resources that only ask the L{GroupHub}; the channel knows nothing of HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ldaproute.fleet.group import GroupHub
from ldaproute.fleet.groupmetrics import MergedFamilies, familiesToData, mergeFamilies


class GroupMetricsResource(Resource):
    """C{/metrics} for the group: worker 0's registry plus every member's, summed."""

    isLeaf = True
    _log = Logger()

    def __init__(self, registry: CollectorRegistry, hub: GroupHub) -> None:
        super().__init__()
        self._registry = registry
        self._hub = hub

    def render_GET(self, request: Request) -> Any:
        own = familiesToData(self._registry.collect())
        d = self._hub.ask("metrics")
        d.addCallback(self._render, own, request)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _render(self, answers: dict[int, Any], own: list[dict[str, Any]], request: Request) -> None:
        reporting = [body for body in answers.values() if body is not None]
        families = mergeFamilies([own, *reporting])
        families.append(self._workersFamily(1 + len(reporting)))
        encoder, contentType = choose_encoder(request.getHeader("accept") or "")
        request.setHeader("Content-Type", contentType)
        request.write(encoder(MergedFamilies(families)))
        request.finish()

    def _workersFamily(self, reporting: int) -> Metric:
        metric = Metric("ldaproute_workers", "Worker processes of this group, by whether their metrics are in this scrape.", "gauge")
        metric.add_sample("ldaproute_workers", {"state": "reporting"}, reporting)
        metric.add_sample("ldaproute_workers", {"state": "missing"}, max(0, self._hub.workers - reporting))
        return metric

    def _failed(self, failure: Any, request: Request) -> None:
        self._log.failure("Cannot collect the worker group's metrics", failure)
        request.setResponseCode(500)
        request.finish()


class GroupStatus:
    """C{/healthz} and C{/readyz} for the group, from worker 0's own and the members' answers."""

    def __init__(self, hub: GroupHub, readiness: Callable[[], tuple[bool, dict[str, Any]]], alive: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self._hub = hub
        self._readiness = readiness
        self._alive = alive

    def health(self) -> Deferred[tuple[bool, dict[str, Any]]]:
        """Alive when worker 0 answers; the body says which workers are on the channel."""
        ok, body = self._alive()
        workers = {str(index): "alive" if index == 0 or index in self._hub.members else "unreachable"
                   for index in range(self._hub.workers)}  # fmt: skip
        return defer.succeed((ok, {**body, "workers": workers}))

    def ready(self) -> Deferred[tuple[bool, dict[str, Any]]]:
        """Ready when at least one worker is; the body names those that are not, and why."""
        return self._hub.ask("ready").addCallback(self._ready)

    def _ready(self, answers: dict[int, Any]) -> tuple[bool, dict[str, Any]]:
        ok, own = self._readiness()
        states: dict[str, Any] = {"0": own}
        readyCount = 1 if ok else 0
        for index in range(1, self._hub.workers):
            answer = answers.get(index)
            if answer is None:
                states[str(index)] = {"status": "unreachable"}
                continue
            states[str(index)] = answer["body"]
            readyCount += 1 if answer["ok"] else 0
        unready = sorted((key for key, state in states.items() if state.get("status") != "ready"), key=int)
        body: dict[str, Any] = {
            "status": "ready" if readyCount else "unready",
            "workers": states,
            "ready": readyCount,
        }
        if unready:
            body["unready"] = unready
        return readyCount > 0, body


class DeferredJSONStatus(Resource):
    """A health endpoint whose C{check()} returns a Deferred of C{(ok, body)}; 200 or 503."""

    isLeaf = True

    def __init__(self, check: Callable[[], Deferred[tuple[bool, dict[str, Any]]]]) -> None:
        super().__init__()
        self._check = check

    def render_GET(self, request: Request) -> Any:
        self._check().addCallback(self._render, request)
        return NOT_DONE_YET

    def _render(self, result: tuple[bool, dict[str, Any]], request: Request) -> None:
        ok, body = result
        request.setResponseCode(200 if ok else 503)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "no-store")
        request.write(json.dumps(body, sort_keys=True).encode("utf-8") + b"\n")
        request.finish()


__all__ = ["DeferredJSONStatus", "GroupMetricsResource", "GroupStatus"]
