"""
Tests for L{ldaproute.core.rewrite}: each request and response shape, both
directions, with controls and undecodable PDUs passing through.
"""

from __future__ import annotations

import pytest
from ldaptor import ldapfilter
from ldaptor.protocols import pureber, pureldap

from ldaproute.wire import ber
from ldaproute.config import Config
from ldaproute.core.rewrite import Refused, Rewriter
from ldaproute.runtime import Runtime
from ldaproute.wire.ber import readTLV
from ldaproute.wire.pdu import splitMessage

ROUTE = """
[ldaproute]
listen = tcp:1389
[backend:a]
url = ldap://127.0.0.1:1
[pool:p]
backends = a
[route:corp]
suffix = dc=corp,dc=example,dc=com
pool = p
rewrite_suffix = dc=corp,dc=example,dc=com => dc=ad,dc=example,dc=local
map_attributes = mail => userPrincipalName, uid => sAMAccountName
hide_attributes = userPassword, unicodePwd
dn_attributes = sponsor
"""
CONTROL = (b"1.2.840.113556.1.4.805", True, None)  # tree delete, criticality true


@pytest.fixture
def rewriter() -> Rewriter:
    return Rewriter(Config.fromString(ROUTE).routes[0])


def wire(op: object, controls: list[tuple[bytes, bool, bytes | None]] | None = None, messageID: int = 7) -> bytes:
    return pureldap.LDAPMessage(op, controls=controls, id=messageID).toWire()


def decode(pdu: bytes) -> pureldap.LDAPMessage:
    context = pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )
    message, used = pureber.berDecodeObject(context, pdu)
    assert used == len(pdu)
    return message


def controlsOf(pdu: bytes) -> bytes:
    return splitMessage(pdu)[3]


def test_searchRequest(rewriter: Rewriter) -> None:
    pdu = wire(
        pureldap.LDAPSearchRequest(
            baseObject=b"OU=People, DC=Corp,dc=example,dc=com",
            scope=2,
            filter=ldapfilter.parseFilter(
                "(&(member=uid=a,ou=people,dc=corp,dc=example,dc=com)(|(mail=a*)(uid>=b))(!(cn=x))(sponsor:=cn=s,dc=corp,dc=example,dc=com))"
            ),
            attributes=[b"mail", b"uid;binary", b"userPassword", b"cn"],
        ),
        controls=[CONTROL],
    )
    out = rewriter.request(pdu)
    message = decode(out)
    search = message.value
    assert message.id == 7
    assert search.baseObject == b"OU=People,dc=ad,dc=example,dc=local"
    assert search.attributes == [b"userPrincipalName", b"sAMAccountName;binary", b"cn"]
    assert search.filter.toWire() == ldapfilter.parseFilter(
        "(&(member=uid=a,ou=people,dc=ad,dc=example,dc=local)(|(userPrincipalName=a*)(sAMAccountName>=b))"
        "(!(cn=x))(sponsor:=cn=s,dc=ad,dc=example,dc=local))"
    ).toWire()
    assert controlsOf(out) == controlsOf(pdu)


def test_searchForOnlyHiddenAttributesAsksForNone(rewriter: Rewriter) -> None:
    pdu = wire(pureldap.LDAPSearchRequest(baseObject=b"dc=corp,dc=example,dc=com", attributes=[b"userPassword"]))
    assert decode(rewriter.request(pdu)).value.attributes == [b"1.1"]


@pytest.mark.parametrize("text", ["(userPassword=*)", "(!(unicodePwd=x))", "(|(cn=a)(userpassword=s*))", "(userPassword:=x)"])
def test_hiddenAttributeInFilterRefused(rewriter: Rewriter, text: str) -> None:
    pdu = wire(pureldap.LDAPSearchRequest(baseObject=b"dc=corp,dc=example,dc=com", filter=ldapfilter.parseFilter(text)))
    with pytest.raises(Refused) as caught:
        rewriter.request(pdu)
    assert caught.value.resultCode == 53
    assert "hidden by this route" in caught.value.message


def test_compareOnHiddenAttributeRefused(rewriter: Rewriter) -> None:
    pdu = wire(
        pureldap.LDAPCompareRequest(
            entry=b"uid=a,dc=corp,dc=example,dc=com",
            ava=pureldap.LDAPAttributeValueAssertion(pureber.BEROctetString(b"userPassword"), pureber.BEROctetString(b"s")),
        )
    )
    with pytest.raises(Refused):
        rewriter.request(pdu)


