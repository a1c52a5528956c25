"""The client side of the proxy, on in-memory transports: relay, failures, protocol errors."""

from __future__ import annotations

from ldaptor.protocols import pureldap
from zope.interface.verify import verifyObject

from ldaproute.backends.interfaces import ILinkOwner
from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, boundClient, proxy

CONFIG = """
[ldaproute]
listen = tcp:10389
max_pdu_bytes = 2000
; these tests bind with passwords over in-memory cleartext transports
require_tls_for_simple_bind = off
[backend:a]
url = ldap://a.example:389
[backend:b]
url = ldap://b.example:389
[pool:main]
backends = a, b
[route:all]
pool = main
"""


def results(data: bytes) -> list[tuple[int, str, int, bytes]]:
    """(messageID, response class, resultCode, message) of each PDU."""
    out = []
    for message in pdus.decode(data):
        value = message.value
        out.append((message.id, type(value).__name__, getattr(value, "resultCode", None), getattr(value, "errorMessage", None)))
    return out


def test_searchRelayedAsBackendBytes() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    request = pdus.search(messageID=5)
    client.send(request)
    [connection] = backends.connections
    assert connection.backend == "a"
    connection.accept()
    assert connection.sent() == request
    answer = pdus.searchEntry("cn=a,dc=example,dc=com", 5) + pdus.searchDone(5)
    # split across reads: the client still gets exactly the backend's bytes
    connection.respond(answer[:7])
    connection.respond(answer[7:])
    assert client.received() == answer
    assert client.protocol.session.outstanding == {}


def test_pipelinedRequestsQueueWhileConnecting() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    requests = pdus.search(messageID=1) + pdus.search(messageID=2) + pdus.search(messageID=3)
    client.send(requests)
    [connection] = backends.connections
    connection.accept()
    assert connection.sent() == requests
    assert sorted(client.protocol.session.outstanding) == [1, 2, 3]


def test_newSessionsTakeBackendsInTurn() -> None:
    factory, backends, _ = proxy(CONFIG)
    for _ in range(4):
        Client(factory).send(pdus.search())
    assert [c.backend for c in backends.connections] == ["a", "b", "a", "b"]


def test_refusedBackendFailsOverToNext() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=9))
    backends.connections[0].refuse()
    second = backends.connections[1]
    assert second.backend == "b"
    second.accept()
    assert second.sent() == pdus.search(messageID=9)
    assert client.received() == b""


def test_wholePoolDownAnswersUnavailable() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=3) + pdus.bind("cn=x", "pw", 4))
    backends.connections[0].refuse()
    backends.connections[1].refuse()
    assert results(client.received()) == [
        (3, "LDAPSearchResultDone", 52, b"no backend of pool 'main' is reachable (tried: a, b)"),
        (4, "LDAPBindResponse", 52, b"no backend of pool 'main' is reachable (tried: a, b)"),
    ]
    assert client.protocol.session.outstanding == {}
    assert client.transport.connected


def test_backendDropsMidOperation() -> None:
    factory, backends, _ = proxy(CONFIG)
    client, first = boundClient(factory, backends)
    client.send(pdus.search(messageID=2) + pdus.search(messageID=3))
    first.respond(pdus.searchEntry("cn=a", 2))
    first.drop()
    answers = results(client.received())
    assert answers[0][:2] == (2, "LDAPSearchResultEntry")
    assert sorted(answers[1:]) == [
        (2, "LDAPSearchResultDone", 52, b"connection to backend a of pool 'main' lost"),
        (3, "LDAPSearchResultDone", 52, b"connection to backend a of pool 'main' lost"),
    ]
    # the next operation reconnects and replays the simple bind first
    client.send(pdus.search(messageID=4))
    second = backends.connections[1]
    second.accept()
    [replayed] = pdus.decode(second.sent())
    assert isinstance(replayed.value, pureldap.LDAPBindRequest)
    assert (replayed.value.dn, replayed.value.auth) == (b"uid=u,dc=example,dc=com", b"secret")
    second.respond(pdus.bindResponse(replayed.id, 0))
    assert second.sent() == pdus.search(messageID=4)
    assert client.received() == b""  # the replayed bind's answer is the proxy's own
    second.respond(pdus.searchDone(4))
    assert results(client.received()) == [(4, "LDAPSearchResultDone", 0, b"")]


def test_refusedReplayAsksClientToBindAgain() -> None:
    factory, backends, _ = proxy(CONFIG)
    client, first = boundClient(factory, backends)
    first.drop()
    client.send(pdus.search(messageID=2))
    second = backends.connections[1]
    second.accept()
    [replayed] = pdus.decode(second.sent())
    second.respond(pdus.bindResponse(replayed.id, ber.INVALID_CREDENTIALS))
    [(messageID, kind, code, text)] = results(client.received())
    assert (messageID, kind, code) == (2, "LDAPSearchResultDone", ber.OPERATIONS_ERROR)
    assert b"bind again" in text
    assert second.sent() == b""  # the search never ran anonymously


def test_saslIdentityIsNotReplayed() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    sasl = pdus.message(pureldap.LDAPBindRequest(dn="", auth=("EXTERNAL", None), sasl=True), 1)
    client.send(sasl)
    first = backends.connections[0]
    first.accept()
    first.respond(pdus.bindResponse(1, 0))
    client.received()
    first.drop()
    client.send(pdus.search(messageID=2))
    [(messageID, _, code, text)] = results(client.received())
    assert (messageID, code) == (2, ber.OPERATIONS_ERROR)
    assert b"bind again" in text
    assert len(backends.connections) == 1
    # binding again clears it
    client.send(pdus.bind("", "", 3))
    backends.connections[1].accept()
    assert backends.connections[1].sent() == pdus.bind("", "", 3)


