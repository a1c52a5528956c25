# -*- test-case-name: tests.test_tls -*-
"""
PEM files as TLS needs them: a certificate and its key, a CA certificate.

Three parties read these files: the configuration loader (a key that does
not match its certificate is a start-up error, before any port opens), the
listeners' server contexts and the backends' client contexts.  They sit
this low so that each of those imports them downward, and every mistake in
a file reads the same wherever it is found.
"""

from __future__ import annotations

from twisted.internet.ssl import Certificate, KeyPair, PrivateCertificate


def readPEM(path: str) -> bytes:
    """
    The bytes of a PEM file.

    @raise ValueError: the file cannot be read, saying why.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror or e}") from None


def loadCertificate(path: str) -> Certificate:
    """
    The first certificate in a PEM file (a CA file, for verification).

    @raise ValueError: unreadable, or no PEM certificate in it.
    """
    data = readPEM(path)
    try:
        return Certificate.loadPEM(data)
    except Exception:
        raise ValueError(f"{path!r} holds no PEM certificate") from None


def loadKeyPair(certPath: str, keyPath: str) -> PrivateCertificate:
    """
    A certificate (first PEM block of C{certPath}, which may hold a chain)
    and its private key.

    @raise ValueError: unreadable files, bad PEM, or a key that does not
        match the certificate.
    """
    certificate = loadCertificate(certPath)
    keyPEM = readPEM(keyPath)
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
