"""
The frontend's secret policy on in-memory transports: every request that
carries a password is answered 13 on a cleartext connection and never
reaches a backend, in both modes; the root DSE a cleartext client reads
lists no mechanism it would be refused; StartTLS after a bind leaves the
session anonymous, as slapd does.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from ldaptor import delta
from ldaptor.protocols import pureldap
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs

from ldaproute.core import secrets
from ldaproute.core.session import ANONYMOUS
from ldaproute.listeners.frontend import FrontendFactory
from ldaproute.wire.pdu import startTLSRequest
from ldaproute.wire import ber
from tests import pdus
from tests.fakes import Client, FakeBackends, proxy

SESSION = """
[ldaproute]
listen = tcp:10389
{policy}
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
[route:all]
pool = main
"""

SHARED = """
[ldaproute]
listen = tcp:10389
mode = shared
{policy}
[backend:a]
url = ldap://a.example:389
[pool:main]
backends = a
shared_connections = 1
bind_connections = 1
service_bind_dn = cn=proxy,dc=example,dc=com
service_bind_password = proxypw
[route:all]
pool = main
"""

PASSWORD = "s3cr3t-Pa55"


def saslBind(mechanism: bytes, credentials: bytes | None, messageID: int = 1) -> bytes:
    return pdus.message(pureldap.LDAPBindRequest(dn=b"", auth=(mechanism, credentials), sasl=True), messageID)


#: (kind, request carrying PASSWORD)
REQUESTS = [
    ("simple_bind", pdus.bind("uid=u,dc=example,dc=com", PASSWORD)),
    ("sasl_bind", saslBind(b"PLAIN", b"\x00u\x00" + PASSWORD.encode())),
    ("sasl_bind", saslBind(b"LOGIN", None)),
    (
        "password_modify",
        pdus.message(pureldap.LDAPPasswordModifyRequest(userIdentity=b"uid=u", newPasswd=PASSWORD.encode())),
    ),
    ("add", pdus.add("uid=n,dc=example,dc=com", [("uid", ["n"]), ("userPassword", [PASSWORD])])),
    ("modify", pdus.message(delta.ModifyOp("uid=u,dc=example,dc=com", [delta.Replace("unicodePwd", [PASSWORD])]).asLDAP())),
]


class TLSTransport(StringTransport):
    """A client transport that can start TLS (recorded, not performed)."""

    tlsStarted: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        self.tlsStarted = contextFactory


def tlsClient(factory: FrontendFactory) -> tuple[Client, TLSTransport]:
    """A client on a listener that terminates StartTLS (with a stand-in context)."""
    factory.listener = attrs.evolve(factory.listener, starttls="terminate")
    factory.serverTLS = object()  # type: ignore[assignment]
    client = Client.__new__(Client)
    address = IPv4Address("TCP", "192.0.2.7", 40000)
    client.protocol = factory.buildProtocol(address)  # type: ignore[assignment]
    client.transport = transport = TLSTransport(peerAddress=address)
    client.protocol.makeConnection(transport)
    return client, transport


@pytest.mark.parametrize("template", [SESSION, SHARED], ids=["session", "shared"])
@pytest.mark.parametrize("kind, pdu", REQUESTS, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(REQUESTS)])
def test_refusedInCleartext(template: str, kind: str, pdu: bytes) -> None:
    """13 naming StartTLS/ldaps, no backend connection, one warning without the secret, counted."""
    factory, backends, _ = proxy(template.format(policy=""))
    client = Client(factory)
    with capturedLogs() as events:
        client.send(pdu)
    [answer] = pdus.decode(client.received())
    assert answer.value.resultCode == ber.CONFIDENTIALITY_REQUIRED
    assert answer.value.errorMessage.endswith(b"needs TLS here: use StartTLS or ldaps")
    assert backends.connections == []
    warnings = [event for event in events if event.get("kind") == kind.replace("_", " ")]
    assert len(warnings) == 1
    assert warnings[0]["listener"] == "default" and warnings[0]["peer"] == "192.0.2.7:40000"
    for event in events:
        assert PASSWORD not in repr(event)
    metric = factory.runtime.observer.metrics.cleartextSecretsRefused.labels("default", kind)
    assert metric._value.get() == 1
    assert client.protocol.session.identity is ANONYMOUS


@pytest.mark.parametrize("kind, pdu", REQUESTS, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(REQUESTS)])
def test_forwardedAfterStartTLS(kind: str, pdu: bytes) -> None:
    """Inside TLS the same request goes to the backend as the client sent it."""
    factory, backends, _ = proxy(SESSION.format(policy=""))
    client, transport = tlsClient(factory)
    client.send(startTLSRequest(9))
    assert transport.tlsStarted is not None
    client.received()
    client.send(pdu)
    assert client.received() == b""
    [connection] = backends.connections
    connection.accept()
    assert pdu in connection.sent()


@pytest.mark.parametrize("policy", ["require_tls_for_passwords = off", "require_tls_for_simple_bind = off"])
def test_policyOff(policy: str) -> None:
    """Both names of the key turn the rule off."""
    factory, backends, _ = proxy(SESSION.format(policy=policy))
    client = Client(factory)
    client.send(REQUESTS[1][1])
    assert client.received() == b""
    assert len(backends.connections) == 1


def rootDSEEntry(mechanisms: list[str], messageID: int) -> bytes:
    return pdus.searchEntry("", messageID, [("supportedSASLMechanisms", mechanisms), ("vendorName", ["x"])])


def readRootDSE(client: Client, backends: FakeBackends, messageID: int = 2) -> list[bytes]:
    client.send(pdus.search("", messageID, scope=pureldap.LDAP_SCOPE_baseObject, attributes=["+"]))
    connection = backends.connections[-1]
    if connection.transport is None:
        connection.accept()
    sent = pdus.decode(connection.sent())
    for message in sent:
        if isinstance(message.value, pureldap.LDAPBindRequest):  # shared mode: the service identity
            connection.respond(pdus.bindResponse(message.id))
    sent += pdus.decode(connection.sent())
    upstreamID = sent[-1].id
    connection.respond(
        rootDSEEntry(["SCRAM-SHA-256", "PLAIN", "LOGIN", "DIGEST-MD5"], upstreamID) + pdus.searchDone(upstreamID)
    )
    entry, done = pdus.decode(client.received())
    assert (entry.id, done.id) == (messageID, messageID)
    [(_, mechanisms)] = [(name, values) for name, values in entry.value.attributes if name == b"supportedSASLMechanisms"]
    return list(mechanisms)


@pytest.mark.parametrize("template", [SESSION, SHARED], ids=["session", "shared"])
def test_rootDSEInCleartext(template: str) -> None:
    """A cleartext client is not offered PLAIN or LOGIN; other searches' entries are untouched."""
    factory, backends, _ = proxy(template.format(policy=""))
    client = Client(factory)
    assert readRootDSE(client, backends) == [b"SCRAM-SHA-256", b"DIGEST-MD5"]
    assert client.protocol.session.cleartextRootDSE == set()


