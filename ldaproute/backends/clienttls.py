# -*- test-case-name: tests.test_tls -*-
"""
The client side of TLS towards a backend (C{tls = ldaps | starttls}).

Verification against C{ca_file} (or the platform's trust store) and the
backend's name with service-identity, an optional client certificate, TLS
1.2 at least.  Building the options reads files, so each backend's are
built once per configuration value by its L{BackendState} (which the
runtime owns); nothing here keeps state or opens sockets.
"""

from __future__ import annotations

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import TLSVersion, optionsForClientTLS, platformTrust

from ldaproute.config import Backend
from ldaproute.wire.pem import loadCertificate, loadKeyPair


def clientOptionsFor(backend: Backend) -> IOpenSSLClientConnectionCreator:
    """
    The client TLS options for a backend: its certificate must chain to
    C{ca_file} (the platform's trust store without one) and carry
    C{server_name} or the URL's host.

    @raise ValueError: unreadable or bad PEM files.
    """
    clientCertificate = None
    if backend.clientCert is not None and backend.clientKey is not None:
        clientCertificate = loadKeyPair(backend.clientCert, backend.clientKey)
    return optionsForClientTLS(
        backend.verifyName,
        trustRoot=loadCertificate(backend.caFile) if backend.caFile is not None else platformTrust(),
        clientCertificate=clientCertificate,
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
    )
