"""Tests for ldaproute.backends.health (probe PDUs and protocol, HealthService) and ldaproute.backends.discovery."""

from __future__ import annotations

from typing import Any

from ldaptor.protocols import pureldap
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names import client, dns

from ldaproute.wire import ber
from ldaproute.backends import health
from ldaproute.wire.pdu import rootDSESearchRequest
from ldaproute.config import Backend, BackendURL, Pool
from ldaproute.backends.discovery import SRVDiscovery, resolverFor
from ldaproute.backends.pool import Backends, PoolState


def test_rootDSESearchRequestDecodes() -> None:
    """ldaptor reads the probe's search as a base search of the rootDSE."""
    from ldaptor.protocols.pureber import berDecodeObject

    message, _ = berDecodeObject(pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureldap.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureldap.BERDecoderContext()),
        )), rootDSESearchRequest(7))
    assert message.id == 7
    request = message.value
    assert isinstance(request, pureldap.LDAPSearchRequest)
    assert (request.baseObject, request.scope, request.attributes) == (b"", 0, [b"1.1"])


def probeProtocol(bind: tuple[bytes, bytes] | None = None) -> tuple[Any, StringTransport, list[Any]]:
    protocol = health._ProbeProtocol(bind)
    transport = StringTransport()
    protocol.makeConnection(transport)
    outcomes: list[Any] = []
    protocol.done.addCallback(outcomes.append)
    return protocol, transport, outcomes


def test_probeSucceedsOnRootDSE() -> None:
    protocol, transport, outcomes = probeProtocol()
    assert transport.value() == rootDSESearchRequest(2)
    answer = ber.message(2, ber.tlv(ber.SEARCH_RESULT_ENTRY, ber.tlv(0x04, b"") + ber.tlv(0x30, b"")))
    answer += ber.result(2, ber.SEARCH_RESULT_DONE, 0)
    for i in range(len(answer)):  # byte at a time
        protocol.dataReceived(answer[i : i + 1])
    assert outcomes == [None]
    assert transport.value().endswith(ber.unbindRequest(3))


def test_probeBindRefused() -> None:
    protocol, transport, outcomes = probeProtocol((b"cn=monitor", b"pw"))
    assert transport.value().startswith(ber.simpleBindRequest(1, b"cn=monitor", b"pw"))
    protocol.dataReceived(ber.result(1, ber.BIND_RESPONSE, 49))
    assert outcomes == ["bind answered resultCode 49"]


def test_probeConnectionLost() -> None:
    protocol, transport, outcomes = probeProtocol()
    protocol.connectionLost(None)
    assert outcomes[0].startswith("connection closed before the answer")


def test_probeGarbage() -> None:
    protocol, transport, outcomes = probeProtocol()
    protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
    assert outcomes[0].startswith("malformed answer")


class FakeRuntime:
    def __init__(self, pool: Pool) -> None:
        from ldaproute.ops.observer import Observer

        self.backends = Backends()
        self.backends.configure({b.name: b for b in pool.backends}, {pool.name: pool})
        self.observer = Observer(accessLog=None)


def test_healthServiceMarksDownAndUp(monkeypatch: Any) -> None:  # noqa: C901
    """Probes every interval on the injected clock; fall and rise decide."""
    backend = Backend("a", BackendURL("ldap", "127.0.0.1", 1))
    pool = Pool("p", (backend,), healthInterval=2.0, healthRise=2, healthFall=3)
    runtime = FakeRuntime(pool)
    outcomes = ["down"] * 3 + [None] * 2
    calls: list[float] = []
    clock = Clock()

    def fakeProbe(reactor: Any, state: Any, poolState: Any) -> Deferred[str | None]:
        calls.append(clock.seconds())
        return succeed(outcomes.pop(0) if outcomes else None)

    monkeypatch.setattr(health, "probe", fakeProbe)
    service = health.HealthService(runtime, clock)
    service.startService()
    state = runtime.backends.states["a"]
    assert state.checked and state.up
    clock.advance(2.0)
    clock.advance(2.0)
    assert not state.up and calls == [0.0, 2.0, 4.0]
    clock.advance(2.0)
    assert not state.up
    clock.advance(2.0)
    assert state.up
    service.stopService()
    clock.advance(10.0)
    assert len(calls) == 5
    checks = runtime.observer.metrics.healthChecks
    assert checks.labels("a", "failed")._value.get() == 3
    assert checks.labels("a", "ok")._value.get() == 2


def test_healthServiceSkipsWhileProbeRuns(monkeypatch: Any) -> None:
    backend = Backend("a", BackendURL("ldap", "127.0.0.1", 1))
    runtime = FakeRuntime(Pool("p", (backend,), healthInterval=1.0))
    pending: list[Deferred[str | None]] = []
    monkeypatch.setattr(health, "probe", lambda *a: pending.append(Deferred()) or pending[-1])
    clock = Clock()
    service = health.HealthService(runtime, clock)
    service.startService()
    clock.advance(1.0)
    clock.advance(1.0)
    assert len(pending) == 1


# --- discovery ------------------------------------------------------------------


class FakeResolver:
    def __init__(self) -> None:
        self.answers: list[Any] = []

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed((answer, [], []))


def srv(priority: int, weight: int, port: int, target: str, ttl: int = 30) -> dns.RRHeader:
    return dns.RRHeader(b"_ldap._tcp.example.com", dns.SRV, dns.IN, ttl,
                        dns.Record_SRV(priority, weight, port, target.encode(), ttl=ttl))


def test_discoveryFollowsRecordsAndKeepsSetOnFailure() -> None:
    poolState = PoolState(Pool("p", (), srv="_ldap._tcp.example.com", strategy="failover"), {})
    resolver = FakeResolver()
    clock = Clock()
    changes: list[int] = []
    discovery = SRVDiscovery(poolState, resolver, clock, lambda: changes.append(1))
    resolver.answers = [
        [srv(10, 1, 389, "b.example.com", ttl=60), srv(0, 5, 1389, "a.example.com", ttl=30)],
        RuntimeError("timeout"),
        [],
        [srv(0, 0, 389, "c.example.com")],
    ]
    discovery.start()
    assert [s.name for s in poolState.backends] == ["p/a.example.com:1389", "p/b.example.com:389"]
    assert poolState.backends[0].backend.weight == 5 and poolState.backends[1].backend.priority == 10
    clock.advance(29.9)
    assert len(resolver.answers) == 3  # refreshed on the least TTL, not before
    clock.advance(0.1)  # DNS fails: keep the set
    assert len(poolState.backends) == 2
    clock.advance(5.0)  # empty answer: keep the set
    assert len(poolState.backends) == 2
    clock.advance(5.0)
    assert [s.name for s in poolState.backends] == ["p/c.example.com:389"]
    assert poolState.backends[0].backend.weight == 1  # weight 0 counts as 1
    assert changes == [1, 1]
    discovery.stop()
    assert not clock.getDelayedCalls()


def test_resolverForTheSystemServers() -> None:
    """Without srv_resolver, SRV lookups ask the servers of /etc/resolv.conf, on the given reactor."""
    clock = Clock()
    resolver = resolverFor(None, clock)
    assert isinstance(resolver, client.Resolver)
    assert resolver._reactor is clock  # type: ignore[attr-defined]
    assert resolver.resolv == "/etc/resolv.conf"
    asked = resolverFor(("127.0.0.1", 5353), clock)
    assert asked.servers == [("127.0.0.1", 5353)]
