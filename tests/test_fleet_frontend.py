"""
The frontend's two waits for a shared throttle store, on in-memory
transports: a bind is parked until the fleet's counts for its address and
DN are in (at most FLEET_WAIT), and so is whatever the client sends after
it; a store that does not answer costs FLEET_WAIT, then the process's own
counts decide.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from ldaproute.core.policy import throttleDigest
from ldaproute.listeners.frontend import FLEET_WAIT
from ldaproute.wire import ber
from tests.test_frontend_security import connect, search, take

DN = b"uid=guess,dc=example,dc=com"


def bind(messageID: int) -> bytes:
    return ber.simpleBindRequest(messageID, DN, b"wrong")


def sharedThrottle(protocol: object, asked: list[tuple[list[str], Deferred[None]]]) -> object:
    throttle = protocol._policy.throttle  # type: ignore[attr-defined]

    def ask(digests: list[str]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        asked.append((digests, d))
        return d

    throttle.shareWith(lambda kind, digest, now: None, ask)
    return throttle


def test_bindWaitsForTheFleetAndIsRefusedOnItsCount() -> None:
    protocol, transport, reactor = connect("require_tls_for_simple_bind = off\n")
    asked: list[tuple[list[str], Deferred[None]]] = []
    throttle = sharedThrottle(protocol, asked)
    protocol.dataReceived(bind(1) + search(2))
    assert transport.value() == b"" and len(reactor.tcpClients) == 0  # neither answered nor forwarded yet
    digests, answer = asked[0]
    assert digests == [throttleDigest("address", "10.0.0.1"), throttleDigest("dn", DN)]
    # four failures elsewhere in the fleet, one more just now: the limit of 5
    now = reactor.seconds()
    throttle.observe(throttleDigest("dn", DN), [now - 5, now - 4, now - 3, now - 2, now - 1], now)  # type: ignore[attr-defined]
    answer.callback(None)
    (refused,) = take(transport)
    assert (refused.id, refused.value.resultCode) == (1, ber.UNWILLING_TO_PERFORM)
    assert b"too many failed binds for this DN" in refused.value.errorMessage
    assert len(reactor.tcpClients) == 1  # the search queued behind the bind goes on after it
    assert len(asked) == 1
    assert not reactor.getDelayedCalls()  # the wait's timer is gone


def test_storeThatDoesNotAnswerCostsFleetWait() -> None:
    protocol, transport, reactor = connect("require_tls_for_simple_bind = off\n")
    asked: list[tuple[list[str], Deferred[None]]] = []
    sharedThrottle(protocol, asked)
    protocol.dataReceived(bind(1))
    reactor.advance(FLEET_WAIT * 0.99)
    assert len(reactor.tcpClients) == 0
    reactor.advance(FLEET_WAIT * 0.02)
    assert len(reactor.tcpClients) == 1  # decided on local counts: forwarded to the backend
    assert transport.value() == b""
    asked[0][1].callback(None)  # a late answer changes nothing
    assert len(reactor.tcpClients) == 1 and transport.value() == b""


def test_locallyThrottledBindDoesNotAsk() -> None:
    protocol, transport, reactor = connect("require_tls_for_simple_bind = off\nbind_throttle_failures = 1\n")
    asked: list[tuple[list[str], Deferred[None]]] = []
    throttle = sharedThrottle(protocol, asked)
    throttle.failed("10.0.0.1", DN, reactor.seconds())  # type: ignore[attr-defined]
    protocol.dataReceived(bind(1))
    assert asked == []
    (refused,) = take(transport)
    assert refused.value.resultCode == ber.UNWILLING_TO_PERFORM


def test_unreachableStoreMeansNoWait() -> None:
    protocol, transport, reactor = connect("require_tls_for_simple_bind = off\n")
    throttle = protocol._policy.throttle  # type: ignore[attr-defined]
    throttle.shareWith(lambda kind, digest, now: None, lambda digests: None)
    protocol.dataReceived(bind(1))
    assert len(reactor.tcpClients) == 1
