"""
Tests for L{ldaproute.ops.lifecycle}: reload, drain, worker helpers; on
in-memory reactors.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.testing import MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.wire import ber
from ldaproute.ops.lifecycle import Drain, workerMetricsEndpoint
from ldaproute.service import Options, makeService

CONFIG = """
[ldaproute]
listen = tcp:10389:interface=127.0.0.1
metrics = tcp:19389:interface=127.0.0.1
[backend:one]
url = ldap://127.0.0.1:1389
[backend:two]
url = ldap://127.0.0.1:2389
[pool:first]
backends = one
[pool:second]
backends = two
[route:all]
pool = {pool}
"""


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="ldaproute-reload-")
        self.addCleanup(shutil.rmtree, directory)
        self.path = FilePath(directory).child("routes.ini")
        self.path.setContent(CONFIG.format(pool="first").encode())
        options = Options()
        options.parseOptions(["-c", self.path.path])
        self.reactor = MemoryReactorClock()
        self.service: Any = makeService(options, reactor=self.reactor)
        self.runtime = self.service.runtime

    def reloads(self) -> bytes:
        return b"\n".join(
            line for line in generate_latest(self.runtime.observer.metrics.registry).splitlines()
            if line.startswith(b"ldaproute_config_reloads_total") or line.startswith(b"ldaproute_config_last")
        )  # fmt: skip

    def test_validFileTakesEffect(self) -> None:
        self.path.setContent(CONFIG.format(pool="second").encode())
        self.assertTrue(self.service.reload())
        self.assertEqual(self.runtime.config.routes[0].pool, "second")
        self.assertIn(b'ldaproute_config_reloads_total{outcome="success"} 1.0', self.reloads())

    def test_invalidFileRefused(self) -> None:
        self.path.setContent(CONFIG.format(pool="nowhere").encode())
        self.assertFalse(self.service.reload())
        self.assertEqual(self.runtime.config.routes[0].pool, "first")
        self.assertIn(b'ldaproute_config_reloads_total{outcome="invalid"} 1.0', self.reloads())
        self.assertIn(b"ldaproute_config_last_reload_successful 0.0", self.reloads())
        self.assertEqual(self.flushLoggedErrors(), [])  # an event, not a failure

    def test_listenerChangeRefused(self) -> None:
        self.path.setContent(CONFIG.format(pool="second").replace("10389", "10390").encode())
        self.assertFalse(self.service.reload())
        self.assertEqual(self.runtime.config.routes[0].pool, "first")
        self.assertIn(b'ldaproute_config_reloads_total{outcome="refused"} 1.0', self.reloads())

    def test_metricsSiteAndListenerServices(self) -> None:
        names = sorted(service.name for service in self.service)
        self.assertEqual(names, ["discovery", "health", "listener:default:tcp:10389:interface=127.0.0.1", "metrics", "status"])


class FakeSession:
    def __init__(self, outstanding: int) -> None:
        self.outstanding = dict.fromkeys(range(outstanding))
        self.peer = "127.0.0.1:1"


class FakeFrontend:
    """What L{Drain} uses of a frontend connection."""

    def __init__(self, connections: set[Any], outstanding: int) -> None:
        self.session = FakeSession(outstanding)
        self.connections = connections
        self.noticed = 0

    def shutDown(self) -> None:
        self.noticed += 1
        self.connections.discard(self)


class FakeObserver:
    def __init__(self) -> None:
        self.connections: set[Any] = set()


class DrainTests(SynchronousTestCase):
    def test_idleConnectionsNoticedAtOnce(self) -> None:
        observer = FakeObserver()
        idle = FakeFrontend(observer.connections, 0)
        observer.connections.add(idle)
        clock = MemoryReactorClock()
        done = Drain(observer, clock, 10.0).run()
        self.assertEqual(idle.noticed, 1)
        self.assertIsNone(self.successResultOf(done))

    def test_busyConnectionWaitsForItsOperations(self) -> None:
        observer = FakeObserver()
        busy = FakeFrontend(observer.connections, 1)
        observer.connections.add(busy)
        clock = MemoryReactorClock()
        done = Drain(observer, clock, 10.0).run()
        clock.advance(1.0)
        self.assertEqual(busy.noticed, 0)
        self.assertNoResult(done)
        busy.session.outstanding.clear()
        clock.advance(0.05)
        self.assertEqual(busy.noticed, 1)
        self.successResultOf(done)

    def test_timeoutNoticesEveryone(self) -> None:
        observer = FakeObserver()
        busy = FakeFrontend(observer.connections, 2)
        observer.connections.add(busy)
        clock = MemoryReactorClock()
        done = Drain(observer, clock, 3.0).run()
        clock.pump([0.05] * 59)
        self.assertEqual(busy.noticed, 0)
        clock.pump([0.05] * 2)
        self.assertEqual(busy.noticed, 1)
        self.successResultOf(done)


class ShutDownTests(SynchronousTestCase):
    def test_noticeOfDisconnection(self) -> None:
        """A frontend told to shut down sends unavailable and closes."""
        from twisted.internet.testing import StringTransport

        from ldaproute.config import Config
        from ldaproute.listeners.frontend import FrontendFactory
        from ldaproute.runtime import Runtime

        runtime = Runtime(Config.fromString(CONFIG.format(pool="first")))
        factory = FrontendFactory(runtime.config.listeners[0], runtime, MemoryReactorClock())
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(runtime.observer.connections, {protocol})
        protocol.shutDown()
        self.assertEqual(transport.value(), ber.noticeOfDisconnection(ber.UNAVAILABLE, "the proxy is shutting down"))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost()
        self.assertEqual(runtime.observer.connections, set())


class WorkerHelperTests(SynchronousTestCase):
    def test_metricsPortPerWorker(self) -> None:
        self.assertEqual(workerMetricsEndpoint("tcp:9389:interface=127.0.0.1", 0), "tcp:9389:interface=127.0.0.1")
        self.assertEqual(workerMetricsEndpoint("tcp:9389:interface=127.0.0.1", 2), "tcp:9391:interface=127.0.0.1")
