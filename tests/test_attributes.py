"""
L{ldaproute.wire.attributes}: attribute walks inside requests and the
value-removing edit of search result entries, checked against ldaptor's
encoder and decoder.
"""

from __future__ import annotations

import pytest
from ldaptor import delta
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from ldaproute.wire.attributes import isRootDSESearch, valuedAttributes, withoutValues
from tests import pdus


def names(pdu: bytes) -> list[bytes]:
    return list(valuedAttributes(pdu, ber.Envelope.fromBytes(pdu)))


def test_addAttributes() -> None:
    pdu = pdus.add("cn=a,dc=x", [("cn", ["a"]), ("empty", []), ("userPassword;binary", ["p", "q"])])
    assert names(pdu) == [b"cn", b"userPassword;binary"]


def test_modifyAttributes() -> None:
    op = delta.ModifyOp(
        "cn=a,dc=x", [delta.Add("mail", ["m"]), delta.Delete("userPassword"), delta.Replace("unicodePwd", ["x"])]
    ).asLDAP()
    assert names(pdus.message(op, 7, controls=[("1.2.3", False, None)])) == [b"mail", b"unicodePwd"]


def test_otherOperations() -> None:
    assert names(pdus.search()) == []
    assert names(pdus.bind("cn=a", "p")) == []


@pytest.mark.parametrize("cut", [1, 3, 6])
def test_truncatedAttributeList(cut: int) -> None:
    """Inner lengths that overrun their container are protocol errors, whatever the cut."""
    body = ber.tlv(0x30, ber.tlv(0x04, b"userPassword") + ber.tlv(0x31, ber.tlv(0x04, b"pw")))
    broken = body[:-cut]
    content = ber.tlv(0x04, b"cn=a") + bytes((0x30,)) + ber.encodeLength(len(body)) + broken
    pdu = ber.message(1, bytes((ber.ADD_REQUEST,)) + ber.encodeLength(len(content)) + content)
    with pytest.raises(ber.FramingError):
        names(pdu)


def test_isRootDSESearch() -> None:
    for pdu, expected in (
        (pdus.search("", scope=pureldap.LDAP_SCOPE_baseObject), True),
        (pdus.search(""), False),
        (pdus.search("", scope=pureldap.LDAP_SCOPE_singleLevel), False),
        (pdus.search("dc=example,dc=com", scope=pureldap.LDAP_SCOPE_baseObject), False),
        (pdus.bind(), False),
    ):
        assert isRootDSESearch(pdu, ber.Envelope.fromBytes(pdu)) is expected
    longForm = ber.message(1, ber.tlv(ber.SEARCH_REQUEST, b"\x04\x81\x00\x0a\x01\x00\x0a\x01\x00"))
    assert isRootDSESearch(longForm, ber.Envelope.fromBytes(longForm))


def entry(pairs: list[tuple[str, list[str]]], messageID: int = 2, controls: bool = False) -> bytes:
    op = pureldap.LDAPSearchResultEntry("", pairs)
    return pdus.message(op, messageID, controls=[("1.2.3", False, b"v")] if controls else None)


def test_withoutValues() -> None:
    """Only the chosen values leave; names, other attributes and controls keep their bytes."""
    big = ["x" * 200] * 3  # long-form lengths around the edit
    before = entry([("a", big), ("Mechs", ["KEEP", "DROP", "KEEP2"]), ("b", ["1"])], controls=True)
    after = withoutValues(before, b"mechs", lambda value: value == b"DROP")
    assert after == entry([("a", big), ("Mechs", ["KEEP", "KEEP2"]), ("b", ["1"])], controls=True)
    [decoded] = pdus.decode(after)
    assert decoded.id == 2 and decoded.controls is not None


def test_withoutEveryValue() -> None:
    """An attribute left without values is removed."""
    before = entry([("mechs", ["DROP"]), ("b", ["1"])])
    assert withoutValues(before, b"mechs", lambda value: True) == entry([("b", ["1"])])


def test_nothingToDrop() -> None:
    before = entry([("mechs", ["KEEP"])])
    assert withoutValues(before, b"mechs", lambda value: False) is before
    done = pdus.searchDone()
    assert withoutValues(done, b"mechs", lambda value: True) is done
