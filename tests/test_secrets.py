"""
L{ldaproute.core.secrets}: every place a secret can appear in an LDAP
request, each shown to be found (or, for the places that carry none, shown
not to be), with PDUs encoded by ldaptor rather than by our own code.
"""

from __future__ import annotations

import pytest
from ldaptor import delta
from ldaptor.protocols import pureber, pureldap

from ldaproute.config import Config
from ldaproute.core import secrets
from ldaproute.core.secrets import CLEARTEXT_MECHANISMS, Secret, SecretPolicy, cleartextBackendWarnings, cleartextRootDSE
from ldaproute.wire import ber
from tests import pdus


def saslBind(mechanism: bytes, credentials: bytes | None = None, dn: bytes = b"") -> bytes:
    return pdus.message(pureldap.LDAPBindRequest(dn=dn, auth=(mechanism, credentials), sasl=True))


def modify(*changes: delta.Modification) -> bytes:
    return pdus.message(delta.ModifyOp("uid=a,dc=example,dc=com", list(changes)).asLDAP())


def compare(attribute: str, value: str) -> bytes:
    ava = pureldap.LDAPAttributeValueAssertion(pureber.BEROctetString(attribute), pureber.BEROctetString(value))
    return pdus.message(pureldap.LDAPCompareRequest(entry=b"uid=a,dc=example,dc=com", ava=ava))


def passwordModify(**fields: bytes) -> bytes:
    return pdus.message(pureldap.LDAPPasswordModifyRequest(**fields))


def extended(oid: bytes) -> bytes:
    return pdus.message(pureldap.LDAPExtendedRequest(requestName=oid, requestValue=None))


