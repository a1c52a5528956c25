"""
SASL binds in shared mode, on fakes: steps pinned to one bind connection,
Who Am I on it after success (never relayed), the identity asserted with
Proxied Authorization, and mechanisms with a security layer refused before
it is in force.
"""

from __future__ import annotations

import pytest

from ldaproute.backends import sharedsasl
from ldaproute.wire import ber
from ldaproute.wire.pdu import PROXIED_AUTHZ_OID, extendedNameAt, messageIDSpan
from tests import pdus
from tests.fakes import Client, FakeConnection, proxy
from tests.test_shared import CONFIG, decodeOne, ready

SASL_DN = b"uid=sasluser,ou=system,dc=example,dc=com"


def saslBind(messageID: int, mechanism: bytes, credentials: bytes | None = None) -> bytes:
    sasl = ber.tlv(ber.OCTET_STRING, mechanism)
    if credentials is not None:
        sasl += ber.tlv(ber.OCTET_STRING, credentials)
    body = ber.tlv(ber.INTEGER, b"\x03") + ber.tlv(ber.OCTET_STRING, b"") + ber.tlv(ber.SASL_AUTH_TAG, sasl)
    return ber.message(messageID, ber.tlv(ber.BIND_REQUEST, body))


def saslResponse(messageID: int, resultCode: int, serverCredentials: bytes = b"") -> bytes:
    extra = ber.tlv(0x87, serverCredentials) if serverCredentials else b""
    return ber.result(messageID, ber.BIND_RESPONSE, resultCode, extra=extra)


def whoAmIResponse(messageID: int, authzId: bytes, resultCode: int = 0) -> bytes:
    return ber.result(messageID, ber.EXTENDED_RESPONSE, resultCode, extra=ber.tlv(0x8B, authzId))


def upstream(connection: FakeConnection) -> tuple[int, int, bytes]:
    """C{(messageID, opTag, pdu)} of the one request the proxy wrote on C{connection}."""
    data = connection.sent()
    messageID, _, opStart = messageIDSpan(data)
    return messageID, data[opStart], data


def test_scramStepsPinnedThenIdentityAsserted() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"SCRAM-SHA-256", b"n,,n=sasluser,r=abc"))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first, tag, _ = upstream(bindConnection)
    assert tag == ber.BIND_REQUEST
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b"r=abcdef"))
    step = decodeOne(client.received())
    assert (step.id, step.value.resultCode) == (1, ber.SASL_BIND_IN_PROGRESS)
    client.send(saslBind(2, b"SCRAM-SHA-256", b"c=biws,r=abcdef,p=proof"))
    second, _, _ = upstream(bindConnection)  # the same connection: the exchange is pinned to it
    bindConnection.respond(saslResponse(second, ber.SUCCESS, b"v=verifier"))
    assert client.received() == b""  # held until the identity is known
    whoami, tag, request = upstream(bindConnection)
    assert tag == ber.EXTENDED_REQUEST and extendedNameAt(request, messageIDSpan(request)[2]) == sharedsasl.WHOAMI_OID
    assert len(backends.connections) == 1
    bindConnection.respond(whoAmIResponse(whoami, b"dn:" + SASL_DN))
    answer = decodeOne(client.received())  # the bind's success, not the proxy's Who Am I
    assert (answer.id, answer.value.resultCode) == (2, 0)
    assert answer.value.serverSaslCreds == b"v=verifier"
    session = client.protocol.session
    assert (session.identity.kind, session.identity.name) == ("sasl", SASL_DN)
    assert session.outstanding == {}
    client.send(pdus.search(messageID=3))
    shared1, shared2 = backends.connections[1:]
    ready(shared1)
    ready(shared2)
    message = decodeOne(shared1.sent() or shared2.sent())
    assert message.controls == [(PROXIED_AUTHZ_OID, True, b"dn:" + SASL_DN)]
    # Who Am I through the proxy: the client's identity, not the service account
    client.send(pdus.message(pureWhoAmI(), 4))
    reply = decodeOne(client.received())
    assert (reply.id, reply.value.response) == (4, b"dn:" + SASL_DN)


def pureWhoAmI() -> object:
    from ldaptor.protocols import pureldap

    return pureldap.LDAPExtendedRequest(requestName=sharedsasl.WHOAMI_OID)


