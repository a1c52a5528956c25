"""
No client can take a backend out of service (issue #14, item 5): a backend
that closes one upstream connection under a client's operations (as 389 DS
does past its request size limit) stays up for everyone; that client's
operations are answered, the backend is probed at once (at most once per
health_interval beyond the schedule), and only failures every client would
see (refused connects, failed probes, operation timeouts) mark it down.
"""

from __future__ import annotations

from typing import Any

import pytest
from ldaptor.protocols import pureldap
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from ldaproute.backends import health
from ldaproute.config import Backend, BackendURL, Pool
from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, proxy
from tests.test_frontend import results
from tests.test_health import FakeRuntime

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = {mode}
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
[route:all]
pool = main
"""


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_droppedConnectionAnswersThatClientAndKeepsBackendUp(mode: str) -> None:
    """
    The backend drops the connection carrying one client's write (as 389
    does past its request size limit): that client gets 52, the backend
    stays up, and the next client's search goes to the same backend on a
    new connection.
    """
    factory, backends, _ = proxy(CONFIG.format(mode=mode))
    first = Client(factory)
    first.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 2))
    connection = backends.connections[0]
    connection.accept()
    assert connection.sent()  # the search went out
    connection.drop()
    assert [(m, code) for m, _, code, _ in results(first.received())] == [(2, ber.UNAVAILABLE)]
    state = factory.runtime.backends.states["a"]
    assert (state.up, state.connectionsDropped, state.connectsFailed, state.inFlight) == (True, 1, 0, 0)
    assert "connection lost" in state.lastReason
    second = Client(factory)
    second.send(pdus.search(messageID=7))
    fresh = backends.connections[1:]
    assert fresh and {c.backend for c in fresh} == {"a"}
    for c in fresh:
        if c.transport is None:
            c.accept()
    (carrier,) = [c for c in fresh if c.transport is not None and c.transport.value()]
    (search,) = pdus.decode(carrier.sent())
    carrier.respond(pdus.searchDone(search.id))
    assert [(m, code) for m, _, code, _ in results(second.received())] == [(7, 0)]


def test_idleCloseIsNotADrop() -> None:
    """A backend closing an idle connection says nothing about its health."""
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client = Client(factory)
    client.send(pdus.search(messageID=2))
    connection = backends.connections[0]
    connection.accept()
    connection.respond(pdus.searchDone(2))
    connection.drop()
    state = factory.runtime.backends.states["a"]
    assert (state.up, state.connectionsDropped) == (True, 0)


def test_refusedConnectStillMarksDown() -> None:
    """A refused connect is what every client would see: down at once (and, without a budget, 52)."""
    factory, backends, _ = proxy(CONFIG.format(mode="session").replace("backends = a\n", "backends = a\nretry_budget = off\n"))
    client = Client(factory)
    client.send(pdus.search(messageID=2))
    backends.connections[0].refuse()
    state = factory.runtime.backends.states["a"]
    assert not state.up
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(2, ber.UNAVAILABLE)]


def makeService(monkeypatch: Any, outcomes: list[str | None]) -> tuple[Any, Any, list[float], Clock]:
    backend = Backend("a", BackendURL("ldap", "127.0.0.1", 1))
    runtime = FakeRuntime(Pool("p", (backend,), healthInterval=2.0, healthRise=2, healthFall=2))
    calls: list[float] = []
    clock = Clock()

    def fakeProbe(reactor: Any, state: Any, poolState: Any) -> Deferred[str | None]:
        calls.append(clock.seconds())
        return succeed(outcomes.pop(0) if outcomes else None)

    monkeypatch.setattr(health, "probe", fakeProbe)
    service = health.HealthService(runtime, clock)
    service.startService()
    return service, runtime.backends.states["a"], calls, clock


def test_dropProbesAtOnceAtMostOncePerInterval(monkeypatch: Any) -> None:
    """
    A drop runs a probe now; drops repeated by a client within the
    interval do not multiply probes; the next interval allows one again.
    """
    service, state, calls, clock = makeService(monkeypatch, [])
    assert calls == [0.0]
    clock.advance(0.5)
    state.connectionDropped("connection lost: reset", "p")
    assert calls == [0.0, 0.5]
    for _ in range(10):
        state.connectionDropped("connection lost: reset", "p")
    clock.advance(1.5)
    state.connectionDropped("connection lost: reset", "p")
    assert calls == [0.0, 0.5, 2.0]  # only the scheduled one at 2.0
    clock.advance(0.5)
    state.connectionDropped("connection lost: reset", "p")
    assert calls == [0.0, 0.5, 2.0, 2.5]
    assert state.up and state.connectionsDropped == 13


def test_dropOfADeadBackendMarksItDownThroughProbes(monkeypatch: Any) -> None:
    """
    When the backend really died, the probes a drop triggers (with the
    scheduled ones) mark it down after health_fall failures, not at once.
    """
    service, state, calls, clock = makeService(monkeypatch, [None, "cannot connect: refused", "cannot connect: refused"])
    state.connectionDropped("connection lost: reset", "p")
    assert calls == [0.0, 0.0] and state.up  # one failed probe: fall is 2
    clock.advance(2.0)
    assert not state.up


def test_stoppedServiceNoLongerProbes(monkeypatch: Any) -> None:
    service, state, calls, clock = makeService(monkeypatch, [])
    service.stopService()
    clock.advance(5.0)
    state.connectionDropped("connection lost: reset", "p")
    assert calls == [0.0]