#: Every place a request can carry a secret, and the neighbours that carry
#: none: (what, PDU, the Secret expected or None).
PLACES: list[tuple[str, bytes, Secret | None]] = [
    # binds
    ("simple bind with a password", pdus.bind("uid=a,dc=example,dc=com", "pw"), Secret("simple_bind")),
    ("simple bind, password without a name", pdus.bind("", "pw"), Secret("simple_bind")),
    ("anonymous simple bind", pdus.bind("", ""), None),
    ("unauthenticated simple bind (name, no password)", pdus.bind("uid=a,dc=example,dc=com", ""), None),
    ("SASL PLAIN with credentials", saslBind(b"PLAIN", b"\x00a\x00pw"), Secret("sasl_bind", mechanism="PLAIN")),
    ("SASL PLAIN without initial credentials", saslBind(b"PLAIN"), Secret("sasl_bind", mechanism="PLAIN")),
    ("SASL LOGIN first step (password comes later)", saslBind(b"LOGIN"), Secret("sasl_bind", mechanism="LOGIN")),
    ("SASL plain in lower case", saslBind(b"plain", b"\x00a\x00pw"), Secret("sasl_bind", mechanism="plain")),
    ("SASL OAUTHBEARER (bearer token)", saslBind(b"OAUTHBEARER", b"n,,\x01auth=Bearer x\x01\x01"),
     Secret("sasl_bind", mechanism="OAUTHBEARER")),
    ("SASL XOAUTH2", saslBind(b"XOAUTH2", b"user=a\x01auth=Bearer x\x01\x01"), Secret("sasl_bind", mechanism="XOAUTH2")),
    ("SASL SCRAM-SHA-256 (challenge-response)", saslBind(b"SCRAM-SHA-256", b"n,,n=a,r=abc"), None),
    ("SASL DIGEST-MD5", saslBind(b"DIGEST-MD5"), None),
    ("SASL EXTERNAL", saslBind(b"EXTERNAL"), None),
    ("SASL GSSAPI", saslBind(b"GSSAPI", b"\x60\x00"), None),
    # Password Modify (RFC 3062)
    ("Password Modify with old and new", passwordModify(userIdentity=b"uid=a", oldPasswd=b"o", newPasswd=b"n"),
     Secret("password_modify")),
    ("Password Modify asking for a generated password", passwordModify(userIdentity=b"uid=a"), Secret("password_modify")),
    ("Password Modify, empty", extended(secrets.PASSWORD_MODIFY_OID), Secret("password_modify")),
    ("WhoAmI extended operation", extended(b"1.3.6.1.4.1.4203.1.11.3"), None),
    ("StartTLS", extended(ber.STARTTLS_OID), None),
    # add
    ("add with userPassword", pdus.add("uid=a,dc=example,dc=com", [("cn", ["a"]), ("userPassword", ["pw"])]),
     Secret("add", attribute="userPassword")),
    ("add with USERPASSWORD (case)", pdus.add("uid=a,dc=example,dc=com", [("USERPASSWORD", ["pw"])]),
     Secret("add", attribute="USERPASSWORD")),
    ("add with userPassword;binary (option)", pdus.add("uid=a,dc=example,dc=com", [("userPassword;binary", ["pw"])]),
     Secret("add", attribute="userPassword;binary")),
    ("add with userPassword by OID", pdus.add("uid=a,dc=example,dc=com", [("2.5.4.35", ["pw"])]),
     Secret("add", attribute="2.5.4.35")),
    ("add with unicodePwd (AD)", pdus.add("cn=a,dc=example,dc=com", [("unicodePwd", ['"pw"'])]),
     Secret("add", attribute="unicodePwd")),
    ("add with authPassword (RFC 3112)", pdus.add("uid=a,dc=example,dc=com", [("authPassword", ["x$y$z"])]),
     Secret("add", attribute="authPassword")),
    ("add with sambaNTPassword", pdus.add("uid=a,dc=example,dc=com", [("sambaNTPassword", ["00ff"])]),
     Secret("add", attribute="sambaNTPassword")),
    ("add without secrets", pdus.add("uid=a,dc=example,dc=com", [("cn", ["a"]), ("description", ["userPassword"])]),
     None),
    ("add with an attribute that only starts like one", pdus.add("uid=a,dc=example,dc=com", [("userPasswordHint", ["x"])]),
     None),
    # modify
    ("modify replacing userPassword", modify(delta.Replace("userPassword", ["pw"])), Secret("modify", attribute="userPassword")),
    ("modify adding userPassword after other changes",
     modify(delta.Replace("cn", ["a"]), delta.Add("userPassword", ["pw"])), Secret("modify", attribute="userPassword")),
    ("modify deleting one userPassword value (the old password)", modify(delta.Delete("userPassword", ["old"])),
     Secret("modify", attribute="userPassword")),
    ("AD password change: delete old, add new unicodePwd",
     modify(delta.Delete("unicodePwd", ['"old"']), delta.Add("unicodePwd", ['"new"'])), Secret("modify", attribute="unicodePwd")),
    ("modify deleting every userPassword value (none sent)", modify(delta.Delete("userPassword")), None),
    ("modify replacing userPassword with nothing (removal)", modify(delta.Replace("userPassword", [])), None),
    ("modify of other attributes", modify(delta.Replace("mail", ["a@example.com"])), None),
    # compare
    ("compare against userPassword", compare("userPassword", "guess"), Secret("compare", attribute="userPassword")),
    ("compare against unicodePwd;x-option", compare("unicodePwd;x-option", "guess"),
     Secret("compare", attribute="unicodePwd;x-option")),
    ("compare against cn", compare("cn", "a"), None),
    # operations that carry no credential field at all
    ("search", pdus.search(), None),
    ("delete", pdus.message(pureldap.LDAPDelRequest(entry=b"uid=a,dc=example,dc=com")), None),
    ("modify DN", pdus.message(pureldap.LDAPModifyDNRequest(entry=b"uid=a,dc=x", newrdn=b"uid=b", deleteoldrdn=True)), None),
]


@pytest.mark.parametrize("what, pdu, expected", PLACES, ids=[place[0] for place in PLACES])
def test_everyPlace(what: str, pdu: bytes, expected: Secret | None) -> None:
    assert SecretPolicy().secretIn(pdu, ber.Envelope.fromBytes(pdu)) == expected


def test_everyRequestKindConsidered() -> None:
    """
    The table covers every request operation, so a new place cannot be
    forgotten silently (abandon and unbind carry nothing but an ID).
    """
    covered = {ber.Envelope.fromBytes(pdu).opTag for _, pdu, _ in PLACES}
    assert covered == set(ber.RESPONSE_FOR)
    kinds = {expected.kind for _, _, expected in PLACES if expected is not None}
    assert kinds == {"simple_bind", "sasl_bind", "password_modify", "add", "modify", "compare"}
    found = {expected.mechanism for _, _, expected in PLACES if expected is not None and expected.mechanism}
    assert {name.upper() for name in found} == {name.decode() for name in CLEARTEXT_MECHANISMS}


