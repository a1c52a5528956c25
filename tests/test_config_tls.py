"""Configuration mistakes in the TLS and security policy keys, one test each."""

from __future__ import annotations

import pytest

from ldaproute.config import Config, ConfigError
from tests.certs import ServerCert, makeCA, makeCert

TAIL = "[backend:b]\nurl = ldap://h\n[pool:p]\nbackends = b\n[route:r]\npool = p\n"
POOL = "[pool:p]\nbackends = b\n[route:r]\npool = p\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServerCert, ServerCert]:
    directory = str(tmp_path_factory.mktemp("certs"))
    ca = makeCA(directory)
    return makeCert(ca, directory), makeCert(ca, directory, basename="other")


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        Config.fromString(text)
    return str(info.value)


def test_starttlsChoice() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nstarttls = maybe\n" + TAIL) == (
        "routes.ini [ldaproute] starttls: expected one of terminate, passthrough, off, not 'maybe'"
    )


def test_terminateNeedsCertificate() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nstarttls = terminate\n" + TAIL) == (
        "routes.ini [ldaproute] starttls: terminate needs tls_cert and tls_key"
    )


def test_certWithoutKey(certs: tuple[ServerCert, ServerCert]) -> None:
    assert error(f"[ldaproute]\nlisten = tcp:389\ntls_cert = {certs[0].certFile}\n" + TAIL) == (
        "routes.ini [ldaproute] tls_key: missing: tls_cert and tls_key go together"
    )


def test_missingFile() -> None:
    assert error("[listener:x]\nlisten = tcp:389\ntls_cert = /nonexistent.pem\n" + TAIL) == (
        "routes.ini [listener:x] tls_cert: no such file '/nonexistent.pem'"
    )


def test_keyDoesNotMatch(certs: tuple[ServerCert, ServerCert]) -> None:
    server, other = certs
    text = f"[ldaproute]\nlisten = tcp:389\ntls_cert = {server.certFile}\ntls_key = {other.keyFile}\n" + TAIL
    assert error(text) == (
        f"routes.ini [ldaproute] tls_cert: the key in '{other.keyFile}' does not match "
        f"the certificate in '{server.certFile}'"
    )


def test_notAPEMCertificate(certs: tuple[ServerCert, ServerCert]) -> None:
    server, _ = certs
    text = f"[ldaproute]\nlisten = tcp:389\ntls_cert = {server.keyFile}\ntls_key = {server.keyFile}\n" + TAIL
    assert error(text) == f"routes.ini [ldaproute] tls_cert: '{server.keyFile}' holds no PEM certificate"


def test_minVersion() -> None:
    assert error("[listener:x]\nlisten = tcp:389\ntls_min_version = 1.1\n" + TAIL) == (
        "routes.ini [listener:x] tls_min_version: expected one of 1.2, 1.3, not '1.1'"
    )


def test_requireTLSBool() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nrequire_tls_for_simple_bind = maybe\n" + TAIL) == (
        "routes.ini [ldaproute] require_tls_for_simple_bind: expected yes or no, not 'maybe'"
    )


def test_allowAnonymousBool() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nallow_anonymous = sometimes\n" + TAIL) == (
        "routes.ini [ldaproute] allow_anonymous: expected yes or no, not 'sometimes'"
    )


def test_clientNetwork() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\nclient_network = 10.0.0.300/8\n" + TAIL) == (
        "routes.ini [ldaproute] client_network: bad network '10.0.0.300/8': expected CIDR such as 10.0.0.0/8"
    )


@pytest.mark.parametrize(
    "key", ["max_connections", "max_connections_per_address", "max_outstanding", "bind_throttle_failures"]
)
def test_limitAboveZero(key: str) -> None:
    assert error(f"[ldaproute]\nlisten = tcp:389\n{key} = 0\n" + TAIL) == (
        f"routes.ini [ldaproute] {key}: expected a number above zero, not 0"
    )


@pytest.mark.parametrize("key", ["idle_timeout", "pdu_timeout", "bind_throttle_window"])
def test_durations(key: str) -> None:
    assert error(f"[ldaproute]\nlisten = tcp:389\n{key} = soon\n" + TAIL) == (
        f"routes.ini [ldaproute] {key}: expected a duration such as 5s or 250ms, not 'soon'"
    )


def test_policyWithoutListen() -> None:
    assert error("[ldaproute]\nidle_timeout = 5s\n[listener:x]\nlisten = tcp:389\n" + TAIL) == (
        "routes.ini [ldaproute] listen: missing: listener policy keys here apply to the listen endpoints"
    )


def test_backendTLSChoice() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldap://h\ntls = yes\n" + POOL) == (
        "routes.ini [backend:b] tls: expected one of none, starttls, ldaps, not 'yes'"
    )


def test_backendTLSContradictsURL() -> None:
    assert error("[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldaps://h\ntls = starttls\n" + POOL) == (
        "routes.ini [backend:b] tls: starttls contradicts the ldaps:// url"
    )


def test_backendTLSOnLdapi() -> None:
    text = "[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldapi://%2Ftmp%2Fs\ntls = ldaps\n" + POOL
    assert error(text) == "routes.ini [backend:b] tls: an ldapi:// backend is a local socket: TLS is not used"


def test_backendCAWithoutTLS(certs: tuple[ServerCert, ServerCert]) -> None:
    text = f"[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldap://h\nca_file = {certs[0].caFile}\n" + POOL
    assert error(text) == "routes.ini [backend:b] ca_file: only used with tls = ldaps or starttls"


def test_backendClientCertWithoutKey(certs: tuple[ServerCert, ServerCert]) -> None:
    text = (
        "[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldap://h\ntls = starttls\n"
        f"client_cert = {certs[0].certFile}\n" + POOL
    )
    assert error(text) == "routes.ini [backend:b] client_key: missing: client_cert and client_key go together"


def test_backendMissingCA() -> None:
    text = "[ldaproute]\nlisten = tcp:389\n[backend:b]\nurl = ldap://h\ntls = starttls\nca_file = /nonexistent/ca.pem\n" + POOL
    assert error(text) == "routes.ini [backend:b] ca_file: no such file '/nonexistent/ca.pem'"


def test_defaults(certs: tuple[ServerCert, ServerCert]) -> None:
    """Safe defaults; starttls follows tls_cert; ldaps:// implies tls = ldaps."""
    plain = Config.fromString("[ldaproute]\nlisten = tcp:389\n" + TAIL).listeners[0]
    assert (plain.starttls, plain.requireTLSForSimpleBind, plain.allowAnonymous) == ("off", True, True)
    assert (plain.bindThrottleFailures, plain.bindThrottleWindow, plain.pduTimeout) == (5, 60.0, 30.0)
    assert (plain.maxConnections, plain.maxConnectionsPerAddress, plain.maxOutstanding) == (10000, 1000, 1000)
    assert plain.idleTimeout is None
    server, _ = certs
    config = Config.fromString(
        f"[ldaproute]\nlisten = tcp:389\ntls_cert = {server.certFile}\ntls_key = {server.keyFile}\n"
        "idle_timeout = 5m\nbind_throttle_failures = off\n"
        "[backend:b]\nurl = ldaps://h\n" + POOL
    )
    listener = config.listeners[0]
    assert (listener.starttls, listener.idleTimeout, listener.bindThrottleFailures) == ("terminate", 300.0, None)
    assert config.backends["b"].tls == "ldaps"
    assert config.backends["b"].verifyName == "h"
