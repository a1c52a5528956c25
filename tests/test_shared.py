"""Shared mode on in-memory transports: ID remapping, control insertion, routing of responses, abandon, failures."""

from __future__ import annotations

import pytest
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.backends import shared
from ldaproute.wire.pdu import CANCEL_OID, PROXIED_AUTHZ_OID, cancelIDAt, cancelRequest, messageIDSpan, withMessageID
from tests import pdus
from tests.fakes import Client, FakeConnection, boundClient, proxy, refusePending

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = shared
require_tls_for_simple_bind = off
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
shared_connections = 2
bind_connections = 1
service_bind_dn = cn=proxy,dc=example,dc=com
service_bind_password = proxypw
[route:all]
pool = main
"""

SERVICE_BIND = ber.simpleBindRequest(1, b"cn=proxy,dc=example,dc=com", b"proxypw")


def decodeOne(data: bytes) -> pureldap.LDAPMessage:
    [message] = pdus.decode(data)
    if message.controls:  # ldaptor reads BOOLEAN TRUE as 255
        message.controls = [(oid, bool(critical), value) for oid, critical, value in message.controls]
    return message


# --- the link, on fakes -------------------------------------------------------


def ready(connection: FakeConnection, service: bool = True) -> None:
    """
    Accept a connection and answer the proxy's service bind, if it sends
    one (anonymous clients' connections and bind connections are not bound).
    """
    transport = connection.accept()
    if service and transport.value().startswith(SERVICE_BIND):
        rest = transport.value()[len(SERVICE_BIND) :]
        transport.clear()
        transport.write(rest)
        connection.respond(pdus.bindResponse(1))


def opened(backends, count: int) -> list[FakeConnection]:  # type: ignore[no-untyped-def]
    assert len(backends.connections) == count
    return backends.connections


def test_clientsMultiplexedWithRemappedIDs() -> None:
    factory, backends, _ = proxy(CONFIG)
    clients = [Client(factory) for _ in range(3)]
    clients[0].send(pdus.search("ou=a,dc=example,dc=com", messageID=1))
    first, second = opened(backends, 2)  # shared_connections = 2, opened on demand
    ready(first)
    ready(second)
    # the waiting request went out on the first ready connection; an anonymous
    # client's on connections bound anonymously, without Proxied Authorization
    sent = decodeOne(first.sent())
    assert sent.controls is None
    clients[1].send(pdus.search("ou=b,dc=example,dc=com", messageID=1))
    clients[2].send(pdus.search("ou=c,dc=example,dc=com", messageID=1))
    onFirst = pdus.decode(first.sent())
    onSecond = pdus.decode(second.sent())
    assert len(onFirst) + len(onSecond) == 2
    assert len(backends.connections) == 2  # no more connections for more clients
    # answer every operation, last first
    for connection, message in [(first, sent)] + [(first, m) for m in onFirst] + [(second, m) for m in onSecond]:
        base = message.value.baseObject.decode()
        connection.respond(pdus.searchEntry(base, message.id) + pdus.searchDone(message.id))
    for client, ou in zip(clients, "abc"):
        entry, done = pdus.decode(client.received())
        assert (entry.id, done.id) == (1, 1)
        assert entry.value.objectName == f"ou={ou},dc=example,dc=com".encode()
        assert client.protocol.session.outstanding == {}


def test_bindOnBindConnectionThenIdentityAsserted() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.bind("uid=u1,dc=example,dc=com", "pw", messageID=1))
    [bindConnection] = opened(backends, 1)
    ready(bindConnection, service=False)  # bind connections stay anonymous
    forwarded = decodeOne(bindConnection.sent())
    assert forwarded.value.dn == b"uid=u1,dc=example,dc=com" and forwarded.controls is None
    bindConnection.respond(pdus.bindResponse(forwarded.id, 0))
    assert decodeOne(client.received()).value.resultCode == 0
    client.send(pdus.search(messageID=2))
    shared1, shared2 = backends.connections[1:]
    ready(shared1)
    ready(shared2)
    message = decodeOne(shared1.sent())
    assert message.controls == [(PROXIED_AUTHZ_OID, True, b"dn:uid=u1,dc=example,dc=com")]
    shared1.respond(pdus.searchDone(message.id))
    assert decodeOne(client.received()).id == 2


def test_failedBindLeavesClientAnonymous() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.bind("uid=u1,dc=example,dc=com", "wrong", messageID=1))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    bindConnection.respond(pdus.bindResponse(decodeOne(bindConnection.sent()).id, ber.INVALID_CREDENTIALS))
    assert decodeOne(client.received()).value.resultCode == ber.INVALID_CREDENTIALS
    assert client.protocol.session.identity.kind == "anonymous"


def test_saslExternalRefused() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPBindRequest(dn="", auth=("EXTERNAL", None), sasl=True), 4))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (4, ber.AUTH_METHOD_NOT_SUPPORTED)
    assert b"mode = session" in answer.value.errorMessage
    assert backends.connections == []


@pytest.mark.parametrize(
    "oid, name",
    [(b"1.3.6.1.4.1.1466.20037", b"StartTLS"), (b"1.3.6.1.4.1.4203.1.11.99", b"1.3.6.1.4.1.4203.1.11.99")],
)
def test_statefulExtendedRefused(oid: bytes, name: bytes) -> None:
    factory, backends, _ = proxy(CONFIG.replace("mode = shared", "mode = shared\nstarttls = passthrough"))
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPExtendedRequest(requestName=oid), 3))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (3, ber.UNWILLING_TO_PERFORM)
    assert name in answer.value.errorMessage and b"shared mode" in answer.value.errorMessage


def test_whoamiAnsweredFromVerifiedIdentity() -> None:
    """389 DS answers Who Am I with the service account: the proxy answers it itself."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPExtendedRequest(requestName=shared.WHOAMI_OID.decode()), 3))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode, answer.value.response) == (3, 0, b"")
    assert backends.connections == []
    bound, _ = boundClient(factory, backends, "uid=u1,dc=example,dc=com")
    bound.send(pdus.message(pureldap.LDAPExtendedRequest(requestName=shared.WHOAMI_OID.decode()), 4))
    answer = decodeOne(bound.received())
    assert (answer.id, answer.value.resultCode, answer.value.response) == (4, 0, b"dn:uid=u1,dc=example,dc=com")


def passwordModify(messageID: int, value: bytes | None) -> bytes:
    return pdus.message(pureldap.LDAPExtendedRequest(requestName=shared.PASSWORD_MODIFY_OID.decode(), requestValue=value), messageID)


@pytest.mark.parametrize(
    "value, sentValue",
    [
        (None, b"\x30\x1a\x80\x18uid=u1,dc=example,dc=com"),
        (b"\x30\x05\x82\x03new", b"\x30\x1f\x80\x18uid=u1,dc=example,dc=com\x82\x03new"),
        (b"\x30\x0b\x80\x09uid=other", b"\x30\x0b\x80\x09uid=other"),
    ],
)
def test_passwordModifyGetsTheBoundClientsIdentity(value: bytes | None, sentValue: bytes) -> None:
    factory, backends, _ = proxy(CONFIG)
    client, _ = boundClient(factory, backends, "uid=u1,dc=example,dc=com")
    client.send(passwordModify(5, value))
    for connection in backends.connections[1:]:
        ready(connection)
    sent = pdus.decode(b"".join(c.sent() for c in backends.connections[1:]))
    [request] = [m for m in sent if isinstance(m.value, pureldap.LDAPExtendedRequest)]
    assert request.value.requestValue == sentValue
    assert [(oid, value) for oid, _, value in request.controls] == [(PROXIED_AUTHZ_OID, b"dn:uid=u1,dc=example,dc=com")]


def test_clientProxiedAuthorizationRefused() -> None:
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    request = pdus.message(
        pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), 2,
        controls=[(PROXIED_AUTHZ_OID.decode(), True, b"dn:cn=admin,dc=example,dc=com")],
    )
    client.send(request)
    assert decodeOne(client.received()).value.resultCode == ber.UNWILLING_TO_PERFORM


