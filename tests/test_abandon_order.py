"""
What waits is still what the client sent (issue #14, item 6): operations
that wait for an upstream connection go out in the client's order, an
Abandon or a Cancel (RFC 3909) for one of them goes out after it, an
Abandon for an operation already answered still reaches the backend (as
C{ldapsearch -e '!abandon'} sends it), and an abandoned operation's late
responses are not relayed.
"""

from __future__ import annotations

import pytest
from ldaproute.backends import responses
from ldaproute.wire import ber
from ldaproute.wire.pdu import cancelRequest
from tests import pdus
from tests.fakes import Client, boundClient, proxy
from tests.test_frontend import results

CONFIG = """
[ldaproute]
listen = tcp:10389
mode = {mode}
require_tls_for_simple_bind = off
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
[route:all]
pool = main
"""


def requests(data: bytes) -> list[tuple[int, str]]:
    return [(message.id, type(message.value).__name__) for message in pdus.decode(data)]


def test_abandonWhileConnectingGoesOutAfterItsSearch() -> None:
    """
    Search and Abandon arrive before the upstream connection is open: the
    backend gets both, in that order, as the client sent them; what it
    still answers for the search is not relayed, and the session goes on.
    """
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client = Client(factory)
    search = pdus.search(messageID=2)
    abandon = ber.abandonRequest(3, 2)
    client.send(search + abandon)
    connection = backends.connections[0]
    connection.accept()
    assert connection.sent() == search + abandon
    connection.respond(pdus.searchEntry("uid=u,dc=example,dc=com", 2) + pdus.searchDone(2))
    assert client.received() == b""
    assert client.protocol.session.outstanding == {}
    client.send(pdus.search(messageID=4))
    (again,) = pdus.decode(connection.sent())
    connection.respond(pdus.searchDone(again.id))
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(4, 0)]


def test_abandonWhileBindReplayGoesOutAfterItsSearch() -> None:
    """
    The session's bind is replayed on a new connection (the first was
    lost): search and Abandon wait behind the replayed bind, in order.
    """
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client, first = boundClient(factory, backends)
    first.drop()
    client.send(pdus.search(messageID=5) + ber.abandonRequest(6, 5))
    second = backends.connections[-1]
    assert second is not first
    second.accept()
    (bind,) = pdus.decode(second.sent())
    assert type(bind.value).__name__ == "LDAPBindRequest"
    second.respond(pdus.bindResponse(bind.id, 0))
    assert requests(second.sent()) == [(5, "LDAPSearchRequest"), (6, "LDAPAbandonRequest")]
    assert client.received() == b""


def test_abandonAfterTheAnswerStillReachesTheBackend() -> None:
    """
    C{ldapsearch -e '!abandon'}: the search is answered before the Abandon
    arrives.  Directly, slapd logs the Abandon; through the proxy it must
    too (it used to be dropped), and the client gets nothing more.
    """
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client = Client(factory)
    client.send(pdus.search(messageID=2))
    connection = backends.connections[0]
    connection.accept()
    connection.sent()
    connection.respond(pdus.searchDone(2))
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(2, 0)]
    abandon = ber.abandonRequest(3, 2)
    client.send(abandon)
    assert connection.sent() == abandon
    assert client.received() == b""


def test_abandonBeforeAnyConnectionOpensNone() -> None:
    """An Abandon of nothing, first thing in a session, opens no upstream connection."""
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client = Client(factory)
    client.send(ber.abandonRequest(3, 2))
    assert backends.connections == [] and client.received() == b""


def test_cancelWhileConnectingGoesOutAfterItsSearch() -> None:
    """
    A Cancel (RFC 3909) for a search still waiting for the connection
    follows it; both answers (canceled, 118, and the Cancel's success) are
    the backend's, relayed.
    """
    factory, backends, _ = proxy(CONFIG.format(mode="session"))
    client = Client(factory)
    client.send(pdus.search(messageID=2) + cancelRequest(3, 2))
    connection = backends.connections[0]
    connection.accept()
    assert requests(connection.sent()) == [(2, "LDAPSearchRequest"), (3, "LDAPExtendedRequest")]
    connection.respond(pdus.searchDone(2, 118) + ber.result(3, ber.EXTENDED_RESPONSE, 0))
    assert [(m, code) for m, _, code, _ in results(client.received())] == [(2, 118), (3, 0)]


def test_sharedAbandonOfAWaitingSearch() -> None:
    """
    Shared mode: a search abandoned while it waits for a shared connection
    either never goes out or goes out before its (remapped) Abandon; the
    client gets nothing for it.
    """
    factory, backends, _ = proxy(CONFIG.format(mode="shared"))
    client = Client(factory)
    client.send(pdus.search(messageID=2) + ber.abandonRequest(3, 2))
    sent: list[tuple[int, str]] = []
    for connection in list(backends.connections):
        connection.accept()
        sent += requests(connection.sent())
    searches = [i for i, (_, kind) in enumerate(sent) if kind == "LDAPSearchRequest"]
    abandons = [i for i, (_, kind) in enumerate(sent) if kind == "LDAPAbandonRequest"]
    assert len(searches) <= 1 and (not searches or (abandons and abandons[0] > searches[0]))
    assert client.received() == b""


@pytest.mark.parametrize("extra", [0, 5])
def test_droppedIsBounded(extra: int) -> None:
    """
    A backend that abandons without a word leaves nothing to end a dropped
    entry: a session that abandons many operations does not grow it (nor
    stay on the filtering path) without bound.
    """

    class Owner:
        def responsesReceived(self, *args: object) -> None:
            pass

    class Connection:
        internal: dict[int, object] = {}
        owner = Owner()

    relay = responses.Relay(Connection())  # type: ignore[arg-type]
    for messageID in range(responses.MAX_DROPPED + extra):
        relay.drop(messageID)
    assert len(relay.dropped) <= responses.MAX_DROPPED
