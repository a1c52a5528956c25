"""
Stateful sequences in shared mode, on in-memory transports: each paged,
sorted or virtual-list-view search holds a backend connection of its own
while stateless operations still share it; more connections are opened
when every one holds a sequence, and requests wait for one (then busy, 51)
when no backend may take more.
"""

from __future__ import annotations

import pytest
from ldaptor.protocols import pureber, pureldap

from ldaproute.backends import sequences
from ldaproute.wire import ber
from ldaproute.wire.controls import (
    PAGED_RESULTS_OID,
    SORT_REQUEST_OID,
    VLV_REQUEST_OID,
    controlValue,
    pagedControl,
    pagedValue,
)
from ldaproute.wire.pdu import opSpan
from tests import pdus
from tests.fakes import Client, FakeConnection, proxy
from tests.test_shared import CONFIG, decodeOne, ready

ONE = CONFIG.replace("shared_connections = 2", "shared_connections = 1")


def pagedValueBytes(size: int, cookie: bytes) -> bytes:
    return pureber.BERSequence([pureber.BERInteger(size), pureber.BEROctetString(cookie)]).toWire()


def paged(messageID: int, cookie: bytes = b"", size: int = 50) -> bytes:
    return pdus.message(
        pureldap.LDAPSearchRequest(baseObject="ou=people,dc=example,dc=com"), messageID,
        controls=[(PAGED_RESULTS_OID.decode(), True, pagedValueBytes(size, cookie))],
    )


def sorted_(messageID: int, vlv: bool = False) -> bytes:
    controls = [(SORT_REQUEST_OID.decode(), True, pureber.BERSequence([pureber.BERSequence([pureber.BEROctetString("cn")])]).toWire())]
    if vlv:
        value = pureber.BERSequence([
            pureber.BERInteger(0), pureber.BERInteger(9),
            pureber.BERSequence([pureber.BERInteger(1), pureber.BERInteger(0)], tag=0xA0),
        ]).toWire()
        controls.append((VLV_REQUEST_OID.decode(), True, value))
    return pdus.message(pureldap.LDAPSearchRequest(baseObject="ou=people,dc=example,dc=com"), messageID, controls=controls)


def pageDone(messageID: int, cookie: bytes, resultCode: int = 0) -> bytes:
    return pdus.message(
        pureldap.LDAPSearchResultDone(resultCode=resultCode), messageID,
        controls=[(PAGED_RESULTS_OID.decode(), False, pagedValueBytes(0, cookie))],
    )


def answerPage(connection: FakeConnection, cookie: bytes) -> int:
    """Answer the one request on C{connection} with an entry and a page end."""
    request = decodeOne(connection.sent())
    connection.respond(pdus.searchEntry("uid=u1,ou=people,dc=example,dc=com", request.id) + pageDone(request.id, cookie))
    return request.id


# --- the byte-level reads ------------------------------------------------------


def test_controlValueAndPagedValue() -> None:
    pdu = paged(3, b"abc", 7)
    _, _, opEnd = opSpan(pdu)
    value = controlValue(pdu[opEnd:], PAGED_RESULTS_OID)
    assert value is not None and pagedValue(value) == (7, b"abc")
    assert controlValue(pdu[opEnd:], SORT_REQUEST_OID) is None
    assert controlValue(b"", PAGED_RESULTS_OID) is None
    built = controlValue(ber.tlv(ber.CONTROLS_TAG, pagedControl(5, b"xy")), PAGED_RESULTS_OID)
    assert built is not None and pagedValue(built) == (5, b"xy")


@pytest.mark.parametrize(
    "pdu, expected",
    [
        (paged(1, b"c", 10), ("paged", 10, b"c")),
        (sorted_(1), ("sort", 0, b"")),
        (sorted_(1, vlv=True), ("vlv", 0, b"")),
        (pdus.search(messageID=1), None),
    ],
)
def test_classify(pdu: bytes, expected: object) -> None:
    _, _, opEnd = opSpan(pdu)
    assert sequences.classify(pdu[opEnd:]) == expected


def test_doneCookie() -> None:
    data = pdus.searchEntry("cn=x", 4) + pageDone(4, b"next") + pageDone(5, b"other")
    assert sequences.doneCookie(data, 4) == b"next"
    assert sequences.doneCookie(data, 5) == b"other"
    assert sequences.doneCookie(pdus.searchDone(4), 4) == b""


# --- the link and the pool --------------------------------------------------------


def test_twoClientsPagingGetConnectionsOfTheirOwn() -> None:
    """The bug of issue #15: slapd keeps one paged sequence per connection."""
    factory, backends, _ = proxy(ONE)
    a, b = Client(factory), Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    assert [m.id for m in pdus.decode(a.received())] == [1, 1]
    # b's sequence cannot share a's connection: a new one is opened for it
    b.send(paged(1))
    assert shared.sent() == b""
    _, own = backends.connections
    ready(own)
    answerPage(own, b"b1")
    b.received()
    # a's next page goes where its cookie is valid; b's plain search may share it
    a.send(paged(2, b"a1"))
    assert decodeOne(shared.sent()).controls[0][2] == pagedValueBytes(50, b"a1")
    b.send(pdus.search(messageID=5))
    request = decodeOne(shared.sent())
    shared.respond(pdus.searchDone(request.id))
    assert decodeOne(b.received()).id == 5
    b.send(paged(2, b"b1"))
    assert own.sent() and shared.sent() == b""