def twoReady(backends):  # type: ignore[no-untyped-def]
    first, second = backends.connections
    ready(first)
    ready(second)
    return first, second


def test_abandonTranslated() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=9))
    first, second = twoReady(backends)
    upstreamID = decodeOne(first.sent()).id
    client.send(pdus.message(pureldap.LDAPAbandonRequest(id=9), 10))
    abandon = decodeOne(first.sent())
    assert isinstance(abandon.value, pureldap.LDAPAbandonRequest) and abandon.value.value == upstreamID
    assert abandon.id != upstreamID
    # a late entry of the abandoned search is dropped
    first.respond(pdus.searchEntry("cn=late,dc=example,dc=com", upstreamID) + pdus.searchDone(upstreamID))
    assert client.received() == b""


def test_disconnectAbandonsOutstandingUpstream() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1) + pdus.search(messageID=2))
    first, second = twoReady(backends)
    ids = [m.id for m in pdus.decode(first.sent() + second.sent())]
    assert len(ids) == 2
    client.protocol.connectionLost()
    abandoned = sorted(m.value.value for m in pdus.decode(first.sent() + second.sent()))
    assert abandoned == sorted(ids)
    assert first.transport.connected and second.transport.connected  # shared connections stay


def test_lostConnectionFailsOnlyItsOperations() -> None:
    factory, backends, clock = proxy(CONFIG)
    a, b = Client(factory), Client(factory)
    a.send(pdus.search(messageID=1))
    first, second = twoReady(backends)
    assert first.sent()  # a's went out on the first ready one
    b.send(pdus.search(messageID=1))
    b.send(pdus.search(messageID=2))
    onSecond = second.sent()
    assert first.sent() and onSecond  # b's: one on each (in turn)
    first.drop()
    # the searches the lost connection carried go out again, on the other one
    # (on the next reactor turn: the losses of one dying backend come first)
    assert second.sent() == b""
    clock.advance(0)
    assert a.received() == b"" and b.received() == b""
    replayed = [message.id for message in pdus.decode(second.sent())]
    assert len(replayed) == 2
    for upstreamID in [decodeOne(onSecond).id, *replayed]:
        second.respond(pdus.searchDone(upstreamID))
    assert [(m.id, m.value.resultCode) for m in pdus.decode(a.received())] == [(1, 0)]
    assert sorted((m.id, m.value.resultCode) for m in pdus.decode(b.received())) == [(1, 0), (2, 0)]
    assert a.protocol.session.outstanding == {} and b.protocol.session.outstanding == {}
    # the pool reconnects on demand
    a.send(pdus.search(messageID=2))
    assert len(backends.connections) == 3
    ready(backends.connections[2])
    assert decodeOne(second.sent() + backends.connections[2].sent()).value.baseObject == b"dc=example,dc=com"


