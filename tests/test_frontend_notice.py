"""
A backend's unsolicited Notice of Disconnection (RFC 4511 4.4.1, as AD
sends on idle timeouts and shutdowns), on in-memory transports.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, boundClient, proxy
from tests.test_frontend import CONFIG, results


def test_noticeOfDisconnectionFailsOutstandingAndReconnects() -> None:
    """
    The DC's notice with work in flight: a search with entries relayed is
    answered 52; one with nothing relayed goes out again on a new
    connection, after the session's simple bind.
    """
    factory, backends, _ = proxy(CONFIG)
    client, first = boundClient(factory, backends)
    client.send(pdus.search(messageID=2) + pdus.search(messageID=3))
    first.respond(pdus.searchEntry("cn=a", 2))
    # the DC gives up on this connection with work in flight
    first.respond(ber.noticeOfDisconnection(ber.UNAVAILABLE, "idle timeout"))
    answers = results(client.received())
    assert answers[0][:2] == (2, "LDAPSearchResultEntry")
    assert [answer[:3] for answer in answers[1:]] == [(2, "LDAPSearchResultDone", 52)]
    assert b"Notice of Disconnection" in answers[1][3]
    # the notice itself is about the upstream connection: not relayed
    assert all(answer[0] != 0 for answer in answers)
    assert first.transport is not None and first.transport.disconnecting
    assert not client.transport.disconnecting
    # the backend then closes its side; nothing more reaches the client
    first.drop()
    assert client.received() == b""
    # search 3 goes out again: the new connection replays the simple bind first
    second = backends.connections[1]
    second.accept()
    [replayed] = pdus.decode(second.sent())
    assert isinstance(replayed.value, pureldap.LDAPBindRequest)
    second.respond(pdus.bindResponse(replayed.id, 0))
    assert second.sent() == pdus.search(messageID=3)
    second.respond(pdus.searchDone(3))
    assert results(client.received()) == [(3, "LDAPSearchResultDone", 0, b"")]
    client.send(pdus.search(messageID=4))
    assert second.sent() == pdus.search(messageID=4)


def test_noticeOfDisconnectionWhileIdle() -> None:
    """Nothing outstanding: the client hears nothing, and goes on."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    first = backends.connections[0]
    first.accept()
    first.sent()
    first.respond(pdus.searchDone(1))
    client.received()
    first.respond(ber.noticeOfDisconnection(ber.UNAVAILABLE, "idle timeout"))
    first.drop()
    assert client.received() == b""
    assert not client.transport.disconnecting
    client.send(pdus.search(messageID=2))
    second = backends.connections[1]
    second.accept()
    assert second.sent() == pdus.search(messageID=2)
    second.respond(pdus.searchDone(2))
    assert results(client.received()) == [(2, "LDAPSearchResultDone", 0, b"")]
