"""
Shared mode and a client that does not read (L{ldaproute.backends.slowreaders}):
the shared connection is never paused for it; past C{client_buffer_max} its
searches are abandoned upstream and answered adminLimitExceeded (11), while
the other clients on the same connection are served as before.

A client that stops reading is a StringTransport whose producer (the
frontend's L{ldaproute.listeners.links.LinksProducer}) was paused, as
Twisted's TCP transport does when its buffer passes 64 KiB.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs

from ldaproute.backends.slowreaders import ClientBuffer
from ldaproute.core.limits import ADMIN_LIMIT_EXCEEDED
from tests import pdus
from tests.fakes import Client, FakeConnection, proxy
from tests.test_shared import CONFIG, decodeOne, ready

ONE_CONNECTION = CONFIG.replace("shared_connections = 2", "shared_connections = 1\nclient_buffer_max = 1KiB")
BIG = [("description", ["x" * 200])]  # 260 bytes an entry
COMPARE_TRUE = 6


def entries(messageID: int, count: int) -> bytes:
    return b"".join(pdus.searchEntry(f"cn=e{i},dc=example,dc=com", messageID, BIG) for i in range(count))


def stopReading(client: Client) -> None:
    """What Twisted does when the client's transport buffer is full."""
    producer = client.transport.producer
    assert producer is not None
    producer.pauseProducing()


def startReading(client: Client) -> None:
    """What Twisted does when the client's transport buffer is empty again."""
    producer = client.transport.producer
    assert producer is not None
    producer.resumeProducing()


def metric(factory: Any, name: str) -> float | None:
    """A sample of the runtime's metrics for pool main."""
    runtime = factory.runtime
    metrics = runtime.observer.metrics
    metrics.watchState(lambda: runtime)
    return metrics.registry.get_sample_value(name, {"pool": "main"})  # type: ignore[no-any-return]


def searchUpstream(client: Client, connection: FakeConnection, messageID: int) -> int:
    """Send a search from C{client}; its upstream messageID."""
    client.send(pdus.search(messageID=messageID))
    return decodeOne(connection.sent()).id


def oneConnection() -> tuple[Client, Client, FakeConnection, int]:
    """Two clients on one shared connection; the upstream messageID of the slow one's search."""
    factory, backends, _ = proxy(ONE_CONNECTION)
    slow, fast = Client(factory), Client(factory)
    slow.send(pdus.search(messageID=1))
    [connection] = backends.connections
    ready(connection)
    return slow, fast, connection, decodeOne(connection.sent()).id


def test_slowReaderShedNotPaused() -> None:
    factory, backends, _ = proxy(ONE_CONNECTION)
    slow, fast = Client(factory), Client(factory)
    slow.send(pdus.search(messageID=1))
    [connection] = backends.connections
    ready(connection)
    slowID = decodeOne(connection.sent()).id
    fastID = searchUpstream(fast, connection, 7)
    stopReading(slow)
    with capturedLogs() as events:
        connection.respond(entries(slowID, 3))  # ~700 bytes: under the cap
        assert connection.sent() == b""
        connection.respond(entries(slowID, 3))
    # over the cap: abandoned upstream, answered 11 after what it was sent
    abandon = decodeOne(connection.sent())
    assert abandon.value.value == slowID
    answers = pdus.decode(slow.received())
    assert [type(a.value).__name__ for a in answers] == ["LDAPSearchResultEntry"] * 6 + ["LDAPSearchResultDone"]
    done = answers[-1]
    assert (done.id, done.value.resultCode) == (1, ADMIN_LIMIT_EXCEEDED)
    assert b"client_buffer_max" in done.value.errorMessage
    assert slow.protocol.session.outstanding == {}
    [event] = [e for e in events if e.get("log_namespace") == "ldaproute.backends.slowreaders"]
    assert event["messageIDs"] == [1] and event["limit"] == 1024 and event["held"] > 1024
    assert event["peer"] and event["pool"] == "main"
    assert metric(factory, "ldaproute_slow_reader_searches_abandoned_total") == 1
    # the shared connection was never paused; the fast client is served on it
    assert connection.transport is not None and connection.transport.producerState == "producing"
    connection.respond(entries(slowID, 2) + pdus.searchDone(slowID))  # late: dropped
    connection.respond(pdus.searchEntry("cn=f,dc=example,dc=com", fastID) + pdus.searchDone(fastID))
    assert slow.received() == b""
    entry, fastDone = pdus.decode(fast.received())
    assert (entry.id, fastDone.id, fastDone.value.resultCode) == (7, 7, 0)


def test_readingAgainStartsTheCountAfresh() -> None:
    slow, _, connection, slowID = oneConnection()
    stopReading(slow)
    connection.respond(entries(slowID, 3))  # 780 bytes
    startReading(slow)  # the transport wrote everything out
    stopReading(slow)
    connection.respond(entries(slowID, 3))
    assert connection.sent() == b""
    connection.respond(entries(slowID, 1))  # 7 entries, but only 4 (1040 bytes) since the pause
    assert decodeOne(connection.sent()).value.value == slowID
    assert pdus.decode(slow.received())[-1].value.resultCode == ADMIN_LIMIT_EXCEEDED


def test_onlySearchesShed() -> None:
    """Other operations' answers are one PDU each: they still go through."""
    slow, _, connection, slowID = oneConnection()
    slow.send(pdus.message(pdus.pureldap.LDAPCompareRequest(
        entry="cn=e,dc=example,dc=com", ava=pdus.pureldap.LDAPAttributeValueAssertion(
            pdus.pureldap.LDAPAttributeDescription("cn"), pdus.pureldap.LDAPAssertionValue("e"))), 5))
    compareID = decodeOne(connection.sent()).id
    stopReading(slow)
    connection.respond(entries(slowID, 6))
    assert decodeOne(connection.sent()).value.value == slowID  # the search only
    slow.received()
    connection.respond(pdus.message(pdus.pureldap.LDAPCompareResponse(resultCode=COMPARE_TRUE), compareID))
    [answer] = pdus.decode(slow.received())
    assert (answer.id, answer.value.resultCode) == (5, COMPARE_TRUE)


def test_searchWhileStillBehindShedAtFirstAnswer() -> None:
    """The bytes already waiting have not gone anywhere: a new search does not get a fresh allowance."""
    slow, _, connection, slowID = oneConnection()
    stopReading(slow)
    connection.respond(entries(slowID, 6))
    connection.sent()
    slow.received()
    secondID = searchUpstream(slow, connection, 3)
    connection.respond(entries(secondID, 1))
    assert decodeOne(connection.sent()).value.value == secondID
    done = pdus.decode(slow.received())[-1]
    assert (done.id, done.value.resultCode) == (3, ADMIN_LIMIT_EXCEEDED)


def test_linkOpenedWhileNotReading() -> None:
    """A client that stopped reading before its first operation on a pool still counts."""
    factory, backends, _ = proxy(ONE_CONNECTION)
    slow = Client(factory)
    stopReading(slow)
    slow.send(pdus.search(messageID=1))
    [connection] = backends.connections
    ready(connection)
    slowID = decodeOne(connection.sent()).id
    connection.respond(entries(slowID, 6))
    assert decodeOne(connection.sent()).value.value == slowID


def test_clientBuffer() -> None:
    buffer = ClientBuffer(100)
    assert not buffer.delivered(1000)  # reading: nothing waits
    buffer.pause()
    assert not buffer.delivered(60)
    assert not buffer.delivered(40)
    assert buffer.delivered(1)
    assert buffer.delivered(1)  # still behind
    buffer.resume()
    assert (buffer.paused, buffer.held) == (False, 0)