def test_configuredAttributes() -> None:
    """C{secret_attributes} replaces the default list; the OID alias of a known name comes along."""
    policy = SecretPolicy(["userPassword", "mySecret"])
    for attribute, found in (("mySecret", True), ("MYSECRET;x", True), ("2.5.4.35", True), ("unicodePwd", False)):
        pdu = pdus.add("cn=a,dc=x", [(attribute, ["v"])])
        assert (policy.secretIn(pdu, ber.Envelope.fromBytes(pdu)) is not None) == found, attribute


def test_malformedAdd() -> None:
    """A request the scan cannot read is a protocol error, as for any malformed PDU."""
    pdu = ber.message(1, ber.tlv(ber.ADD_REQUEST, ber.tlv(0x04, b"cn=a") + ber.tlv(0x30, b"\x30\x05\x04\x01a")))
    with pytest.raises(ber.FramingError):
        SecretPolicy().secretIn(pdu, ber.Envelope.fromBytes(pdu))


def test_refusalMessages() -> None:
    """The answer names TLS and how to get it; the secret is never in it."""
    assert Secret("simple_bind").refusal == "a simple bind with a password needs TLS here: use StartTLS or ldaps"
    assert Secret("sasl_bind", mechanism="PLAIN").refusal == (
        "a SASL PLAIN bind (it sends the password in the clear) needs TLS here: use StartTLS or ldaps"
    )
    assert Secret("password_modify").refusal == "the Password Modify operation needs TLS here: use StartTLS or ldaps"
    assert Secret("add", attribute="userPassword").refusal.startswith("an add writing userPassword needs TLS")
    assert Secret("modify", attribute="unicodePwd").refusal.startswith("a modify writing unicodePwd needs TLS")
    assert Secret("compare", attribute="userPassword").refusal.startswith("a compare against userPassword needs TLS")


def rootDSE(mechanisms: list[str], messageID: int = 3) -> bytes:
    return pdus.searchEntry(
        "", messageID, [("objectClass", ["top"]), ("supportedSASLMechanisms", mechanisms), ("supportedLDAPVersion", ["3"])]
    )


def test_cleartextRootDSE() -> None:
    """PLAIN, LOGIN and the bearer mechanisms leave; the rest stays, in order, byte for byte."""
    pdu = rootDSE(["SCRAM-SHA-256", "PLAIN", "DIGEST-MD5", "LOGIN", "OAUTHBEARER"])
    assert cleartextRootDSE(pdu) == rootDSE(["SCRAM-SHA-256", "DIGEST-MD5"])
    assert cleartextRootDSE(rootDSE(["SCRAM-SHA-1"])) == rootDSE(["SCRAM-SHA-1"])
    done = pdus.searchDone(3)
    assert cleartextRootDSE(done) is done


def config(text: str) -> Config:
    return Config.fromString(text)


def test_cleartextBackendWarnings(tmp_path: object) -> None:
    """A TLS listener in front of a cleartext backend, and a listener that takes passwords in cleartext."""
    text = (
        "[ldaproute]\nlisten = tcp:389\nrequire_tls_for_passwords = off\n"
        "[listener:secure]\nlisten = tcp:10389\nstarttls = passthrough\n"
        "[backend:plain]\nurl = ldap://10.0.0.1\n[backend:local]\nurl = ldapi://%2Frun%2Fslapd%2Fldapi\n"
        "[backend:safe]\nurl = ldaps://10.0.0.2\n"
        "[pool:p]\nbackends = plain, local, safe\n[route:r]\npool = p\n"
    )
    warnings = cleartextBackendWarnings(config(text))
    assert warnings == [
        "listener default: require_tls_for_passwords = off, so passwords (binds, Password Modify, writes of "
        "secret attributes) are accepted in cleartext",
        "backend plain: reached without TLS (tls = none), so passwords that clients of listener secure send over "
        "TLS cross the proxy's link to it in cleartext, and a directory that offers SASL PLAIN and LOGIN only "
        "over TLS (slapd's default) hides them from supportedSASLMechanisms and refuses them there; "
        "set tls = starttls or ldaps",
    ]


def test_noWarningsWithoutTLSListeners() -> None:
    """Without a TLS listener no password reaches the proxy, so a cleartext backend carries none."""
    text = "[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldap://10.0.0.1\n[pool:p]\nbackends = b\n[route:r]\npool = p\n"
    assert cleartextBackendWarnings(config(text)) == []
