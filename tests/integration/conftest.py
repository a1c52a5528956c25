# -*- test-case-name: tests.integration.test_slapd_fixture -*-
"""
pytest fixtures for integration tests: real slapd instances on loopback.

Owns fixture scope and clean-up only; everything about running slapd lives in
L{tests.slapd}.  A missing slapd is an error here, never a skip, so a CI image
without OpenLDAP fails loudly instead of passing an empty suite.

    slapd          module-scoped, started, 2000 users, TLS (StartTLS + ldaps),
                   access log on
    slapdFactory   slapdFactory(**kwargs) -> started Slapd; every instance is
                   stopped at the end of the test
    testCA         session-scoped CA, for instances and proxies that must
                   trust each other
    freePort       the tests.slapd.freePort function
    ds389          module-scoped 389 Directory Server (tests.integration.ds389),
                   dscreate's sample entries; about ten seconds to create
    restartableSlapdFactory / restartableSlapd
                   slapd instances (access log on) that crash() SIGKILLs and
                   brings back on the same port with the same data; their
                   .log counts what slapd received (tests.integration.restartable)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Iterator

import pytest

from tests.certs import CA, makeCA
from tests.integration.ds389 import DS389
from tests.integration.restartable import RestartableSlapd
from tests.slapd import Slapd, SlapdFactory, freePort as _freePort


@pytest.fixture(scope="session")
def testCA(tmp_path_factory: pytest.TempPathFactory) -> CA:
    """
    One CA for the session; sign more certificates with
    C{tests.certs.makeCert(testCA, directory, names)}.
    """
    return makeCA(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """
    A started slapd for the whole test module: suffix dc=example,dc=com, 2000
    users, StartTLS and ldaps (trust C{slapd.caFile}), access log on.  Tests
    that kill or reconfigure a server should use L{slapdFactory} instead.
    """
    instance = Slapd(str(tmp_path_factory.mktemp("slapd")), entries=2000, tls=True, accessLog=True)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def slapdFactory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdFactory]:
    """
    A function that creates and starts more slapd instances, each in its
    own directory; keyword arguments go to L{Slapd} (C{entries} defaults to
    100 to keep start-up fast).  All are stopped at teardown.
    """
    made: list[Slapd] = []

    def factory(**kwargs: Any) -> Slapd:
        kwargs.setdefault("entries", 100)
        instance = Slapd(str(tmp_path_factory.mktemp("slapd")), **kwargs)
        made.append(instance)
        instance.start()
        return instance

    try:
        yield factory
    finally:
        for instance in reversed(made):
            instance.stop()


@pytest.fixture(scope="module")
def ds389() -> Iterator[DS389]:
    """A started 389 DS for the module (plain LDAP on C{ds389.url}); removed at the end."""
    # under /tmp: the dirsrv user cannot reach pytest's own temporary directories
    scratch = tempfile.mkdtemp(prefix="ldaproute-389-", dir="/tmp")
    os.chmod(scratch, 0o755)
    instance = DS389(scratch)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def restartableSlapdFactory(slapdFactory: SlapdFactory) -> Callable[..., RestartableSlapd]:
    """
    A function that starts a slapd (keyword arguments as for
    L{slapdFactory}; the access log is always on) and returns it as a
    L{RestartableSlapd}: C{crash(downFor)} SIGKILLs and restarts it on the
    same port and database, C{log.count("SRCH", since=mark)} counts what it
    received.  All are stopped at teardown.
    """

    def factory(**kwargs: Any) -> RestartableSlapd:
        kwargs["accessLog"] = True
        return RestartableSlapd(slapdFactory(**kwargs))

    return factory


@pytest.fixture
def restartableSlapd(restartableSlapdFactory: Callable[..., RestartableSlapd]) -> RestartableSlapd:
    """One L{RestartableSlapd} of 100 users, for a single-backend (sidecar) scenario."""
    return restartableSlapdFactory()


@pytest.fixture(scope="session")
def freePort() -> Callable[[], int]:
    """
    L{tests.slapd.freePort}: a TCP port on 127.0.0.1 that was free a moment
    ago.
    """
    return _freePort


@pytest.fixture
def proxyFactory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """
    A function that starts ldaproute processes with JSON logs
    (L{tests.integration.proxy.Proxy}) on C{configText}; all are stopped at
    teardown.  Modules that need another kind of proxy define their own.
    """
    from tests.integration.proxy import Proxy

    made: list[Proxy] = []

    def factory(configText: str, globalKeys: str = "") -> Proxy:
        proxy = Proxy(str(tmp_path_factory.mktemp("proxy")), configText, globalKeys)
        made.append(proxy)
        proxy.start()
        return proxy

    yield factory
    for proxy in made:
        proxy.stop()
