# -*- test-case-name: tests.test_tls -*-
"""
The server side of TLS: a L{ServerTLS} per listener, built from its
C{tls_cert} and C{tls_key} files, used for StartTLS (terminate) and
LDAPS.  L{ServerTLS.reload} re-reads the files; handshakes that start
afterwards use the new certificate, connections already encrypted keep
theirs.  Nothing here opens sockets.

The client side (towards backends) is L{ldaproute.backends.clienttls};
both read their files through L{ldaproute.wire.pem}.
"""

from __future__ import annotations

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import Certificate, CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from ldaproute.config import Listener
from ldaproute.wire.pdu import startTLSRequest, startTLSResponse
from ldaproute.wire.pem import loadKeyPair, readPEM

#: The StartTLS PDUs are written in L{ldaproute.wire.pdu}; importable from
#: here too, where they used to live.
__all__ = ["MIN_VERSIONS", "ServerTLS", "serverTLSFor", "startTLSRequest", "startTLSResponse"]

#: C{tls_min_version} values and the TLS versions they stand for.
MIN_VERSIONS: dict[str, TLSVersion] = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def _chain(certPath: str) -> list[crypto.X509]:
    """Intermediate certificates after the leaf in a PEM file."""
    blocks = readPEM(certPath).split(b"-----END CERTIFICATE-----")
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


def serverTLSFor(listener: Listener) -> ServerTLS | None:
    """The L{ServerTLS} of a listener with C{tls_cert}, else L{None}."""
    if listener.tlsCert is None or listener.tlsKey is None:
        return None
    return ServerTLS(listener.tlsCert, listener.tlsKey, listener.tlsMinVersion, listener.name)