def test_oneDyingBackendCountsAsOneLoss() -> None:
    """
    A backend that dies loses its connections one by one: a read replayed
    onto another connection of that death, ready before it, is not charged
    for that connection's loss too; each later death is charged, and past
    the second the read is answered 52.
    """
    factory, backends, clock = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    first, second = twoReady(backends)
    assert first.sent() and second.sent() == b""
    first.drop()
    clock.advance(0)
    assert second.sent()  # replayed on the other connection
    second.drop()  # the same death: the replay goes out again, on a new connection
    clock.advance(0)
    assert client.received() == b""
    for death in (1, 2):
        connection = backends.connections[-1]
        ready(connection)
        assert connection.sent()
        connection.drop()  # a backend that came back and died again
        clock.advance(0)
        if death == 1:
            assert client.received() == b""
    [answer] = pdus.decode(client.received())
    assert (answer.id, answer.value.resultCode) == (1, ber.UNAVAILABLE)


def test_lostConnectionAnswersItsWrites() -> None:
    """A write the lost connection carried is answered 52: it may have been applied."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 1))
    first, second = twoReady(backends)
    carrying = first if first.sent() else second
    carrying.drop()
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (1, ber.UNAVAILABLE)


def test_unreachableBackendWaitsThenServes() -> None:
    """Every connection refused: the request waits while the pool reconnects, and goes out once one is ready."""
    factory, backends, clock = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    for connection in list(backends.connections):
        connection.refuse()
    assert client.received() == b""
    clock.advance(0.01)
    fresh = backends.connections[2:]
    assert fresh
    ready(fresh[0])
    (sent,) = pdus.decode(fresh[0].sent())
    fresh[0].respond(pdus.searchDone(sent.id))
    assert decodeOne(client.received()).value.resultCode == ber.SUCCESS
    assert factory.runtime.backends.pools["main"].faults.waited == 1


def test_unreachableBackendBudgetSpent() -> None:
    """Refused for the whole budget: Notice of Disconnection (the default), and the pool stops reconnecting."""
    factory, backends, clock = proxy(CONFIG.replace("backends = a\n", "backends = a\nretry_budget = 300ms\n"))
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    for _ in range(40):
        refusePending(backends)
        clock.advance(0.02)
    (notice,) = pdus.decode(client.received())
    assert notice.id == 0 and notice.value.resultCode == ber.UNAVAILABLE
    assert b"retry_budget of 0.3s" in notice.value.errorMessage
    attempts = len(backends.connections)
    refusePending(backends)
    clock.advance(5)
    assert len(backends.connections) == attempts


def test_unreachableBackendBindWaitsThenServes() -> None:
    """
    A bind while every connection is refused waits within its retry budget
    while its bind connection reconnects (a backend restart), as other
    operations do, and goes out once the backend takes the connection.
    """
    factory, backends, clock = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.bind("uid=alice,dc=example,dc=com", "secret", messageID=1))
    for _ in range(5):
        refusePending(backends)
        clock.advance(0.05)
    assert client.received() == b""
    fresh = [c for c in backends.connections if not c.deferred.called]
    assert fresh, "the bind connection stopped reconnecting"
    for connection in fresh:
        ready(connection, service=False)
    carrying = [(c, m) for c in fresh for m in pdus.decode(c.sent()) if isinstance(m.value, pureldap.LDAPBindRequest)]
    assert len(carrying) == 1  # the client's bind, on the bind connection that came up
    connection, bind = carrying[0]
    connection.respond(pdus.bindResponse(bind.id))
    (answer,) = pdus.decode(client.received())
    assert (answer.id, answer.value.resultCode) == (1, ber.SUCCESS)


def test_bindWaitingBehindHeldConnectionsOutlivesItsBudget() -> None:
    """
    The retry budget is for a backend that cannot be reached: once a bind
    connection is up, a bind queued behind the one it carries waits its
    turn past the budget instead of being answered unavailable.
    """
    factory, backends, clock = proxy(
        CONFIG.replace("backends = a\n", "backends = a\nretry_budget = 300ms\nmax_bind_connections = 1\n")
    )
    first, second = Client(factory), Client(factory)
    first.send(pdus.bind("uid=alice,dc=example,dc=com", "secret", messageID=1))
    second.send(pdus.bind("uid=bob,dc=example,dc=com", "secret", messageID=1))
    refusePending(backends)
    clock.advance(0.05)
    fresh = [c for c in backends.connections if not c.deferred.called]
    for connection in fresh:
        ready(connection, service=False)
    carrying = [(c, m) for c in fresh for m in pdus.decode(c.sent()) if isinstance(m.value, pureldap.LDAPBindRequest)]
    assert len(carrying) == 1
    connection, bind = carrying[0]
    clock.advance(1)  # past the budget: the second bind still waits for the connection
    assert first.received() == b"" and second.received() == b""
    connection.respond(pdus.bindResponse(bind.id))
    (answer,) = pdus.decode(first.received())
    assert answer.value.resultCode == ber.SUCCESS
    (next,) = pdus.decode(connection.sent())
    assert next.value.dn == b"uid=bob,dc=example,dc=com"
    connection.respond(pdus.bindResponse(next.id))
    (answer,) = pdus.decode(second.received())
    assert answer.value.resultCode == ber.SUCCESS


def test_unreachableBackendBindBudgetSpent() -> None:
    """Refused for the whole budget: the bind is answered as any operation, and the pool stops reconnecting."""
    factory, backends, clock = proxy(CONFIG.replace("backends = a\n", "backends = a\nretry_budget = 300ms\n"))
    client = Client(factory)
    client.send(pdus.bind("uid=alice,dc=example,dc=com", "secret", messageID=1))
    for _ in range(40):
        refusePending(backends)
        clock.advance(0.02)
    (notice,) = pdus.decode(client.received())
    assert notice.value.resultCode == ber.UNAVAILABLE
    assert b"retry_budget of 0.3s" in notice.value.errorMessage
    attempts = len(backends.connections)
    refusePending(backends)
    clock.advance(5)
    assert len(backends.connections) == attempts


def test_unreachableBackendAnswers52() -> None:
    """C{retry_budget = off}: answered 52 at once."""
    factory, backends, _ = proxy(CONFIG.replace("backends = a\n", "backends = a\nretry_budget = off\n"))
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    for connection in list(backends.connections):
        connection.refuse()
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (1, ber.UNAVAILABLE)
    assert b"not reachable" in answer.value.errorMessage or b"reachable" in answer.value.errorMessage


def test_serviceIdentityRefused() -> None:
    factory, backends, _ = proxy(CONFIG)
    client, _ = boundClient(factory, backends)
    client.send(pdus.search(messageID=1))
    first, second = backends.connections[1:]
    first.accept()
    first.respond(pdus.bindResponse(1, ber.INVALID_CREDENTIALS))
    second.accept()
    second.respond(pdus.bindResponse(1, ber.INVALID_CREDENTIALS))
    answer = decodeOne(client.received())
    assert answer.value.resultCode == ber.UNAVAILABLE
    assert b"service identity" in answer.value.errorMessage


def test_cancelTranslated() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=5))
    first, second = twoReady(backends)
    upstreamID = decodeOne(first.sent()).id
    client.send(cancelRequest(6, 5))
    cancel = decodeOne(first.sent())
    assert cancel.value.requestName == CANCEL_OID
    assert cancelIDAt(withMessageID(cancel.toWire(), 1), messageIDSpan(cancel.toWire())[2]) == upstreamID
    client.send(cancelRequest(7, 99))
    assert decodeOne(client.received()).value.resultCode == shared.NO_SUCH_OPERATION


def test_operationTimeoutAbandonsButKeepsConnection() -> None:
    factory, backends, reactor = proxy(CONFIG.replace("bind_connections = 1", "bind_connections = 1\noperation_timeout = 2s"))
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    first, second = twoReady(backends)
    upstreamID = decodeOne(first.sent()).id
    reactor.advance(3)
    assert decodeOne(client.received()).value.resultCode == ber.TIME_LIMIT_EXCEEDED
    assert decodeOne(first.sent()).value.value == upstreamID
    assert first.transport.connected


def test_backpressurePausesClient() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    first, second = twoReady(backends)
    first.protocol.connection.pauseProducing()
    second.protocol.connection.pauseProducing()
    client.send(pdus.search(messageID=2))
    assert client.transport.producerState == "paused"
    first.protocol.connection.resumeProducing()
    assert client.transport.producerState == "paused"
    second.protocol.connection.resumeProducing()
    assert client.transport.producerState == "producing"


def test_bindsOneAtATimePerBindConnection() -> None:
    """slapd abandons a connection's outstanding operations when a bind arrives."""
    factory, backends, _ = proxy(CONFIG.replace("bind_connections = 1", "bind_connections = 1\nmax_bind_connections = 1"))
    clients = [Client(factory) for _ in range(3)]
    for i, client in enumerate(clients):
        client.send(pdus.bind(f"uid=u{i},dc=example,dc=com", "pw", messageID=1))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    for i in range(3):
        [forwarded] = pdus.decode(bindConnection.sent())
        assert forwarded.value.dn == f"uid=u{i},dc=example,dc=com".encode()
        bindConnection.respond(pdus.bindResponse(forwarded.id, 0))
        assert decodeOne(clients[i].received()).value.resultCode == 0
    assert bindConnection.sent() == b""


