"""
The frontend's two waits for a shared throttle store, on in-memory
transports: a bind is parked until the fleet's counts for its address and
DN are in (at most FLEET_WAIT), and so is whatever the client sends after
it; a store that does not answer costs FLEET_WAIT, then the process's own
counts decide.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from ldaproute.config import Config
from ldaproute.core.policy import throttleDigest
from ldaproute.listeners.frontend import FLEET_WAIT, FrontendFactory, FrontendProtocol
from ldaproute.runtime import Runtime
from ldaproute.wire import ber
from tests.test_frontend_security import BASE, search, take

DN = b"uid=guess,dc=example,dc=com"


def bind(messageID: int) -> bytes:
    return ber.simpleBindRequest(messageID, DN, b"wrong")


Asked = list[tuple[list[str], Deferred[None]]]


def connect(policy: str, asked: Asked, answer: bool = True) -> tuple[FrontendProtocol, Any, StringTransport, MemoryReactorClock]:
    """A client of a listener whose throttle is shared (the fleet wiring does this at start-up)."""
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_simple_bind = off\n" + policy + BASE)
    reactor = MemoryReactorClock()
    factory = FrontendFactory(config.listeners[0], Runtime(config), reactor)
    throttle = factory.policy.throttle
    assert throttle is not None

    def ask(digests: list[str]) -> Deferred[None] | None:
        if not answer:
            return None  # the store is unreachable
        d: Deferred[None] = Deferred()
        asked.append((digests, d))
        return d

    throttle.shareWith(lambda kind, digest, now: None, ask)
    address = IPv4Address("TCP", "10.0.0.1", 50000)
    protocol = factory.buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, throttle, transport, reactor


def test_bindWaitsForTheFleetAndIsRefusedOnItsCount() -> None:
    asked: Asked = []
    protocol, throttle, transport, reactor = connect("", asked)
    protocol.dataReceived(bind(1) + search(2))
    assert transport.value() == b"" and len(reactor.tcpClients) == 0  # neither answered nor forwarded yet
    digests, answer = asked[0]
    assert digests == [throttleDigest("address", "10.0.0.1"), throttleDigest("dn", DN)]
    # four failures elsewhere in the fleet, one more just now: the limit of 5
    now = reactor.seconds()
    throttle.observe(throttleDigest("dn", DN), [now - 5, now - 4, now - 3, now - 2, now - 1], now)
    answer.callback(None)
    (refused,) = take(transport)
    assert (refused.id, refused.value.resultCode) == (1, ber.UNWILLING_TO_PERFORM)
    assert b"too many failed binds for this DN" in refused.value.errorMessage
    assert len(reactor.tcpClients) == 1  # the search queued behind the bind goes on after it
    assert len(asked) == 1
    assert not reactor.getDelayedCalls()  # the wait's timer is gone


def test_storeThatDoesNotAnswerCostsFleetWait() -> None:
    asked: Asked = []
    protocol, throttle, transport, reactor = connect("", asked)
    protocol.dataReceived(bind(1))
    reactor.advance(FLEET_WAIT * 0.99)
    assert len(reactor.tcpClients) == 0
    reactor.advance(FLEET_WAIT * 0.02)
    assert len(reactor.tcpClients) == 1  # decided on local counts: forwarded to the backend
    assert transport.value() == b""
    asked[0][1].callback(None)  # a late answer changes nothing
    assert len(reactor.tcpClients) == 1 and transport.value() == b""


def test_locallyThrottledBindDoesNotAsk() -> None:
    asked: Asked = []
    protocol, throttle, transport, reactor = connect("bind_throttle_failures = 1\n", asked)
    throttle.failed("10.0.0.1", DN, reactor.seconds())
    protocol.dataReceived(bind(1))
    assert asked == []
    (refused,) = take(transport)
    assert refused.value.resultCode == ber.UNWILLING_TO_PERFORM


def test_unreachableStoreMeansNoWait() -> None:
    protocol, throttle, transport, reactor = connect("", [], answer=False)
    protocol.dataReceived(bind(1))
    assert len(reactor.tcpClients) == 1


def test_notSharedNothingWaits() -> None:
    """One process alone (no store): the bind goes on at once, as before the fleet existed."""
    config = Config.fromString("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_simple_bind = off\n" + BASE)
    reactor = MemoryReactorClock()
    factory = FrontendFactory(config.listeners[0], Runtime(config), reactor)
    protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 50000))
    assert protocol is not None
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(bind(1))
    assert len(reactor.tcpClients) == 1
