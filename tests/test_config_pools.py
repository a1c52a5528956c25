"""Config mistakes for the pool keys: one test per mistake, full message."""

from __future__ import annotations

import pytest

from ldaproute.config import Config, ConfigError

HEAD = "[ldaproute]\nlisten = tcp:1389\n[backend:a]\nurl = ldap://127.0.0.1:1\n"
TAIL = "[route:r]\npool = p\n"


def load(poolText: str, backendText: str = "") -> Config:
    return Config.fromString(HEAD + backendText + "[pool:p]\n" + poolText + TAIL)


def error(poolText: str, backendText: str = "") -> str:
    with pytest.raises(ConfigError) as e:
        load(poolText, backendText)
    return str(e.value)


def test_defaults() -> None:
    pool = load("backends = a\n").pools["p"]
    assert (pool.strategy, pool.operationTimeout, pool.healthCheck, pool.healthInterval) == (
        "round-robin", None, True, 5.0)
    assert (pool.healthTimeout, pool.healthRise, pool.healthFall, pool.srv) == (2.0, 2, 3, None)


def test_allKeys() -> None:
    config = load(
        "backends = a\nstrategy = failover\noperation_timeout = 250ms\nhealth_interval = 1s\n"
        "health_timeout = 500ms\nhealth_rise = 1\nhealth_fall = 2\nhealth_check = no\n"
        "health_bind_dn = cn=monitor,dc=example,dc=com\nhealth_bind_password = pw\n",
        "weight = 3\npriority = 0\nmax_connections = 10\n",
    )
    pool = config.pools["p"]
    assert pool.operationTimeout == 0.25 and pool.healthFall == 2 and not pool.healthCheck
    assert pool.healthBindPassword == "pw" and "pw" not in repr(pool)
    assert pool.backends[0].maxConnections == 10 and pool.backends[0].weight == 3


def test_unknownStrategy() -> None:
    assert error("backends = a\nstrategy = random\n") == (
        "routes.ini [pool:p] strategy: expected one of round-robin, weighted, "
        "least-outstanding, failover, not 'random'"
    )


def test_badPriority() -> None:
    assert error("backends = a\n", "priority = -1\n") == (
        "routes.ini [backend:a] priority: expected a number of zero or more, not -1"
    )


def test_badMaxConnections() -> None:
    assert error("backends = a\n", "max_connections = 0\n") == (
        "routes.ini [backend:a] max_connections: expected a number above zero, not 0"
    )


def test_badOperationTimeout() -> None:
    assert error("backends = a\noperation_timeout = soon\n") == (
        "routes.ini [pool:p] operation_timeout: expected a duration such as 5s or 250ms, not 'soon'"
    )


def test_badRouteOperationTimeout() -> None:
    with pytest.raises(ConfigError) as e:
        Config.fromString(HEAD + "[pool:p]\nbackends = a\n[route:r]\npool = p\noperation_timeout = 0\n")
    assert str(e.value) == (
        "routes.ini [route:r] operation_timeout: expected a duration above zero, not '0'"
    )


def test_badHealthRise() -> None:
    assert error("backends = a\nhealth_rise = two\n") == (
        "routes.ini [pool:p] health_rise: expected a whole number, not 'two'"
    )


def test_bindDNWithoutPassword() -> None:
    assert error("backends = a\nhealth_bind_dn = cn=x\n") == (
        "routes.ini [pool:p] health_bind_dn: give health_bind_dn and health_bind_password together"
    )


def test_badHealthBindDN() -> None:
    assert error("backends = a\nhealth_bind_dn = nodn\nhealth_bind_password = x\n").startswith(
        "routes.ini [pool:p] health_bind_dn: bad DN 'nodn'"
    )


def test_srvAndBackends() -> None:
    assert error("backends = a\nsrv = _ldap._tcp.example.com\n") == (
        "routes.ini [pool:p] srv: a pool takes either backends or srv, not both"
    )


def test_badSRVName() -> None:
    assert error("srv = ldap.example.com\n") == (
        "routes.ini [pool:p] srv: expected an SRV name such as _ldap._tcp.example.com, "
        "not 'ldap.example.com'"
    )


def test_resolverWithoutSRV() -> None:
    assert error("backends = a\nsrv_resolver = 127.0.0.1:53\n") == (
        "routes.ini [pool:p] srv_resolver: only a pool with srv = NAME uses a resolver"
    )


def test_badResolver() -> None:
    assert error("srv = _ldap._tcp.example.com\nsrv_resolver = localhost\n") == (
        "routes.ini [pool:p] srv_resolver: expected HOST:PORT such as 127.0.0.1:53, not 'localhost'"
    )


def test_srvPool() -> None:
    pool = load("srv = _ldap._tcp.example.com.\nsrv_resolver = 127.0.0.1:5353\n").pools["p"]
    assert (pool.backends, pool.srv, pool.srvResolver) == ((), "_ldap._tcp.example.com", ("127.0.0.1", 5353))


def test_noBackendsNorSRV() -> None:
    assert error("strategy = weighted\n") == (
        "routes.ini [pool:p] backends: missing: a pool needs at least one backend (or srv = NAME)"
    )
