"""
Shared mode's writes to a backend on TCP: the requests of one reactor turn
go out in one write, in order, and nothing is lost when the connection is
closed before the turn ends; responses keep the client's messageID whatever
the length of the upstream one.
"""

from __future__ import annotations

from typing import Any

import pytest
from ldaptor.protocols import pureldap

from ldaproute.backends import connection as backendConnection
from tests import pdus
from tests.fakes import Client, FakeConnection, proxy
from tests.test_shared import CONFIG, SERVICE_BIND


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bytes]]:
    """Batch as on TCP; record every write the shared connections make."""
    recorded: list[tuple[Any, bytes]] = []

    def writerFor(transport: Any) -> Any:
        def write(data: bytes) -> None:
            recorded.append((transport, data))
            transport.write(data)

        return write

    monkeypatch.setattr(backendConnection, "batches", lambda transport: True)
    monkeypatch.setattr(backendConnection, "writerFor", writerFor)
    return recorded


def readyBatched(connection: FakeConnection, reactor: Any) -> bytes:
    """
    An anonymous client's connection: ready once connected; the one request
    that waited for it goes out at once (a connection with nothing else in
    flight has nothing to batch it with).  Returns what it sent.
    """
    connection.accept()
    sent = connection.sent()
    assert len(pdus.decode(sent)) == 1
    return sent


def test_oneWritePerTurn(writes: list[tuple[Any, bytes]]) -> None:
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    clients = [Client(factory) for _ in range(3)]
    clients[0].send(pdus.search("ou=a,dc=example,dc=com", messageID=5))
    (connection,) = backends.connections
    first = readyBatched(connection, reactor)
    del writes[:]
    clients[1].send(pdus.search("ou=b,dc=example,dc=com", messageID=5))
    clients[2].send(pdus.search("ou=c,dc=example,dc=com", messageID=300))
    clients[2].send(pdus.message(pureldap.LDAPAbandonRequest(id=300), 301))
    assert writes == [] and connection.sent() == b""
    reactor.advance(0)
    assert len(writes) == 1
    sent = pdus.decode(first + connection.sent())
    # the first client's waiting search, then this turn's two searches and the abandon in one write, in order
    assert [type(m.value).__name__ for m in sent] == [
        "LDAPSearchRequest",
        "LDAPSearchRequest",
        "LDAPSearchRequest",
        "LDAPAbandonRequest",
    ]
    assert [m.value.baseObject for m in sent[:3]] == [b"ou=a,dc=example,dc=com", b"ou=b,dc=example,dc=com", b"ou=c,dc=example,dc=com"]
    assert sent[3].value.value == sent[2].id
    # answers: the first two clients both used messageID 5
    for message in sent[:2]:
        connection.respond(pdus.searchEntry(message.value.baseObject.decode(), message.id) + pdus.searchDone(message.id))
    for client, ou in zip(clients[:2], "ab"):
        entry, done = pdus.decode(client.received())
        assert (entry.id, done.id) == (5, 5)
        assert entry.value.objectName == f"ou={ou},dc=example,dc=com".encode()


def test_idleConnectionWritesAtOnce(writes: list[tuple[Any, bytes]]) -> None:
    """
    Nothing in flight, nothing to batch with: the request goes out at once
    (no wait for the end of the turn, which costs a timed call and its
    reactor work for every lone request); a request behind one in flight
    waits for the turn's write.
    """
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    client = Client(factory)
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=1))
    (connection,) = backends.connections
    (first,) = pdus.decode(readyBatched(connection, reactor))
    connection.respond(pdus.searchDone(first.id))
    client.received()
    del writes[:]
    client.send(pdus.search("ou=b,dc=example,dc=com", messageID=2))
    assert len(writes) == 1  # idle: at once
    client.send(pdus.search("ou=c,dc=example,dc=com", messageID=3))
    client.send(pdus.search("ou=d,dc=example,dc=com", messageID=4))
    assert len(writes) == 1
    reactor.advance(0)
    assert len(writes) == 2  # the two behind it, together
    assert [m.value.baseObject for m in pdus.decode(connection.sent())] == [
        b"ou=b,dc=example,dc=com",
        b"ou=c,dc=example,dc=com",
        b"ou=d,dc=example,dc=com",
    ]


