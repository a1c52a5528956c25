"""
The frontend's operational hooks: the real client address behind a PROXY
protocol header, metrics for completed and rejected operations.
"""

from __future__ import annotations

import shutil
import tempfile

import os

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.ops.accesslog import parseTextLine
from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.listeners.frontend import FrontendFactory
from ldaproute.runtime import Runtime

CONFIG = """
[ldaproute]
listen = haproxy:tcp:10389
[backend:one]
url = ldap://127.0.0.1:1389
[pool:main]
backends = one
[route:ro]
operations = write
reject = 53 read-only
[route:all]
pool = main
"""


class _TempPath:
    def tempPath(self) -> str:
        """A file path in a fresh directory removed after the test."""
        directory = tempfile.mkdtemp(prefix="ldaproute-test-")
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        return os.path.join(directory, "access.log")


class ProxyHeaderTests(_TempPath, SynchronousTestCase):
    def setUp(self) -> None:
        self.runtime = Runtime(Config.fromString(CONFIG))
        factory = FrontendFactory(self.runtime.config.listeners[0], self.runtime, MemoryReactorClock())
        wrapper = HAProxyWrappingFactory(factory)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40000))
        self.protocol = wrapper.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.frontend = self.protocol.wrappedProtocol

    def test_peerFromHeader(self) -> None:
        deleteRequest = ber.message(5, ber.tlv(ber.DEL_REQUEST, b"uid=a,dc=example,dc=com"))
        self.protocol.dataReceived(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 389\r\n" + deleteRequest)
        self.assertEqual(self.frontend.session.peer, "192.0.2.7:51000")
        self.assertIn(b"read-only", self.transport.value())
        metrics = self.runtime.observer.metrics
        self.assertEqual(metrics.hot.operations[(ber.DEL_REQUEST, "ro", "", 53)], 1)

    def test_rejectedPDU(self) -> None:
        self.protocol.dataReceived(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 389\r\n" + b"GET / HTTP/1.0\r\n")
        metrics = self.runtime.observer.metrics
        self.assertEqual(metrics.pdusRejected.labels("default", "not-ldap")._value.get(), 1)
        self.assertTrue(self.transport.disconnecting)


class AccessLogSwitchTests(_TempPath, SynchronousTestCase):
    def lines(self, accessLog: str) -> list[dict[str, str]]:
        """Two connections, three requests; the access-log lines written."""
        path = self.tempPath()
        destination = path if accessLog == "on" else accessLog
        runtime = Runtime(Config.fromString(CONFIG.replace("listen = haproxy:tcp:10389", f"listen = tcp:1\naccess_log = {destination}")))
        factory = FrontendFactory(runtime.config.listeners[0], runtime, MemoryReactorClock())
        for port in (4000, 4001):
            protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
            protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.8", port)))
            protocol.dataReceived(ber.message(2, ber.tlv(ber.DEL_REQUEST, b"uid=a,dc=example,dc=com")))
        protocol.dataReceived(ber.message(3, ber.tlv(ber.DEL_REQUEST, b"uid=b,dc=example,dc=com")))
        runtime.observer.flush()
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [parseTextLine(line) for line in f]

    def test_on(self) -> None:
        lines = self.lines("on")
        self.assertEqual(
            [(l["conn"], l["op"], l["client"], l["type"], l["dn"], l["route"], l["backend"], l["result"], l["msg"]) for l in lines],
            [
                ("1", "1", "192.0.2.8:4000", "delete", "uid=a,dc=example,dc=com", "ro", "-", "53", "read-only"),
                ("2", "1", "192.0.2.8:4001", "delete", "uid=a,dc=example,dc=com", "ro", "-", "53", "read-only"),
                ("2", "2", "192.0.2.8:4001", "delete", "uid=b,dc=example,dc=com", "ro", "-", "53", "read-only"),
            ],
        )
        self.assertEqual({(l["listener"], l["tls"]) for l in lines}, {("default", "none")})

    def test_off(self) -> None:
        self.assertEqual(self.lines("off"), [])