def test_queuedBindOfDepartedClientSkipped() -> None:
    factory, backends, _ = proxy(CONFIG.replace("bind_connections = 1", "bind_connections = 1\nmax_bind_connections = 1"))
    a, b = Client(factory), Client(factory)
    a.send(pdus.bind("uid=a,dc=example,dc=com", "pw", messageID=1))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first = decodeOne(bindConnection.sent())
    b.send(pdus.bind("uid=b,dc=example,dc=com", "pw", messageID=1))
    assert bindConnection.sent() == b""  # queued behind a's
    b.protocol.connectionLost()
    bindConnection.respond(pdus.bindResponse(first.id, 0))
    assert bindConnection.sent() == b""


MORE_BINDS = CONFIG.replace("bind_connections = 1", "bind_connections = 1\nmax_bind_connections = 3\noperation_timeout = 5s")


def bindsOn(connection: FakeConnection) -> list[pureldap.LDAPMessage]:
    return [m for m in pdus.decode(connection.sent()) if isinstance(m.value, pureldap.LDAPBindRequest)]


def test_bindConnectionsGrowWhileBindsWait() -> None:
    """As many binds at once as bind connections, opened on demand up to max_bind_connections."""
    factory, backends, _ = proxy(MORE_BINDS)
    clients = [Client(factory) for _ in range(5)]
    for i, client in enumerate(clients):
        client.send(pdus.bind(f"uid=u{i},dc=example,dc=com", "pw", messageID=1))
    assert len(backends.connections) == 3  # max_bind_connections
    for connection in backends.connections:
        ready(connection, service=False)
    sent = {id(c): bindsOn(c) for c in backends.connections}
    assert sorted(len(binds) for binds in sent.values()) == [1, 1, 1]  # never two binds on one connection
    # each result frees its connection for a waiting bind
    first = backends.connections[0]
    [request] = sent[id(first)]
    first.respond(pdus.bindResponse(request.id, 0))
    [following] = bindsOn(first)
    assert following.value.dn in (b"uid=u3,dc=example,dc=com", b"uid=u4,dc=example,dc=com")
    assert all(bindsOn(c) == [] for c in backends.connections[1:])


