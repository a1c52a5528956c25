"""The whole-PDU codec (ldaproute.wire.pdu), checked against ldaptor's encoder."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st
from ldaptor.protocols import pureldap

from ldaproute.wire import ber, pdu, results
from tests import pdus

IDS = [0, 1, 5, 127, 128, 255, 256, 32767, 32768, 65535, 65536, 2**23, 2**24, 2**31 - 1]


def decodeOne(data: bytes) -> pureldap.LDAPMessage:
    [message] = pdus.decode(data)
    if message.controls:  # ldaptor reads BOOLEAN TRUE as 255
        message.controls = [(oid, bool(critical), value) for oid, critical, value in message.controls]
    return message


# --- messageID ------------------------------------------------------------------


@pytest.mark.parametrize("oldID", IDS)
@pytest.mark.parametrize("newID", IDS)
@pytest.mark.parametrize("size", [0, 100, 200, 70000])
def test_withMessageIDEveryLengthForm(oldID: int, newID: int, size: int) -> None:
    """Short, 0x81, 0x82 and 0x83 outer lengths, 1- to 4-octet INTEGERs."""
    entry = pdus.searchEntry("cn=x,dc=example,dc=com", oldID, [("description", ["v" * size])])
    out = pdu.withMessageID(entry, newID)
    message = decodeOne(out)
    assert message.id == newID
    assert message.value.objectName == b"cn=x,dc=example,dc=com"
    assert pdu.withMessageID(out, oldID) == entry
    assert pdu.messageIDOf(out) == newID


def test_withMessageIDFourOctetLengthForm() -> None:
    """libldap writes the outer length as 0x84 and four octets."""
    body = ber.tlv(ber.INTEGER, b"\x07") + ber.unbindRequest(1)[5:]
    longForm = b"\x30\x84" + len(body).to_bytes(4, "big") + body
    assert pdu.messageIDSpan(longForm) == (7, 6, 9)
    assert pdu.withMessageID(longForm, 9) == ber.unbindRequest(9)


def test_messageIDSpan() -> None:
    request = pdus.search(messageID=300)
    messageID, idStart, opStart = pdu.messageIDSpan(request)
    assert (messageID, request[idStart], request[opStart]) == (300, ber.INTEGER, ber.SEARCH_REQUEST)


@pytest.mark.parametrize(
    "data, detail",
    [
        (b"\x30", "truncated LDAPMessage"),
        (b"\x30\x82\x01", "truncated LDAPMessage"),
        (b"\x30\x03\x04\x01\x01", "LDAPMessage without a messageID"),
        (b"\x30\x03\x02\x00\x42", "LDAPMessage with a bad messageID"),
        (b"\x30\x08\x02\x05\x00\x00\x00\x00\x01\x42", "LDAPMessage with a bad messageID"),
        (b"\x30\x03\x02\x01\x01", "LDAPMessage with a bad messageID"),
        (b"\x30\x05\x02\x01\xff\x42\x00", "negative messageID"),
    ],
)
def test_messageIDSpanRefuses(data: bytes, detail: str) -> None:
    with pytest.raises(ber.FramingError) as caught:
        pdu.messageIDSpan(data)
    assert (caught.value.reason, caught.value.detail) == ("malformed", detail)


def test_indefiniteOuterLength() -> None:
    with pytest.raises(ber.FramingError) as caught:
        pdu.messageIDSpan(b"\x30\x80\x02\x01\x01\x42\x00\x00\x00")
    assert caught.value.reason == "indefinite-length"


def test_opSpan() -> None:
    request = pdus.message(pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), 7, controls=[("1.2.3", False, None)])
    messageID, opStart, opEnd = pdu.opSpan(request)
    assert messageID == 7 and request[opStart] == ber.SEARCH_REQUEST and request[opEnd] == ber.CONTROLS_TAG
    assert pdu.controlsAfter(request, opStart) == request[opEnd:]
    assert pdu.controlsAfter(pdus.search(), pdu.opSpan(pdus.search())[1]) == b""


def test_opSpanRefusesOverlongOp() -> None:
    with pytest.raises(ber.FramingError) as caught:
        pdu.opSpan(b"\x30\x05\x02\x01\x01\x63\x10")
    assert caught.value.detail == "protocolOp longer than its LDAPMessage"


def test_splitAndJoinRoundTrip() -> None:
    request = pdus.message(pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), 7, controls=[("1.2.3", True, b"v")])
    idElement, opTag, op, rest = pdu.splitMessage(request)
    assert (idElement, opTag, op[:1]) == (b"\x02\x01\x07", ber.SEARCH_REQUEST, b"\x63")
    assert rest[:1] == bytes((ber.CONTROLS_TAG,))
    assert pdu.joinMessage(idElement, op, rest) == request


def test_splitMessageRefusesOtherTags() -> None:
    with pytest.raises(ber.FramingError) as caught:
        pdu.splitMessage(b"\x31\x00")
    assert caught.value.reason == "not-ldap"


# --- controls -------------------------------------------------------------------


@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.integers(0, 300))
def test_reframeRoundTrip(oldID: int, newID: int, size: int) -> None:
    request = pdus.search("cn=" + "y" * size + ",dc=example,dc=com", oldID)
    control = pdu.proxiedAuthorization(b"dn:uid=u" + b"z" * size)
    message = decodeOne(pdu.reframe(request, newID, control))
    assert message.id == newID
    assert message.controls == [(pdu.PROXIED_AUTHZ_OID, True, b"dn:uid=u" + b"z" * size)]
    assert message.value.baseObject == ("cn=" + "y" * size + ",dc=example,dc=com").encode()


def test_reframeAppendsToExistingControls() -> None:
    request = pdus.message(pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), 7, controls=[("1.2.3.4", False, b"abc")])
    message = decodeOne(pdu.reframe(request, 300, pdu.proxiedAuthorization(b"dn:cn=a")))
    assert message.id == 300
    assert message.controls == [(b"1.2.3.4", False, b"abc"), (pdu.PROXIED_AUTHZ_OID, True, b"dn:cn=a")]


def test_reframeAtKeepsControlsWithoutANewOne() -> None:
    request = pdus.message(pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"), 7, controls=[("1.2.3.4", False, b"abc")])
    _, opStart, opEnd = pdu.opSpan(request)
    assert pdu.reframeAt(request, opStart, opEnd, 7, b"", b"") == request


def test_reframeRefusesTrailingGarbage() -> None:
    request = pdus.search(messageID=3)
    garbled = ber.tlv(ber.SEQUENCE, request[2:] + b"\x04\x00")
    with pytest.raises(ber.FramingError) as caught:
        pdu.reframe(garbled, 4, pdu.proxiedAuthorization(b""))
    assert caught.value.detail == "unexpected data after protocolOp"


def test_reframeWithoutControlOnlyRenumbers() -> None:
    request = pdus.search(messageID=3)
    assert pdu.reframe(request, 3) == request


def test_controlOIDs() -> None:
    request = pdus.message(
        pureldap.LDAPSearchRequest(baseObject="dc=example,dc=com"),
        5,
        controls=[(pdu.PAGED_RESULTS_OID.decode(), False, b"\x30\x00"), ("1.2.3", True, None)],
    )
    assert pdu.controlOIDs(pdu.splitMessage(request)[3]) == [pdu.PAGED_RESULTS_OID, b"1.2.3"]
    assert pdu.controlOIDs(b"") == []


def test_controlEncoding() -> None:
    request = ber.message(1, ber.unbindRequest(1)[5:], ber.tlv(ber.CONTROLS_TAG, pdu.control(b"1.2.3", True, b"x")))
    assert decodeOne(request).controls == [(b"1.2.3", True, b"x")]


# --- request fields ---------------------------------------------------------------


def test_extendedNameAt() -> None:
    request = pdu.startTLSRequest(4)
    assert pdu.extendedNameAt(request, pdu.messageIDSpan(request)[2]) == ber.STARTTLS_OID
    with pytest.raises(ber.FramingError) as caught:
        abandon = ber.abandonRequest(2, 1)
        pdu.extendedNameAt(abandon, pdu.messageIDSpan(abandon)[2])
    assert caught.value.reason == "malformed"


def test_abandonedIDAt() -> None:
    request = ber.abandonRequest(2, 70000)
    assert pdu.abandonedIDAt(request, pdu.messageIDSpan(request)[2]) == 70000
    empty = b"\x30\x05\x02\x01\x02\x50\x00"
    with pytest.raises(ber.FramingError) as caught:
        pdu.abandonedIDAt(empty, 5)
    assert caught.value.detail == "abandon request with a bad messageID"


def test_cancelRequestRoundTrip() -> None:
    request = pdu.cancelRequest(6, 300)
    message = decodeOne(request)
    assert message.id == 6 and message.value.requestName == pdu.CANCEL_OID
    assert pdu.cancelIDAt(request, pdu.messageIDSpan(request)[2]) == 300
    startTLS = pdu.startTLSRequest(1)
    assert pdu.cancelIDAt(startTLS, pdu.messageIDSpan(startTLS)[2]) is None


def test_searchFields() -> None:
    request = pdus.search("dc=example,dc=com", 5, scope=1, sizeLimit=7)
    assert (pdu.searchScope(request), pdu.searchSizeLimit(request)) == (1, 7)
    moved = decodeOne(pdu.searchWith(request, b"dc=corp,dc=com", 0))
    assert (moved.id, moved.value.baseObject, moved.value.scope, moved.value.sizeLimit) == (5, b"dc=corp,dc=com", 0, 7)
    with pytest.raises(ber.FramingError):
        pdu.searchScope(ber.message(1, ber.tlv(ber.SEARCH_REQUEST, ber.tlv(ber.OCTET_STRING, b""))))


# --- responses ----------------------------------------------------------------------


def test_readResponseResult() -> None:
    response = results.readResponse(ber.result(5, ber.SEARCH_RESULT_DONE, 32, "no such", matchedDN=b"dc=example"))
    assert response == results.Response(5, ber.SEARCH_RESULT_DONE, 32, b"dc=example", "no such", b"")


def test_readResponseReferral() -> None:
    urls = ber.tlv(ber.OCTET_STRING, b"ldap://b/dc=x")
    done = ber.result(5, ber.SEARCH_RESULT_DONE, 10, "", extra=ber.tlv(ber.REFERRAL_TAG, urls))
    assert results.readResponse(done).referral == urls


def test_readResponseEntry() -> None:
    entry = pdus.searchEntry("cn=x", 5)
    assert results.readResponse(entry) == results.Response(5, ber.SEARCH_RESULT_ENTRY, -1, b"", "", b"")


def test_readResponseRefusesGarbledResult() -> None:
    with pytest.raises(ber.FramingError) as caught:
        results.readResponse(ber.message(5, ber.tlv(ber.SEARCH_RESULT_DONE, ber.tlv(ber.OCTET_STRING, b""))))
    assert caught.value.detail == "response without an LDAPResult"


def test_noticeOf() -> None:
    assert results.noticeOf(ber.noticeOfDisconnection(ber.UNAVAILABLE, "going away")) == (ber.UNAVAILABLE, "going away")
    assert results.noticeOf(b"\x30\x03\x02\x01\x00") == (-1, "")


def test_startTLSResponse() -> None:
    message = decodeOne(pdu.startTLSResponse(7, 2, "no"))
    assert (message.id, message.value.resultCode, message.value.responseName) == (7, 2, ber.STARTTLS_OID)


# --- entries --------------------------------------------------------------------------


def test_searchResultEntryMatchesLdaptor() -> None:
    attributes = [(b"objectClass", [b"top"]), (b"namingContexts", [b"dc=a", b"dc=b"]), (b"empty", [])]
    ours = results.searchResultEntry(b"cn=x", attributes)
    assert ours == pureldap.LDAPSearchResultEntry(objectName=b"cn=x", attributes=attributes).toWire()
    assert results.readEntry(ours) == (b"cn=x", attributes)


def test_readEntryRefusesOtherOps() -> None:
    with pytest.raises(ber.FramingError) as caught:
        results.readEntry(ber.tlv(ber.SEARCH_RESULT_DONE, b""))
    assert caught.value.detail == "bad search result entry"


# --- ldaptor ---------------------------------------------------------------------------


def test_decodeOp() -> None:
    _, _, op, _ = pdu.splitMessage(pdus.search("dc=example,dc=com", 3))
    decoded = pdu.decodeOp(op)
    assert isinstance(decoded, pureldap.LDAPSearchRequest) and decoded.baseObject == b"dc=example,dc=com"


def test_decodeOpRefusesWhatLdaptorCannotRead() -> None:
    with pytest.raises(ber.FramingError) as caught:
        pdu.decodeOp(ber.tlv(ber.SEARCH_REQUEST, b"\x04\x00") + b"\x00")
    assert caught.value.reason == "malformed"