def test_compare(rewriter: Rewriter) -> None:
    pdu = wire(
        pureldap.LDAPCompareRequest(
            entry=b"cn=g,dc=corp,dc=example,dc=com",
            ava=pureldap.LDAPAttributeValueAssertion(
                pureber.BEROctetString(b"member"), pureber.BEROctetString(b"uid=a,dc=corp,dc=example,dc=com")
            ),
        )
    )
    compare = decode(rewriter.request(pdu)).value
    assert compare.entry == b"cn=g,dc=ad,dc=example,dc=local"
    assert compare.ava.assertionValue.value == b"uid=a,dc=ad,dc=example,dc=local"


def test_addRequest(rewriter: Rewriter) -> None:
    pdu = wire(
        pureldap.LDAPAddRequest(
            entry=b"cn=g,dc=corp,dc=example,dc=com",
            attributes=[
                (pureldap.LDAPAttributeDescription(b"member"), pureber.BERSet([pureldap.LDAPAttributeValue(b"uid=a,dc=corp,dc=example,dc=com"), pureldap.LDAPAttributeValue(b"uid=b,dc=elsewhere")])),
                (pureldap.LDAPAttributeDescription(b"mail"), pureber.BERSet([pureldap.LDAPAttributeValue(b"uid=x,dc=corp,dc=example,dc=com")])),
            ],
        ),
        controls=[CONTROL],
    )
    out = rewriter.request(pdu)
    add = decode(out).value
    assert add.entry == b"cn=g,dc=ad,dc=example,dc=local"
    attributes = [(seq.data[0].value, [v.value for v in seq.data[1].data]) for seq in add.attributes.data]
    assert attributes == [
        (b"member", [b"uid=a,dc=ad,dc=example,dc=local", b"uid=b,dc=elsewhere"]),
        (b"userPrincipalName", [b"uid=x,dc=corp,dc=example,dc=com"]),  # not DN-valued: untouched
    ]
    assert controlsOf(out) == controlsOf(pdu)


def test_modifyRequest(rewriter: Rewriter) -> None:
    change = pureber.BERSequence(
        [
            pureber.BEREnumerated(0),
            pureber.BERSequence([pureldap.LDAPAttributeDescription(b"uniqueMember"), pureber.BERSet([pureldap.LDAPAttributeValue(b"uid=a,dc=corp,dc=example,dc=com")])]),
        ]
    )
    pdu = wire(pureldap.LDAPModifyRequest(object=b"cn=g,dc=corp,dc=example,dc=com", modification=[change]))
    modify = decode(rewriter.request(pdu)).value
    assert modify.object == b"cn=g,dc=ad,dc=example,dc=local"
    (operation, description) = modify.modification[0].data
    assert operation.value == 0
    assert description.data[0].value == b"uniqueMember"
    assert [v.value for v in description.data[1].data] == [b"uid=a,dc=ad,dc=example,dc=local"]


def test_modifyDNRequest(rewriter: Rewriter) -> None:
    pdu = wire(pureldap.LDAPModifyDNRequest(entry=b"cn=a,dc=corp,dc=example,dc=com", newrdn=b"cn=b", deleteoldrdn=True, newSuperior=b"ou=x,dc=corp,dc=example,dc=com"))
    moddn = decode(rewriter.request(pdu)).value
    assert (moddn.entry, moddn.newrdn, moddn.newSuperior) == (b"cn=a,dc=ad,dc=example,dc=local", b"cn=b", b"ou=x,dc=ad,dc=example,dc=local")


def test_bindAndDeleteAtByteLevel(rewriter: Rewriter) -> None:
    bind = ber.simpleBindRequest(3, b"cn=admin,dc=corp,dc=example,dc=com", b"secret")
    out = rewriter.request(bind)
    assert out == ber.simpleBindRequest(3, b"cn=admin,dc=ad,dc=example,dc=local", b"secret")
    delete = ber.message(4, ber.tlv(ber.DEL_REQUEST, b"cn=x,dc=corp,dc=example,dc=com"), ber.tlv(0xA0, b"\x30\x03\x04\x011"))
    out = rewriter.request(delete)
    assert out == ber.message(4, ber.tlv(ber.DEL_REQUEST, b"cn=x,dc=ad,dc=example,dc=local"), ber.tlv(0xA0, b"\x30\x03\x04\x011"))


def test_outsideTheSuffixUntouched(rewriter: Rewriter) -> None:
    pdu = ber.message(4, ber.tlv(ber.DEL_REQUEST, b"cn=x,dc=other"))
    assert rewriter.request(pdu) == pdu


