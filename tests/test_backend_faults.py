"""Backend faults on in-memory backends: regressions found by the hostile-backend tests."""

from __future__ import annotations

from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, proxy
from tests.test_frontend import CONFIG, results


def test_backendNoticeOfDisconnectionAnswersOutstanding() -> None:
    """
    Regression: a backend's Notice of Disconnection closed the link without
    telling the frontend, so the client's operations on it were never
    answered.  Now the search it left unanswered goes out again on a new
    connection, and the client gets exactly one answer for each.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=4) + pdus.search(messageID=5))
    connection = backends.connections[0]
    upstream = connection.accept()
    connection.respond(pdus.searchDone(4) + ber.noticeOfDisconnection(ber.UNAVAILABLE, "bye"))
    assert upstream.disconnecting or connection.transport.disconnected  # type: ignore[union-attr]
    assert [(m, kind, code) for m, kind, code, _ in results(client.received())] == [(4, "LDAPSearchResultDone", 0)]
    # the unanswered search goes out again, on a new upstream connection
    assert len(backends.connections) == 2
    again = backends.connections[1]
    again.accept()
    assert [message.id for message in pdus.decode(again.sent())] == [5]
    again.respond(pdus.searchDone(5))
    assert [(m, kind, code) for m, kind, code, _ in results(client.received())] == [(5, "LDAPSearchResultDone", 0)]
    assert client.protocol.session.outstanding == {}
    # the next operation uses that connection
    client.send(pdus.search(messageID=6))
    assert len(backends.connections) == 2


def test_negativeMessageIDFromBackendIsMalformed() -> None:
    """
    Regression: a response with a negative messageID (0xff) was relayed to
    the client, whose decoder choked on it; it is a protocol error of the
    backend, answered as a lost link.  The search is sent again, twice at
    most (a request that breaks backends must not go round the pool for
    ever), then answered unavailable.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=3))
    for attempt in range(3):
        connection = backends.connections[attempt]
        connection.accept()
        assert [message.id for message in pdus.decode(connection.sent())] == [3]
        connection.respond(b"\x30\x08\x02\x01\xff\x65\x03\x0a\x01\x00")
        got = results(client.received())
        if attempt < 2:
            assert got == []
    assert len(backends.connections) == 3
    assert [(m, kind, code) for m, kind, code, _ in got] == [(3, "LDAPSearchResultDone", ber.UNAVAILABLE)]
    assert client.protocol.session.outstanding == {}


def test_scannerRefusesNegativeAndEmptyMessageIDs() -> None:
    import pytest

    for pdu in (b"\x30\x08\x02\x01\xff\x65\x03\x0a\x01\x00", b"\x30\x07\x02\x00\x65\x03\x0a\x01\x00"):
        with pytest.raises(ber.FramingError):
            ber.ResponseScanner(1000).feed(pdu)
