"""
Tests for L{ldaproute.core.fanout}: the merge of sub-searches into one result
stream, the documented result rule, the size limit across the merge, and the
root DSE the proxy presents.
"""

from __future__ import annotations

from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.core import fanout
from ldaproute.wire.pdu import PAGED_RESULTS_OID, controlOIDs, messageIDOf, searchSizeLimit, searchWith, splitMessage


def entry(messageID: int, dn: bytes) -> bytes:
    return pureldap.LDAPMessage(pureldap.LDAPSearchResultEntry(objectName=dn, attributes=[]), id=messageID).toWire()


def done(messageID: int, code: int = 0, message: str = "", extra: bytes = b"") -> bytes:
    return ber.result(messageID, ber.SEARCH_RESULT_DONE, code, message, b"", extra)


def make(n: int, sizeLimit: int = 0) -> tuple[fanout.FanOut, list[bytes], list[fanout.SubSearch]]:
    written: list[bytes] = []
    subs = [fanout.SubSearch(f"r{i}", f"p{i}", 100 + i, b"", None) for i in range(n)]
    return fanout.FanOut(5, sizeLimit, subs, written.append), written, subs


def tags(written: list[bytes]) -> list[int]:
    return [splitMessage(pdu)[1] for pdu in written]


def test_entriesMergedUnderTheClientMessageIDWithOneDone() -> None:
    search, written, (a, b) = make(2)
    search.pduReceived(a, entry(100, b"cn=1"))
    search.pduReceived(b, entry(101, b"cn=2"))
    search.pduReceived(a, done(100))
    assert not search.finished
    search.pduReceived(b, entry(101, b"cn=3"))
    search.pduReceived(b, done(101))
    assert search.finished
    assert tags(written) == [ber.SEARCH_RESULT_ENTRY] * 3 + [ber.SEARCH_RESULT_DONE]
    assert {messageIDOf(pdu) for pdu in written} == {5}
    assert written[-1] == done(5)


def test_firstErrorInRouteOrderWins() -> None:
    search, written, (a, b, c) = make(3)
    search.pduReceived(c, done(102, 50, "no access"))
    search.pduReceived(a, done(100, 32))
    search.pduReceived(b, done(101, 52, "down"))
    assert written[-1] == done(5, 52, "route r1: down")


def test_noSuchObjectIgnoredWhenAnotherSucceeded() -> None:
    search, written, (a, b) = make(2)
    search.pduReceived(a, done(100, 32, "no such object"))
    search.pduReceived(b, done(101, 0))
    assert written[-1] == done(5, 0)
    search, written, (a, b) = make(2)
    search.pduReceived(a, done(100, 32))
    search.pduReceived(b, done(101, 32))
    assert written[-1] == done(5, 32, "no route holds this base")


def test_sizeLimitAcrossTheMerge() -> None:
    search, written, (a, b) = make(2, sizeLimit=2)
    assert search.pduReceived(a, entry(100, b"cn=1")) == []
    assert search.pduReceived(b, entry(101, b"cn=2")) == []
    abandon = search.pduReceived(a, entry(100, b"cn=3"))
    assert [sub.route for sub in abandon] == ["r0", "r1"]
    assert written[-1] == done(5, 4, "size limit reached across routes")
    assert len(written) == 3
    search.pduReceived(b, entry(101, b"cn=4"))  # late: dropped
    assert len(written) == 3


def test_lostLinkCountsAsItsError() -> None:
    search, written, (a, b) = make(2)
    search.pduReceived(a, done(100))
    search.subFailed(b, 52, "connection to backend x lost")
    assert written[-1] == done(5, 52, "route r1: connection to backend x lost")


def test_referralBecomesAContinuationReference() -> None:
    search, written, (a, b) = make(2)
    urls = ber.tlv(0x04, b"ldap://other/dc=x")
    search.pduReceived(a, done(100, 10, "", ber.tlv(0xA3, urls)))
    search.pduReceived(b, done(101))
    assert written[0] == ber.message(5, ber.tlv(ber.SEARCH_RESULT_REFERENCE, urls))
    assert written[-1] == done(5)


def test_singleSubSearchPassesItsOwnDone() -> None:
    search, written, (a,) = make(1)
    cookie = ber.tlv(0xA0, ber.tlv(0x30, ber.tlv(0x04, PAGED_RESULTS_OID)))
    search.pduReceived(a, ber.message(100, ber.tlv(ber.SEARCH_RESULT_DONE, b"\x0a\x01\x00\x04\x00\x04\x00"), cookie))
    assert written == [ber.message(5, ber.tlv(ber.SEARCH_RESULT_DONE, b"\x0a\x01\x00\x04\x00\x04\x00"), cookie)]


def test_controlOIDsAndSearchWith() -> None:
    request = pureldap.LDAPMessage(
        pureldap.LDAPSearchRequest(baseObject=b"dc=com", scope=2, sizeLimit=7),
        controls=[(PAGED_RESULTS_OID, False, b"\x30\x05\x02\x01\x05\x04\x00"), (b"1.2.3", True, None)],
        id=3,
    ).toWire()
    assert controlOIDs(splitMessage(request)[3]) == [PAGED_RESULTS_OID, b"1.2.3"]
    assert searchSizeLimit(request) == 7
    moved = searchWith(request, b"dc=corp,dc=com", 0)
    expected = pureldap.LDAPMessage(
        pureldap.LDAPSearchRequest(baseObject=b"dc=corp,dc=com", scope=0, sizeLimit=7),
        controls=[(PAGED_RESULTS_OID, False, b"\x30\x05\x02\x01\x05\x04\x00"), (b"1.2.3", True, None)],
        id=3,
    ).toWire()
    assert moved == expected


def test_rootDSE() -> None:
    plan = fanout.Plan([], rootDSE=True, namingContexts=["dc=corp,dc=example,dc=com", "dc=example,dc=com"])
    backend = [(b"namingContexts", [b"DC=Example,DC=Com", b"o=other"]), (b"supportedLDAPVersion", [b"3"])]
    assert plan.entryHook(backend) == [
        (b"namingContexts", [b"dc=corp,dc=example,dc=com", b"dc=example,dc=com", b"o=other"]),
        (b"supportedLDAPVersion", [b"3"]),
    ]
    own = pureldap.LDAPSearchResultEntry(
        objectName=b"",
        attributes=[(b"objectClass", [b"top"]), (b"supportedLDAPVersion", [b"3"]), (b"namingContexts", [b"dc=x"])],
    ).toWire()
    assert fanout.rootDSEEntry(["dc=x"]) == own