def test_undecodableAndUnknownPassAsBytes(rewriter: Rewriter) -> None:
    extended = ber.message(5, ber.tlv(ber.EXTENDED_REQUEST, ber.tlv(0x80, b"1.2.3")))
    assert rewriter.request(extended) is extended
    broken = ber.message(6, ber.tlv(ber.SEARCH_REQUEST, b"\x04\x02ab"))
    assert rewriter.request(broken) is broken
    intermediate = ber.message(6, ber.tlv(ber.INTERMEDIATE_RESPONSE, ber.tlv(0x80, b"1.3.6.1.4.1.4203.1.9.1.4")))
    assert rewriter.response(intermediate) is intermediate
    assert rewriter.response(b"\x30\x03\x02\x01") == b"\x30\x03\x02\x01"


def test_searchResultEntry(rewriter: Rewriter) -> None:
    pdu = wire(
        pureldap.LDAPSearchResultEntry(
            objectName=b"uid=a,ou=people,dc=ad,dc=example,dc=local",
            attributes=[
                (b"sAMAccountName", [b"a"]),
                (b"userPrincipalName", [b"a@corp"]),
                (b"memberOf", [b"cn=g,dc=ad,dc=example,dc=local"]),
                (b"unicodePwd", [b"x"]),
                (b"userPassword", [b"y"]),
                (b"manager", [b"uid=b,dc=AD,dc=example,dc=local"]),
            ],
        ),
        controls=[(b"1.2.3", False, b"v")],
    )
    out = rewriter.response(pdu)
    entry = decode(out).value
    assert entry.objectName == b"uid=a,ou=people,dc=corp,dc=example,dc=com"
    assert entry.attributes == [
        (b"uid", [b"a"]),
        (b"mail", [b"a@corp"]),
        (b"memberOf", [b"cn=g,dc=corp,dc=example,dc=com"]),
        (b"manager", [b"uid=b,dc=corp,dc=example,dc=com"]),
    ]
    assert controlsOf(out) == controlsOf(pdu)


def test_resultMatchedDNAndReferral(rewriter: Rewriter) -> None:
    referral = ber.tlv(0xA3, ber.tlv(0x04, b"ldap://dsa2.example.local/ou=x,dc=ad,dc=example,dc=local??sub"))
    pdu = ber.result(9, ber.SEARCH_RESULT_DONE, 10, "see there", b"dc=ad,dc=example,dc=local", referral)
    out = rewriter.response(pdu)
    expected = ber.tlv(0xA3, ber.tlv(0x04, b"ldap://dsa2.example.local/ou=x,dc=corp,dc=example,dc=com??sub"))
    assert out == ber.result(9, ber.SEARCH_RESULT_DONE, 10, "see there", b"dc=corp,dc=example,dc=com", expected)


def test_searchResultReference(rewriter: Rewriter) -> None:
    pdu = ber.message(9, ber.tlv(ber.SEARCH_RESULT_REFERENCE, ber.tlv(0x04, b"ldap://h:389/ou=a%5C%2Cb,dc=ad,dc=example,dc=local") + ber.tlv(0x04, b"ldap://h/dc=else")))
    out = rewriter.response(pdu)
    _, _, op, _ = splitMessage(out)
    _, start, end = readTLV(op, 0)
    assert op[start:end] == ber.tlv(0x04, b"ldap://h:389/ou=a%5C,b,dc=corp,dc=example,dc=com") + ber.tlv(0x04, b"ldap://h/dc=else")
    # not a DN once decoded: left as it came
    assert rewriter.urlToClient(b"ldap://h/ou=a%2Cb,dc=ad,dc=example,dc=local") == b"ldap://h/ou=a%2Cb,dc=ad,dc=example,dc=local"


def test_runtimeBuildsOneRewriterPerRouteAndConfiguration() -> None:
    """The rewriters live in the runtime: a reload starts afresh."""
    config = Config.fromString(ROUTE)
    runtime = Runtime(config)
    route = config.routes[0]
    rewriter = runtime.rewriterFor(route)
    assert runtime.rewriterFor(route) is rewriter
    assert rewriter.dnToBackend(b"cn=x,dc=corp,dc=example,dc=com") == b"cn=x,dc=ad,dc=example,dc=local"
    runtime.apply(Config.fromString(ROUTE))
    assert runtime.rewriterFor(route) is not rewriter