def test_timedOutBindRetiresItsConnection() -> None:
    factory, backends, reactor = proxy(MORE_BINDS.replace("max_bind_connections = 3", "max_bind_connections = 1"))
    a, b = Client(factory), Client(factory)
    a.send(pdus.bind("uid=a,dc=example,dc=com", "pw", messageID=1))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    bindsOn(bindConnection)
    reactor.advance(6)
    assert decodeOne(a.received()).value.resultCode == ber.TIME_LIMIT_EXCEEDED
    assert not bindConnection.transport.connected or bindConnection.transport.disconnecting
    # the next bind gets a new connection, not one where a bind may still run
    b.send(pdus.bind("uid=b,dc=example,dc=com", "pw", messageID=1))
    assert len(backends.connections) == 2
    ready(backends.connections[1], service=False)
    assert [m.value.dn for m in bindsOn(backends.connections[1])] == [b"uid=b,dc=example,dc=com"]


def test_clientGoneMidBindFreesConnectionAtResult() -> None:
    factory, backends, _ = proxy(MORE_BINDS.replace("max_bind_connections = 3", "max_bind_connections = 1"))
    a, b = Client(factory), Client(factory)
    a.send(pdus.bind("uid=a,dc=example,dc=com", "pw", messageID=1))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    [request] = bindsOn(bindConnection)
    a.protocol.connectionLost()
    b.send(pdus.bind("uid=b,dc=example,dc=com", "pw", messageID=1))
    assert bindsOn(bindConnection) == []  # a's bind still runs there
    bindConnection.respond(pdus.bindResponse(request.id, 0))
    [following] = bindsOn(bindConnection)
    bindConnection.respond(pdus.bindResponse(following.id, 0))
    assert decodeOne(b.received()).value.resultCode == 0
