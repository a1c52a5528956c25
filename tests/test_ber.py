"""Byte-level framing, envelope reads and the proxy's own answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from tests import pdus


def stream() -> list[bytes]:
    return [
        pdus.bind("uid=alice,ou=people,dc=example,dc=com", "secret", 1),
        pdus.search("ou=people,dc=example,dc=com", 2),
        pdus.message(pureldap.LDAPDelRequest(entry="cn=x,dc=example,dc=com"), 3),
        # a long-form length: an entry with a 1000-byte value
        pdus.add("cn=big,dc=example,dc=com", [("description", ["x" * 1000])], 4),
        pdus.message(pureldap.LDAPAbandonRequest(id=2), 5),
    ]


class TestFramer:
    def test_splitAtEveryByteBoundary(self) -> None:
        data = b"".join(stream())
        for cut in range(len(data) + 1):
            framer = ber.Framer()
            assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == stream()
            assert framer.buffered == 0

    def test_oneByteAtATime(self) -> None:
        framer = ber.Framer()
        out: list[bytes] = []
        for byte in b"".join(stream()):
            out += framer.feed(bytes((byte,)))
        assert out == stream()

    def test_manyPDUsInOneChunk(self) -> None:
        data = b"".join(stream()) * 50
        assert ber.Framer().feed(data) == stream() * 50

    def test_longFormLength(self) -> None:
        big = stream()[3]
        assert big[1] == 0x82  # two length octets
        assert ber.Framer().feed(big) == [big]

    @pytest.mark.parametrize(
        "data,reason",
        [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not-ldap"),
            (b"\x30\x80\x02\x01\x01", "indefinite-length"),
            (b"\x30\x85\x01\x00\x00\x00\x00", "oversized"),
            (b"\x30\x84\x7f\xff\xff\xff", "oversized"),
        ],
    )
    def test_malformed(self, data: bytes, reason: str) -> None:
        with pytest.raises(ber.FramingError) as caught:
            ber.Framer().feed(data)
        assert caught.value.reason == reason

    def test_oversizedRefusedBeforeBodyArrives(self) -> None:
        framer = ber.Framer(maxPDUBytes=100)
        with pytest.raises(ber.FramingError, match="exceeds the limit of 100"):
            framer.feed(b"\x30\x81\xc8")  # declares 200 bytes; none sent

    @settings(max_examples=300, derandomize=True)
    @given(st.lists(st.integers(min_value=0, max_value=400), max_size=8))
    def test_anySplitYieldsSamePDUs(self, cuts: list[int]) -> None:
        data = b"".join(stream())
        points = sorted({min(c, len(data)) for c in cuts})
        framer = ber.Framer()
        out: list[bytes] = []
        previous = 0
        for point in points + [len(data)]:
            out += framer.feed(data[previous:point])
            previous = point
        assert out == stream()

    @settings(max_examples=500, derandomize=True)
    @given(st.binary(max_size=300))
    def test_arbitraryBytesGivePDUsOrFramingError(self, data: bytes) -> None:
        framer = ber.Framer(maxPDUBytes=1000)
        try:
            for pdu in framer.feed(data):
                try:
                    ber.Envelope.fromBytes(pdu)
                except ber.FramingError:
                    pass
        except ber.FramingError:
            pass
        assert framer.buffered <= 1000


class TestEnvelope:
    def test_search(self) -> None:
        pdu = pdus.search("ou=people,dc=example,dc=com", 300)
        envelope = ber.Envelope.fromBytes(pdu)
        assert (envelope.messageID, envelope.opTag) == (300, ber.SEARCH_REQUEST)
        assert envelope.targetDN(pdu) == b"ou=people,dc=example,dc=com"
        assert not envelope.hasControls

    def test_everyOperationsTargetDN(self) -> None:
        dn = "cn=x,dc=example,dc=com"
        cases = [
            pureldap.LDAPDelRequest(entry=dn),
            pureldap.LDAPModifyRequest(object=dn, modification=[]),
            pureldap.LDAPAddRequest(entry=dn, attributes=pdus.attributes([("cn", ["x"])])),
            pureldap.LDAPModifyDNRequest(entry=dn, newrdn="cn=y", deleteoldrdn=True),
            pureldap.LDAPCompareRequest(entry=dn, ava=pureldap.LDAPAttributeValueAssertion(
                pureldap.LDAPAttributeDescription("cn"), pureldap.LDAPAssertionValue("x"))),
            pureldap.LDAPBindRequest(dn=dn, auth="pw"),
        ]
        for op in cases:
            pdu = pdus.message(op, 7)
            envelope = ber.Envelope.fromBytes(pdu)
            assert envelope.targetDN(pdu) == dn.encode(), op

    def test_bindAuthentication(self) -> None:
        pdu = pdus.bind("cn=a", "pw", 1)
        envelope = ber.Envelope.fromBytes(pdu)
        assert envelope.bindAuthentication(pdu) == (ber.SIMPLE_AUTH_TAG, b"pw")
        sasl = pdus.message(pureldap.LDAPBindRequest(dn="", auth=("DIGEST-MD5", None), sasl=True), 2)
        envelope = ber.Envelope.fromBytes(sasl)
        assert envelope.bindAuthentication(sasl) == (ber.SASL_AUTH_TAG, b"DIGEST-MD5")

    def test_extendedAndAbandon(self) -> None:
        pdu = pdus.message(pureldap.LDAPStartTLSRequest(), 3)
        envelope = ber.Envelope.fromBytes(pdu)
        assert envelope.extendedName(pdu) == ber.STARTTLS_OID
        abandon = pdus.message(pureldap.LDAPAbandonRequest(id=42), 4)
        assert ber.Envelope.fromBytes(abandon).abandonedID(abandon) == 42

    def test_controls(self) -> None:
        pdu = pdus.message(
            pureldap.LDAPSearchRequest(baseObject="dc=x"), 9, controls=[("1.2.840.113556.1.4.319", False, b"\x30\x05\x02\x01\x64\x04\x00")]
        )
        assert ber.Envelope.fromBytes(pdu).hasControls

    @pytest.mark.parametrize(
        "pdu",
        [
            b"\x30\x03\x04\x01\x01",  # messageID is not an INTEGER
            b"\x30\x05\x02\x01\x01\x99\x00",  # unknown operation
            b"\x30\x05\x02\x01\x01\x63\x09",  # operation longer than message
            b"\x30\x03\x02\x01\xff",  # negative messageID, no operation
            b"\x30\x06\x02\x01\x01\x42\x00\x05",  # junk after the operation
        ],
    )
    def test_malformed(self, pdu: bytes) -> None:
        with pytest.raises(ber.FramingError):
            ber.Envelope.fromBytes(pdu)


class TestResponseScanner:
    def test_finalsAndChunks(self) -> None:
        data = pdus.searchEntry("cn=a", 2) + pdus.searchEntry("cn=b", 2) + pdus.searchDone(2) + pdus.bindResponse(3, 49)
        for cut in range(len(data) + 1):
            scanner = ber.ResponseScanner(10000)
            first, finals1 = scanner.feed(data[:cut])
            second, finals2 = scanner.feed(data[cut:])
            assert first + second == data
            assert finals1 + finals2 == [(2, ber.SEARCH_RESULT_DONE, 0), (3, ber.BIND_RESPONSE, 49)]

    def test_garbage(self) -> None:
        with pytest.raises(ber.FramingError):
            ber.ResponseScanner(100).feed(b"HTTP/1.0 400\r\n")


class TestAnswers:
    def test_resultDecodesWithLdaptor(self) -> None:
        envelope = ber.Envelope.fromBytes(pdus.search(messageID=77))
        answer = ber.resultFor(envelope, ber.UNAVAILABLE, "backend down")
        assert answer is not None
        [decoded] = pdus.decode(answer)
        assert decoded.id == 77
        assert isinstance(decoded.value, pureldap.LDAPSearchResultDone)
        assert decoded.value.resultCode == 52
        assert decoded.value.errorMessage == b"backend down"

    def test_noticeOfDisconnection(self) -> None:
        notice = ber.noticeOfDisconnection(ber.PROTOCOL_ERROR, "bad PDU")
        assert notice.endswith(b"\x8a\x161.3.6.1.4.1.1466.20036")
        [decoded] = pdus.decode(notice)
        assert decoded.id == 0
        assert decoded.value.resultCode == 2

    def test_noAnswerForAbandonOrUnbind(self) -> None:
        abandon = pdus.message(pureldap.LDAPAbandonRequest(id=1), 2)
        assert ber.resultFor(ber.Envelope.fromBytes(abandon), 1, "x") is None

    def test_integers(self) -> None:
        for value in (0, 1, 127, 128, 255, 256, 2**31 - 1):
            assert int.from_bytes(ber.encodeInteger(value), "big", signed=True) == value
        assert ber.encodeInteger(128) == b"\x00\x80"

    def test_simpleBindRequest(self) -> None:
        [decoded] = pdus.decode(ber.simpleBindRequest(5, b"cn=a", b"pw"))
        assert decoded.value.dn == b"cn=a" and decoded.value.auth == b"pw" and decoded.value.version == 3


def fourOctetForm(pdu: bytes) -> bytes:
    """The same LDAPMessage with its outer length in libldap's fixed 0x84 form."""
    [header] = [1 + (pdu[1] & 0x7F) if pdu[1] & 0x80 else 1]
    body = pdu[1 + header :]
    return b"\x30\x84" + len(body).to_bytes(4, "big") + body


