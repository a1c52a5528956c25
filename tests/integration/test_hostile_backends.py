"""
Hostile and failing backends: a fake LDAP server (raw sockets, see
L{tests.integration.fakeldap}) behind one route, a real slapd behind the
rest.  The client of the broken backend gets a proper LDAP error for its
operation; the proxy stays healthy and other clients are served.

There is no operation timeout in this branch (the pools work adds
C{operation_timeout}): a backend that stalls mid-search holds that one
operation until the client abandons it or unbinds, which are tested to
reach the backend and clean up.
"""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from ldaptor.protocols import pureldap

from ldaproute.wire import ber
from tests import pdus
from tests.integration.fakeldap import FakeLDAPServer
from tests.integration.proxy import ProxyProcess
from tests.integration.rawldap import RawClient, runningProxy, servedAnonymously, stillHealthy
from tests.slapd import Slapd


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLDAPServer]:
    server = FakeLDAPServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    instance = Slapd(str(tmp_path_factory.mktemp("slapd")), entries=50)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def proxy(backend: Slapd, fake: FakeLDAPServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = (
        "[ldaproute]\nlisten = tcp:{port}:interface=127.0.0.1\n"
        f"[backend:slapd]\nurl = {backend.url}\n"
        f"[backend:fake]\nurl = {fake.url}\n"
        "[pool:main]\nbackends = slapd\n"
        "[pool:fake]\nbackends = fake\n"
        "[route:fake]\nsuffix = dc=fake\npool = fake\n"
        "[route:all]\npool = main\n"
    )
    yield from runningProxy(str(tmp_path_factory.mktemp("proxy")), config)


@pytest.fixture
def healthy(proxy: ProxyProcess) -> Iterator[ProxyProcess]:
    yield from stillHealthy(proxy)


def searchFake(client: RawClient, mode: str, messageID: int) -> None:
    client.send(pdus.search(f"ou={mode},dc=fake", messageID))


@pytest.mark.parametrize("mode", ["garbage", "oversized", "midentry", "notice", "negativeid"])
def test_brokenBackendAnswersUnavailable(healthy: ProxyProcess, mode: str) -> None:
    client = RawClient(healthy.port)
    searchFake(client, mode, 3)
    done = client.finalFor(3)
    assert isinstance(done.value, pureldap.LDAPSearchResultDone)
    assert done.value.resultCode == ber.UNAVAILABLE, done.value
    # the client keeps its connection, and a new upstream connection works
    searchFake(client, "fine", 4)
    assert client.finalFor(4).value.resultCode == 0
    client.close()


def test_responseForAnUnknownMessageID(healthy: ProxyProcess) -> None:
    """
    Passed through as the backend sent it (the proxy is transparent in
    session mode); the client's own operation still gets its one answer.
    """
    client = RawClient(healthy.port)
    searchFake(client, "unknownid", 5)
    ids = []
    while True:
        message = client.receive()
        assert message is not None
        ids.append(message.id)
        if message.id == 5 and isinstance(message.value, pureldap.LDAPSearchResultDone):
            break
    assert ids == [1005, 1005, 5, 5]
    client.close()


def test_stallMidSearchAbandon(healthy: ProxyProcess, fake: FakeLDAPServer) -> None:
    client = RawClient(healthy.port)
    searchFake(client, "stall", 6)
    entry = client.receive()
    assert isinstance(entry.value, pureldap.LDAPSearchResultEntry)
    servedAnonymously(healthy.port)  # others are served meanwhile
    client.send(pdus.message(pureldap.LDAPAbandonRequest(id=6), 7))
    fake.waitFor(("abandon", 6))
    # the session is usable after the abandon
    searchFake(client, "fine", 8)
    assert client.finalFor(8).value.resultCode == 0
    client.close()


def test_stallMidSearchUnbind(healthy: ProxyProcess, fake: FakeLDAPServer) -> None:
    client = RawClient(healthy.port)
    searchFake(client, "stall", 9)
    assert isinstance(client.receive().value, pureldap.LDAPSearchResultEntry)
    closedBefore = fake.events.count(("closed", 0))
    client.send(pdus.message(pureldap.LDAPUnbindRequest(), 10))
    client.expectClose()
    deadline = time.monotonic() + 10
    while fake.events.count(("closed", 0)) <= closedBefore:
        assert time.monotonic() < deadline, fake.events
        time.sleep(0.02)


def test_stallMidSearchClientVanishes(healthy: ProxyProcess, fake: FakeLDAPServer) -> None:
    client = RawClient(healthy.port)
    searchFake(client, "stall", 11)
    assert isinstance(client.receive().value, pureldap.LDAPSearchResultEntry)
    closedBefore = fake.events.count(("closed", 0))
    client.reset()
    deadline = time.monotonic() + 10
    while fake.events.count(("closed", 0)) <= closedBefore:
        assert time.monotonic() < deadline, fake.events
        time.sleep(0.02)


def test_backendGoneAtConnectTime(healthy: ProxyProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A route whose only backend refuses connections: unavailable, at once."""
    client = RawClient(healthy.port)
    client.send(pdus.search("ou=fine,dc=fake", 12))
    assert client.finalFor(12).value.resultCode == 0
    client.close()
