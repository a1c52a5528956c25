"""L{ldaproute.wire.proxyheader}: headers that Twisted's own PROXY parsers read back."""

from __future__ import annotations

from ipaddress import ip_address

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.trial.unittest import SynchronousTestCase

from ldaproute.wire.proxyheader import proxyHeader

SRC4, DST4 = IPv4Address("TCP", "192.0.2.7", 51000), IPv4Address("TCP", "10.0.0.1", 389)
SRC6, DST6 = IPv6Address("TCP", "2001:db8::7", 51000), IPv6Address("TCP", "2001:db8::1", 389)


class ProxyHeaderTests(SynchronousTestCase):
    def test_v1(self) -> None:
        header = proxyHeader("v1", SRC4, DST4)
        self.assertEqual(header, b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 389\r\n")
        info, rest = V1Parser().feed(header + b"x")
        self.assertEqual((info.source, info.destination, rest), (SRC4, DST4, b"x"))

    def test_v2IPv4(self) -> None:
        info, rest = V2Parser().feed(proxyHeader("v2", SRC4, DST4) + b"x")
        self.assertEqual((info.source, info.destination, rest), (SRC4, DST4, b"x"))

    def test_v2IPv6(self) -> None:
        info, _ = V2Parser().feed(proxyHeader("v2", SRC6, DST6))
        self.assertEqual((ip_address(info.source.host), info.source.port), (ip_address("2001:db8::7"), 51000))

    def test_unixClient(self) -> None:
        self.assertEqual(proxyHeader("v1", UNIXAddress(b"/run/x"), DST4), b"PROXY UNKNOWN\r\n")
        info, _ = V2Parser().feed(proxyHeader("v2", UNIXAddress(b"/run/x"), DST4))
        self.assertIsNone(info.source)
