"""Config mistakes for shared mode's keys: one test per mistake, full message."""

from __future__ import annotations

import pytest

from ldaproute.config import Config, ConfigError

HEAD = "[ldaproute]\nlisten = tcp:1389\n{global_}[backend:a]\nurl = ldap://127.0.0.1:1\n{backend}"
TAIL = "[route:r]\npool = p\n"


def load(poolText: str = "", globalText: str = "mode = shared\n", backendText: str = "") -> Config:
    return Config.fromString(HEAD.format(global_=globalText, backend=backendText) + "[pool:p]\nbackends = a\n" + poolText + TAIL)


def error(poolText: str = "", globalText: str = "mode = shared\n", backendText: str = "") -> str:
    with pytest.raises(ConfigError) as e:
        load(poolText, globalText, backendText)
    return str(e.value)


def test_defaults() -> None:
    config = load(globalText="")
    pool = config.pools["p"]
    assert config.mode == "session"
    assert (pool.sharedConnections, pool.bindConnections, pool.serviceBindDN, pool.serviceBindPassword) == (4, 2, None, None)


def test_allKeys() -> None:
    config = load(
        "shared_connections = 3\nbind_connections = 1\n"
        "service_bind_dn = cn=admin,dc=example,dc=com\nservice_bind_password = secret\n"
    )
    pool = config.pools["p"]
    assert config.mode == "shared"
    assert (pool.sharedConnections, pool.bindConnections, pool.serviceBindDN) == (3, 1, "cn=admin,dc=example,dc=com")
    assert pool.serviceBindPassword == "secret" and "secret" not in repr(pool)


def test_badMode() -> None:
    assert error(globalText="mode = pooled\n") == "routes.ini [ldaproute] mode: expected one of session, shared, not 'pooled'"


def test_badSharedConnections() -> None:
    assert error("shared_connections = 0\n") == (
        "routes.ini [pool:p] shared_connections: expected a number above zero, not 0"
    )


def test_badBindConnections() -> None:
    assert error("bind_connections = two\n") == (
        "routes.ini [pool:p] bind_connections: expected a whole number, not 'two'"
    )


def test_serviceDNWithoutPassword() -> None:
    assert error("service_bind_dn = cn=admin,dc=example,dc=com\n") == (
        "routes.ini [pool:p] service_bind_dn: give service_bind_dn and service_bind_password together"
    )


def test_servicePasswordWithoutDN() -> None:
    assert error("service_bind_password = x\n") == (
        "routes.ini [pool:p] service_bind_dn: give service_bind_dn and service_bind_password together"
    )


def test_badServiceDN() -> None:
    message = error("service_bind_dn = not a dn\nservice_bind_password = x\n")
    assert message.startswith("routes.ini [pool:p] service_bind_dn: bad DN 'not a dn': ")


def test_starttlsBackendInSharedMode() -> None:
    """Shared connections are BackendConnections too: StartTLS to the backend works in both modes."""
    config = load(backendText="tls = starttls\n")
    assert config.mode == "shared" and config.backends["a"].tls == "starttls"


def test_clientBufferMaxDefault() -> None:
    assert load().pools["p"].clientBufferMax == 2 * 1024 * 1024


@pytest.mark.parametrize(
    "text, size",
    [("65536", 65536), ("512KiB", 512 * 1024), ("8 MiB", 8 * 1024 * 1024), ("1g", 1024**3), ("1_000_000", 1_000_000)],
)
def test_clientBufferMax(text: str, size: int) -> None:
    assert load(f"client_buffer_max = {text}\n").pools["p"].clientBufferMax == size


def test_badClientBufferMax() -> None:
    assert error("client_buffer_max = lots\n") == (
        "routes.ini [pool:p] client_buffer_max: expected a size such as 4MiB, 512KiB or 65536, not 'lots'"
    )


def test_zeroClientBufferMax() -> None:
    assert error("client_buffer_max = 0MiB\n") == (
        "routes.ini [pool:p] client_buffer_max: expected a size above zero, not '0MiB'"
    )