def test_bindConnectionFreeAgainAfterSasl() -> None:
    """bind_connections = 1: the next client's bind goes on the same connection once the SASL bind is over."""
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"SCRAM-SHA-256", b"n,,n=sasluser,r=abc"))
    [bindConnection] = backends.connections
    whoami = _finishScram(client, bindConnection)
    bindConnection.respond(whoAmIResponse(whoami, b"dn:" + SASL_DN))
    assert decodeOne(client.received()).value.resultCode == 0
    other = Client(factory)
    other.send(pdus.bind("uid=u1,dc=example,dc=com", "pw", messageID=1))
    messageID, tag, _ = upstream(bindConnection)
    assert tag == ber.BIND_REQUEST
    bindConnection.respond(pdus.bindResponse(messageID, 0))
    assert decodeOne(other.received()).value.resultCode == 0


def _finishScram(client: Client, bindConnection: FakeConnection) -> int:
    ready(bindConnection, service=False)
    first, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b"r=abcdef"))
    client.received()
    client.send(saslBind(2, b"SCRAM-SHA-256", b"c=biws,r=abcdef,p=proof"))
    second, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(second, ber.SUCCESS, b"v=verifier"))
    whoami, _, _ = upstream(bindConnection)
    return whoami


@pytest.mark.parametrize(
    "authzId, code, text",
    [
        (b"u:sasluser", ber.UNWILLING_TO_PERFORM, b"authz-regexp"),
        (None, ber.UNAVAILABLE, b"Who Am I"),
    ],
)
def test_identityNotLearnedRefusesBind(authzId: bytes | None, code: int, text: bytes) -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"SCRAM-SHA-256", b"n,,n=sasluser,r=abc"))
    [bindConnection] = backends.connections
    whoami = _finishScram(client, bindConnection)
    if authzId is None:
        bindConnection.respond(whoAmIResponse(whoami, b"", ber.OPERATIONS_ERROR))
    else:
        bindConnection.respond(whoAmIResponse(whoami, authzId))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (2, code)
    assert text in answer.value.errorMessage
    assert client.protocol.session.identity.kind == "anonymous"


def test_digestWithLayerRefusedBeforeItIsInForce() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"DIGEST-MD5"))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b'nonce="n",qop="auth,auth-int,auth-conf"'))
    assert decodeOne(client.received()).value.resultCode == ber.SASL_BIND_IN_PROGRESS
    client.send(saslBind(2, b"DIGEST-MD5", b'username="sasluser",nonce="n",qop=auth-conf,response=abc'))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (2, ber.AUTH_METHOD_NOT_SUPPORTED)
    assert b"qop=auth-conf" in answer.value.errorMessage and b"mode = session" in answer.value.errorMessage
    assert bindConnection.sent() == b""  # the step never went upstream
    assert client.protocol.session.identity.kind == "anonymous"
    # the next bind goes on a new connection (slapd would take it as the exchange's next step)
    client.send(pdus.bind("uid=u1,dc=example,dc=com", "pw", messageID=3))
    replacement = backends.connections[-1]
    assert replacement is not bindConnection
    ready(replacement, service=False)
    assert upstream(replacement)[1] == ber.BIND_REQUEST


@pytest.mark.parametrize("mechanism", [b"EXTERNAL", b"GSSAPI", b"SCRAM-SHA-256-PLUS", b"X-UNKNOWN"])
def test_mechanismsRefusedAtOnce(mechanism: bytes) -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(4, mechanism))
    answer = decodeOne(client.received())
    assert (answer.id, answer.value.resultCode) == (4, ber.AUTH_METHOD_NOT_SUPPORTED)
    assert b"mode = session" in answer.value.errorMessage
    assert backends.connections == []


# --- the rules, alone ---------------------------------------------------------


def ntlmAuthenticate(flags: int) -> bytes:
    message = bytearray(b"NTLMSSP\x00" + (3).to_bytes(4, "little") + bytes(52))
    message[60:64] = flags.to_bytes(4, "little")
    return b"\xa1\x81\x80" + bytes(message) + b"rest"


