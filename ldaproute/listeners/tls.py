# -*- test-case-name: tests.test_tls -*-
"""
TLS context factories for both sides of the proxy.

Server side: a L{ServerTLS} per listener, built from its C{tls_cert} and
C{tls_key} files, used for StartTLS (terminate).  L{ServerTLS.reload}
re-reads the files; handshakes that start afterwards use the new
certificate, connections already encrypted keep theirs.

Client side: L{clientOptionsFor} gives the pyOpenSSL options for a backend
with C{tls = ldaps | starttls}: verification against C{ca_file} (or the
platform's trust store) and the backend's name with service-identity, an
optional client certificate, TLS 1.2 at least.  Nothing here opens sockets.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
)
from twisted.logger import Logger
from zope.interface import implementer

from ldaproute.wire import ber
from ldaproute.config import Backend

#: C{tls_min_version} values and the TLS versions they stand for.
MIN_VERSIONS: dict[str, Any] = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror or e}") from None


def loadKeyPair(certPath: str, keyPath: str) -> PrivateCertificate:
    """
    A certificate (first PEM block of C{certPath}, which may hold a chain)
    and its private key.

    @raise ValueError: unreadable files, bad PEM, or a key that does not
        match the certificate.
    """
    certPEM = _read(certPath)
    keyPEM = _read(keyPath)
    try:
        certificate = Certificate.loadPEM(certPEM)
    except Exception:
        raise ValueError(f"{certPath!r} holds no PEM certificate") from None
    try:
        key = KeyPair.load(keyPEM, 1)  # FILETYPE_PEM
    except Exception:
        raise ValueError(f"{keyPath!r} holds no PEM private key") from None
    try:
        return PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
    except Exception:
        raise ValueError(f"the key in {keyPath!r} does not match the certificate in {certPath!r}") from None


def checkKeyPair(certPath: str, keyPath: str) -> None:
    """For configuration loading: L{loadKeyPair} without keeping the result."""
    loadKeyPair(certPath, keyPath)


def _chain(certPath: str) -> list[Any]:
    """Intermediate certificates after the leaf in a PEM file."""
    blocks = _read(certPath).split(b"-----END CERTIFICATE-----")
    extra = []
    for block in blocks[1:]:
        if b"-----BEGIN CERTIFICATE-----" in block:
            extra.append(Certificate.loadPEM(block + b"-----END CERTIFICATE-----").original)
    return extra


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The server certificate of one listener, reloadable.

    Pass the object itself to C{transport.startTLS}: each handshake asks it
    for a connection made from the context in force at that moment.
    """

    _log = Logger()

    def __init__(self, certPath: str, keyPath: str, minVersion: str = "1.2", listener: str = "") -> None:
        self.certPath = certPath
        self.keyPath = keyPath
        self.minVersion = minVersion
        self.listener = listener
        self.options = self._build()

    def _build(self) -> CertificateOptions:
        pair = loadKeyPair(self.certPath, self.keyPath)
        return CertificateOptions(
            privateKey=pair.privateKey.original,
            certificate=pair.original,
            extraCertChain=_chain(self.certPath) or None,
            raiseMinimumTo=MIN_VERSIONS[self.minVersion],
        )

    def reload(self) -> bool:
        """
        Re-read the certificate and key; on a mistake keep the ones in
        force and log why.  Connections already encrypted are untouched.

        @return: whether the new files are in force.
        """
        try:
            self.options = self._build()
        except ValueError as e:
            self._log.error(
                "TLS certificate for listener {listener} not reloaded, keeping the old one: {reason}",
                listener=self.listener,
                reason=str(e),
            )
            return False
        self._log.info("TLS certificate for listener {listener} reloaded", listener=self.listener)
        return True

    def getContext(self) -> SSL.Context:
        """Old-style context factory interface (the context in force)."""
        return self.options.getContext()

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self.options.getContext(), None)


def serverTLSFor(listener: Any) -> ServerTLS | None:
    """The L{ServerTLS} of a listener with C{tls_cert}, else L{None}."""
    if listener.tlsCert is None:
        return None
    return ServerTLS(listener.tlsCert, listener.tlsKey, listener.tlsMinVersion, listener.name)


_clientCache: dict[Backend, Any] = {}


def clientOptionsFor(backend: Backend) -> Any:
    """
    The client TLS options (an C{IOpenSSLClientConnectionCreator}) for a
    backend: its certificate must chain to C{ca_file} (the platform's trust
    store without one) and carry C{server_name} or the URL's host.  Cached
    per backend value, so a reload that changes a backend builds new ones.

    @raise ValueError: unreadable or bad PEM files.
    """
    cached = _clientCache.get(backend)
    if cached is not None:
        return cached
    if backend.caFile is not None:
        try:
            trustRoot: Any = Certificate.loadPEM(_read(backend.caFile))
        except ValueError:
            raise
        except Exception:
            raise ValueError(f"{backend.caFile!r} holds no PEM certificate") from None
    else:
        trustRoot = platformTrust()
    clientCertificate = None
    if backend.clientCert is not None and backend.clientKey is not None:
        clientCertificate = loadKeyPair(backend.clientCert, backend.clientKey)
    options = optionsForClientTLS(
        backend.verifyName,
        trustRoot=trustRoot,
        clientCertificate=clientCertificate,
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
    )
    _clientCache[backend] = options
    return options


def startTLSRequest(messageID: int) -> bytes:
    """The StartTLS extended request (RFC 4511 4.14.1)."""
    return ber.message(messageID, ber.tlv(ber.EXTENDED_REQUEST, ber.tlv(ber.EXTENDED_NAME_TAG, ber.STARTTLS_OID)))


def startTLSResponse(messageID: int, resultCode: int = 0, diagnosticMessage: str = "") -> bytes:
    """The StartTLS extended response, carrying the OID as responseName."""
    return ber.result(
        messageID,
        ber.EXTENDED_RESPONSE,
        resultCode,
        diagnosticMessage,
        extra=ber.tlv(ber.EXTENDED_RESPONSE_NAME_TAG, ber.STARTTLS_OID),
    )
