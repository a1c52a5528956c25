"""
The frontend's security hooks on in-memory transports: StartTLS modes and
their refusals, cleartext simple binds, limits and timeouts.
"""

from __future__ import annotations

from typing import Any

import attrs

from ldaptor.protocols import pureber, pureldap
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.listeners.frontend import FrontendFactory, FrontendProtocol
from ldaproute.runtime import Runtime
from ldaproute.core.session import Outstanding
from ldaproute.wire.pdu import startTLSRequest

BASE = "[backend:b]\nurl = ldap://127.0.0.1:1\n[pool:p]\nbackends = b\nretry_budget = off\n[route:r]\npool = p\n"

_decoder = pureldap.LDAPBERDecoderContext_TopLevel(
    inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
        fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
    )
)


class TLSStringTransport(StringTransport):
    """A StringTransport that records startTLS."""

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory


class FakeServerTLS:
    pass


def messages(data: bytes) -> list[Any]:
    out = []
    while data:
        message, used = pureber.berDecodeObject(_decoder, data)
        out.append(message)
        data = data[used:]
    return out


def connect(policy: str = "", serverTLS: Any = None) -> tuple[FrontendProtocol, TLSStringTransport, MemoryReactorClock]:
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\n" + policy + BASE)
    reactor = MemoryReactorClock()
    listener = config.listeners[0]
    if serverTLS is not None:  # without certificate files on disk
        listener = attrs.evolve(listener, starttls="terminate")
    factory = FrontendFactory(listener, Runtime(config), reactor, serverTLS)
    address = IPv4Address("TCP", "10.0.0.1", 50000)
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = TLSStringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport, reactor


def take(transport: StringTransport) -> list[Any]:
    data = transport.value()
    transport.clear()
    return messages(data)


def search(messageID: int) -> bytes:
    return pureldap.LDAPMessage(
        pureldap.LDAPSearchRequest(baseObject=b"dc=example,dc=com"), id=messageID
    ).toWire()


def simpleBind(messageID: int, password: bytes = b"secret") -> bytes:
    return pureldap.LDAPMessage(pureldap.LDAPBindRequest(dn=b"uid=a,dc=example,dc=com", auth=password), id=messageID).toWire()


def pretendOutstanding(protocol: FrontendProtocol, messageID: int) -> None:
    protocol.session.outstanding[messageID] = Outstanding(messageID, ber.SEARCH_REQUEST, object(), 0.0, "r")


def test_starttlsOff() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(startTLSRequest(1))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.PROTOCOL_ERROR
    assert transport.tlsStarted is None and not transport.disconnecting


def test_terminate() -> None:
    """Success response, then startTLS with the listener's context; a second StartTLS is refused."""
    serverTLS = FakeServerTLS()
    protocol, transport, _ = connect("", serverTLS)
    # refused while an operation is outstanding
    pretendOutstanding(protocol, 5)
    protocol.dataReceived(startTLSRequest(1))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.OPERATIONS_ERROR
    assert transport.tlsStarted is None
    protocol.session.outstanding.clear()
    protocol.dataReceived(startTLSRequest(2))
    [answer] = take(transport)
    assert (answer.id, answer.value.resultCode) == (2, 0)
    assert answer.value.responseName == ber.STARTTLS_OID
    assert transport.tlsStarted is serverTLS
    protocol.dataReceived(startTLSRequest(3))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.OPERATIONS_ERROR


def test_cleartextSimpleBindRefused() -> None:
    """13, and no upstream link is made: the password goes nowhere."""
    protocol, transport, reactor = connect()
    protocol.dataReceived(simpleBind(1))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.CONFIDENTIALITY_REQUIRED
    assert protocol._links.byPool == {} and reactor.tcpClients == []


def test_anonymousBindAllowedInClear() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(simpleBind(1, b""))
    assert take(transport) == []
    assert list(protocol._links.byPool) == ["p"]


def test_simpleBindAllowedAfterStartTLS() -> None:
    protocol, transport, _ = connect("", FakeServerTLS())
    protocol.dataReceived(startTLSRequest(1))
    take(transport)
    protocol.dataReceived(simpleBind(2))
    assert take(transport) == []
    assert 2 in protocol.session.outstanding


def test_maxOutstanding() -> None:
    protocol, transport, _ = connect("max_outstanding = 2\n")
    pretendOutstanding(protocol, 10)
    pretendOutstanding(protocol, 11)
    protocol.dataReceived(search(1))
    [answer] = take(transport)
    assert (answer.id, answer.value.resultCode) == (1, ber.BUSY)