def test_closeFlushesPendingRequests(writes: list[tuple[Any, bytes]]) -> None:
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    client = Client(factory)
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=1))
    (connection,) = backends.connections
    first = readyBatched(connection, reactor)
    client.send(pdus.search("ou=b,dc=example,dc=com", messageID=2))
    connection.protocol.connection.close(unbind=True)
    assert connection.transport is not None and connection.transport.disconnecting
    sent = pdus.decode(first + connection.sent())
    assert [type(m.value).__name__ for m in sent] == ["LDAPSearchRequest", "LDAPSearchRequest", "LDAPUnbindRequest"]
    reactor.advance(0)  # the scheduled flush finds nothing left
    assert connection.sent() == b""


@pytest.mark.parametrize("clientID", [1, 127, 128, 300, 70000, 0x7FFFFFFF])
@pytest.mark.parametrize("upstreamFirst", [1, 200, 40000, 0x7FFFFFF0])
def test_responsesRenumberedForEveryIDLength(clientID: int, upstreamFirst: int) -> None:
    """Same-length IDs are swapped in place; other lengths re-encode the header."""
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    client = Client(factory)
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=clientID))
    (connection,) = backends.connections
    connection.accept()
    reactor.advance(0)
    (first,) = pdus.decode(connection.sent())
    connection.respond(pdus.searchDone(first.id))
    client.received()
    connection.protocol.connection._nextID = upstreamFirst
    connection.protocol.connection.receiver.keepsIDs = False  # renumbered (the client's own ID is kept when free)
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=clientID))
    reactor.advance(0)
    (request,) = pdus.decode(connection.sent())
    assert request.id == upstreamFirst
    big = "x" * 300  # a long-form outer length
    connection.respond(
        pdus.searchEntry("ou=a,dc=example,dc=com", request.id, [("description", [big])])
        + pdus.searchDone(request.id)
    )
    data = client.received()
    entry, done = pdus.decode(data)
    assert (entry.id, done.id) == (clientID, clientID)
    assert entry.value.attributes == [(b"description", [big.encode()])]
    assert data == pdus.searchEntry("ou=a,dc=example,dc=com", clientID, [("description", [big])]) + pdus.searchDone(clientID)