def test_clientDisconnectClosesUpstream() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    transport = backends.connections[0].accept()
    client.protocol.connectionLost(None)  # type: ignore[arg-type]
    assert transport.disconnecting


def test_unbindClosesEverything() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    connection = backends.connections[0]
    transport = connection.accept()
    connection.sent()
    client.send(pdus.message(pureldap.LDAPUnbindRequest(), 2))
    assert client.transport.disconnecting
    assert transport.disconnecting
    [unbind] = pdus.decode(connection.sent())
    assert isinstance(unbind.value, pureldap.LDAPUnbindRequest)


def test_abandonGoesToTheOperationsUpstream() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    connection = backends.connections[0]
    connection.accept()
    connection.sent()
    abandon = pdus.message(pureldap.LDAPAbandonRequest(id=1), 2)
    client.send(abandon)
    assert connection.sent() == abandon
    assert client.protocol.session.outstanding == {}
    # an abandon of an unknown (or answered) ID goes to the backend too,
    # which discards it (RFC 4511 4.11) as it would without the proxy
    late = pdus.message(pureldap.LDAPAbandonRequest(id=99), 3)
    client.send(late)
    assert connection.sent() == late and client.received() == b""


def _assertNoticeAndClosed(client: Client, text: bytes) -> None:
    [(messageID, kind, code, message)] = results(client.received())
    assert (messageID, kind, code) == (0, "LDAPExtendedResponse", ber.PROTOCOL_ERROR)
    assert text in message
    assert client.transport.disconnecting


def test_httpRequestGetsNoticeOfDisconnection() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(b"GET / HTTP/1.1\r\nHost: ldap\r\n\r\n")
    _assertNoticeAndClosed(client, b"expected an LDAPMessage SEQUENCE")
    assert backends.connections == []


def test_oversizedPDU() -> None:
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.add("cn=big,dc=x", [("description", ["x" * 3000])]))
    _assertNoticeAndClosed(client, b"exceeds the limit of 2000")


def test_notAnLDAPMessage() -> None:
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(b"\x30\x05\x02\x01\x01\x99\x00")
    _assertNoticeAndClosed(client, b"unknown request operation tag 0x99")


def test_messageIDZero() -> None:
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=0))
    _assertNoticeAndClosed(client, b"messageID 0 is reserved")


def test_duplicateMessageIDInFlight() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    backends.connections[0].accept()
    client.send(pdus.search(messageID=1))
    _assertNoticeAndClosed(client, b"already in use")


def test_protocolErrorDropsUpstreamToo() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    transport = backends.connections[0].accept()
    client.send(b"\x31\x00")
    assert transport.disconnecting


def test_backendGarbageFailsOperations() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    connection = backends.connections[0]
    connection.accept()
    connection.respond(b"HTTP/1.0 200 OK\r\n")
    [(messageID, _, code, text)] = results(client.received())
    assert (messageID, code) == (1, ber.UNAVAILABLE)
    assert text.startswith(b"backend sent a malformed response")


def test_startTLSRefusedAndConnectionUsable() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPStartTLSRequest(), 1))
    [(messageID, kind, code, _)] = results(client.received())
    assert (messageID, kind, code) == (1, "LDAPExtendedResponse", ber.PROTOCOL_ERROR)
    client.send(pdus.search(messageID=2))
    assert len(backends.connections) == 1


def test_rejectRoute() -> None:
    config = CONFIG.replace("[route:all]", "[route:ro]\noperations = write\nreject = 53 read-only here\n[route:all]")
    factory, backends, _ = proxy(config)
    client = Client(factory)
    client.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 4))
    assert results(client.received()) == [(4, "LDAPDelResponse", 53, b"read-only here")]
    assert backends.connections == []


def test_malformedSearchAcrossRoutesGetsNotice() -> None:
    """
    A search that must be planned across routes but whose fields do not
    parse is the client's protocol error, not an unhandled exception (found
    by the atheris fuzz target).
    """
    config = CONFIG.replace("[route:all]", "[route:corp]\nsuffix = dc=corp,dc=example,dc=com\npool = main\n[route:all]")
    factory, backends, _ = proxy(config)
    client = Client(factory)
    for body, reason in [
        (bytes.fromhex("0400") + b"\x0a\x05\x02", b"truncated"),  # the scope element overruns
        (bytes.fromhex("0400"), b""),  # no scope at all
    ]:
        client = Client(factory)
        client.send(ber.message(3, ber.tlv(ber.SEARCH_REQUEST, body)))
        _assertNoticeAndClosed(client, reason)
    assert backends.connections == []


def test_endpointForAddressesAvoidsTheResolver() -> None:
    """Backends given by address connect directly; names go through HostnameEndpoint."""
    from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.testing import MemoryReactor

    from ldaproute.config import Backend, BackendURL
    from ldaproute.backends.pool import BackendState
    from ldaproute.backends.connection import endpointFor

    reactor = MemoryReactor()
    for host, kind in (("127.0.0.1", TCP4ClientEndpoint), ("::1", TCP6ClientEndpoint), ("ldap.example.com", HostnameEndpoint)):
        state = BackendState(Backend("b", BackendURL("ldap", host, 389)))
        assert isinstance(endpointFor(reactor, state, 5.0), kind), host


def test_frontendProvidesILinkOwner() -> None:
    """The client connection is what links report to: it provides L{ILinkOwner} in full."""
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    assert verifyObject(ILinkOwner, client.protocol)
