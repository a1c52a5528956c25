"""Filter depth at byte level, the read gate, and the frontend's use of them (on fakes)."""

from __future__ import annotations

from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.core import limits
from tests import pdus
from tests.fakes import Client, proxy
from tests.integration.test_hostile_clients import nestedFilter, searchWithFilter
from tests.test_frontend import CONFIG, results


def depthOf(pdu: bytes, limit: int = 1000) -> int:
    return limits.filterDepth(pdu, ber.Envelope.fromBytes(pdu), limit)


def test_filterDepthOfLdaptorFilters() -> None:
    present = pureldap.LDAPFilter_present("objectClass")
    assert depthOf(pdus.search(filter=present)) == 1
    equality = pureldap.LDAPFilter_equalityMatch(
        attributeDesc=pureldap.LDAPAttributeDescription("uid"), assertionValue=pureldap.LDAPAssertionValue("x")
    )
    nested = pureldap.LDAPFilter_and([present, pureldap.LDAPFilter_or([equality, pureldap.LDAPFilter_not(present)])])
    assert depthOf(pdus.search(filter=nested)) == 3


def test_filterDepthStopsAtTheLimit() -> None:
    pdu = searchWithFilter(1, nestedFilter(100_000))
    assert depthOf(pdu, 64) == 65


def test_filterDepthSiblings() -> None:
    inner = ber.tlv(0xA0, ber.tlv(0x87, b"cn")) * 3
    pdu = searchWithFilter(1, ber.tlv(0xA1, inner + ber.tlv(0xA2, ber.tlv(0xA2, ber.tlv(0x87, b"cn")))))
    assert depthOf(pdu) == 3


def test_filterDepthMalformed() -> None:
    pdu = searchWithFilter(1, b"\xa0\x05\xa0\x09\x87\x02cn")
    try:
        depthOf(pdu)
    except ber.FramingError as e:
        assert e.reason == "malformed"
    else:
        raise AssertionError("no FramingError")


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


def test_readGateHoldsWhileAnyReasonHolds() -> None:
    transport = _Transport()
    gate = limits.ReadGate(transport)
    gate.pause("a")
    gate.pause("b")
    gate.resume("a")
    assert gate.paused and transport.calls == ["pause"]
    gate.resume("a")
    gate.resume("b")
    assert not gate.paused and transport.calls == ["pause", "resume"]


def test_deepFilterAnsweredByTheProxy() -> None:
    factory, backends, _ = proxy(CONFIG.replace("max_pdu_bytes = 2000", "max_filter_depth = 5"))
    client = Client(factory)
    client.send(searchWithFilter(3, nestedFilter(6)))
    assert results(client.received()) == [(3, "LDAPSearchResultDone", 11, b"search filter nested deeper than 5 levels")]
    assert backends.connections == []
    client.send(searchWithFilter(4, nestedFilter(5)))
    assert len(backends.connections) == 1


def test_manyOutstandingPauseTheClient() -> None:
    """A client pipelining to a slow backend stops being read past the internal limit, and resumes."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    n = limits.PAUSE_OUTSTANDING
    client.send(b"".join(pdus.search(messageID=i) for i in range(1, n)))
    assert client.transport.producerState == "producing"
    client.send(pdus.search(messageID=n))
    assert client.transport.producerState == "paused"
    [connection] = backends.connections
    connection.accept()
    connection.respond(pdus.searchDone(1))
    assert client.transport.producerState == "producing"


def test_backendPushbackAndOutstandingCompose() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    [connection] = backends.connections
    upstream = connection.accept()
    reading = upstream.producer  # the backend's full buffer pauses the client
    reading.pauseProducing()
    client.send(b"".join(pdus.search(messageID=i) for i in range(2, limits.PAUSE_OUTSTANDING + 1)))
    reading.resumeProducing()
    assert client.transport.producerState == "paused"  # still too many outstanding
    connection.respond(pdus.searchDone(1))
    assert client.transport.producerState == "producing"


def test_unbindReleasesTheProducerBeforeClosing() -> None:
    """
    Regression: Twisted does not close a transport whose streaming producer
    is paused once the buffer drains; it resumes the producer.  A slow reader
    that unbound kept its connection (and descriptor) for ever.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1))
    connection = backends.connections[0]
    upstream = connection.accept()
    client.send(pdus.message(pureldap.LDAPUnbindRequest(), 2))
    assert client.transport.producer is None
    assert client.transport.disconnecting
    assert upstream.producer is None and upstream.disconnecting


def test_protocolErrorReleasesTheProducer() -> None:
    factory, _, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(b"garbage")
    assert client.transport.producer is None and client.transport.disconnecting


def test_linkOpenedWhileTheClientIsNotReadingStartsPaused() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.transport.producer.pauseProducing()  # the client's buffer is full
    client.send(pdus.search(messageID=1))
    upstream = backends.connections[0].accept()
    assert upstream.producerState == "paused"


def test_bindForgetsOperationsTheServerAbandons() -> None:
    """
    Regression: slapd abandons, without answers, the operations outstanding
    when a bind arrives (RFC 4511 4.2.1); the proxy kept them outstanding for
    the life of the session, so a client pipelining binds after searches
    piled them up until its reading was paused for good.
    """
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(pdus.search(messageID=1) + pdus.search(messageID=2))
    connection = backends.connections[0]
    connection.accept()
    client.send(pdus.bind("cn=x,dc=example,dc=com", "pw", 3))
    assert sorted(client.protocol.session.outstanding) == [1, 2, 3]
    connection.respond(pdus.searchDone(1) + pdus.bindResponse(3))  # 2 was abandoned by the server
    assert client.protocol.session.outstanding == {}