def test_bindConnectionsWriteAtOnce(writes: list[tuple[Any, bytes]]) -> None:
    """One bind at a time per bind connection: nothing to batch, no turn to wait."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.bind("uid=a,dc=example,dc=com", "secret", messageID=2))
    (connection,) = backends.connections
    connection.accept()  # bind connections have no service identity
    (bind,) = pdus.decode(connection.sent())
    assert bind.value.dn == b"uid=a,dc=example,dc=com"
    connection.respond(pdus.bindResponse(bind.id))
    (answer,) = pdus.decode(client.received())
    assert (answer.id, answer.value.resultCode) == (2, 0)


def oneConnection(reactor: Any, backends: Any, client: Client, messageID: int) -> FakeConnection:
    """The pool's one anonymous connection, ready, with C{client}'s first search answered."""
    client.send(pdus.search("ou=a,dc=example,dc=com", messageID=messageID))
    (connection,) = backends.connections
    connection.accept()
    (first,) = pdus.decode(connection.sent())
    connection.respond(pdus.searchDone(first.id))
    client.received()
    return connection


def test_clientMessageIDKeptWhenFree() -> None:
    """
    A request whose messageID is free on its connection keeps it upstream,
    and its answers come back exactly as the backend sent them; a second
    client's request under the same messageID meanwhile is renumbered.
    """
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    first, second = Client(factory), Client(factory)
    connection = oneConnection(reactor, backends, first, 6)
    request = pdus.search("ou=b,dc=example,dc=com", messageID=7)
    first.send(request)
    assert connection.sent() == request  # as it came
    second.send(pdus.search("ou=c,dc=example,dc=com", messageID=7))
    reactor.advance(0)
    (renumbered,) = pdus.decode(connection.sent())
    assert renumbered.id != 7 and renumbered.value.baseObject == b"ou=c,dc=example,dc=com"
    answer = pdus.searchEntry("ou=b,dc=example,dc=com", 7) + pdus.searchDone(7)
    connection.respond(answer + pdus.searchDone(renumbered.id))
    assert first.received() == answer
    (done,) = pdus.decode(second.received())
    assert done.id == 7


def test_abandonedMessageIDNotTakenAgain() -> None:
    """
    An abandoned operation's late responses may still come: its messageID
    is not kept by the next request that has it, and what still comes
    under it reaches nobody.
    """
    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    first, second = Client(factory), Client(factory)
    connection = oneConnection(reactor, backends, first, 8)
    first.send(pdus.search("ou=b,dc=example,dc=com", messageID=9))
    assert pdus.decode(connection.sent())[0].id == 9
    first.send(pdus.message(pureldap.LDAPAbandonRequest(id=9), 10))
    reactor.advance(0)
    (abandon,) = pdus.decode(connection.sent())
    assert abandon.value.value == 9
    second.send(pdus.search("ou=c,dc=example,dc=com", messageID=9))
    reactor.advance(0)
    (request,) = pdus.decode(connection.sent())
    assert request.id not in (9, abandon.id)
    connection.respond(pdus.searchEntry("ou=b,dc=example,dc=com", 9))
    assert second.received() == b"" and first.received() == b""
    connection.respond(pdus.searchDone(request.id))
    (done,) = pdus.decode(second.received())
    assert done.id == 9
    connection.respond(pdus.searchDone(9))  # the abandoned search's last word: 9 is free again
    assert first.received() == b"" and second.received() == b""
    first.send(pdus.search("ou=d,dc=example,dc=com", messageID=9))
    reactor.advance(0)
    (again,) = pdus.decode(connection.sent())
    assert again.id == 9


def test_manyAbandonedRenumberBeyondThem() -> None:
    """
    Past MAX_KEPT_DROPPED abandoned operations a connection stops keeping
    clients' messageIDs and allocates beyond every one it kept out of use.
    """
    from ldaproute.backends.responses import MAX_KEPT_DROPPED

    factory, backends, reactor = proxy(CONFIG.replace("shared_connections = 2", "shared_connections = 1"))
    client = Client(factory)
    connection = oneConnection(reactor, backends, client, 1)
    backend = connection.protocol.connection
    highest = 5000 + MAX_KEPT_DROPPED
    for messageID in range(5000, highest + 1):
        client.send(pdus.search("ou=b,dc=example,dc=com", messageID=messageID))
        client.send(pdus.message(pureldap.LDAPAbandonRequest(id=messageID), 2))
    reactor.advance(0)
    assert not backend.receiver.keepsIDs and not backend.receiver.dropped
    connection.sent()
    client.send(pdus.search("ou=c,dc=example,dc=com", messageID=3))
    reactor.advance(0)
    (request,) = pdus.decode(connection.sent())
    assert request.id > highest
    connection.respond(pdus.searchDone(request.id))
    (done,) = pdus.decode(client.received())
    assert done.id == 3


def test_bindKeepsItsMessageID() -> None:
    """A bind connection carries one bind at a time: the bind and its answer go as they are."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    bind = pdus.bind("uid=a,dc=example,dc=com", "secret", messageID=2)
    client.send(bind)
    (connection,) = backends.connections
    connection.accept()
    assert connection.sent() == bind
    connection.respond(pdus.bindResponse(2))
    assert client.received() == pdus.bindResponse(2)


def test_replayRenumberedBackToTheClientsID() -> None:
    """
    A read renumbered on a connection that died is sent again on another
    under the messageID that connection keys it by (the client's own, free
    there), and its answer reaches the client.
    """
    factory, backends, reactor = proxy(CONFIG)
    first, second = Client(factory), Client(factory)
    first.send(pdus.search("ou=a,dc=example,dc=com", messageID=4))
    one, other = backends.connections
    one.accept()
    (kept,) = pdus.decode(one.sent())
    assert kept.id == 4
    one.protocol.connection.receiver.keepsIDs = False
    second.send(pdus.search("ou=b,dc=example,dc=com", messageID=4))  # only one is ready
    (renumbered,) = pdus.decode(one.sent())
    assert renumbered.id != 4
    other.accept()
    one.respond(pdus.searchDone(4))
    first.received()
    one.drop()
    reactor.advance(0)
    (replay,) = pdus.decode(other.sent())
    assert (replay.id, replay.value.baseObject) == (4, b"ou=b,dc=example,dc=com")
    other.respond(pdus.searchDone(4))
    assert [(m.id, m.value.resultCode) for m in pdus.decode(second.received())] == [(4, 0)]