def test_lastPageReleasesAndExtraConnectionCloses() -> None:
    factory, backends, _ = proxy(ONE)
    a, b, c = Client(factory), Client(factory), Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    b.send(paged(1))
    own = backends.connections[1]
    ready(own)
    answerPage(own, b"")  # b's only page: its sequence is over
    assert not own.transport.connected or own.transport.disconnecting
    [unbind] = pdus.decode(own.sent())
    assert isinstance(unbind.value, pureldap.LDAPUnbindRequest)
    a.send(paged(2, b"a1"))
    answerPage(shared, b"")  # a's last page: the shared connection is free again
    c.send(paged(1))
    assert decodeOne(shared.sent()).id
    assert len(backends.connections) == 2


def test_waitsAtMaxConnectionsThenBusy() -> None:
    config = ONE.replace("url = ldap://a.example:389", "url = ldap://a.example:389\nmax_connections = 2")
    config = config.replace("bind_connections = 1", "bind_connections = 1\noperation_timeout = 5s")
    factory, backends, reactor = proxy(config)
    a, b, c = Client(factory), Client(factory), Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    b.send(paged(1))
    [_, own] = backends.connections
    ready(own)
    answerPage(own, b"b1")
    b.received()
    # both connections hold a sequence and the backend may not take a third
    c.send(paged(1))
    assert len(backends.connections) == 2
    assert c.received() == b""
    reactor.advance(1)
    a.send(paged(2, b"a1"))
    answerPage(shared, b"")  # a's sequence ends: c gets its connection
    request = decodeOne(shared.sent())
    assert request.controls[0][0] == PAGED_RESULTS_OID
    shared.respond(pageDone(request.id, b"c1"))
    assert decodeOne(c.received()).id == 1
    a.received()
    # a fourth waits, and gets busy when its operation_timeout runs out
    a.send(paged(3))
    reactor.advance(5.5)
    answer = decodeOne(a.received())
    assert (answer.id, answer.value.resultCode) == (3, ber.BUSY)
    assert b"max_connections" in answer.value.errorMessage


def test_idleSequenceGivesItsConnectionBack() -> None:
    factory, backends, reactor = proxy(ONE.replace("bind_connections = 1", "bind_connections = 1\npaged_idle_timeout = 10s"))
    a, b = Client(factory), Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    a.received()
    reactor.advance(11)
    b.send(paged(1))
    assert decodeOne(shared.sent()).id  # the idle sequence's connection, not a new one
    assert len(backends.connections) == 1
    a.send(paged(2, b"a1"))
    answer = decodeOne(a.received())
    assert answer.value.resultCode == ber.UNWILLING_TO_PERFORM and b"paged_idle_timeout" in answer.value.errorMessage
    # giving up a sequence that is over already succeeds, with an empty cookie
    a.send(paged(3, b"a1", size=0))
    answer = decodeOne(a.received())
    assert answer.value.resultCode == 0 and answer.controls[0][0] == PAGED_RESULTS_OID
    assert pagedValue(answer.controls[0][2]) == (0, b"")


@pytest.mark.parametrize("how", ["abandon", "disconnect", "unbind", "zero-size"])
def test_sequenceEndsWithTheClient(how: str) -> None:
    factory, backends, _ = proxy(ONE)
    a, b = Client(factory), Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    a.send(paged(2, b"a1"))
    request = decodeOne(shared.sent())
    if how == "abandon":
        a.send(pdus.message(pureldap.LDAPAbandonRequest(id=2), 3))
    elif how == "disconnect":
        a.protocol.connectionLost()
    elif how == "unbind":
        a.send(pdus.message(pureldap.LDAPUnbindRequest(), 3))
    else:
        shared.respond(pageDone(request.id, b"a2"))
        a.send(paged(3, b"a2", size=0))
        request = decodeOne(shared.sent())
        shared.respond(pageDone(request.id, b""))
    shared.sent()
    b.send(paged(1))
    assert len(backends.connections) == 1 and decodeOne(shared.sent()).id


def test_sortHoldsForItsSearchVLVUntilIdle() -> None:
    factory, backends, reactor = proxy(ONE)
    a, b = Client(factory), Client(factory)
    a.send(sorted_(1))
    [shared] = backends.connections
    ready(shared)
    first = decodeOne(shared.sent())
    b.send(sorted_(1))
    assert len(backends.connections) == 2  # a's sort holds the shared connection
    shared.respond(pdus.searchDone(first.id))
    # a's sort is over: b's takes the shared connection, the new one is not needed
    second = decodeOne(shared.sent())
    ready(backends.connections[1])
    assert isinstance(decodeOne(backends.connections[1].sent()).value, pureldap.LDAPUnbindRequest)
    shared.respond(pdus.searchDone(second.id))
    assert decodeOne(b.received()).id == 1
    # a's virtual list view keeps its connection between requests
    a.send(sorted_(2, vlv=True))
    view = decodeOne(shared.sent())
    shared.respond(pdus.searchDone(view.id))
    b.send(sorted_(3, vlv=True))
    assert shared.sent() == b"" and len(backends.connections) == 3
    a.send(sorted_(4, vlv=True))
    view = decodeOne(shared.sent())
    shared.respond(pdus.searchDone(view.id))
    reactor.advance(61)  # paged_idle_timeout (60s) ends an idle view: b's waiting one gets it
    assert decodeOne(shared.sent()).id


def test_sequenceConnectionLost() -> None:
    factory, backends, _ = proxy(ONE)
    a = Client(factory)
    a.send(paged(1))
    [shared] = backends.connections
    ready(shared)
    answerPage(shared, b"a1")
    a.received()
    shared.drop()
    a.send(paged(2, b"a1"))
    answer = decodeOne(a.received())
    assert answer.value.resultCode == ber.UNWILLING_TO_PERFORM and b"lost" in answer.value.errorMessage
