# -*- test-case-name: tests.integration.test_slapd_fixture -*-
"""
Throwaway X.509 material for tests: one CA and server certificates it signs.

Owns nothing but key and certificate generation (with C{cryptography}), so the
slapd fixture, the proxy's TLS tests and the benchmark can share one CA and
verify each other's certificates.  Keys are EC P-256: fast to make, accepted by
GnuTLS (Debian's slapd), OpenSSL and pyOpenSSL alike.  Nothing here is secret.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "ServerCert", "makeCA", "makeCert"]

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CA:
    """
    A certificate authority: PEM files on disk plus the objects to sign with.

    @ivar certFile: path of the CA certificate (the trust root for clients,
        e.g. C{LDAPTLS_CACERT}).
    @ivar keyFile: path of the CA private key (PKCS#8, unencrypted).
    """

    certFile: str
    keyFile: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ServerCert:
    """
    Paths of a server certificate, its key and the CA that signed it.

    @ivar caFile: the signing CA's certificate.
    @ivar certFile: the leaf certificate (PEM).
    @ivar keyFile: the leaf's private key (PKCS#8 PEM, unencrypted).
    @ivar names: the DNS names and IP addresses in subjectAltName.
    """

    caFile: str
    certFile: str
    keyFile: str
    names: tuple[str, ...]


def _name(commonName: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ldaproute tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]
    )


def _writeKey(path: str, key: ec.EllipticCurvePrivateKey) -> None:
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(path, 0o600)


def _writeCert(path: str, cert: x509.Certificate) -> None:
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _generalName(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def makeCA(directory: str, commonName: str = "ldaproute test CA") -> CA:
    """
    Create a self-signed CA in C{directory} (C{ca.pem}, C{ca.key}).

    @param directory: an existing directory to write into.
    @param commonName: the CA's subject CN.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(commonName)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    certFile = os.path.join(directory, "ca.pem")
    keyFile = os.path.join(directory, "ca.key")
    _writeCert(certFile, cert)
    _writeKey(keyFile, key)
    return CA(certFile=certFile, keyFile=keyFile, cert=cert, key=key)


def makeCert(
    ca: CA,
    directory: str,
    names: Sequence[str] = ("localhost", "127.0.0.1"),
    basename: str = "server",
) -> ServerCert:
    """
    Create a server certificate signed by C{ca} for C{names}.

    The first name is also the subject CN.  IP addresses go into
    subjectAltName as iPAddress, everything else as dNSName.

    @param ca: the signing CA, from L{makeCA}.
    @param directory: an existing directory; writes C{<basename>.pem} and
        C{<basename>.key}.
    @param names: DNS names and IP addresses the certificate is valid for.
    @param basename: file name stem, so several certificates can share a
        directory.
    """
    if not names:
        raise ValueError("makeCert needs at least one name")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_generalName(n) for n in names]), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    certFile = os.path.join(directory, basename + ".pem")
    keyFile = os.path.join(directory, basename + ".key")
    _writeCert(certFile, cert)
    _writeKey(keyFile, key)
    return ServerCert(
        caFile=ca.certFile, certFile=certFile, keyFile=keyFile, names=tuple(names)
    )
