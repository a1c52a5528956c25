"""The client side of the proxy, on in-memory transports: relay, failures, protocol errors."""

from __future__ import annotations

import pytest

from ldaptor.protocols import pureldap
from zope.interface.verify import verifyObject

from ldaproute.backends.interfaces import ILinkOwner
from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, boundClient, proxy, refusePending

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


def test_wholePoolDownAnswersUnavailableWithoutBudget() -> None:
    """C{retry_budget = off}: a pool that takes no connection answers 52 at once, the connection stays."""
    factory, backends, _ = proxy(CONFIG.replace("[pool:main]", "[pool:main]\nretry_budget = off"))
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


def test_wholePoolDownWaitsForABackend() -> None:
    """
    Every backend refuses: the operations wait while the proxy reconnects
    with a doubling pause, and go out, in order, once a backend accepts.
    """
    factory, backends, clock = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=3) + pdus.bind("cn=x", "pw", 4))
    backends.connections[0].refuse()
    backends.connections[1].refuse()
    assert client.received() == b""
    assert len(backends.connections) == 2
    clock.advance(0.01)  # the first pause
    assert len(backends.connections) == 3
    backends.connections[2].refuse()
    backends.connections[3].refuse()
    clock.advance(0.01)
    assert len(backends.connections) == 4  # the pause doubled
    clock.advance(0.01)
    assert len(backends.connections) == 5
    upstream = backends.connections[4]
    upstream.accept()
    assert [message.id for message in pdus.decode(upstream.sent())] == [3, 4]
    upstream.respond(pdus.searchDone(3) + pdus.bindResponse(4, 0))
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(3, 0), (4, 0)]
    runtime = factory.runtime
    faults = runtime.backends.pools["main"].faults
    assert (faults.waited, faults.budgetSpent) == (2, 0)
    assert faults.waitSum == pytest.approx(2 * 0.03)
    metrics = runtime.observer.metrics
    metrics.watchState(lambda: runtime)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if "wait" in sample.name or "replayed" in sample.name or "budget" in sample.name
    }
    assert samples[("ldaproute_operations_waited_total", (("pool", "main"),))] == 2
    assert samples[("ldaproute_operation_wait_seconds_bucket", (("le", "0.025"), ("pool", "main")))] == 0
    assert samples[("ldaproute_operation_wait_seconds_bucket", (("le", "0.05"), ("pool", "main")))] == 2
    assert samples[("ldaproute_operation_wait_seconds_count", (("pool", "main"),))] == 2
    assert samples[("ldaproute_operations_budget_spent_total", (("pool", "main"),))] == 0


def test_wholePoolDownBudgetSpentDisconnects() -> None:
    """The budget spent (default C{on_backend_unavailable = disconnect}): Notice of Disconnection, then close."""
    factory, backends, clock = proxy(CONFIG.replace("[pool:main]", "[pool:main]\nretry_budget = 1s"))
    client = Client(factory)
    client.send(pdus.search(messageID=3))
    for _ in range(200):
        refusePending(backends)
        clock.advance(0.05)
        if client.transport.disconnecting:
            break
    assert clock.seconds() == pytest.approx(1.0, abs=0.06)
    [notice] = pdus.decode(client.received())
    assert notice.id == 0 and notice.value.resultCode == ber.UNAVAILABLE
    assert b"retry_budget of 1s" in notice.value.errorMessage
    assert client.transport.disconnecting
    attempts = len(backends.connections)
    clock.advance(5)
    assert len(backends.connections) == attempts  # no more reconnecting
    assert factory.runtime.backends.pools["main"].faults.budgetSpent == 1


def test_wholePoolDownBudgetSpentAnswers() -> None:
    """C{on_backend_unavailable = answer}: each operation gets 52 when its own budget is spent."""
    config = CONFIG.replace("[pool:main]", "[pool:main]\nretry_budget = 1s").replace(
        "max_pdu_bytes = 2000", "max_pdu_bytes = 2000\non_backend_unavailable = answer"
    )
    factory, backends, clock = proxy(config)
    client = Client(factory)
    client.send(pdus.search(messageID=3))
    refused = 0

    def refuseAll() -> None:
        nonlocal refused
        for connection in backends.connections[refused:]:
            connection.refuse()
        refused = len(backends.connections)

    refuseAll()
    clock.advance(0.5)
    refuseAll()
    client.send(pdus.search(messageID=4))  # waits on the same connection, half a budget later
    for _ in range(30):
        clock.advance(0.05)
        refuseAll()
    got = [(m, code) for m, _, code, _ in results(client.received())]
    assert got[0] == (3, 52)
    for _ in range(30):
        clock.advance(0.05)
        refuseAll()
    got += [(m, code) for m, _, code, _ in results(client.received())]
    assert got == [(3, 52), (4, 52)]
    assert client.transport.connected and not client.transport.disconnecting
    assert client.protocol.session.outstanding == {}


def test_backendDropsMidOperation() -> None:
    """
    A search whose entries reached the client cannot be sent again (52);
    one with nothing relayed yet goes out again, after the session's
    simple bind, on a new connection.
    """
    factory, backends, _ = proxy(CONFIG)
    client, first = boundClient(factory, backends)
    client.send(pdus.search(messageID=2) + pdus.search(messageID=3))
    first.respond(pdus.searchEntry("cn=a", 2))
    first.drop()
    answers = results(client.received())
    assert answers[0][:2] == (2, "LDAPSearchResultEntry")
    assert answers[1:] == [(2, "LDAPSearchResultDone", 52, b"connection to backend a of pool 'main' lost")]
    second = backends.connections[1]
    second.accept()
    [replayed] = pdus.decode(second.sent())
    assert isinstance(replayed.value, pureldap.LDAPBindRequest)
    assert (replayed.value.dn, replayed.value.auth) == (b"uid=u,dc=example,dc=com", b"secret")
    second.respond(pdus.bindResponse(replayed.id, 0))
    assert second.sent() == pdus.search(messageID=3)
    assert client.received() == b""  # the replayed bind's answer is the proxy's own
    second.respond(pdus.searchDone(3))
    assert results(client.received()) == [(3, "LDAPSearchResultDone", 0, b"")]
    # the next operation uses the new connection
    client.send(pdus.search(messageID=4))
    assert second.sent() == pdus.search(messageID=4)
    assert len(backends.connections) == 2


def test_backendDropsWritesAnswered() -> None:
    """A write in flight when the backend dies is answered 52: the proxy cannot know whether it was applied."""
    factory, backends, _ = proxy(CONFIG)
    client, first = boundClient(factory, backends)
    client.send(pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 2))
    first.drop()
    assert results(client.received()) == [(2, "LDAPDelResponse", 52, b"connection to backend a of pool 'main' lost")]
    assert len(backends.connections) == 1


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
    """A backend that sends what is not LDAP is left; the unanswered search goes to the next backend."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    connection = backends.connections[0]
    connection.accept()
    connection.respond(b"HTTP/1.0 200 OK\r\n")
    assert client.received() == b""
    second = backends.connections[1]
    assert (connection.backend, second.backend) == ("a", "b")
    second.accept()
    assert second.sent() == pdus.search(messageID=1)
    second.respond(pdus.searchDone(1))
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(1, 0)]


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
