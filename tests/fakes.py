"""
In-memory backends for frontend unit tests: an endpoint factory whose
connections the test accepts or refuses, each accepted one a StringTransport
whose bytes the test reads and answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from ldaproute.config import Config
from ldaproute.listeners.frontend import FrontendFactory, FrontendProtocol
from ldaproute.backends.pool import BackendState
from ldaproute.runtime import Runtime


class FakeConnection:
    """One upstream connection attempt to a fake backend."""

    def __init__(self, backend: str, factory: Any) -> None:
        self.backend = backend
        self.factory = factory
        self.deferred: Deferred[Any] = Deferred()
        self.protocol: Any = None
        self.transport: StringTransport | None = None

    def accept(self) -> StringTransport:
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.deferred.callback(self.protocol)
        return self.transport

    def refuse(self) -> None:
        self.deferred.errback(Failure(error.ConnectionRefusedError("refused")))

    def sent(self) -> bytes:
        """What the proxy wrote on this connection (and forget it)."""
        assert self.transport is not None
        data = self.transport.value()
        self.transport.clear()
        return data

    def respond(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def drop(self) -> None:
        self.protocol.connectionLost(Failure(error.ConnectionLost("backend died")))


@implementer(IStreamClientEndpoint)
class _FakeEndpoint:
    def __init__(self, backends: FakeBackends, name: str) -> None:
        self._backends = backends
        self._name = name

    def connect(self, factory: Any) -> Deferred[Any]:
        connection = FakeConnection(self._name, factory)
        self._backends.connections.append(connection)
        return connection.deferred


class FakeBackends:
    """The endpoint factory for L{Runtime}: records every connection attempt."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []

    def __call__(self, reactor: Any, state: BackendState, timeout: float) -> _FakeEndpoint:
        return _FakeEndpoint(self, state.name)


def refusePending(backends: FakeBackends) -> None:
    """Refuse every connection attempt not settled yet (a backend that is down)."""
    for connection in backends.connections:
        if not connection.deferred.called:
            connection.refuse()


class Client:
    """A client connection to a FrontendProtocol over a StringTransport."""

    def __init__(self, factory: FrontendFactory, host: str = "192.0.2.7") -> None:
        from twisted.internet.address import IPv4Address

        self.protocol: FrontendProtocol = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def received(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data


def proxy(configText: str) -> tuple[FrontendFactory, FakeBackends, MemoryReactorClock]:
    """A listener factory for the first listener of C{configText}, on fakes."""
    backends = FakeBackends()
    reactor = MemoryReactorClock()
    config = Config.fromString(configText)
    runtime = Runtime(config, endpointFactory=backends)
    return FrontendFactory(config.listeners[0], runtime, reactor), backends, reactor


def boundClient(factory: FrontendFactory, backends: FakeBackends, dn: str = "uid=u,dc=example,dc=com") -> tuple[Client, FakeConnection]:
    """
    A client whose simple bind (messageID 1, password C{secret}) succeeded on
    a first, accepted upstream connection; both with nothing left to read.
    """
    from tests import pdus

    client = Client(factory)
    client.send(pdus.bind(dn, "secret", 1))
    connection = backends.connections[-1]
    connection.accept()
    connection.sent()
    connection.respond(pdus.bindResponse(1, 0))
    client.received()
    return client, connection
