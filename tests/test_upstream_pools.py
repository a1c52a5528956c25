"""
SessionLink's pool hooks on in-memory transports: in-flight counting,
operation timeouts (Abandon upstream, timeLimitExceeded to the client, the
link given up), busy when every backend is at its cap.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ldaproute.wire import ber
from ldaproute.backends import connection
from ldaproute.config import Backend, BackendURL, Pool
from ldaproute.backends.pool import Backends
from ldaproute.backends.interfaces import IBackendLink, ILinkOwner
from ldaproute.backends.sessionlink import SessionLink


@implementer(ILinkOwner)
class Owner:
    """A verified fake of the client connection a link reports to."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        #: what shared mode reads of its owner; session-mode links read neither
        self.session: Any = None
        self.transport: Any = None

    def linkReceived(self, link: Any, data: bytes, finals: Any, message: str = "") -> None:
        self.events.append(("received", data))

    def linkLost(self, link: Any, reason: str, resultCode: int = ber.UNAVAILABLE) -> None:
        self.events.append(("lost", resultCode, reason))

    def linkReplayFailed(self, link: Any, resultCode: int) -> None:
        self.events.append(("replayFailed", resultCode))

    def linkConnected(self, link: Any) -> None:
        self.events.append(("connected",))

    def linkOperationTimedOut(self, link: Any, messageID: int, reason: str) -> None:
        self.events.append(("timedOut", messageID, reason))

    def linkWaitedOut(self, link: Any, messageID: int, reason: str, resultCode: int) -> None:
        self.events.append(("waitedOut", messageID, reason, resultCode))

    def linkReceivedRaw(self, link: Any, data: bytes) -> None:
        self.events.append(("raw", data))

    def linkTLSHandshake(self, link: Any, outcome: str) -> None:
        self.events.append(("tls", outcome))


class FakeEndpoint:
    def __init__(self, transports: list[StringTransport]) -> None:
        self.transports = transports

    def connect(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return succeed(protocol)


def makeLink(monkeypatch: Any, **backendKeys: Any) -> tuple[SessionLink, Owner, list[StringTransport], Any]:
    transports: list[StringTransport] = []
    backend = Backend("a", BackendURL("ldap", "127.0.0.1", 1), **backendKeys)
    registry = Backends()
    registry.configure({"a": backend}, {"p": Pool("p", (backend,))})
    owner = Owner()
    verifyObject(ILinkOwner, owner)
    clock = Clock()
    link = SessionLink(owner, registry.pools["p"], clock, None, "peer", lambda reactor, state, timeout: FakeEndpoint(transports))
    verifyObject(IBackendLink, link)
    return link, owner, transports, (registry.states["a"], clock)


def search(messageID: int) -> bytes:
    return ber.message(messageID, ber.tlv(ber.SEARCH_REQUEST, b""))


def test_inFlightCounted(monkeypatch: Any) -> None:
    link, owner, transports, (state, clock) = makeLink(monkeypatch)
    link.operationStarted(1)
    link.send(search(1))
    link.operationStarted(2)
    link.send(search(2))
    assert state.inFlight == 2 and state.connections == 1
    link.operationEnded(1)
    assert state.inFlight == 1
    link.close()
    assert state.inFlight == 0


def test_operationTimeout(monkeypatch: Any) -> None:
    link, owner, transports, (state, clock) = makeLink(monkeypatch)
    link.operationStarted(1, 2.0)
    link.send(search(1))
    link.operationStarted(2)
    link.send(search(2))
    clock.advance(1.9)
    assert owner.events == [("connected",)]
    clock.advance(0.1)
    written = transports[0].value()
    assert ber.abandonRequest(connection.ABANDON_ID, 1) in written
    assert written.endswith(ber.unbindRequest(connection.UNBIND_ID))
    kinds = [event[0] for event in owner.events]
    assert kinds == ["connected", "timedOut", "lost"]
    assert "operation_timeout of 2s" in owner.events[1][2]
    assert owner.events[2][1] == ber.UNAVAILABLE
    assert not state.up and state.inFlight == 0
    assert transports[0].disconnecting


def test_answeredOperationDoesNotTimeOut(monkeypatch: Any) -> None:
    link, owner, transports, (state, clock) = makeLink(monkeypatch)
    link.operationStarted(1, 2.0)
    link.send(search(1))
    link.operationEnded(1)
    clock.advance(5)
    assert owner.events == [("connected",)]
    assert not clock.getDelayedCalls()


def test_busyWhenAtCap(monkeypatch: Any) -> None:
    link, owner, transports, (state, clock) = makeLink(monkeypatch, maxConnections=1)
    state.connections = 1
    link.operationStarted(1)
    link.send(search(1))
    assert owner.events[0][:2] == ("lost", ber.BUSY)
    assert "max_connections" in owner.events[0][2]
    assert state.inFlight == 0
