"""
L{ldaproute.backends.connection.BackendConnection} on in-memory transports,
through both links: connect accounting when TLS fails, StartTLS towards the
backend in shared mode with its handshake metric, the Notice of
Disconnection on a shared connection, and least-outstanding in shared mode.
"""

from __future__ import annotations

from typing import Any

import pytest
from ldaptor.protocols import pureldap
from OpenSSL import SSL
from twisted.python.failure import Failure

from ldaproute.wire import ber
from ldaproute.wire.pdu import startTLSResponse
from tests import pdus
from tests.fakes import Client, FakeConnection, proxy

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = {mode}
require_tls_for_simple_bind = off
[backend:a]
url = ldap://a.example:389
tls = starttls
[pool:main]
backends = a
shared_connections = 1
bind_connections = 1
[route:all]
pool = main
"""


def acceptWithStartTLS(connection: FakeConnection) -> list[Any]:
    """Accept, check the proxy's StartTLS request, and record the TLS start."""
    transport = connection.accept()
    started: list[Any] = []
    transport.startTLS = started.append  # type: ignore[attr-defined]
    (request,) = pdus.decode(connection.sent())
    assert request.value.requestName == ber.STARTTLS_OID
    assert connection.transport is not None
    connection.respond(startTLSResponse(request.id))
    assert len(started) == 1
    return started


def handshakes(factory: Any) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["side"], sample.labels["outcome"]): sample.value
        for family in factory.runtime.observer.metrics.registry.collect()
        if family.name == "ldaproute_tls_handshakes"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_certificateFailureCountsOneFailedConnect(mode: str) -> None:
    """A backend whose certificate fails verification: one failed attempt, no success."""
    factory, backends, _ = proxy(CONFIG.format(mode=mode).replace("backends = a\n", "backends = a\nretry_budget = off\n"))
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    first = backends.connections[0]
    acceptWithStartTLS(first)
    first.protocol.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    state = factory.runtime.backends.states["a"]
    assert (state.connectsOK, state.connectsFailed, state.connections, state.up) == (0, 1, 0, False)
    assert handshakes(factory)[("backend", "failure")] == 1
    # the only candidate failed: the client hears 52, never a cleartext fallback
    (done,) = pdus.decode(client.received())
    assert (done.id, done.value.resultCode) == (1, ber.UNAVAILABLE)
    assert first.transport is not None and b"" == first.sent()


@pytest.mark.parametrize("mode", ["session", "shared"])
def test_startTLSThenOperations(mode: str) -> None:
    """StartTLS to the backend in both modes: handshake counted, then the request goes out."""
    factory, backends, _ = proxy(CONFIG.format(mode=mode))
    client = Client(factory)
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=7))
    connection = backends.connections[0]
    acceptWithStartTLS(connection)
    assert connection.sent() == b""  # nothing in cleartext before the handshake
    connection.protocol.handshakeCompleted()
    assert handshakes(factory) == {("backend", "success"): 1}
    (search,) = pdus.decode(connection.sent())
    assert search.value.baseObject == b"ou=a,dc=example,dc=com"
    connection.respond(pdus.searchDone(search.id))
    (done,) = pdus.decode(client.received())
    assert (done.id, done.value.resultCode) == (7, 0)
    state = factory.runtime.backends.states["a"]
    assert (state.connectsOK, state.connectsFailed, state.inFlight) == (1, 0, 0)


def test_sharedNoticeOfDisconnection() -> None:
    """
    A shared connection's Notice of Disconnection: the search it carried
    goes out again on a new connection; a write it carried is answered 52,
    with the backend's words.
    """
    factory, backends, clock = proxy(CONFIG.format(mode="shared").replace("tls = starttls\n", ""))
    client = Client(factory)
    client.send(pdus.search(messageID=3))
    connection = backends.connections[0]
    connection.accept()
    (search,) = pdus.decode(connection.sent())
    connection.respond(ber.noticeOfDisconnection(ber.UNAVAILABLE, "idle timeout"))
    clock.advance(0)
    assert client.received() == b""
    again = backends.connections[-1]
    again.accept()
    (replayed,) = pdus.decode(again.sent())
    assert isinstance(replayed.value, pureldap.LDAPSearchRequest)
    again.respond(pdus.searchDone(replayed.id))
    (done,) = pdus.decode(client.received())
    assert (done.id, done.value.resultCode) == (3, ber.SUCCESS)
    client.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 4))
    pdus.decode(again.sent())
    again.respond(ber.noticeOfDisconnection(ber.UNAVAILABLE, "idle timeout"))
    (done,) = pdus.decode(client.received())
    assert (done.id, done.value.resultCode) == (4, ber.UNAVAILABLE)
    assert b"Notice of Disconnection (resultCode 52: idle timeout)" in done.value.errorMessage
    state = factory.runtime.backends.states["a"]
    assert state.up and state.inFlight == 0  # it said goodbye, it did not fail


def test_sharedLeastOutstanding() -> None:
    """With strategy = least-outstanding, shared operations go to the backend with fewer in flight."""
    config = (
        CONFIG.format(mode="shared")
        .replace("tls = starttls\n", "[backend:b]\nurl = ldap://b.example:389\n")
        .replace("backends = a", "backends = a, b\nstrategy = least-outstanding")
    )
    factory, backends, _ = proxy(config)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    for connection in backends.connections:
        connection.accept()
    states = factory.runtime.backends.states
    for messageID in range(2, 8):
        client.send(pdus.search(messageID=messageID))
    assert sorted((states["a"].inFlight, states["b"].inFlight)) == [3, 4]
    byBackend = {connection.backend: pdus.decode(connection.sent()) for connection in backends.connections}
    # answer all of b's: the next ones go to b
    for message in byBackend["b"]:
        backends.connections[[c.backend for c in backends.connections].index("b")].respond(pdus.searchDone(message.id))
    assert states["b"].inFlight == 0
    client.send(pdus.search(messageID=20))
    client.send(pdus.search(messageID=21))
    assert states["b"].inFlight == 2
    assert len([m for m in pdus.decode(client.received()) if isinstance(m.value, pureldap.LDAPSearchResultDone)]) == len(byBackend["b"])
