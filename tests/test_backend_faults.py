"""Backend faults on in-memory backends: regressions found by the hostile-backend tests."""

from __future__ import annotations

from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, proxy
from tests.test_frontend import CONFIG, results


def test_backendNoticeOfDisconnectionAnswersOutstanding() -> None:
    """
    Regression: a backend's Notice of Disconnection closed the link without
    telling the frontend, so the client's operations on it were never answered.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=4) + pdus.search(messageID=5))
    connection = backends.connections[0]
    upstream = connection.accept()
    connection.respond(pdus.searchDone(4) + ber.noticeOfDisconnection(ber.UNAVAILABLE, "bye"))
    got = results(client.received())
    assert [(m, kind, code) for m, kind, code, _ in got] == [
        (4, "LDAPSearchResultDone", 0),
        (5, "LDAPSearchResultDone", ber.UNAVAILABLE),
    ]
    assert upstream.disconnecting or connection.transport.disconnected  # type: ignore[union-attr]
    assert client.protocol.session.outstanding == {}
    # the next operation opens a new upstream connection
    client.send(pdus.search(messageID=6))
    assert len(backends.connections) == 2


def test_negativeMessageIDFromBackendIsMalformed() -> None:
    """
    Regression: a response with a negative messageID (0xff) was relayed to
    the client, whose decoder choked on it; it is a protocol error of the
    backend, answered as a lost link.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=3))
    connection = backends.connections[0]
    connection.accept()
    connection.respond(b"\x30\x08\x02\x01\xff\x65\x03\x0a\x01\x00")
    got = results(client.received())
    assert [(m, kind, code) for m, kind, code, _ in got] == [(3, "LDAPSearchResultDone", ber.UNAVAILABLE)]


def test_scannerRefusesNegativeAndEmptyMessageIDs() -> None:
    import pytest

    for pdu in (b"\x30\x08\x02\x01\xff\x65\x03\x0a\x01\x00", b"\x30\x07\x02\x00\x65\x03\x0a\x01\x00"):
        with pytest.raises(ber.FramingError):
            ber.ResponseScanner(1000).feed(pdu)