class TestFourOctetLengths:
    """OpenLDAP's library writes every SEQUENCE length as 0x84 plus four octets."""

    def test_framerAtEveryByteBoundary(self) -> None:
        pdus_ = [fourOctetForm(p) for p in stream()]
        data = b"".join(pdus_)
        for cut in range(len(data) + 1):
            framer = ber.Framer()
            assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == pdus_
        assert ber.Envelope.fromBytes(pdus_[1]).messageID == 2

    def test_scannerAtEveryByteBoundary(self) -> None:
        data = fourOctetForm(pdus.searchEntry("cn=a", 2)) + fourOctetForm(pdus.searchDone(2, 32))
        for cut in range(len(data) + 1):
            scanner = ber.ResponseScanner(10000)
            first, finals1 = scanner.feed(data[:cut])
            second, finals2 = scanner.feed(data[cut:])
            assert first + second == data
            assert finals1 + finals2 == [(2, ber.SEARCH_RESULT_DONE, 32)]


class TestElementReader:
    """readTLV, readExpected and elements: the one element reader, and its one set of reasons."""

    def test_shortAndLongForms(self) -> None:
        for size in (0, 5, 127, 128, 255, 256, 70000):
            element = ber.tlv(ber.OCTET_STRING, b"v" * size) + b"trailing"
            tag, start, end = ber.readTLV(element, 0)
            assert (tag, element[start:end]) == (ber.OCTET_STRING, b"v" * size)

    def test_elements(self) -> None:
        body = ber.tlv(ber.INTEGER, b"\x03") + ber.tlv(ber.OCTET_STRING, b"cn=x") + ber.tlv(0x80, b"pw")
        assert ber.elements(body, 0, len(body)) == [
            (ber.INTEGER, b"\x02\x01\x03", 2, 3),
            (ber.OCTET_STRING, b"\x04\x04cn=x", 5, 9),
            (0x80, b"\x80\x02pw", 11, 13),
        ]
        assert ber.readInteger(body, 2, 3) == 3

    @pytest.mark.parametrize(
        "data, reason, detail",
        [
            (b"\x04", "malformed", "truncated element"),
            (b"\x1f\x01\x00", "malformed", "multi-octet tags are not LDAP"),
            (b"\x04\x82\x01", "malformed", "truncated element"),
            (b"\x04\x05abc", "malformed", "truncated element: its length runs past what holds it"),
            (b"\x04\x80abc\x00\x00", "indefinite-length", "indefinite-length BER is not allowed in LDAP"),
            (b"\x04\x85\x00\x00\x00\x00\x01a", "oversized", "BER length of 5 octets"),
        ],
    )
    def test_refused(self, data: bytes, reason: str, detail: str) -> None:
        with pytest.raises(ber.FramingError) as caught:
            ber.readTLV(data, 0)
        assert (caught.value.reason, caught.value.detail) == (reason, detail)

    def test_endBoundsTheElement(self) -> None:
        data = ber.tlv(ber.OCTET_STRING, b"abcd")
        with pytest.raises(ber.FramingError):
            ber.readTLV(data, 0, 4)

    def test_readExpected(self) -> None:
        data = ber.tlv(ber.OCTET_STRING, b"abcd") + b"trailing"
        assert ber.readExpected(data, 0, None, ber.OCTET_STRING, "no string") == (2, 6)
        assert ber.readExpected(data, 0, 6, ber.OCTET_STRING, "no string") == (2, 6)

    def test_readExpectedRefusesAnotherTag(self) -> None:
        data = ber.tlv(ber.INTEGER, b"\x01")
        with pytest.raises(ber.FramingError) as caught:
            ber.readExpected(data, 0, None, ber.OCTET_STRING, "field without a name")
        assert (caught.value.reason, caught.value.detail) == ("malformed", "field without a name")

    def test_readExpectedKeepsReadTLVErrors(self) -> None:
        with pytest.raises(ber.FramingError) as caught:
            ber.readExpected(b"\x04\x05abc", 0, None, ber.INTEGER, "field without a name")
        assert (caught.value.reason, caught.value.detail) == ("malformed", "truncated element: its length runs past what holds it")