@pytest.mark.parametrize(
    "mechanism, credentials, refused",
    [
        (b"scram-sha-1", b"n,,n=u,r=x", False),
        (b"DIGEST-MD5", None, False),
        (b"DIGEST-MD5", b'username="u",qop=auth,response=1', False),
        (b"DIGEST-MD5", b'username="u",response=1', False),  # qop absent: auth
        (b"DIGEST-MD5", b'username="qop=auth",qop="auth-int"', True),
        (b"DIGEST-MD5", b'username="a\\"qop=auth",qop=auth-conf', True),
        (b"GSS-SPNEGO", b"\x60\x48NTLMSSP\x00\x01\x00\x00\x00", False),  # NEGOTIATE: nothing decided yet
        (b"GSS-SPNEGO", ntlmAuthenticate(0x00000001), False),
        (b"GSS-SPNEGO", ntlmAuthenticate(0x00000010), True),
        (b"GSS-SPNEGO", ntlmAuthenticate(0x00000020), True),
        (b"GSS-SPNEGO", b"\x60\x82kerberos-token", True),
        (b"EXTERNAL", None, True),
    ],
)
def test_stepRefusal(mechanism: bytes, credentials: bytes | None, refused: bool) -> None:
    message = sharedsasl.stepRefusal(mechanism, credentials)
    assert (message is not None) == refused
    if message is not None:
        assert "mode = session" in message


def test_boundDN() -> None:
    assert sharedsasl.boundDN(b"dn:uid=a,dc=x") == (b"uid=a,dc=x", "")
    assert sharedsasl.boundDN(b"") == (b"", "")
    dn, why = sharedsasl.boundDN(b"u:alice")
    assert dn is None and "u:alice" in why


def test_unfinishedExchangeClosesItsConnection() -> None:
    """
    A SASL exchange refused (or left) midway leaves the backend expecting
    its next step: the connection is closed, and a bind waiting for it gets
    a new one.
    """
    factory, backends, _ = proxy(CONFIG.replace("bind_connections = 1\n", "bind_connections = 1\nmax_bind_connections = 1\n"))
    client = Client(factory)
    client.send(saslBind(1, b"DIGEST-MD5"))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b'nonce="n",qop="auth-conf"'))
    client.received()
    waiting = Client(factory)
    waiting.send(pdus.bind("uid=u1,dc=example,dc=com", "pw", messageID=1))  # bind_connections = 1: it waits
    assert bindConnection.sent() == b"" and len(backends.connections) == 1
    client.send(saslBind(2, b"DIGEST-MD5", b'username="sasluser",qop=auth-conf'))
    assert decodeOne(client.received()).value.resultCode == ber.AUTH_METHOD_NOT_SUPPORTED
    assert bindConnection.transport is not None and bindConnection.transport.disconnecting
    replacement = backends.connections[-1]
    assert replacement is not bindConnection
    ready(replacement, service=False)
    messageID, tag, _ = upstream(replacement)
    assert tag == ber.BIND_REQUEST
    replacement.respond(pdus.bindResponse(messageID, 0))
    assert decodeOne(waiting.received()).value.resultCode == 0


def test_clientLeavingMidExchangeClosesItsConnection() -> None:
    factory, backends, _ = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"SCRAM-SHA-256", b"n,,n=sasluser,r=abc"))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b"r=abcdef"))
    client.protocol.connectionLost(None)  # type: ignore[arg-type]
    assert bindConnection.transport is not None and bindConnection.transport.disconnecting


def test_exchangeLeftIdleClosesItsConnection() -> None:
    factory, backends, reactor = proxy(CONFIG)
    client = Client(factory)
    client.send(saslBind(1, b"SCRAM-SHA-256", b"n,,n=sasluser,r=abc"))
    [bindConnection] = backends.connections
    ready(bindConnection, service=False)
    first, _, _ = upstream(bindConnection)
    bindConnection.respond(saslResponse(first, ber.SASL_BIND_IN_PROGRESS, b"r=abcdef"))
    reactor.advance(sharedsasl.STEP_TIMEOUT - 1)
    assert bindConnection.transport is not None and not bindConnection.transport.disconnecting
    reactor.advance(1)
    assert bindConnection.transport.disconnecting
    # the late step goes on a new connection (where the backend will refuse it)
    client.send(saslBind(2, b"SCRAM-SHA-256", b"c=biws,r=abcdef,p=proof"))
    assert backends.connections[-1] is not bindConnection
