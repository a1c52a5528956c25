"""Server contexts (reload, minimum version) and backend client options."""

from __future__ import annotations

import os
import shutil

import pytest
from OpenSSL import SSL, crypto

from ldaproute.config import Backend, BackendURL
from ldaproute.backends.clienttls import clientOptionsFor
from ldaproute.backends.pool import BackendState
from ldaproute.listeners.tls import ServerTLS
from ldaproute.wire.pdu import startTLSRequest, startTLSResponse
from tests.certs import CA, makeCA, makeCert


@pytest.fixture
def ca(tmp_path: object) -> CA:
    return makeCA(str(tmp_path))


def handshake(server: ServerTLS, maxVersion: int | None = None) -> bytes:
    """A handshake in memory; the DER certificate the client was shown."""
    serverConn = server.serverConnectionForTLS(None)
    serverConn.set_accept_state()
    context = SSL.Context(SSL.TLS_METHOD)
    if maxVersion is not None:
        context.set_max_proto_version(maxVersion)
        context.set_min_proto_version(SSL.TLS1_VERSION)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    client = SSL.Connection(context, None)
    client.set_connect_state()
    for _ in range(10):
        for conn in (client, serverConn):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        for source, sink in ((client, serverConn), (serverConn, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
    cert = client.get_peer_certificate()
    assert cert is not None
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)


def der(path: str) -> bytes:
    with open(path, "rb") as f:
        return crypto.dump_certificate(crypto.FILETYPE_ASN1, crypto.load_certificate(crypto.FILETYPE_PEM, f.read()))


def test_reloadServesNewCertificate(ca: CA, tmp_path: object) -> None:
    """After reload, new handshakes get the new certificate."""
    directory = str(tmp_path)
    first = makeCert(ca, directory, basename="first")
    second = makeCert(ca, directory, ["other.example"], basename="second")
    live = os.path.join(directory, "live.pem"), os.path.join(directory, "live.key")
    shutil.copy(first.certFile, live[0])
    shutil.copy(first.keyFile, live[1])
    server = ServerTLS(*live)
    assert handshake(server) == der(first.certFile)
    shutil.copy(second.certFile, live[0])
    shutil.copy(second.keyFile, live[1])
    assert server.reload()
    assert handshake(server) == der(second.certFile)


def test_reloadKeepsOldOnMistake(ca: CA, tmp_path: object) -> None:
    directory = str(tmp_path)
    cert = makeCert(ca, directory)
    live = os.path.join(directory, "live.pem")
    shutil.copy(cert.certFile, live)
    server = ServerTLS(live, cert.keyFile)
    with open(live, "w") as f:
        f.write("half-written")
    assert not server.reload()
    assert handshake(server) == der(cert.certFile)


def test_minimumVersion(ca: CA, tmp_path: object) -> None:
    """TLS 1.1 is refused by default."""
    cert = makeCert(ca, str(tmp_path))
    server = ServerTLS(cert.certFile, cert.keyFile)
    assert handshake(server, maxVersion=SSL.TLS1_2_VERSION) == der(cert.certFile)
    with pytest.raises(SSL.Error):
        handshake(server, maxVersion=SSL.TLS1_1_VERSION)
    strict = ServerTLS(cert.certFile, cert.keyFile, "1.3")
    with pytest.raises(SSL.Error):
        handshake(strict, maxVersion=SSL.TLS1_2_VERSION)


def test_clientOptionsCachedPerBackendValue(ca: CA, tmp_path: object) -> None:
    """The backend's run-time state keeps its options until a reload changes the backend."""
    backend = Backend("b", BackendURL("ldap", "h", 389), tls="starttls", caFile=ca.certFile, serverName="n")
    state = BackendState(backend)
    options = state.clientTLSOptions()
    assert state.clientTLSOptions() is options
    assert options._hostnameASCII == "n"  # type: ignore[attr-defined]
    state.backend = Backend("b", BackendURL("ldap", "h", 389), tls="starttls", caFile=ca.certFile, serverName="m")
    assert state.clientTLSOptions()._hostnameASCII == "m"  # type: ignore[attr-defined]


def test_clientOptionsBadCA(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "bad.pem")
    with open(path, "w") as f:
        f.write("nope")
    backend = Backend("b", BackendURL("ldap", "h", 389), tls="starttls", caFile=path)
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        clientOptionsFor(backend)


def test_startTLSPDUs() -> None:
    """Our StartTLS PDUs decode with ldaptor as the right messages."""
    from ldaptor.protocols import pureber, pureldap

    decoder = pureldap.LDAPBERDecoderContext_TopLevel(
        inherit=pureldap.LDAPBERDecoderContext_LDAPMessage(
            fallback=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
            inherit=pureldap.LDAPBERDecoderContext(fallback=pureber.BERDecoderContext()),
        )
    )
    request, _ = pureber.berDecodeObject(decoder, startTLSRequest(7))
    assert request.id == 7
    assert request.value.requestName == b"1.3.6.1.4.1.1466.20037"
    response, _ = pureber.berDecodeObject(decoder, startTLSResponse(7))
    assert response.value.resultCode == 0
    assert response.value.responseName == b"1.3.6.1.4.1.1466.20037"