def test_rootDSEReadLost() -> None:
    """
    A root DSE read answered by the proxy (its backend lost it three times:
    sent again twice, then 52) leaves nothing marked.
    """
    factory, backends, _ = proxy(SESSION.format(policy=""))
    client = Client(factory)
    client.send(pdus.search("", 2, scope=pureldap.LDAP_SCOPE_baseObject))
    assert client.protocol.session.cleartextRootDSE == {2}
    for _ in range(3):
        connection = backends.connections[-1]
        connection.accept()
        assert client.protocol.session.cleartextRootDSE == {2}
        connection.drop()
    assert len(backends.connections) == 3
    [answer] = pdus.decode(client.received())
    assert answer.value.resultCode == ber.UNAVAILABLE
    assert client.protocol.session.cleartextRootDSE == set()


def test_rootDSEOverTLS() -> None:
    """Inside TLS the root DSE is what the backend said."""
    factory, backends, _ = proxy(SESSION.format(policy=""))
    client, _ = tlsClient(factory)
    client.send(startTLSRequest(1))
    client.received()
    assert readRootDSE(client, backends) == [b"SCRAM-SHA-256", b"PLAIN", b"LOGIN", b"DIGEST-MD5"]


def test_rootDSEPolicyOff() -> None:
    """Without the rule, PLAIN is usable in cleartext, so it stays advertised."""
    factory, backends, _ = proxy(SESSION.format(policy="require_tls_for_passwords = off"))
    assert readRootDSE(Client(factory), backends) == [b"SCRAM-SHA-256", b"PLAIN", b"LOGIN", b"DIGEST-MD5"]


def test_rootDSEThroughFanOut() -> None:
    """With suffix routes the root DSE is the proxy's fan-out; it is filtered the same way."""
    text = SESSION.format(policy="").replace(
        "[route:all]\n", "[route:people]\nsuffix = ou=people,dc=example,dc=com\npool = main\n[route:all]\n"
    )
    factory, backends, _ = proxy(text)
    assert readRootDSE(Client(factory), backends) == [b"SCRAM-SHA-256", b"DIGEST-MD5"]


def test_startTLSAfterBindIsAnonymous() -> None:
    """
    As slapd: after StartTLS the session is anonymous, and the upstream
    connection bound as the client is rebound anonymously before the next
    operation.
    """
    factory, backends, _ = proxy(SESSION.format(policy="require_tls_for_passwords = off"))
    client, _ = tlsClient(factory)
    client.send(pdus.bind("uid=u,dc=example,dc=com", "pw", 1))
    [connection] = backends.connections
    connection.accept()
    connection.sent()
    connection.respond(pdus.bindResponse(1, 0))
    client.received()
    assert client.protocol.session.identity.name == b"uid=u,dc=example,dc=com"
    client.send(startTLSRequest(2))
    [answer] = pdus.decode(client.received())
    assert answer.value.resultCode == ber.SUCCESS
    assert client.protocol.session.identity is ANONYMOUS
    client.send(pdus.search(messageID=3))
    [rebind] = pdus.decode(connection.sent())
    assert (rebind.value.dn, rebind.value.auth) == (b"", b"")
    connection.respond(pdus.bindResponse(rebind.id))
    [search] = pdus.decode(connection.sent())
    assert search.id == 3


def test_startTLSWhenAnonymousRebindsNothing() -> None:
    factory, backends, _ = proxy(SESSION.format(policy=""))
    client, _ = tlsClient(factory)
    client.send(pdus.search(messageID=1))
    [connection] = backends.connections
    connection.accept()
    connection.sent()
    connection.respond(pdus.searchDone(1))
    client.send(startTLSRequest(2))
    version = client.protocol.session.identityVersion
    client.send(pdus.search(messageID=3))
    [search] = pdus.decode(connection.sent())
    assert search.id == 3 and client.protocol.session.identityVersion == version


def test_mechanismListInOnePlace() -> None:
    """The frontend refuses exactly the mechanisms the root DSE filter removes."""
    for mechanism in sorted(secrets.CLEARTEXT_MECHANISMS):
        factory, backends, _ = proxy(SESSION.format(policy=""))
        client = Client(factory)
        client.send(saslBind(mechanism, b"x"))
        [answer] = pdus.decode(client.received())
        assert answer.value.resultCode == ber.CONFIDENTIALITY_REQUIRED, mechanism
        assert backends.connections == []
