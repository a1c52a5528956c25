"""
Tests for L{ldaproute.ops.metrics}: counters and histograms by label, the state
collector, and the /metrics, /healthz, /readyz resources.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.ops.healthsite import Readiness, healthSite
from ldaproute.ops.metrics import Metrics
from ldaproute.runtime import Runtime

CONFIG = """
[ldaproute]
listen = tcp:10389
[backend:a]
url = ldap://127.0.0.1:1
[backend:b]
url = ldap://127.0.0.1:2
[pool:main]
backends = a, b
[route:all]
pool = main
"""


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    result = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def render(site, path: bytes, accept: str | None = None) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    request = DummyRequest([path])
    request.uri = b"/" + path
    if accept:
        request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    resource = site.resource.getChildWithDefault(path, request)
    body = resource.render(request)
    headers = dict(request.responseHeaders.getAllRawHeaders())
    return request.responseCode or 200, headers, body


class MetricsTests(SynchronousTestCase):
    def test_operationCompletedCountsByLabels(self) -> None:
        metrics = Metrics()
        metrics.operationCompleted(ber.SEARCH_REQUEST, "all", "a", 0, 0.0004)
        metrics.operationCompleted(ber.SEARCH_REQUEST, "all", "a", 0, 0.002)
        metrics.operationCompleted(ber.BIND_REQUEST, "all", "b", 49, 0.01)
        found = samples(metrics)
        self.assertEqual(
            found[("ldaproute_operations_total", (("backend", "a"), ("code", "0"), ("op", "search"), ("route", "all")))], 2
        )
        self.assertEqual(
            found[("ldaproute_operations_total", (("backend", "b"), ("code", "49"), ("op", "bind"), ("route", "all")))], 1
        )
        key = ("ldaproute_operation_duration_seconds_bucket", (("le", "0.0005"), ("op", "search"), ("route", "all")))
        self.assertEqual(found[key], 1)
        key = ("ldaproute_operation_duration_seconds_count", (("op", "search"), ("route", "all")))
        self.assertEqual(found[key], 2)

    def test_hotPathCountsArePlainNumbers(self) -> None:
        """The hot path bumps plain counters; the scrape turns them into families."""
        metrics = Metrics()
        metrics.operationCompleted(ber.SEARCH_REQUEST, "all", "a", 0, 0.0001)
        metrics.operationCompleted(ber.SEARCH_REQUEST, "all", "a", 0, 40.0)
        self.assertEqual(metrics.hot.operations[(ber.SEARCH_REQUEST, "all", "a", 0)], 2)
        counts, total = metrics.hot.durations[(ber.SEARCH_REQUEST, "all")]
        self.assertEqual((counts[0], counts[-1], sum(counts)), (1, 1, 2))  # le=0.0001 is inclusive
        self.assertAlmostEqual(total, 40.0001)
        received, sent = metrics.byteCounters("default")
        sent.inc(10)
        self.assertIs(metrics.byteCounters("default")[1], sent)
        self.assertEqual(sent.value, 10)

    def test_stateCollector(self) -> None:
        """Backend up/down and connection counts come from the runtime at scrape time."""
        runtime = Runtime(Config.fromString(CONFIG))
        runtime.backends.states["b"].connectFailed()
        runtime.backends.states["a"].connections = 3
        found = samples(runtime.observer.metrics)
        self.assertEqual(found[("ldaproute_backend_up", (("backend", "a"),))], 1)
        self.assertEqual(found[("ldaproute_backend_up", (("backend", "b"),))], 0)
        self.assertEqual(found[("ldaproute_upstream_connections_open", (("backend", "a"),))], 3)
        self.assertEqual(found[("ldaproute_pool_backends_up", (("pool", "main"),))], 1)
        self.assertEqual(found[("ldaproute_upstream_connects_total", (("backend", "b"), ("result", "failed")))], 1)

    def test_buildInfo(self) -> None:
        found = samples(Metrics())
        self.assertTrue(any(name == "ldaproute_build_info" for name, _ in found))


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runtime = Runtime(Config.fromString(CONFIG))
        self.open = True
        self.readiness = Readiness(self.runtime, lambda: self.open)
        self.site = healthSite(self.runtime.observer.metrics, self.readiness)

    def test_metricsText(self) -> None:
        code, headers, body = render(self.site, b"metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"text/plain", headers[b"Content-Type"][0])
        self.assertIn(b"ldaproute_build_info", body)

    def test_metricsOpenMetrics(self) -> None:
        code, headers, body = render(self.site, b"metrics", "application/openmetrics-text; version=1.0.0")
        self.assertIn(b"application/openmetrics-text", headers[b"Content-Type"][0])
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_healthz(self) -> None:
        code, headers, body = render(self.site, b"healthz")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["status"], "alive")

    def test_readyz(self) -> None:
        code, _, body = render(self.site, b"readyz")
        self.assertEqual((code, json.loads(body)["status"]), (200, "ready"))

    def test_readyzBackendsDown(self) -> None:
        for state in self.runtime.backends.states.values():
            state.connectFailed()
        code, _, body = render(self.site, b"readyz")
        self.assertEqual(code, 503)
        self.assertEqual(
            json.loads(body),
            {
                "status": "unready",
                "draining": False,
                "listeners": "open",
                "pools": {"main": "down"},
                "reasons": ["no routed pool has a backend up"],
            },
        )

    def test_readyzDraining(self) -> None:
        self.readiness.draining = True
        self.open = False
        code, _, body = render(self.site, b"readyz")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["reasons"], ["draining for shutdown", "listeners are not open"])