def test_allowAnonymousOff() -> None:
    protocol, transport, _ = connect("allow_anonymous = off\n")
    protocol.dataReceived(search(1))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.INSUFFICIENT_ACCESS_RIGHTS


def test_pduTimeout() -> None:
    """Slow-loris: a PDU started and not finished within pdu_timeout."""
    protocol, transport, reactor = connect("pdu_timeout = 2s\n")
    data = search(1)
    protocol.dataReceived(data[:5])
    reactor.advance(1.5)
    protocol.dataReceived(data[5:8])  # trickling does not help
    reactor.advance(0.6)
    [notice] = take(transport)
    assert notice.id == 0 and notice.value.resultCode == ber.PROTOCOL_ERROR
    assert transport.disconnecting


def test_pduTimeoutResetByCompletePDUs() -> None:
    protocol, transport, reactor = connect("pdu_timeout = 2s\n")
    protocol.dataReceived(search(1)[:5])
    reactor.advance(1.5)
    protocol.dataReceived(search(1)[5:])
    reactor.advance(5)
    assert not transport.disconnecting


def test_idleTimeout() -> None:
    protocol, transport, reactor = connect("idle_timeout = 10s\n")
    reactor.advance(9)
    protocol.dataReceived(search(1))  # activity resets the clock
    reactor.advance(9)
    assert not transport.disconnecting
    protocol.session.outstanding.clear()
    reactor.advance(1.5)
    [notice] = take(transport)
    assert notice.id == 0 and notice.value.resultCode == ber.UNAVAILABLE
    assert transport.disconnecting


def test_connectionLimitPerAddress() -> None:
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\nmax_connections_per_address = 1\n" + BASE)
    reactor = MemoryReactorClock()
    factory = FrontendFactory(config.listeners[0], Runtime(config), reactor)
    address = IPv4Address("TCP", "10.0.0.1", 50000)
    first, second = factory.buildProtocol(address), factory.buildProtocol(address)
    assert first is not None and second is not None
    t1, t2 = StringTransport(peerAddress=address), StringTransport(peerAddress=address)
    first.makeConnection(t1)
    second.makeConnection(t2)
    [notice] = messages(t2.value())
    assert notice.value.resultCode == ber.BUSY and t2.disconnecting
    second.connectionLost()
    first.connectionLost()
    third = factory.buildProtocol(address)
    assert third is not None
    t3 = StringTransport(peerAddress=address)
    third.makeConnection(t3)
    assert not t3.disconnecting


def test_allowlistClosesAtAccept() -> None:
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\nclient_network = 192.168.0.0/16\n" + BASE)
    factory = FrontendFactory(config.listeners[0], Runtime(config), MemoryReactorClock())
    assert factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1)) is None
    assert factory.buildProtocol(IPv4Address("TCP", "192.168.3.4", 1)) is not None


def test_allowlistCheckedAgainstRealPeer() -> None:
    """Behind haproxy: the accept address is the balancer's; the peer known at connectionMade decides."""
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\nclient_network = 192.168.0.0/16\n" + BASE)
    factory = FrontendFactory(config.listeners[0], Runtime(config), MemoryReactorClock())
    protocol = factory.buildProtocol(IPv4Address("TCP", "192.168.0.1", 1))
    assert protocol is not None
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.9", 2))
    protocol.makeConnection(transport)
    assert transport.value() == b""
    assert transport.disconnecting
    protocol.connectionLost()
    assert factory.policy.limits.total == 0


def test_throttledBindsAndHandshakesAreCounted() -> None:
    """The bind-throttle and TLS-handshake metrics follow what the policy did."""
    protocol, transport, reactor = connect("require_tls_for_simple_bind = off\nbind_throttle_failures = 1\n", FakeServerTLS())
    metrics = protocol._runtime.observer.metrics
    # one failed bind already counted from this address
    protocol._policy.throttle.failed(protocol.session.address, b"", reactor.seconds())
    protocol.dataReceived(simpleBind(2))
    [answer] = take(transport)
    assert answer.value.resultCode == ber.UNWILLING_TO_PERFORM
    assert metrics.bindsThrottled.labels("default")._value.get() == 1
    protocol.dataReceived(startTLSRequest(3))
    take(transport)
    protocol.handshakeCompleted()
    assert metrics.tlsHandshakes.labels("client", "success")._value.get() == 1
    assert metrics.connectionsOpen.labels("default", "starttls")._value.get() == 1
    assert metrics.connectionsOpen.labels("default", "none")._value.get() == 0
